// Low-rank Adam (docs/algorithm.md §2) fused with recovery scaling's column norms and
// scales (§7), for steps whose basis did not move, canonical left layout. For each column j:
//
//     M'[:, j] = β1·M + (1−β1)·G̃,   V'[:, j] = β2·V + (1−β2)·G̃⊙G̃,   N = M' ⊘ (sqrt(V') + ε)
//     φ_j = ‖N[:, j]‖ / (‖G̃[:, j]‖ + 1e-8)
//     c_j = max(‖G[:, j]‖² − (2k − k²)·‖G̃[:, j]‖², 0)·φ_j²        (‖Λ[:, j]‖², Λ unformed)
//
// and each workgroup's Σ_j c_j over its columns, from which update.wgsl's limited variant
// forms ‖Λ‖, the norm-growth limiter f and ψ_j = f·φ_j in the same launch as the update.
// Where the step is skipped (flag = 0) M and V are written back unchanged, N = 0, φ = 0.
//
// Bindings (row-major f32, read_write because CubeCL sub-allocates tensors from shared
// buffers):
//   @binding(0) grad      G, a×b (read); with {{g_transposed}}, Gᵀ b×a (the right case's
//                         G = ∇Wᵀ, read in place)
//   @binding(1) moment_1  M, r×b                              (read)
//   @binding(2) moment_2  V, r×b                              (read)
//   @binding(3) g_low     G̃, r×b                              (read)
//   @binding(4) out_m     M', r×b                             (written)
//   @binding(5) out_v     V', r×b                             (written)
//   @binding(6) out_n     N, r×b                              (written)
//   @binding(7) params    the parameter buffer (read; src/route/step_buffer.rs): β1, 1−β1, β2, 1−β2,
//                         ε in slots 0–4, 2k − k² in 6, the flag in 13
//   @binding(8) scratch   φ_j at {{phi_at}} + j, the workgroups' Σ c_j at {{phi_at}} + b
//                         + workgroup (written)
//
// Nine storage bindings: past WebGPU's default of eight, so the route takes this kernel (and
// the limited update, ten) only where the adapter offers that many (src/kernels/fit.rs), and
// the unfused kernels elsewhere.
//
// Template values (part of the kernel id): {{a}}, {{r}}, {{b}}, {{g_transposed}},
// {{phi_at}}. One invocation per column (neighbouring invocations read neighbouring
// addresses, except in a stored Gᵀ), 256 columns per workgroup, then a tree reduction.

const A: u32 = {{a}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const G_TRANSPOSED: bool = {{g_transposed}};
const PHI_AT: u32 = {{phi_at}}u;

@group(0) @binding(0) var<storage, read_write> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> moment_1: array<f32>;
@group(0) @binding(2) var<storage, read_write> moment_2: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_low: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_m: array<f32>;
@group(0) @binding(5) var<storage, read_write> out_v: array<f32>;
@group(0) @binding(6) var<storage, read_write> out_n: array<f32>;
@group(0) @binding(7) var<storage, read_write> params: array<f32>;
@group(0) @binding(8) var<storage, read_write> scratch: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let j = gid.x;
    let beta_1 = params[0];
    let one_minus_beta_1 = params[1];
    let beta_2 = params[2];
    let one_minus_beta_2 = params[3];
    let epsilon = params[4];
    let kept = params[6];
    let step = params[13] != 0.0;
    var contribution: f32 = 0.0;
    if (j < B) {
        var g_sq: f32 = 0.0;
        for (var k: u32 = 0u; k < A; k = k + 1u) {
            var at = k * B + j;
            if (G_TRANSPOSED) {
                at = j * A + k;
            }
            let x = grad[at];
            g_sq = g_sq + x * x;
        }
        var low_sq: f32 = 0.0;
        var n_sq: f32 = 0.0;
        for (var i: u32 = 0u; i < R; i = i + 1u) {
            let at = i * B + j;
            let m = moment_1[at];
            let v = moment_2[at];
            if (!step) {
                out_m[at] = m;
                out_v[at] = v;
                out_n[at] = 0.0;
                continue;
            }
            let g = g_low[at];
            let m_new = m * beta_1 + g * one_minus_beta_1;
            let v_new = v * beta_2 + g * g * one_minus_beta_2;
            let n = m_new / (sqrt(v_new) + epsilon);
            out_m[at] = m_new;
            out_v[at] = v_new;
            out_n[at] = n;
            low_sq = low_sq + g * g;
            n_sq = n_sq + n * n;
        }
        let phi = sqrt(n_sq) / (sqrt(low_sq) + 1e-8);
        scratch[PHI_AT + j] = phi;
        // As recovery_limit.wgsl: on a skipped step φ = 0, and the norm kept is Λ_prev.
        contribution = max(g_sq - kept * low_sq, 0.0) * phi * phi;
    }
    partial[t] = contribution;
    workgroupBarrier();
    for (var half: u32 = 128u; half > 0u; half = half / 2u) {
        if (t < half) {
            partial[t] = partial[t] + partial[t + half];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        scratch[PHI_AT + B + wid.x] = partial[0];
    }
}
