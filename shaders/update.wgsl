// Back-projection fused with the weight update (algorithm.md §2 and §7, recovery folded in):
//
//     W ← d·(W − α·(S·L + G⊙ψ)),   L = s·N − k·(G̃⊙ψ)      α = lr·c (bias correction c),
//                                                         d = 1 − lr·wd
//
// with ψ = f·φ the limited recovery scales (recovery_limit.wgsl; see src/recovery.rs);
// without recovery scaling L = s·N and the G⊙ψ term is absent. L is formed as its tiles
// are loaded and the a×b update S·L is never written to a buffer of its own: each output
// element is finished in registers. Where the step is skipped (flag = 0: the gradient held
// NaN or ±∞) W is copied unchanged.
//
// Bindings (row-major f32, declared read_write because CubeCL sub-allocates tensors from
// shared buffers):
//   @binding(0) basis       S, a×r                         (read)
//   @binding(1) normalized  N, r×b                         (read)
//   @binding(2) weight      W, a×b, or b×a if transposed    (read)
//   @binding(3) output      W', the layout of W             (written)
//   @binding(4) scalars     [α, d, s, k, flag]; flag 1 = step, 0 = skip (read)
//   @binding(5) grad        G, a×b canonical layout         (read; only with recovery)
//   @binding(6) psi         ψ, 1×b                          (read; only with recovery)
//   @binding(7) g_low       G̃, r×b                          (read; only with recovery)
//
// Template values (part of the kernel id): {{a}}, {{r}}, {{b}}, {{transposed}} (true: W is
// stored b×a, the right case of §1), and the recovery lines. A workgroup of 16×16
// invocations finishes a 64×64 block of W', each invocation a 4×4 block held in registers;
// the rank r is walked 16 at a time through workgroup memory. Every index is guarded.

const A: u32 = {{a}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const TRANSPOSED: bool = {{transposed}};
const BK: u32 = 16u;   // columns of S / rows of L per step
const BM: u32 = 64u;   // rows of the update per workgroup
const BN: u32 = 64u;   // columns of the update per workgroup

@group(0) @binding(0) var<storage, read_write> basis: array<f32>;
@group(0) @binding(1) var<storage, read_write> normalized: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
@group(0) @binding(4) var<storage, read_write> scalars: array<f32>;
{{recovery_bindings}}

// s_tile[ii·BK + kk] = S[i0 + ii, k0 + kk];  l_tile[kk·BN + jj] = L[k0 + kk, j0 + jj]
var<workgroup> s_tile: array<f32, 1024>;
var<workgroup> l_tile: array<f32, 1024>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i0 = wid.y * BM;
    let j0 = wid.x * BN;
    let t = lid.y * 16u + lid.x;
    let alpha = scalars[0];
    let decay = scalars[1];
    let scale = scalars[2];
    let kept = scalars[3];
    let step = scalars[4] != 0.0;
    var acc: array<f32, 16>;
    for (var q: u32 = 0u; q < 16u; q = q + 1u) {
        acc[q] = 0.0;
    }
    for (var k0: u32 = 0u; k0 < R; k0 = k0 + BK) {
        for (var q: u32 = 0u; q < 4u; q = q + 1u) {
            let idx = t + q * 256u;
            let si = idx / BK;
            let sk = idx % BK;
            var sv: f32 = 0.0;
            if (i0 + si < A && k0 + sk < R) {
                sv = basis[(i0 + si) * R + k0 + sk];
            }
            s_tile[idx] = sv;
            let lk = idx / BN;
            let lj = idx % BN;
            var lv: f32 = 0.0;
            if (k0 + lk < R && j0 + lj < B) {
                let at = (k0 + lk) * B + j0 + lj;
                lv = scale * normalized[at];
{{recovery_low}}
            }
            l_tile[idx] = lv;
        }
        workgroupBarrier();
        for (var kk: u32 = 0u; kk < BK; kk = kk + 1u) {
            let s4 = vec4<f32>(
                s_tile[(lid.y * 4u) * BK + kk],
                s_tile[(lid.y * 4u + 1u) * BK + kk],
                s_tile[(lid.y * 4u + 2u) * BK + kk],
                s_tile[(lid.y * 4u + 3u) * BK + kk],
            );
            let l4 = vec4<f32>(
                l_tile[kk * BN + lid.x * 4u],
                l_tile[kk * BN + lid.x * 4u + 1u],
                l_tile[kk * BN + lid.x * 4u + 2u],
                l_tile[kk * BN + lid.x * 4u + 3u],
            );
            for (var ii: u32 = 0u; ii < 4u; ii = ii + 1u) {
                acc[ii * 4u] = acc[ii * 4u] + s4[ii] * l4.x;
                acc[ii * 4u + 1u] = acc[ii * 4u + 1u] + s4[ii] * l4.y;
                acc[ii * 4u + 2u] = acc[ii * 4u + 2u] + s4[ii] * l4.z;
                acc[ii * 4u + 3u] = acc[ii * 4u + 3u] + s4[ii] * l4.w;
            }
        }
        workgroupBarrier();
    }
    for (var ii: u32 = 0u; ii < 4u; ii = ii + 1u) {
        let i = i0 + lid.y * 4u + ii;
        for (var jj: u32 = 0u; jj < 4u; jj = jj + 1u) {
            let j = j0 + lid.x * 4u + jj;
            if (i < A && j < B) {
                var u = acc[ii * 4u + jj];
{{recovery_term}}
                var at = i * B + j;
                if (TRANSPOSED) {
                    at = j * A + i;
                }
                if (step) {
                    output[at] = decay * (weight[at] - alpha * u);
                } else {
                    output[at] = weight[at];
                }
            }
        }
    }
}
