// Recovery scales and the norm-growth limiter (docs/algorithm.md §7), from the partial column
// sums of recovery_norms.wgsl (added up here), canonical left layout:
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
//   @binding(0) sums      partial sums of G², G̃², N² over row blocks, ({{g_blocks}} +
//                         2·{{r_blocks}})·b, laid out as recovery_norms_tiled.wgsl says
//                         (recovery_norms.wgsl: one block each, 3·b) (read)
//   @binding(1) psi       ψ, 1×b (φ first, then scaled)             (written)
//   @binding(2) norm      [Λ_prev']                                  (written)
//   @binding(3) params    the parameter buffer (read; layout in src/route/step_buffer.rs):
//                         2k − k², ζ in slots 6–7, the flag in 13 (1 = step, 0 = skip)
//   @binding(4) previous  [Λ_prev]                                   (read; bound only
//                         with {{has_previous}})
//
// Template values (part of the kernel id): {{b}}, {{has_previous}}, previous (the binding
// of Λ_prev, or without one an unbound private stand-in that is never read), {{g_blocks}},
// {{r_blocks}}. One workgroup of 256 invocations: each sums a strided share of the
// columns, then a tree reduction.

const B: u32 = {{b}}u;
const HAS_PREVIOUS: bool = {{has_previous}};
const G_BLOCKS: u32 = {{g_blocks}}u;
const R_BLOCKS: u32 = {{r_blocks}}u;

@group(0) @binding(0) var<storage, read_write> sums: array<f32>;
@group(0) @binding(1) var<storage, read_write> psi: array<f32>;
@group(0) @binding(2) var<storage, read_write> norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<f32>;
{{previous}}

var<workgroup> partial: array<f32, 256>;

// Σ of `count` partial sums of column j, from partial block `first` on.
fn column(first: u32, count: u32, j: u32) -> f32 {
    var total: f32 = 0.0;
    for (var p: u32 = 0u; p < count; p = p + 1u) {
        total = total + sums[(first + p) * B + j];
    }
    return total;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) t: u32) {
    let kept = params[6];
    let limit = params[7];
    var total: f32 = 0.0;
    for (var j: u32 = t; j < B; j = j + 256u) {
        let g_sq = column(0u, G_BLOCKS, j);
        let low_sq = column(G_BLOCKS, R_BLOCKS, j);
        let n_sq = column(G_BLOCKS + R_BLOCKS, R_BLOCKS, j);
        let p = sqrt(n_sq) / (sqrt(low_sq) + 1e-8);
        psi[j] = p;
        total = total + max(g_sq - kept * low_sq, 0.0) * p * p;
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
    // Each invocation scales the φ_j it wrote itself.
    for (var j: u32 = t; j < B; j = j + 256u) {
        psi[j] = psi[j] * factor;
    }
    if (t == 0u) {
        var kept_norm = lambda * factor;
        if (HAS_PREVIOUS && params[13] == 0.0) {
            kept_norm = previous[0];
        }
        norm[0] = kept_norm;
    }
}
