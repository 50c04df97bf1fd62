// Column norms for recovery scaling (docs/algorithm.md §7), canonical left layout:
//
//     sums[j]       = ‖G[:, j]‖²      (accumulated over the row chunks of G)
//     sums[B + j]   = ‖G̃[:, j]‖²
//     sums[2B + j]  = ‖N[:, j]‖²
//
// from which recovery_limit.wgsl forms φ_j = ‖N[:, j]‖ / (‖G̃[:, j]‖ + 1e-8), the residual
// norms ‖g_j − k·S·g̃_j‖² = ‖g_j‖² − (2k − k²)·‖g̃_j‖² and the limiter.
//
// Bindings (row-major f32, read_write because CubeCL sub-allocates tensors from shared
// buffers):
//   @binding(0) grad        G, rows {{rows}} of this chunk × b    (read); with
//                           {{g_transposed}}, all of Gᵀ, b×a (the right case's
//                           G = ∇Wᵀ, read in place)
//   @binding(1) g_low       G̃, r×b                               (read)
//   @binding(2) normalized  N, r×b                               (read)
//   @binding(3) sums        3·b column sums, laid out as above  (written; the first chunk
//                           writes all three, later chunks add to ‖G[:, j]‖²)
//
// Template values (part of the kernel id): {{rows}}, {{r}}, {{b}}, {{first}},
// {{g_transposed}}. One invocation per column; neighbouring invocations read neighbouring
// addresses, except in a stored Gᵀ, where each reads a row of its own.

const ROWS: u32 = {{rows}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const FIRST: bool = {{first}};
const G_TRANSPOSED: bool = {{g_transposed}};   // grad holds Gᵀ (b×a) row-major

@group(0) @binding(0) var<storage, read_write> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> g_low: array<f32>;
@group(0) @binding(2) var<storage, read_write> normalized: array<f32>;
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= B) {
        return;
    }
    var g_sq: f32 = 0.0;
    for (var i: u32 = 0u; i < ROWS; i = i + 1u) {
        var at = i * B + j;
        if (G_TRANSPOSED) {
            at = j * ROWS + i;
        }
        let x = grad[at];
        g_sq = g_sq + x * x;
    }
    if (FIRST) {
        var low_sq: f32 = 0.0;
        var n_sq: f32 = 0.0;
        for (var i: u32 = 0u; i < R; i = i + 1u) {
            let y = g_low[i * B + j];
            let n = normalized[i * B + j];
            low_sq = low_sq + y * y;
            n_sq = n_sq + n * n;
        }
        sums[j] = g_sq;
        sums[B + j] = low_sq;
        sums[2u * B + j] = n_sq;
    } else {
        sums[j] = sums[j] + g_sq;
    }
}
