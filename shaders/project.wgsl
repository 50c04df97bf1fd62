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
// Template values (part of the kernel id): {{a}}, {{r}}, {{b}} the sizes, {{accumulate}}
// (true: add to G̃ instead of writing it, for the row chunks a tensor over one storage
// binding's size limit is split into: G̃ = Σ_c S_cᵀ·G_c). A workgroup of
// 16×16 invocations computes a 64×64 block of G̃, each invocation a 4×4 block held in
// registers; the shared dimension a is walked 16 rows at a time through workgroup memory.
// Every index is guarded: the shader is compiled without bounds checks.

const A: u32 = {{a}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const ACCUMULATE: bool = {{accumulate}};
const BK: u32 = 16u;   // rows of S and G per step
const BM: u32 = 64u;   // rows of G̃ (columns of S) per workgroup
const BN: u32 = 64u;   // columns of G̃ per workgroup

@group(0) @binding(0) var<storage, read_write> basis: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

// s_tile[kk·BM + ii] = S[k0 + kk, i0 + ii];  g_tile[kk·BN + jj] = G[k0 + kk, j0 + jj]
var<workgroup> s_tile: array<f32, 1024>;
var<workgroup> g_tile: array<f32, 1024>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i0 = wid.y * BM;
    let j0 = wid.x * BN;
    let t = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var q: u32 = 0u; q < 16u; q = q + 1u) {
        acc[q] = 0.0;
    }
    for (var k0: u32 = 0u; k0 < A; k0 = k0 + BK) {
        // 256 invocations stage 1024 elements of each tile, 4 each, along rows.
        for (var q: u32 = 0u; q < 4u; q = q + 1u) {
            let idx = t + q * 256u;
            let kk = idx / BM;
            let c = idx % BM;
            let k = k0 + kk;
            var sv: f32 = 0.0;
            if (k < A && i0 + c < R) {
                sv = basis[k * R + i0 + c];
            }
            s_tile[idx] = sv;
            var gv: f32 = 0.0;
            if (k < A && j0 + c < B) {
                gv = grad[k * B + j0 + c];
            }
            g_tile[idx] = gv;
        }
        workgroupBarrier();
        for (var kk: u32 = 0u; kk < BK; kk = kk + 1u) {
            let s4 = vec4<f32>(
                s_tile[kk * BM + lid.y * 4u],
                s_tile[kk * BM + lid.y * 4u + 1u],
                s_tile[kk * BM + lid.y * 4u + 2u],
                s_tile[kk * BM + lid.y * 4u + 3u],
            );
            let g4 = vec4<f32>(
                g_tile[kk * BN + lid.x * 4u],
                g_tile[kk * BN + lid.x * 4u + 1u],
                g_tile[kk * BN + lid.x * 4u + 2u],
                g_tile[kk * BN + lid.x * 4u + 3u],
            );
            for (var ii: u32 = 0u; ii < 4u; ii = ii + 1u) {
                acc[ii * 4u] = acc[ii * 4u] + s4[ii] * g4.x;
                acc[ii * 4u + 1u] = acc[ii * 4u + 1u] + s4[ii] * g4.y;
                acc[ii * 4u + 2u] = acc[ii * 4u + 2u] + s4[ii] * g4.z;
                acc[ii * 4u + 3u] = acc[ii * 4u + 3u] + s4[ii] * g4.w;
            }
        }
        workgroupBarrier();
    }
    for (var ii: u32 = 0u; ii < 4u; ii = ii + 1u) {
        let i = i0 + lid.y * 4u + ii;
        for (var jj: u32 = 0u; jj < 4u; jj = jj + 1u) {
            let j = j0 + lid.x * 4u + jj;
            if (i < R && j < B) {
                if (ACCUMULATE) {
                    output[i * B + j] = output[i * B + j] + acc[ii * 4u + jj];
                } else {
                    output[i * B + j] = acc[ii * 4u + jj];
                }
            }
        }
    }
}
