//! Launches of `shaders/recovery_norms.wgsl` or `recovery_norms_tiled.wgsl` (column sums)
//! and `shaders/recovery_limit.wgsl` (scales and limiter).

use std::fmt;

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::Shape;

use super::fit::fits;
use super::launch::{
    self, Limits, Templated, assert_f32_on_wgsl, chunk_rows, empty_f32, row_chunk, stored_gradient,
};

/// The kernel that forms recovery scaling's column sums of squares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ColumnNorms {
    /// `recovery_norms.wgsl`: one invocation per column over all rows, ⌈b/256⌉ workgroups;
    /// the kernel of products too small to tune.
    #[default]
    PerColumn,
    /// `recovery_norms_tiled.wgsl`: partial sums over 64×64 tiles on a 2-D grid, which the
    /// limit kernel adds up; more workgroups, for GPUs with many multiprocessors.
    Tiled,
}

impl fmt::Display for ColumnNorms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnNorms::PerColumn => "per-column norms",
            ColumnNorms::Tiled => "64×64-tiled norms",
        })
    }
}

const NORMS: &str = include_str!("../../shaders/recovery_norms.wgsl");
const NORMS_TILED: &str = include_str!("../../shaders/recovery_norms_tiled.wgsl");
const LIMIT: &str = include_str!("../../shaders/recovery_limit.wgsl");

/// Invocations per workgroup of both kernels.
const GROUP: usize = 256;
/// Rows and columns of the tile a column-norm workgroup sums.
const TILE: usize = 64;

/// (G's, and each of G̃'s and N's) partial sums per column: ⌈a/64⌉ and ⌈r/64⌉ row blocks
/// with the tiled kernel, one each with the per-column one. The limit kernel adds them up.
fn blocks(a: usize, r: usize, tiled: bool) -> (usize, usize) {
    if tiled {
        (a.div_ceil(TILE), r.div_ceil(TILE))
    } else {
        (1, 1)
    }
}

/// `recovery_norms_tiled.wgsl` over `rows` rows of G from 64-row block `block0` on.
pub(super) fn tiled_kernel(
    rows: usize,
    r: usize,
    b: usize,
    g_transposed: bool,
    block0: usize,
    g_blocks: usize,
) -> Templated {
    Templated::new("recovery_norms_tiled", NORMS_TILED)
        .with("rows", rows)
        .with("r", r)
        .with("b", b)
        .with("g_transposed", g_transposed)
        .with("block0", block0)
        .with("g_blocks", g_blocks)
}

/// `recovery_norms.wgsl` over `rows` rows of G, the chunk that also sums G̃ and N where
/// `first`.
pub(super) fn column_kernel(
    rows: usize,
    r: usize,
    b: usize,
    first: bool,
    g_transposed: bool,
) -> Templated {
    Templated::new("recovery_norms", NORMS)
        .with("rows", rows)
        .with("r", r)
        .with("b", b)
        .with("first", first)
        .with("g_transposed", g_transposed)
}

/// `recovery_limit.wgsl` for b columns from `g_blocks` + 2·`r_blocks` partial sums.
pub(super) fn limit_kernel(
    b: usize,
    has_previous: bool,
    g_blocks: usize,
    r_blocks: usize,
) -> Templated {
    let previous = if has_previous {
        PREVIOUS_BINDING
    } else {
        NO_PREVIOUS
    };
    Templated::new("recovery_limit", LIMIT)
        .with("b", b)
        .with("has_previous", has_previous)
        .with("previous", previous)
        .with("g_blocks", g_blocks)
        .with("r_blocks", r_blocks)
}

/// The binding of Λ_prev where there is one.
const PREVIOUS_BINDING: &str =
    "@group(0) @binding(4) var<storage, read_write> previous: array<f32>;";
/// The stand-in for Λ_prev without one: never read, and no binding.
const NO_PREVIOUS: &str = "var<private> previous: array<f32, 1>;";

/// Whether the column-norm kernel `norms` and the limit kernel fit the adapter's `limits`.
pub fn norms_fit(norms: ColumnNorms, limits: Limits) -> bool {
    let sums = match norms {
        ColumnNorms::PerColumn => column_kernel(1, 1, 1, true, false),
        ColumnNorms::Tiled => tiled_kernel(1, 1, 1, false, 0, 1),
    };
    fits(&sums, limits) && fits(&limit_kernel(1, true, 1, 1), limits)
}

