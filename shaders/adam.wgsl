// Low-rank Adam in the subspace (docs/algorithm.md §2), with the projection-aware rotation of
// the moments (§5) on steps where the basis changed:
//
//     rotation (when {{rotate}} and moved):  M ← C·M,   V ← v_scale·|(C⊙C)·(V − M⊙M) + (C·M)⊙(C·M)|
//     M' = β1·M + (1−β1)·G̃
//     V' = β2·V + (1−β2)·G̃⊙G̃
//     N  = M' ⊘ (sqrt(V') + ε)
//
// C = S_newᵀ·S_old is r×r; v_scale is 1 (paper) or 1 − β2 (the authors' code). The bias
// correction c multiplies N later, in the weight update (α = lr·c, update.wgsl). Where the
// step is skipped (flag = 0: the gradient held NaN or ±∞) M and V are written back
// unchanged and N is 0.
//
// Bindings (row-major f32, read_write because CubeCL sub-allocates tensors from shared
// buffers):
//   @binding(0) moment_1  M, r×b                     (read)
//   @binding(1) moment_2  V, r×b                     (read)
//   @binding(2) g_low     G̃, r×b                     (read)
//   @binding(3) out_m     M', r×b                    (written)
//   @binding(4) out_v     V', r×b                    (written)
//   @binding(5) out_n     N, r×b                     (written)
//   @binding(6) params    the parameter buffer (read; layout in src/route/step_buffer.rs):
//                         β1, 1−β1, β2, 1−β2, ε, v_scale in slots 0–5, moved in 12 (1 =
//                         the basis changed: rotate), the flag in 13 (1 = step, 0 = skip)
//   @binding(7) change    C, r×r                     (read; bound only with {{rotate}})
//
// Eight storage bindings with the rotation (WebGPU's default per-stage limit), seven
// without, where the change template value declares an unbound private stand-in for C that
// is never read.
//
// Template values (part of the kernel id): {{r}}, {{b}}, {{rotate}}, change (the
// declaration of C), {{j_block}} (the first 64-column block of this launch: wider matrices
// take several launches of at most 65,535 workgroups across). A workgroup of 16×16
// invocations finishes a 64×64 block, each invocation a 4×4 block in registers; with
// rotation the two products C·M and (C⊙C)·(V − M⊙M) share one walk over r, 16 at a time
// through workgroup memory. Every index is guarded.

const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const ROTATE: bool = {{rotate}};
const J_BLOCK: u32 = {{j_block}}u;   // first 64-column block of this launch
const BK: u32 = 16u;
const BM: u32 = 64u;
const BN: u32 = 64u;

@group(0) @binding(0) var<storage, read_write> moment_1: array<f32>;
@group(0) @binding(1) var<storage, read_write> moment_2: array<f32>;
@group(0) @binding(2) var<storage, read_write> g_low: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_v: array<f32>;
@group(0) @binding(5) var<storage, read_write> out_n: array<f32>;
@group(0) @binding(6) var<storage, read_write> params: array<f32>;
{{change}}

// c_tile[kk·16 + c] = C[i0 + 4c … 4c + 3, k0 + kk] (staged transposed); m_tile / d_tile
// [kk·16 + c] = M or V − M⊙M at [k0 + kk, j0 + 4c … 4c + 3].
var<workgroup> c_tile: array<vec4<f32>, 256>;
var<workgroup> m_tile: array<vec4<f32>, 256>;
var<workgroup> d_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i0 = wid.y * BM;
    let j0 = (wid.x + J_BLOCK) * BN;
    let t = lid.y * 16u + lid.x;
    var acc_m = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var acc_v = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    if (ROTATE) {
        // Staging: C row i0 + t/4, columns k0 + 4·(t%4) … +3; M and V row k0 + t/16,
        // columns j0 + 4·(t%16) … +3.
        let c_row = t / 4u;
        let c_col = (t % 4u) * 4u;
        let m_row = t / 16u;
        let m_col = (t % 16u) * 4u;
        for (var k0: u32 = 0u; k0 < R; k0 = k0 + BK) {
            for (var q: u32 = 0u; q < 4u; q = q + 1u) {
                let k = k0 + c_col + q;
                var cv: f32 = 0.0;
                if (i0 + c_row < R && k < R) {
                    cv = change_of_basis[(i0 + c_row) * R + k];
                }
                c_tile[(c_col + q) * 16u + c_row / 4u][c_row % 4u] = cv;
            }
            var m4 = vec4<f32>(0.0);
            var d4 = vec4<f32>(0.0);
            for (var q: u32 = 0u; q < 4u; q = q + 1u) {
                if (k0 + m_row < R && j0 + m_col + q < B) {
                    let at = (k0 + m_row) * B + j0 + m_col + q;
                    let mv = moment_1[at];
                    m4[q] = mv;
                    d4[q] = moment_2[at] - mv * mv;
                }
            }
            m_tile[t] = m4;
            d_tile[t] = d4;
            workgroupBarrier();
            for (var kk: u32 = 0u; kk < BK; kk = kk + 1u) {
                let c4 = c_tile[kk * 16u + lid.y];
                let cc4 = c4 * c4;
                let mt = m_tile[kk * 16u + lid.x];
                let dt = d_tile[kk * 16u + lid.x];
                acc_m[0] = acc_m[0] + c4.x * mt;
                acc_m[1] = acc_m[1] + c4.y * mt;
                acc_m[2] = acc_m[2] + c4.z * mt;
                acc_m[3] = acc_m[3] + c4.w * mt;
                acc_v[0] = acc_v[0] + cc4.x * dt;
                acc_v[1] = acc_v[1] + cc4.y * dt;
                acc_v[2] = acc_v[2] + cc4.z * dt;
                acc_v[3] = acc_v[3] + cc4.w * dt;
            }
            workgroupBarrier();
        }
    }
    let beta_1 = params[0];
    let one_minus_beta_1 = params[1];
    let beta_2 = params[2];
    let one_minus_beta_2 = params[3];
    let epsilon = params[4];
    let v_scale = params[5];
    let rotate = ROTATE && params[12] != 0.0;
    let step = params[13] != 0.0;
    for (var ii: u32 = 0u; ii < 4u; ii = ii + 1u) {
        let i = i0 + lid.y * 4u + ii;
        for (var jj: u32 = 0u; jj < 4u; jj = jj + 1u) {
            let j = j0 + lid.x * 4u + jj;
            if (i < R && j < B) {
                let at = i * B + j;
                var m = moment_1[at];
                var v = moment_2[at];
                if (!step) {
                    out_m[at] = m;
                    out_v[at] = v;
                    out_n[at] = 0.0;
                    continue;
                }
                if (rotate) {
                    m = acc_m[ii][jj];
                    v = abs(acc_v[ii][jj] + m * m) * v_scale;
                }
                let g = g_low[at];
                let m_new = m * beta_1 + g * one_minus_beta_1;
                let v_new = v * beta_2 + g * g * one_minus_beta_2;
                out_m[at] = m_new;
                out_v[at] = v_new;
                out_n[at] = m_new / (sqrt(v_new) + epsilon);
            }
        }
    }
}
