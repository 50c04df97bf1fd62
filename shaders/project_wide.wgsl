// Projection (docs/algorithm.md §2, left case) with 128×128 output tiles: G̃ = SᵀG, the r×b
// coordinates of a gradient G (a×b) in the orthonormal basis S (a×r). The same product,
// bindings and template values as project.wgsl; only the tiling differs. Meant for large
// products (the 350m and 1b shapes), where project.wgsl's 4×4 block per invocation does two
// workgroup-memory reads per four multiply-adds; here an invocation holds an 8×8 block, four
// reads per sixteen. Which of the two runs is CubeCL's autotuner's choice per shape, timed on
// the device (src/kernels/tune.rs), unless `kernels::set_projection_tile` pins one.
//
// Bindings (all row-major f32; declared read_write because CubeCL sub-allocates tensors
// from shared buffers, see burn-0.22.md):
//   @binding(0) basis  S,  a×r   (read)
//   @binding(1) grad   G,  a×b   (read); with {{g_transposed}}, its transpose b×a (the
//                      right case's G = ∇Wᵀ, read in place)
//   @binding(2) output G̃, r×b   (written); with {{splits}} > 1, splits×r×b partial sums,
//                      slice z = S[rows of split z]ᵀ·G[rows of split z] (Σ_z is G̃)
//   @binding(3) flag   slot {{flag_at}}: set to 0 where G holds NaN or ±∞, else left as the
//                      caller filled it (1): the step flag (as in project.wgsl)
//
// Template values (part of the kernel id): {{a}}, {{r}}, {{b}} the sizes, {{accumulate}}
// (true: add to G̃ instead of writing it, for row chunks past a binding's size limit),
// {{j_block}} (the first 128-column block of this launch), {{splits}} and {{k_chunk}}
// (split-K along the grid's third dimension; k_chunk is a multiple of BK), {{g_transposed}},
// {{flag_at}}.
// A workgroup of 16×16 invocations computes a 128×128 block of G̃. Invocation (x, y) holds
// rows 4y … 4y + 3 and 64 + 4y … 64 + 4y + 3 of it, and columns 4x … 4x + 3 and 64 + 4x …
// 64 + 4x + 3, so that the vec4 reads of workgroup memory are broadcasts (S) or consecutive
// (G). The shared dimension a is walked 8 rows at a time. Every index is guarded: the shader
// is compiled without bounds checks. The guarded loads, the non-finite test and the store are
// project_tiles.wgsl's, appended to this file by src/kernels/project.rs.

const A: u32 = {{a}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const ACCUMULATE: bool = {{accumulate}};
const J_BLOCK: u32 = {{j_block}}u;   // first 128-column block of this launch
const SPLITS: u32 = {{splits}}u;     // partial sums over row ranges of S and G (split-K)
const K_CHUNK: u32 = {{k_chunk}}u;   // rows per split, a multiple of BK
const G_TRANSPOSED: bool = {{g_transposed}};   // grad holds Gᵀ (b×a) row-major
const FLAG_AT: u32 = {{flag_at}}u;   // the step flag's slot in binding 3
const BK: u32 = 8u;     // rows of S and G per step
const BM: u32 = 128u;   // rows of G̃ (columns of S) per workgroup
const BN: u32 = 128u;   // columns of G̃ per workgroup

@group(0) @binding(0) var<storage, read_write> basis: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<storage, read_write> flag: array<f32>;

// s_tile[kk·32 + c] = S[k0 + kk, i0 + 4c … 4c + 3];  g_tile[kk·32 + c] = G[k0 + kk, j0 + 4c … 4c + 3]
var<workgroup> s_tile: array<vec4<f32>, 256>;
var<workgroup> g_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i0 = wid.y * BM;
    let j0 = (wid.x + J_BLOCK) * BN;
    let k_start = wid.z * K_CHUNK;
    let k_end = min(A, k_start + K_CHUNK);
    let out0 = wid.z * R * B;   // this split's slice of the output
    let t = lid.y * 16u + lid.x;
    // Each invocation stages one vec4 of each tile: row kk = t / 32, columns 4·(t % 32)….
    // From a stored Gᵀ it reads along the stored rows instead, so that neighbours read
    // neighbouring addresses: column j0 + t / 2 of G, rows k0 + 4·(t % 2) … + 3.
    let kk_load = t / 32u;
    let c_load = (t % 32u) * 4u;
    let j_load_t = t / 2u;
    let kk_load_t = (t % 2u) * 4u;
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
    var bad = false;
    for (var k0: u32 = k_start; k0 < k_end; k0 = k0 + BK) {
        s_tile[t] = load_s(k0 + kk_load, i0 + c_load);
        if (G_TRANSPOSED) {
            let g = load_g_transposed(k0 + kk_load_t, j0 + j_load_t);
            bad = bad || non_finite(g);
            for (var q: u32 = 0u; q < 4u; q = q + 1u) {
                g_tile[(kk_load_t + q) * 32u + j_load_t / 4u][j_load_t % 4u] = g[q];
            }
        } else {
            let g = load_g(k0 + kk_load, j0 + c_load);
            bad = bad || non_finite(g);
            g_tile[t] = g;
        }
        workgroupBarrier();
        for (var kk: u32 = 0u; kk < BK; kk = kk + 1u) {
            let s_lo = s_tile[kk * 32u + lid.y];
            let s_hi = s_tile[kk * 32u + 16u + lid.y];
            let g_lo = g_tile[kk * 32u + lid.x];
            let g_hi = g_tile[kk * 32u + 16u + lid.x];
            c00 = c00 + s_lo.x * g_lo;
            c01 = c01 + s_lo.x * g_hi;
            c10 = c10 + s_lo.y * g_lo;
            c11 = c11 + s_lo.y * g_hi;
            c20 = c20 + s_lo.z * g_lo;
            c21 = c21 + s_lo.z * g_hi;
            c30 = c30 + s_lo.w * g_lo;
            c31 = c31 + s_lo.w * g_hi;
            c40 = c40 + s_hi.x * g_lo;
            c41 = c41 + s_hi.x * g_hi;
            c50 = c50 + s_hi.y * g_lo;
            c51 = c51 + s_hi.y * g_hi;
            c60 = c60 + s_hi.z * g_lo;
            c61 = c61 + s_hi.z * g_hi;
            c70 = c70 + s_hi.w * g_lo;
            c71 = c71 + s_hi.w * g_hi;
        }
        workgroupBarrier();
    }
    if (bad) {
        flag[FLAG_AT] = 0.0;
    }
    let lo = i0 + lid.y * 4u;
    let hi = lo + 64u;
    let j_lo = j0 + lid.x * 4u;
    let j_hi = j_lo + 64u;
    store(out0, lo, j_lo, c00);
    store(out0, lo, j_hi, c01);
    store(out0, lo + 1u, j_lo, c10);
    store(out0, lo + 1u, j_hi, c11);
    store(out0, lo + 2u, j_lo, c20);
    store(out0, lo + 2u, j_hi, c21);
    store(out0, lo + 3u, j_lo, c30);
    store(out0, lo + 3u, j_hi, c31);
    store(out0, hi, j_lo, c40);
    store(out0, hi, j_hi, c41);
    store(out0, hi + 1u, j_lo, c50);
    store(out0, hi + 1u, j_hi, c51);
    store(out0, hi + 2u, j_lo, c60);
    store(out0, hi + 2u, j_hi, c61);
    store(out0, hi + 3u, j_lo, c70);
    store(out0, hi + 3u, j_hi, c71);
}
