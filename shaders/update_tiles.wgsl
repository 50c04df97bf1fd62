// Helpers of update.wgsl and update_wide.wgsl (W ← d·(W − α·(S·L + G⊙ψ)), docs/algorithm.md §2
// and §7), appended to each by src/kernels/update.rs: the guarded elements of the low-rank
// factor L and the guarded finish of four elements of W'. They use the including shader's
// constants A, R, B, TRANSPOSED, its bindings normalized (N, r×b), weight (W), output (W')
// and, with recovery, grad, psi and g_low, and its recovery template lines; they declare
// nothing.

// L[k, j] = s·N[k, j] (− k_w·G̃[k, j]·ψ[j] with recovery), zero past the edges.
fn low_at(k: u32, j: u32, scale: f32, kept: f32) -> f32 {
    if (k >= R || j >= B) {
        return 0.0;
    }
    let at = k * B + j;
    var lv = scale * normalized[at];
{{recovery_low}}
    return lv;
}

// Finishes W'[i, j0 … j0 + 3] (in W's layout) from the four sums v of S·L, within the edges;
// where the step is skipped (`step` false) W' = W.
fn finish(i: u32, j0: u32, v: vec4<f32>, alpha: f32, decay: f32, step: bool) {
    if (i >= A) {
        return;
    }
    for (var q: u32 = 0u; q < 4u; q = q + 1u) {
        let j = j0 + q;
        if (j < B) {
            var at = i * B + j;
            if (TRANSPOSED) {
                at = j * A + i;
            }
            var u = v[q];
{{recovery_term}}
            if (step) {
                output[at] = decay * (weight[at] - alpha * u);
            } else {
                output[at] = weight[at];
            }
        }
    }
}
