// Products of the tracking step (docs/algorithm.md §4) whose shared dimension is the long side
// b of the gradient, and the re-orthonormalisation products:
//
//     out = X·Yᵀ         X m×K, Y n×K, out m×n
//
// used for G·Aᵀ (a×r) and A·Aᵀ (r×r) with A = SᵀG, so that the tangent
// ∇F = −2·(G·Aᵀ − S·(A·Aᵀ)) never forms the a×b residual (update.wgsl finishes it), and for
// S'·L⁻ᵀ and L⁻¹·C after a Cholesky re-orthonormalisation.
//
// Bindings (row-major f32, read_write because CubeCL sub-allocates tensors from shared
// buffers):
//   @binding(0) x       X, rows {{m}} of this chunk × K   (read)
//   @binding(1) y       Y, n×K                            (read)
//   @binding(2) output  out, rows {{m}} of this chunk × n (written)
//
// Template values (part of the kernel id): {{m}}, {{n}}, {{k}}. A workgroup of 16×16
// invocations finishes a 64×64 block of out, each invocation a 4×4 block in registers; K is
// walked 16 at a time through workgroup memory. Every index is guarded.

const M: u32 = {{m}}u;
const N: u32 = {{n}}u;
const K: u32 = {{k}}u;
const BK: u32 = 16u;
const BM: u32 = 64u;
const BN: u32 = 64u;

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

// x_tile[kk·16 + c] = X[i0 + 4c … 4c + 3, k0 + kk];  y_tile[kk·16 + c] = Y[j0 + 4c … 4c + 3, k0 + kk]
// (both staged transposed)
var<workgroup> x_tile: array<vec4<f32>, 256>;
var<workgroup> y_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i0 = wid.y * BM;
    let j0 = wid.x * BN;
    let t = lid.y * 16u + lid.x;
    // Staging: rows i0 + t/4 of X and j0 + t/4 of Y, columns k0 + 4·(t%4) … +3.
    let row = t / 4u;
    let col = (t % 4u) * 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0: u32 = 0u; k0 < K; k0 = k0 + BK) {
        for (var q: u32 = 0u; q < 4u; q = q + 1u) {
            let k = k0 + col + q;
            var xv: f32 = 0.0;
            if (i0 + row < M && k < K) {
                xv = x[(i0 + row) * K + k];
            }
            var yv: f32 = 0.0;
            if (j0 + row < N && k < K) {
                yv = y[(j0 + row) * K + k];
            }
            x_tile[(col + q) * 16u + row / 4u][row % 4u] = xv;
            y_tile[(col + q) * 16u + row / 4u][row % 4u] = yv;
        }
        workgroupBarrier();
        for (var kk: u32 = 0u; kk < BK; kk = kk + 1u) {
            let x4 = x_tile[kk * 16u + lid.y];
            let y4 = y_tile[kk * 16u + lid.x];
            acc0 = acc0 + x4.x * y4;
            acc1 = acc1 + x4.y * y4;
            acc2 = acc2 + x4.z * y4;
            acc3 = acc3 + x4.w * y4;
        }
        workgroupBarrier();
    }
    let rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var ii: u32 = 0u; ii < 4u; ii = ii + 1u) {
        let i = i0 + lid.y * 4u + ii;
        let out = rows[ii];
        for (var jj: u32 = 0u; jj < 4u; jj = jj + 1u) {
            let j = j0 + lid.x * 4u + jj;
            if (i < M && j < N) {
                output[i * N + j] = out[jj];
            }
        }
    }
}