/// Rows of G per launch of the column-norm kernel for G a×b, G̃ and N r×b under `limits`,
/// or `None` when the kernels cannot run these sizes (the partial sums over one binding,
/// more column or row blocks than the workgroup limit, or the per-column kernel's shaders
/// past the adapter's limits; whether the tiled one fits is [`norms_fit`]).
pub fn plan(a: usize, r: usize, b: usize, limits: Limits) -> Option<usize> {
    let limit = limits.max_binding_bytes;
    // Both kernels' limits (the tiled one's are the tighter), so that the choice between
    // them never changes the route.
    let (g_blocks, r_blocks) = blocks(a, r, true);
    let partials = g_blocks + 2 * r_blocks;
    let fits = partials * b * 4 <= limit
        && r * b * 4 <= limit
        && b.div_ceil(TILE) <= limits.max_workgroups
        && partials <= limits.max_workgroups
        && norms_fit(ColumnNorms::PerColumn, limits);
    chunk_rows(a, b, limit).filter(|_| fits)
}

/// (ψ 1×b, Λ_prev' \[1\]) from G (a×b), G̃ and N (r×b), the parameter buffer `params`
/// (2k − k², ζ, flag; `step_buffer.rs`) and the previous limiter norm, with the column-norm
/// kernel `norms`. The caller has checked the runtime, the dtypes and [`plan`]. Writes only
/// ψ, Λ_prev' and partial sums of its own, so the autotuner can time it on the same inputs
/// more than once.
pub fn launch_with(
    grad: CubeTensor,
    g_low: CubeTensor,
    normalized: CubeTensor,
    params: CubeTensor,
    previous: Option<CubeTensor>,
    limits: Limits,
    norms: ColumnNorms,
) -> (CubeTensor, CubeTensor) {
    let tiled = norms == ColumnNorms::Tiled;
    let (a, b) = (grad.meta.shape()[0], grad.meta.shape()[1]);
    let r = g_low.meta.shape()[0];
    let rows = plan(a, r, b, limits).expect("recovery: sizes the kernels cannot run");
    let inputs: Vec<&CubeTensor> = [&grad, &g_low, &normalized, &params]
        .into_iter()
        .chain(previous.as_ref())
        .collect();
    assert_f32_on_wgsl("recovery", &inputs);
    let [g_low, normalized, params] = [g_low, normalized, params].map(into_contiguous);
    // The right case's G = ∇Wᵀ is read in place where one launch takes all its rows.
    let (grad, g_transposed) = stored_gradient(grad, rows);
    let client = grad.client.clone();
    let (g_blocks, r_blocks) = blocks(a, r, tiled);
    let sums = client.empty((g_blocks + 2 * r_blocks) * b * 4);
    for (chunk, k0) in (0..a).step_by(rows).enumerate() {
        let k1 = (k0 + rows).min(a);
        let (kernel, count) = if tiled {
            // Chunks start on 64-row boundaries (`chunk_rows`), so each owns whole row
            // blocks; the first launch also sums G̃ and N.
            let blocks = (k1 - k0).div_ceil(TILE) + if chunk == 0 { 2 * r_blocks } else { 0 };
            let kernel = tiled_kernel(k1 - k0, r, b, g_transposed, k0 / TILE, g_blocks);
            (
                kernel,
                CubeCount::Static(b.div_ceil(TILE) as u32, blocks as u32, 1),
            )
        } else {
            let kernel = column_kernel(k1 - k0, r, b, chunk == 0, g_transposed);
            (kernel, CubeCount::Static(b.div_ceil(GROUP) as u32, 1, 1))
        };
        crate::launches::count_launch("recovery", [a, r, b]);
        if g_transposed {
            crate::launches::count_launch("recovery: Gᵀ in place", [a, r, b]);
        }
        if tiled {
            crate::launches::count_launch("recovery: tiled", [a, r, b]);
        }
        launch::launch(
            &client,
            kernel,
            CubeDim::new_1d(GROUP as u32),
            count,
            vec![
                row_chunk(&grad, k0..k1, a, b),
                g_low.handle.clone().binding(),
                normalized.handle.clone().binding(),
                sums.clone().binding(),
            ],
            limits,
        );
    }
    let psi = empty_f32(&grad, Shape::from([1, b]));
    let norm = empty_f32(&grad, Shape::from([1]));
    let has_previous = previous.is_some();
    let mut buffers = vec![
        sums.binding(),
        psi.handle.clone().binding(),
        norm.handle.clone().binding(),
        params.handle.clone().binding(),
    ];
    buffers.extend(previous.map(|p| into_contiguous(p).handle.binding()));
    crate::launches::count_launch("recovery_limit", [a, r, b]);
    launch::launch(
        &client,
        limit_kernel(b, has_previous, g_blocks, r_blocks),
        CubeDim::new_1d(GROUP as u32),
        CubeCount::Static(1, 1, 1),
        buffers,
        limits,
    );
    (psi, norm)
}
