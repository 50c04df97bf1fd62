// Projection (algorithm.md §2, left case): G̃ = SᵀG, the r×b coordinates of a gradient
// G (a×b) in the orthonormal basis S (a×r). The right case runs on the transposed view
// (canonical layout, §1), so one kernel serves both.
//
// Bindings (all row-major f32; declared read_write because CubeCL sub-allocates tensors
// from shared buffers, see burn-0.22.md):
//   @binding(0) basis  S,  a×r   (read)
//   @binding(1) grad   G,  a×b   (read)
//   @binding(2) output G̃, r×b   (written)
//
// Template values (part of the kernel id): {{a}}, {{r}}, {{b}} the sizes, {{tile}} the tile
// side. Each workgroup of tile×tile invocations computes one tile×tile block of G̃, walking
// the shared dimension a in tiles staged through workgroup memory. Every index is guarded:
// the shader is compiled without bounds checks.

const A: u32 = {{a}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const TILE: u32 = {{tile}}u;

@group(0) @binding(0) var<storage, read_write> basis: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

// s_tile[kk·TILE + ii] = S[k0 + kk, i0 + ii];  g_tile[kk·TILE + jj] = G[k0 + kk, j0 + jj]
var<workgroup> s_tile: array<f32, {{tile_sq}}>;
var<workgroup> g_tile: array<f32, {{tile_sq}}>;

@compute @workgroup_size({{tile}}, {{tile}}, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i0 = wid.y * TILE;
    let j0 = wid.x * TILE;
    var acc: f32 = 0.0;
    for (var k0: u32 = 0u; k0 < A; k0 = k0 + TILE) {
        let k = k0 + lid.y;
        var sv: f32 = 0.0;
        if (k < A && i0 + lid.x < R) {
            sv = basis[k * R + i0 + lid.x];
        }
        s_tile[lid.y * TILE + lid.x] = sv;
        var gv: f32 = 0.0;
        if (k < A && j0 + lid.x < B) {
            gv = grad[k * B + j0 + lid.x];
        }
        g_tile[lid.y * TILE + lid.x] = gv;
        workgroupBarrier();
        for (var kk: u32 = 0u; kk < TILE; kk = kk + 1u) {
            acc = acc + s_tile[kk * TILE + lid.y] * g_tile[kk * TILE + lid.x];
        }
        workgroupBarrier();
    }
    let i = i0 + lid.y;
    let j = j0 + lid.x;
    if (i < R && j < B) {
        output[i * B + j] = acc;
    }
}
