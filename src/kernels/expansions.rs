//! Every WGSL kernel as the launchers expand it: each shader, tile and template switch
//! (rotation, recovery term, transposed layouts, split-K, row-chunk accumulation, the limiter
//! with and without a previous norm), at sizes that cover the edge cases of the constants
//! (rank 1, sizes off the 64-blocks, the 1b preset's shapes). The suite validates each with
//! naga and translates it to SPIR-V, MSL and HLSL, the path wgpu takes to Vulkan, Metal and
//! DX12. The launchers build their kernels with the same functions, so what is checked is
//! what runs.

use super::launch::Templated;
use super::project::{self, Expansion, ProjectionTile};
use super::{adam, recovery, tracking, update};

const TILES: [ProjectionTile; 2] = [ProjectionTile::Block64, ProjectionTile::Block128];
const SWITCH: [bool; 2] = [false, true];
/// (a, r, b): the smallest, one off the 64-blocks, and the 1b preset's MLP.
const SIZES: [[usize; 3]; 3] = [[64, 1, 1], [300, 20, 90], [2048, 512, 5461]];

/// (label, WGSL) of every kernel expansion; the label names the shader and its template
/// values.
pub fn shader_expansions() -> Vec<(String, String)> {
    let mut kernels: Vec<Templated> = Vec::new();
    for [a, r, b] in SIZES {
        for rotate in SWITCH {
            kernels.push(adam::kernel(r, b, rotate, 1));
        }
        for (tile, accumulate, g_transposed, splits) in
            combinations(TILES, SWITCH, SWITCH, [1usize, 4])
        {
            kernels.push(project::kernel(
                tile,
                Expansion {
                    rows: a,
                    r,
                    b,
                    accumulate,
                    j_block: 1,
                    splits,
                    k_chunk: a.div_ceil(splits).div_ceil(16) * 16,
                    g_transposed,
                    flag_at: 14,
                },
            ));
        }
        kernels.push(project::reduce_kernel(r * b, 4, (r * b).div_ceil(256)));
        kernels.push(project::flag_kernel(
            a * b,
            14,
            (a * b).div_ceil(256).min(65_535),
        ));
        for (first, g_transposed) in SWITCH.into_iter().flat_map(|f| SWITCH.map(|t| (f, t))) {
            kernels.push(recovery::column_kernel(a, r, b, first, g_transposed));
            kernels.push(recovery::tiled_kernel(
                a,
                r,
                b,
                g_transposed,
                usize::from(first),
                a.div_ceil(64),
            ));
        }
        for has_previous in SWITCH {
            kernels.push(recovery::limit_kernel(
                b,
                has_previous,
                a.div_ceil(64),
                r.div_ceil(64),
            ));
        }
        for (tile, transposed, recovery, _) in combinations(TILES, SWITCH, SWITCH, [()]) {
            kernels.push(update::kernel(tile, [a, r, b], transposed, 1, recovery));
        }
        for (tile, transposed, previous, _) in combinations(TILES, SWITCH, SWITCH, [()]) {
            let partials = adam::recovery_partials(b);
            let term = update::Term::Limited { partials, previous };
            kernels.push(update::kernel_with(tile, [a, r, b], transposed, 0, term));
        }
        for transposed in SWITCH {
            kernels.push(adam::recovery_kernel(a, r, b, transposed));
        }
        kernels.push(tracking::tangent_kernel(a, b, r));
        kernels.push(tracking::top_singular_kernel(r));
        kernels.push(tracking::geodesic_kernel(a, r));
        kernels.push(tracking::reorthonormalize_kernel(r));
    }
    kernels.push(tracking::top_singular_kernel(tracking::MAX_RANK));
    kernels.iter().map(|k| (label(k), k.expand())).collect()
}

/// The shader's name and its short template values (a binding's declaration is left out).
fn label(kernel: &Templated) -> String {
    let values: Vec<String> = kernel
        .values()
        .iter()
        .filter(|(_, v)| v.len() <= 12)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{} [{}]", kernel.name(), values.join(", "))
}

/// Every combination of one value from each of four lists.
fn combinations<A: Copy, B: Copy, C: Copy, D: Copy, const N: usize>(
    first: [A; 2],
    second: [B; 2],
    third: [C; 2],
    fourth: [D; N],
) -> Vec<(A, B, C, D)> {
    let mut out = Vec::new();
    for a in first {
        for b in second {
            for c in third {
                for d in fourth {
                    out.push((a, b, c, d));
                }
            }
        }
    }
    out
}
