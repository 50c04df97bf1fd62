// Projection (docs/algorithm.md §2, left case): G̃ = SᵀG, the r×b coordinates of a gradient
// G (a×b) in the orthonormal basis S (a×r). The right case runs on the transposed view
// (canonical layout, §1), so one kernel serves both.
//
// Bindings (all row-major f32; declared read_write because CubeCL sub-allocates tensors
// from shared buffers, see burn-0.22.md):
//   @binding(0) basis  S,  a×r   (read)
//   @binding(1) grad   G,  a×b   (read); with {{g_transposed}}, its transpose b×a (the
//                      right case's G = ∇Wᵀ, read in place)
//   @binding(2) output G̃, r×b   (written); with {{splits}} > 1, splits×r×b partial sums,
//                      slice z = S[rows of split z]ᵀ·G[rows of split z] (Σ_z is G̃)
//   @binding(3) flag   slot {{flag_at}}: set to 0 where G holds NaN or ±∞, else left as the
//                      caller filled it (1): the step flag, found without a pass of its
//                      own; either a [1] of its own or the last slot of the optimizer's
//                      parameter buffer (src/route/step_buffer.rs), whose other slots it keeps
//
// Template values (part of the kernel id): {{a}}, {{r}}, {{b}} the sizes, {{accumulate}}
// (true: add to G̃ instead of writing it, for the row chunks a tensor over one storage
// binding's size limit is split into: G̃ = Σ_c S_cᵀ·G_c), {{j_block}} (the first 64-column
// block of this launch: wider matrices take several launches of at most 65,535 workgroups
// across), {{splits}} and {{k_chunk}} (split-K: workgroup z of the third grid dimension
// takes rows z·k_chunk … of S and G and writes its own partial sum; 1 and a without it),
// {{g_transposed}} (true: grad holds Gᵀ row-major), {{flag_at}} (the flag's slot). A workgroup of
// 16×16 invocations computes a 64×64 block of G̃, each invocation a 4×4 block held in
// registers; the shared dimension a is walked 16 rows at a time through workgroup memory.
// Every index is guarded: the shader is compiled without bounds checks. The guarded loads,
// the non-finite test and the store are project_tiles.wgsl's, appended to this file by
// src/kernels/project.rs.

const A: u32 = {{a}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const ACCUMULATE: bool = {{accumulate}};
const J_BLOCK: u32 = {{j_block}}u;   // first 64-column block of this launch
const SPLITS: u32 = {{splits}}u;     // partial sums over row ranges of S and G (split-K)
const K_CHUNK: u32 = {{k_chunk}}u;   // rows per split, a multiple of BK
const G_TRANSPOSED: bool = {{g_transposed}};   // grad holds Gᵀ (b×a) row-major
const FLAG_AT: u32 = {{flag_at}}u;   // the step flag's slot in binding 3
const BK: u32 = 16u;   // rows of S and G per step
const BM: u32 = 64u;   // rows of G̃ (columns of S) per workgroup
const BN: u32 = 64u;   // columns of G̃ per workgroup

@group(0) @binding(0) var<storage, read_write> basis: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<storage, read_write> flag: array<f32>;

// s_tile[kk·16 + c] = S[k0 + kk, i0 + 4c … 4c + 3];  g_tile[kk·16 + c] = G[k0 + kk, j0 + 4c … 4c + 3]
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
    // Each invocation stages one vec4 of each tile: row kk = t / 16, columns 4·(t % 16)….
    // From a stored Gᵀ it reads along the stored rows instead, so that neighbours read
    // neighbouring addresses: column j0 + t / 4 of G, rows k0 + 4·(t % 4) … + 3.
    let kk_load = t / 16u;
    let c_load = (t % 16u) * 4u;
    let j_load_t = t / 4u;
    let kk_load_t = (t % 4u) * 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var bad = false;
    for (var k0: u32 = k_start; k0 < k_end; k0 = k0 + BK) {
        s_tile[t] = load_s(k0 + kk_load, i0 + c_load);
        if (G_TRANSPOSED) {
            let g = load_g_transposed(k0 + kk_load_t, j0 + j_load_t);
            bad = bad || non_finite(g);
            for (var q: u32 = 0u; q < 4u; q = q + 1u) {
                g_tile[(kk_load_t + q) * 16u + j_load_t / 4u][j_load_t % 4u] = g[q];
            }
        } else {
            let g = load_g(k0 + kk_load, j0 + c_load);
            bad = bad || non_finite(g);
            g_tile[t] = g;
        }
        workgroupBarrier();
        for (var kk: u32 = 0u; kk < BK; kk = kk + 1u) {
            let s4 = s_tile[kk * 16u + lid.y];
            let g4 = g_tile[kk * 16u + lid.x];
            acc0 = acc0 + s4.x * g4;
            acc1 = acc1 + s4.y * g4;
            acc2 = acc2 + s4.z * g4;
            acc3 = acc3 + s4.w * g4;
        }
        workgroupBarrier();
    }
    if (bad) {
        flag[FLAG_AT] = 0.0;
    }
    let i = i0 + lid.y * 4u;
    let j = j0 + lid.x * 4u;
    store(out0, i, j, acc0);
    store(out0, i + 1u, j, acc1);
    store(out0, i + 2u, j, acc2);
    store(out0, i + 3u, j, acc3);
}
