// Back-projection fused with the weight update (docs/algorithm.md §2 and §7, recovery folded in),
// by 128×128 blocks:
//
//     W ← d·(W − α·(S·L + G⊙ψ)),   L = s·N − k·(G̃⊙ψ)      α = lr·c (bias correction c),
//                                                         d = 1 − lr·wd
//
// The same product, bindings, template values and recovery lines as update.wgsl; only the
// tiling differs, as project_wide.wgsl's does from project.wgsl's. Which of the two runs is
// CubeCL's autotuner's choice per shape (src/kernels/tune.rs), unless pinned.
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
// Template values (part of the kernel id): {{a}}, {{r}}, {{b}}, {{transposed}},
// {{j_block}} (the first 128-column block of this launch), and the recovery lines. A
// workgroup of 16×16 invocations finishes a 128×128 block of W'. Invocation (x, y) holds
// rows 4y … 4y + 3 and 64 + 4y … 64 + 4y + 3 of it and columns 4x … 4x + 3 and 64 + 4x …
// 64 + 4x + 3, an 8×8 block in registers; the rank r is walked 8 at a time through
// workgroup memory. Every index is guarded. The elements of L and the finish of W' are
// update_tiles.wgsl's, appended to this file by src/kernels/update.rs.

const A: u32 = {{a}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const TRANSPOSED: bool = {{transposed}};
const J_BLOCK: u32 = {{j_block}}u;   // first 128-column block of this launch
const BK: u32 = 8u;     // columns of S / rows of L per step
const BM: u32 = 128u;   // rows of the update per workgroup
const BN: u32 = 128u;   // columns of the update per workgroup

@group(0) @binding(0) var<storage, read_write> basis: array<f32>;
@group(0) @binding(1) var<storage, read_write> normalized: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
@group(0) @binding(4) var<storage, read_write> scalars: array<f32>;
{{recovery_bindings}}

// s_tile[kk·32 + c] = S[i0 + 4c … 4c + 3, k0 + kk] (staged transposed);
// l_tile[kk·32 + c] = L[k0 + kk, j0 + 4c … 4c + 3]
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
    // Staging: S row i0 + t/2, columns k0 + 4·(t%2) … +3; L row k0 + t/32, columns
    // j0 + 4·(t%32) … +3.
    let s_row = t / 2u;
    let s_col = (t % 2u) * 4u;
    let l_row = t / 32u;
    let l_col = (t % 32u) * 4u;
    // c_qh: row q of the invocation's eight (0–3: 4y + q, 4–7: 64 + 4y + q − 4), column
    // half h (0: 4x …, 1: 64 + 4x …).
    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);
    for (var k0: u32 = 0u; k0 < R; k0 = k0 + BK) {
        let i = i0 + s_row;
        for (var q: u32 = 0u; q < 4u; q = q + 1u) {
            let k = k0 + s_col + q;
            var sv: f32 = 0.0;
            if (i < A && k < R) {
                sv = basis[i * R + k];
            }
            s_tile[(s_col + q) * 32u + s_row / 4u][s_row % 4u] = sv;
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
            let s_lo = s_tile[kk * 32u + lid.y];
            let s_hi = s_tile[kk * 32u + 16u + lid.y];
            let l_lo = l_tile[kk * 32u + lid.x];
            let l_hi = l_tile[kk * 32u + 16u + lid.x];
            c00 = c00 + s_lo.x * l_lo;
            c01 = c01 + s_lo.x * l_hi;
            c10 = c10 + s_lo.y * l_lo;
            c11 = c11 + s_lo.y * l_hi;
            c20 = c20 + s_lo.z * l_lo;
            c21 = c21 + s_lo.z * l_hi;
            c30 = c30 + s_lo.w * l_lo;
            c31 = c31 + s_lo.w * l_hi;
            c40 = c40 + s_hi.x * l_lo;
            c41 = c41 + s_hi.x * l_hi;
            c50 = c50 + s_hi.y * l_lo;
            c51 = c51 + s_hi.y * l_hi;
            c60 = c60 + s_hi.z * l_lo;
            c61 = c61 + s_hi.z * l_hi;
            c70 = c70 + s_hi.w * l_lo;
            c71 = c71 + s_hi.w * l_hi;
        }
        workgroupBarrier();
    }
    let lo = i0 + lid.y * 4u;
    let hi = lo + 64u;
    let j_lo = j0 + lid.x * 4u;
    let j_hi = j_lo + 64u;
    finish(lo, j_lo, c00, alpha, decay, step);
    finish(lo, j_hi, c01, alpha, decay, step);
    finish(lo + 1u, j_lo, c10, alpha, decay, step);
    finish(lo + 1u, j_hi, c11, alpha, decay, step);
    finish(lo + 2u, j_lo, c20, alpha, decay, step);
    finish(lo + 2u, j_hi, c21, alpha, decay, step);
    finish(lo + 3u, j_lo, c30, alpha, decay, step);
    finish(lo + 3u, j_hi, c31, alpha, decay, step);
    finish(hi, j_lo, c40, alpha, decay, step);
    finish(hi, j_hi, c41, alpha, decay, step);
    finish(hi + 1u, j_lo, c50, alpha, decay, step);
    finish(hi + 1u, j_hi, c51, alpha, decay, step);
    finish(hi + 2u, j_lo, c60, alpha, decay, step);
    finish(hi + 2u, j_hi, c61, alpha, decay, step);
    finish(hi + 3u, j_lo, c70, alpha, decay, step);
    finish(hi + 3u, j_hi, c71, alpha, decay, step);
}
