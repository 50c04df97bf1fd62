// Recovery scales and the norm-growth limiter (algorithm.md §7), from the column sums of
// recovery_norms.wgsl, canonical left layout:
//
//     φ_j  = ‖N[:, j]‖ / (‖G̃[:, j]‖ + 1e-8)
//     ‖Λ‖  = sqrt(Σ_j max(‖g_j‖² − (2k − k²)·‖g̃_j‖², 0)·φ_j²)
//     f    = min(1, ζ·Λ_prev / max(‖Λ‖, 1e-30))       (f = 1 without a Λ_prev)
//     ψ_j  = f·φ_j,    Λ_prev' = f·‖Λ‖
//
// Λ itself is never formed: update.wgsl folds it into the back-projection. Where the step
// is skipped (flag = 0) Λ_prev' = Λ_prev.
//
// Bindings (f32, read_write because CubeCL sub-allocates tensors from shared buffers):
//   @binding(0) sums      [‖G[:, j]‖², ‖G̃[:, j]‖², ‖N[:, j]‖²], 3·b   (read)
//   @binding(1) psi       ψ, 1×b                                     (written)
//   @binding(2) norm      [Λ_prev']                                  (written)
//   @binding(3) params    [2k − k², ζ, flag]; flag 1 = step, 0 = skip  (read)
//   @binding(4) previous  [Λ_prev]                                   (read; a dummy [0]
//                         without one)
//
// Template values (part of the kernel id): {{b}}, {{has_previous}}. One workgroup of 256
// invocations: each sums a strided share of the columns, then a tree reduction.

const B: u32 = {{b}}u;
const HAS_PREVIOUS: bool = {{has_previous}};

@group(0) @binding(0) var<storage, read_write> sums: array<f32>;
@group(0) @binding(1) var<storage, read_write> psi: array<f32>;
@group(0) @binding(2) var<storage, read_write> norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> previous: array<f32>;

var<workgroup> partial: array<f32, 256>;

fn phi(j: u32) -> f32 {
    return sqrt(sums[2u * B + j]) / (sqrt(sums[B + j]) + 1e-8);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) t: u32) {
    let kept = params[0];
    let limit = params[1];
    var total: f32 = 0.0;
    for (var j: u32 = t; j < B; j = j + 256u) {
        let p = phi(j);
        total = total + max(sums[j] - kept * sums[B + j], 0.0) * p * p;
    }
    partial[t] = total;
    workgroupBarrier();
    for (var half: u32 = 128u; half > 0u; half = half / 2u) {
        if (t < half) {
            partial[t] = partial[t] + partial[t + half];
        }
        workgroupBarrier();
    }
    let lambda = sqrt(partial[0]);
    var factor: f32 = 1.0;
    if (HAS_PREVIOUS) {
        factor = min(previous[0] * limit / max(lambda, 1e-30), 1.0);
    }
    for (var j: u32 = t; j < B; j = j + 256u) {
        psi[j] = phi(j) * factor;
    }
    if (t == 0u) {
        var kept_norm = lambda * factor;
        if (HAS_PREVIOUS && params[2] == 0.0) {
            kept_norm = previous[0];
        }
        norm[0] = kept_norm;
    }
}
