// Column norms for recovery scaling (docs/algorithm.md §7), canonical left layout, as partial
// sums over 64-row blocks:
//
//     sums[p·B + j]                = Σ_{i in row block p} G[i, j]²      p < {{g_blocks}}
//     sums[({{g_blocks}} + p)·B + j] = Σ_{i in row block p} G̃[i, j]²     p < ⌈r/64⌉
//     sums[({{g_blocks}} + ⌈r/64⌉ + p)·B + j] = Σ_{i in row block p} N[i, j]²
//
// from which recovery_limit.wgsl adds up ‖G[:, j]‖², ‖G̃[:, j]‖² and ‖N[:, j]‖² and forms
// φ_j = ‖N[:, j]‖ / (‖G̃[:, j]‖ + 1e-8), the residual norms
// ‖g_j − k·S·g̃_j‖² = ‖g_j‖² − (2k − k²)·‖g̃_j‖² and the limiter.
//
// Bindings (row-major f32, read_write because CubeCL sub-allocates tensors from shared
// buffers):
//   @binding(0) grad        G, rows {{rows}} of this chunk × b    (read); with
//                           {{g_transposed}}, all of Gᵀ, b×a (the right case's
//                           G = ∇Wᵀ, read in place)
//   @binding(1) g_low       G̃, r×b                               (read)
//   @binding(2) normalized  N, r×b                               (read)
//   @binding(3) sums        the partial sums above               (written; each launch
//                           writes its chunk's G blocks, from block {{block0}}, and the
//                           first also the G̃ and N blocks)
//
// Template values (part of the kernel id): {{rows}}, {{r}}, {{b}}, {{g_transposed}},
// {{block0}}, {{g_blocks}} (⌈a/64⌉ over all chunks). Grid: ⌈b/64⌉ column blocks × (this
// chunk's ⌈rows/64⌉ row blocks of G, then, in the first chunk's launch only, ⌈r/64⌉ of G̃
// and ⌈r/64⌉ of N). A workgroup of 256 invocations sums a 64×64 tile: each invocation 4 rows
// of 4 columns, neighbours reading neighbouring addresses (along the stored rows, so
// across columns in row-major G and down the columns in a stored Gᵀ), then a reduction of
// each column's 16 lanes in workgroup memory.

const ROWS: u32 = {{rows}}u;
const R: u32 = {{r}}u;
const B: u32 = {{b}}u;
const G_TRANSPOSED: bool = {{g_transposed}};   // grad holds Gᵀ (b×a) row-major
const BLOCK0: u32 = {{block0}}u;               // this chunk's first row block of G
const G_BLOCKS: u32 = {{g_blocks}}u;           // row blocks of G over all chunks
const TILE: u32 = 64u;
const R_BLOCKS: u32 = (R + TILE - 1u) / TILE;
const CHUNK_BLOCKS: u32 = (ROWS + TILE - 1u) / TILE;

@group(0) @binding(0) var<storage, read_write> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> g_low: array<f32>;
@group(0) @binding(2) var<storage, read_write> normalized: array<f32>;
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;

// lanes[c·16 + lane]: column c of the tile, one of the 16 invocations that summed it.
var<workgroup> lanes: array<f32, 1024>;

// Element (i, j) of the matrix that row block `which` belongs to (0: G, 1: G̃, 2: N), zero
// past its edges.
fn element(which: u32, i: u32, j: u32) -> f32 {
    if (j >= B) {
        return 0.0;
    }
    if (which == 0u) {
        if (i >= ROWS) {
            return 0.0;
        }
        if (G_TRANSPOSED) {
            return grad[j * ROWS + i];
        }
        return grad[i * B + j];
    }
    if (i >= R) {
        return 0.0;
    }
    if (which == 1u) {
        return g_low[i * B + j];
    }
    return normalized[i * B + j];
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Which matrix this row block belongs to, its block within that matrix, and the block's
    // slot in `sums`.
    var which = 0u;
    var block = wid.y;
    var slot = BLOCK0 + wid.y;
    if (wid.y >= CHUNK_BLOCKS) {
        let k = wid.y - CHUNK_BLOCKS;
        which = 1u + k / R_BLOCKS;
        block = k % R_BLOCKS;
        slot = G_BLOCKS + k;
    }
    let i0 = block * TILE;
    let j0 = wid.x * TILE;
    let fast = t % 16u;
    let slow = t / 16u;
    // Along the stored rows: across columns (row-major), or down a column (stored Gᵀ).
    let down = which == 0u && G_TRANSPOSED;
    var acc = vec4<f32>(0.0);
    for (var c: u32 = 0u; c < 4u; c = c + 1u) {
        var total: f32 = 0.0;
        for (var q: u32 = 0u; q < 4u; q = q + 1u) {
            var i = i0 + slow + 16u * q;
            var j = j0 + fast + 16u * c;
            if (down) {
                i = i0 + fast + 16u * q;
                j = j0 + slow + 16u * c;
            }
            let x = element(which, i, j);
            total = total + x * x;
        }
        acc[c] = total;
    }
    for (var c: u32 = 0u; c < 4u; c = c + 1u) {
        if (down) {
            lanes[(slow + 16u * c) * 16u + fast] = acc[c];
        } else {
            lanes[(fast + 16u * c) * 16u + slow] = acc[c];
        }
    }
    workgroupBarrier();
    if (t < TILE && j0 + t < B) {
        var total: f32 = 0.0;
        for (var lane: u32 = 0u; lane < 16u; lane = lane + 1u) {
            total = total + lanes[t * 16u + lane];
        }
        sums[slot * B + j0 + t] = total;
    }
}
