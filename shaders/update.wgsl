// Back-projection fused with the weight update (docs/algorithm.md §2 and §7, recovery folded in):
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
//   @binding(4) scalars     the parameter buffer (read; layout in src/route/step_buffer.rs):
//                           α, d, s, k in slots 8–11, the flag in slot 13 (1 = step,
//                           0 = skip)
//   @binding(5) grad        G in W's layout: a×b, or b×a    (read; only with recovery)
//                           if transposed (∇W itself)
//   @binding(6) psi         ψ, 1×b                          (read; only with recovery)
//   @binding(7) g_low       G̃, r×b                          (read; only with recovery)
//
// The limited variant (recovery scaling fused into the update, after adam_recovery.wgsl):
// binding 6 is that kernel's scratch (φ, and its workgroups' Σ c_j) instead of ψ, and
//   @binding(8) norm        [Λ_prev']                       (written by one invocation)
//   @binding(9) previous    [Λ_prev]                        (read; only with a previous norm)
// Each workgroup's prologue adds the partial sums, ‖Λ‖ = sqrt(Σ c_j), forms the limiter
// f = min(1, ζ·Λ_prev/‖Λ‖) (1 without Λ_prev) and reads ψ_j = f·φ_j as it goes; workgroup
// (0, 0) writes Λ_prev' = f·‖Λ‖ (Λ_prev where the step is skipped).
//
// Template values (part of the kernel id): {{a}}, {{r}}, {{b}}, {{transposed}} (true: W is
// stored b×a, the right case of §1), {{j_block}} (the first 64-column block of this launch:
// wider matrices take several launches of at most 65,535 workgroups across), and the
// recovery lines. A workgroup of 16×16
// invocations finishes a 64×64 block of W', each invocation a 4×4 block held in registers;
// the rank r is walked 16 at a time through workgroup memory. Every index is guarded. The
// elements of L and the finish of W' are update_tiles.wgsl's, appended to this file by
// src/kernels/update.rs.

const A: u32 = {{a}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const TRANSPOSED: bool = {{transposed}};
const J_BLOCK: u32 = {{j_block}}u;   // first 64-column block of this launch
const BK: u32 = 16u;   // columns of S / rows of L per step
const BM: u32 = 64u;   // rows of the update per workgroup
const BN: u32 = 64u;   // columns of the update per workgroup

@group(0) @binding(0) var<storage, read_write> basis: array<f32>;
@group(0) @binding(1) var<storage, read_write> normalized: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
@group(0) @binding(4) var<storage, read_write> scalars: array<f32>;
{{recovery_bindings}}

// s_tile[kk·16 + c] = S[i0 + 4c … 4c + 3, k0 + kk] (staged transposed);
// l_tile[kk·16 + c] = L[k0 + kk, j0 + 4c … 4c + 3]
var<workgroup> s_tile: array<vec4<f32>, 256>;
var<workgroup> l_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i0 = wid.y * BM;
    let j0 = (wid.x + J_BLOCK) * BN;
    let t = lid.y * 16u + lid.x;
    // The parameter buffer's slots (src/route/step_buffer.rs): α, d, s, k at 8–11, flag at 13.
    let alpha = scalars[8];
    let decay = scalars[9];
    let scale = scalars[10];
    let kept = scalars[11];
    let step = scalars[13] != 0.0;
{{recovery_prologue}}
    // Staging: S row i0 + t/4, columns k0 + 4·(t%4) … +3; L row k0 + t/16, columns
    // j0 + 4·(t%16) … +3.
    let s_row = t / 4u;
    let s_col = (t % 4u) * 4u;
    let l_row = t / 16u;
    let l_col = (t % 16u) * 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0: u32 = 0u; k0 < R; k0 = k0 + BK) {
        let i = i0 + s_row;
        for (var q: u32 = 0u; q < 4u; q = q + 1u) {
            let k = k0 + s_col + q;
            var sv: f32 = 0.0;
            if (i < A && k < R) {
                sv = basis[i * R + k];
            }
            s_tile[(s_col + q) * 16u + s_row / 4u][s_row % 4u] = sv;
        }
        let k = k0 + l_row;
        let j = j0 + l_col;
        l_tile[t] = vec4<f32>(
            low_at(k, j, scale, kept),
            low_at(k, j + 1u, scale, kept),
            low_at(k, j + 2u, scale, kept),
            low_at(k, j + 3u, scale, kept),
        );
        workgroupBarrier();
        for (var kk: u32 = 0u; kk < BK; kk = kk + 1u) {
            let s4 = s_tile[kk * 16u + lid.y];
            let l4 = l_tile[kk * 16u + lid.x];
            acc0 = acc0 + s4.x * l4;
            acc1 = acc1 + s4.y * l4;
            acc2 = acc2 + s4.z * l4;
            acc3 = acc3 + s4.w * l4;
        }
        workgroupBarrier();
    }
    let i = i0 + lid.y * 4u;
    let j = j0 + lid.x * 4u;
    finish(i, j, acc0, alpha, decay, step);
    finish(i + 1u, j, acc1, alpha, decay, step);
    finish(i + 2u, j, acc2, alpha, decay, step);
    finish(i + 3u, j, acc3, alpha, decay, step);
}
