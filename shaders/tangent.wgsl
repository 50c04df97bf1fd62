// Products of the tracking step (algorithm.md §4) whose shared dimension is the long side
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

// x_tile[ii·BK + kk] = X[i0 + ii, k0 + kk];  y_tile[jj·BK + kk] = Y[j0 + jj, k0 + kk]
var<workgroup> x_tile: array<f32, 1024>;
var<workgroup> y_tile: array<f32, 1024>;

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
    for (var k0: u32 = 0u; k0 < K; k0 = k0 + BK) {
        for (var q: u32 = 0u; q < 4u; q = q + 1u) {
            let idx = t + q * 256u;
            let row = idx / BK;
            let kk = idx % BK;
            var xv: f32 = 0.0;
            if (i0 + row < M && k0 + kk < K) {
                xv = x[(i0 + row) * K + k0 + kk];
            }
            x_tile[idx] = xv;
            var yv: f32 = 0.0;
            if (j0 + row < N && k0 + kk < K) {
                yv = y[(j0 + row) * K + k0 + kk];
            }
            y_tile[idx] = yv;
        }
        workgroupBarrier();
        for (var kk: u32 = 0u; kk < BK; kk = kk + 1u) {
            let x4 = vec4<f32>(
                x_tile[(lid.y * 4u) * BK + kk],
                x_tile[(lid.y * 4u + 1u) * BK + kk],
                x_tile[(lid.y * 4u + 2u) * BK + kk],
                x_tile[(lid.y * 4u + 3u) * BK + kk],
            );
            let y4 = vec4<f32>(
                y_tile[(lid.x * 4u) * BK + kk],
                y_tile[(lid.x * 4u + 1u) * BK + kk],
                y_tile[(lid.x * 4u + 2u) * BK + kk],
                y_tile[(lid.x * 4u + 3u) * BK + kk],
            );
            for (var ii: u32 = 0u; ii < 4u; ii = ii + 1u) {
                acc[ii * 4u] = acc[ii * 4u] + x4[ii] * y4.x;
                acc[ii * 4u + 1u] = acc[ii * 4u + 1u] + x4[ii] * y4.y;
                acc[ii * 4u + 2u] = acc[ii * 4u + 2u] + x4[ii] * y4.z;
                acc[ii * 4u + 3u] = acc[ii * 4u + 3u] + x4[ii] * y4.w;
            }
        }
        workgroupBarrier();
    }
    for (var ii: u32 = 0u; ii < 4u; ii = ii + 1u) {
        let i = i0 + lid.y * 4u + ii;
        for (var jj: u32 = 0u; jj < 4u; jj = jj + 1u) {
            let j = j0 + lid.x * 4u + jj;
            if (i < M && j < N) {
                output[i * N + j] = acc[ii * 4u + jj];
            }
        }
    }
}
