// Back-projection fused with the weight update (algorithm.md §2 and §7, recovery folded in):
//
//     W ← d·(W − α·(S·L + G⊙ψ))        α = lr·c (bias correction c),  d = 1 − lr·wd
//
// with L = s·N − k·(G̃⊙ψ) and ψ = f·φ the limited recovery scales (see src/recovery.rs);
// without recovery scaling L = s·N and the G⊙ψ term is absent. The a×b update S·L is never
// written to a buffer of its own: each output element is finished in registers.
//
// Bindings (row-major f32, declared read_write because CubeCL sub-allocates tensors from
// shared buffers):
//   @binding(0) basis   S, a×r                      (read)
//   @binding(1) low     L, r×b                      (read)
//   @binding(2) weight  W, a×b, or b×a if transposed (read)
//   @binding(3) output  W', the layout of W          (written)
//   @binding(4) scalars [α, d]                       (read)
//   @binding(5) grad    G, a×b canonical layout      (read; only with recovery)
//   @binding(6) psi     ψ, 1×b                       (read; only with recovery)
//
// Template values (part of the kernel id): {{a}}, {{r}}, {{b}}, {{tile}}, {{transposed}}
// (1: W is stored b×a, the right case of §1), and the recovery lines. Every index is guarded.

const A: u32 = {{a}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const TILE: u32 = {{tile}}u;
const TRANSPOSED: bool = {{transposed}};

@group(0) @binding(0) var<storage, read_write> basis: array<f32>;
@group(0) @binding(1) var<storage, read_write> low: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
@group(0) @binding(4) var<storage, read_write> scalars: array<f32>;
{{recovery_bindings}}

// s_tile[ii·TILE + kk] = S[i0 + ii, k0 + kk];  l_tile[kk·TILE + jj] = L[k0 + kk, j0 + jj]
var<workgroup> s_tile: array<f32, {{tile_sq}}>;
var<workgroup> l_tile: array<f32, {{tile_sq}}>;

@compute @workgroup_size({{tile}}, {{tile}}, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i0 = wid.y * TILE;
    let j0 = wid.x * TILE;
    var acc: f32 = 0.0;
    for (var k0: u32 = 0u; k0 < R; k0 = k0 + TILE) {
        var sv: f32 = 0.0;
        if (i0 + lid.y < A && k0 + lid.x < R) {
            sv = basis[(i0 + lid.y) * R + k0 + lid.x];
        }
        s_tile[lid.y * TILE + lid.x] = sv;
        var lv: f32 = 0.0;
        if (k0 + lid.y < R && j0 + lid.x < B) {
            lv = low[(k0 + lid.y) * B + j0 + lid.x];
        }
        l_tile[lid.y * TILE + lid.x] = lv;
        workgroupBarrier();
        for (var kk: u32 = 0u; kk < TILE; kk = kk + 1u) {
            acc = acc + s_tile[lid.y * TILE + kk] * l_tile[kk * TILE + lid.x];
        }
        workgroupBarrier();
    }
    let i = i0 + lid.y;
    let j = j0 + lid.x;
    if (i < A && j < B) {
        var u = acc;
{{recovery_term}}
        var at = i * B + j;
        if (TRANSPOSED) {
            at = j * A + i;
        }
        output[at] = scalars[1] * (weight[at] - scalars[0] * u);
    }
}
