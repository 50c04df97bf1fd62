//! Launch of `shaders/project.wgsl` (and its 128×128-tile variant `project_wide.wgsl`):
//! G̃ = SᵀG.

use std::fmt;

use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::Shape;

use super::fit::fits;
use super::launch::{
    self, BLOCK, Limits, Templated, assert_f32_on_wgsl, chunk_rows, column_groups_of, empty_f32,
    f32_from, is_transposed_view, row_chunk, stored_gradient,
};

// Each tile's kernel with the guarded loads and store both share appended.
const SHADER: &str = concat!(
    include_str!("../../shaders/project.wgsl"),
    include_str!("../../shaders/project_tiles.wgsl")
);
const SHADER_WIDE: &str = concat!(
    include_str!("../../shaders/project_wide.wgsl"),
    include_str!("../../shaders/project_tiles.wgsl")
);
const SHADER_REDUCE: &str = include_str!("../../shaders/project_reduce.wgsl");
const SHADER_FLAG: &str = include_str!("../../shaders/finite_flag.wgsl");

/// The block of G̃ one projection workgroup computes, or of W' one weight-update workgroup
/// finishes (16×16 invocations either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProjectionTile {
    /// 64×64, a 4×4 block per invocation (`project.wgsl`, and `update.wgsl` for the
    /// back-projection): the tile of products too small to tune.
    #[default]
    Block64,
    /// 128×128, an 8×8 block per invocation (`project_wide.wgsl`, and `update_wide.wgsl`
    /// for the back-projection): twice the multiply-adds per workgroup-memory read, a
    /// quarter of the workgroups. For large products.
    Block128,
}

impl fmt::Display for ProjectionTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = self.side();
        write!(f, "{side}×{side}")
    }
}

impl ProjectionTile {
    /// Side of the square block, in elements of G̃.
    pub const fn side(self) -> usize {
        match self {
            ProjectionTile::Block64 => BLOCK,
            ProjectionTile::Block128 => 2 * BLOCK,
        }
    }

    /// (kernel name, WGSL source).
    fn shader(self) -> (&'static str, &'static str) {
        match self {
            ProjectionTile::Block64 => ("project", SHADER),
            ProjectionTile::Block128 => ("project_wide", SHADER_WIDE),
        }
    }
}

/// The template values of one projection launch (see `project.wgsl`'s header).
#[derive(Clone, Copy, Debug)]
pub(super) struct Expansion {
    /// Rows of S and G this launch reads.
    pub rows: usize,
    pub r: usize,
    pub b: usize,
    /// Whether the launch adds to G̃ (a row chunk after the first).
    pub accumulate: bool,
    /// The first column block of this launch.
    pub j_block: usize,
    /// Split-K partial sums (1: none).
    pub splits: usize,
    /// Rows per split.
    pub k_chunk: usize,
    /// Whether G is read in place as its stored transpose.
    pub g_transposed: bool,
    /// The step flag's slot.
    pub flag_at: usize,
}

impl Expansion {
    /// One launch over all `a` rows, from column block 0, without split-K.
    fn whole(a: usize, r: usize, b: usize) -> Self {
        Expansion {
            rows: a,
            r,
            b,
            accumulate: false,
            j_block: 0,
            splits: 1,
            k_chunk: a,
            g_transposed: false,
            flag_at: 0,
        }
    }
}

/// The projection shader of `tile` with the template values `x`.
pub(super) fn kernel(tile: ProjectionTile, x: Expansion) -> Templated {
    let (name, source) = tile.shader();
    Templated::new(name, source)
        .with("a", x.rows)
        .with("r", x.r)
        .with("b", x.b)
        .with("accumulate", x.accumulate)
        .with("j_block", x.j_block)
        .with("splits", x.splits)
        .with("k_chunk", x.k_chunk)
        .with("g_transposed", x.g_transposed)
        .with("flag_at", x.flag_at)
}

/// `project_reduce.wgsl`: the sum of `splits` partial sums of `count` elements, over
/// `workgroups` workgroups.
pub(super) fn reduce_kernel(count: usize, splits: usize, workgroups: usize) -> Templated {
    Templated::new("project_reduce", SHADER_REDUCE)
        .with("count", count)
        .with("splits", splits)
        .with("workgroups", workgroups)
}

/// `finite_flag.wgsl` over `count` values, the flag in slot `flag_at`.
pub(super) fn flag_kernel(count: usize, flag_at: usize, workgroups: usize) -> Templated {
    Templated::new("finite_flag", SHADER_FLAG)
        .with("count", count)
        .with("flag_at", flag_at)
        .with("workgroups", workgroups)
}

/// Whether the matmul candidate's flag kernel fits the adapter's `limits`.
pub fn matmul_fits(limits: Limits) -> bool {
    fits(&flag_kernel(1, 0, 1), limits)
}

/// G̃ = SᵀG by Burn's own matmul (CubeCL's tuned matmul kernels, as the portable route
/// runs it), with the step flag from `finite_flag.wgsl` on G as stored (a transposed view
/// is read from its own buffer; G over the binding limit in chunks): the autotuner's
/// candidate next to the WGSL tiles, so that the tuned projection is never slower than
/// Burn's ops. Returns (G̃, flag) as [`launch`] does, reading nothing back.
pub fn launch_matmul(
    basis: CubeTensor,
    g: CubeTensor,
    limits: Limits,
    head: &[f32],
) -> (CubeTensor, CubeTensor) {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = g.meta.shape()[1];
    assert_f32_on_wgsl("project: Burn matmul", &[&basis, &g]);
    let stored = if is_transposed_view(&g) {
        g.clone()
    } else {
        into_contiguous(g.clone())
    };
    let flag_values: Vec<f32> = head.iter().copied().chain([1.0]).collect();
    let flag = f32_from(&g, Shape::from([flag_values.len()]), &flag_values);
    let count = a * b;
    // Chunks of whole 64-value blocks: 256-byte offsets, as every storage offset must be.
    let per_chunk = (limits.max_binding_bytes / 4 / 64 * 64).max(64);
    for start in (0..count).step_by(per_chunk) {
        let end = (start + per_chunk).min(count);
        let workgroups = (end - start).div_ceil(256).clamp(1, limits.max_workgroups);
        let values = stored
            .handle
            .clone()
            .offset_start((start * 4) as u64)
            .offset_end(((count - end) * 4) as u64)
            .binding();
        crate::launches::count_launch("finite_flag", [a, r, b]);
        launch::launch(
            &stored.client,
            flag_kernel(end - start, head.len(), workgroups),
            CubeDim::new_1d(256),
            CubeCount::Static(workgroups as u32, 1, 1),
            vec![values, flag.handle.clone().binding()],
            limits,
        );
    }
    crate::launches::count_launch("project: Burn matmul", [a, r, b]);
    let g_low = CubeBackend::float_matmul(CubeBackend::float_swap_dims(basis, 0, 1), g);
    (g_low, flag)
}

/// Whether the shader of `tile` fits the adapter's `limits` (its bindings, workgroup memory
/// and size; the sizes are [`plan`]'s).
pub fn tile_fits(tile: ProjectionTile, limits: Limits) -> bool {
    fits(&kernel(tile, Expansion::whole(BLOCK, 1, 1)), limits)
}

/// Output shape of the projection: basis [a, r], g [a, b] → [r, b].
pub fn projected_shape(basis: &Shape, g: &Shape) -> Shape {
    Shape::from([basis[1], g[1]])
}

/// Rows per launch for G̃ = SᵀG with S a×r and G a×b under `limits`, or `None` when the
/// kernel cannot run these sizes (G̃ itself over the binding limit, fewer than 64 rows
/// fitting, more than the workgroup limit of 64-row blocks of G̃, or the 64×64 tile's shader
/// past the adapter's limits). Columns past the workgroup limit are split over several
/// launches. The sizes hold for both [`ProjectionTile`]s: the 128×128 tile needs fewer
/// workgroups, and any row chunk is a whole number of its 8-row steps; whether its shader
/// fits is [`tile_fits`].
pub fn plan(a: usize, r: usize, b: usize, limits: Limits) -> Option<usize> {
    let fits = r * b * 4 <= limits.max_binding_bytes
        && r.div_ceil(BLOCK) <= limits.max_workgroups
        && tile_fits(ProjectionTile::Block64, limits);
    chunk_rows(a, r.max(b), limits.max_binding_bytes).filter(|_| fits)
}

/// G̃ = SᵀG on the device by blocks of `tile`, each storage binding within `limits`: S and
/// G over the binding limit are split into row chunks whose partial products the kernel
/// accumulates. The caller has checked the runtime, the dtype and [`plan`]. Returns
/// (G̃, flag): flag is `head` followed by the step flag, 0 where G holds NaN or ±∞, else 1
/// (\[1\] for an empty `head`).
pub fn launch(
    basis: CubeTensor,
    g: CubeTensor,
    tile: ProjectionTile,
    limits: Limits,
    head: &[f32],
) -> (CubeTensor, CubeTensor) {
    launch_with(basis, g, 1, tile, limits, head)
}

/// Rows of S and G per split when G̃ = SᵀG is split `splits` ways over its shared dimension
/// a (a multiple of the kernel's 16-row step, so no tile straddles two splits), or `None`
/// when this split launch cannot run these sizes under `limits`: it takes no row chunks and
/// one launch across.
pub fn split_plan(a: usize, r: usize, b: usize, splits: usize, limits: Limits) -> Option<usize> {
    let k_chunk = a.div_ceil(splits).div_ceil(16) * 16;
    let fits = splits >= 1
        && splits <= limits.max_workgroups
        && splits * r * b * 4 <= limits.max_binding_bytes
        && column_groups_of(b, BLOCK, limits).len() == 1;
    let one_chunk = plan(a, r, b, limits) == Some(a);
    let reduces = fits_reduce(limits);
    (fits && one_chunk && reduces).then_some(k_chunk)
}

/// Whether `project_reduce.wgsl` fits the adapter's `limits`.
fn fits_reduce(limits: Limits) -> bool {
    fits(&reduce_kernel(1, 2, 1), limits)
}

/// Split-K G̃ = SᵀG: `splits` partial sums over row ranges of S and G, (splits·r)×b, added
/// up by `project_reduce.wgsl` into G̃ (r×b), and `head` followed by the step flag (0 where
/// G holds NaN or ±∞). More workgroups than [`launch`] when r×b is small next to a, at the
/// cost of the partial sums' memory (transient) and a pass over them. The caller
/// ([`crate::route::project_split`], or the autotuner) has checked the runtime, the dtype and
/// [`split_plan`].
pub fn launch_split(
    basis: CubeTensor,
    g: CubeTensor,
    splits: usize,
    tile: ProjectionTile,
    limits: Limits,
    head: &[f32],
) -> (CubeTensor, CubeTensor) {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = g.meta.shape()[1];
    let (partials, flag) = launch_with(basis, g, splits, tile, limits, head);
    crate::launches::count_launch("project_reduce", [a, r, b]);
    (reduce(partials, splits, limits), flag)
}

/// Σ_z of the `splits` r×b slices of `partials` ((splits·r)×b), in ascending z.
fn reduce(partials: CubeTensor, splits: usize, limits: Limits) -> CubeTensor {
    let [rows, b] = [partials.meta.shape()[0], partials.meta.shape()[1]];
    let r = rows / splits;
    let count = r * b;
    let output = empty_f32(&partials, Shape::from([r, b]));
    let workgroups = count.div_ceil(256).clamp(1, limits.max_workgroups);
    launch::launch(
        &partials.client,
        reduce_kernel(count, splits, workgroups),
        CubeDim::new_1d(256),
        CubeCount::Static(workgroups as u32, 1, 1),
        vec![
            partials.handle.clone().binding(),
            output.handle.clone().binding(),
        ],
        limits,
    );
    output
}

/// Splits worth timing for a split-K G̃ = SᵀG by blocks of `tile` (the autotuner's split-K
/// candidate): the fewest that bring the grid to [`SPLIT_MIN_WORKGROUPS`], at most
/// a / [`SPLIT_MIN_ROWS`], [`SPLIT_MAX`] and as many r×b partial sums as one binding holds.
/// `None` where the single launch already has [`SPLIT_MIN_WORKGROUPS`] workgroups, where
/// that leaves fewer than two, or where [`split_plan`] refuses the sizes.
pub fn split_count(
    tile: ProjectionTile,
    a: usize,
    r: usize,
    b: usize,
    limits: Limits,
) -> Option<usize> {
    let side = tile.side();
    let workgroups = b.div_ceil(side) * r.div_ceil(side);
    let splits = SPLIT_MIN_WORKGROUPS
        .div_ceil(workgroups)
        .min(a / SPLIT_MIN_ROWS)
        .min(SPLIT_MAX)
        .min(limits.max_binding_bytes / (4 * r * b).max(1));
    (workgroups < SPLIT_MIN_WORKGROUPS && splits > 1)
        .then_some(splits)
        .filter(|&s| split_plan(a, r, b, s, limits).is_some())
}

/// The grid a split-K candidate aims for: 512 workgroups, four per multiprocessor of a
/// 132-multiprocessor H100/H200 (which hold several of these 8 KiB-workgroup-memory
/// workgroups at once); a judgement, not a measurement: the autotuner decides whether the
/// split pays on the device.
pub const SPLIT_MIN_WORKGROUPS: usize = 512;
/// Fewest rows of S and G per split: eight of `project.wgsl`'s 16-row steps.
pub const SPLIT_MIN_ROWS: usize = 128;
/// Most splits a split-K candidate takes.
pub const SPLIT_MAX: usize = 16;

/// [`launch`] (`splits` = 1: row chunks and column groups per [`plan`]) or
/// [`launch_split`] (one chunk and one column group, `splits` partial sums per
/// [`split_plan`], along the grid's third dimension).
fn launch_with(
    basis: CubeTensor,
    g: CubeTensor,
    splits: usize,
    tile: ProjectionTile,
    limits: Limits,
    head: &[f32],
) -> (CubeTensor, CubeTensor) {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = g.meta.shape()[1];
    assert_eq!(
        g.meta.shape()[0],
        a,
        "project: basis is {a}×{r}, gradient has {} rows",
        g.meta.shape()[0]
    );
    // (rows per launch, rows per split): the split launch takes all a rows at once.
    let (rows, k_chunk, name) = if splits == 1 {
        let rows = plan(a, r, b, limits).expect("project: sizes the kernel cannot run");
        (rows, None, "project")
    } else {
        let k_chunk = split_plan(a, r, b, splits, limits)
            .expect("project_split: sizes the kernel cannot run");
        (a, Some(k_chunk), "project_split")
    };
    assert_f32_on_wgsl(name, &[&basis, &g]);
    let basis = into_contiguous(basis);
    // The right case's G = ∇Wᵀ is read in place where one launch takes all its rows.
    let (g, g_transposed) = stored_gradient(g, rows);
    let client = g.client.clone();
    let output = empty_f32(&g, Shape::from([splits * r, b]));
    let flag_values: Vec<f32> = head.iter().copied().chain([1.0]).collect();
    let flag = f32_from(&g, Shape::from([flag_values.len()]), &flag_values);
    let cube_dim = CubeDim::new_2d(16, 16);
    let side = tile.side();
    for (chunk, k0) in (0..a).step_by(rows).enumerate() {
        let k1 = (k0 + rows).min(a);
        for (j_block, blocks) in column_groups_of(b, side, limits) {
            let kernel = kernel(
                tile,
                Expansion {
                    rows: k1 - k0,
                    r,
                    b,
                    accumulate: chunk > 0,
                    j_block,
                    splits,
                    k_chunk: k_chunk.unwrap_or(k1 - k0),
                    g_transposed,
                    flag_at: head.len(),
                },
            );
            crate::launches::count_launch(name, [a, r, b]);
            if g_transposed {
                crate::launches::count_launch("project: Gᵀ in place", [a, r, b]);
            }
            if tile == ProjectionTile::Block128 {
                crate::launches::count_launch("project: 128×128 tiles", [a, r, b]);
            }
            launch::launch(
                &client,
                kernel,
                cube_dim,
                CubeCount::Static(blocks as u32, r.div_ceil(side) as u32, splits as u32),
                vec![
                    row_chunk(&basis, k0..k1, a, r),
                    row_chunk(&g, k0..k1, a, b),
                    output.handle.clone().binding(),
                    flag.handle.clone().binding(),
                ],
                limits,
            );
        }
    }
    (output, flag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProjectionTile::{Block64, Block128};

    /// The split-K candidate at the LLaMA shapes (sizes a×b, r): the fewest splits that
    /// bring the grid to 512 workgroups, capped at a/128 rows and 16; none where the single
    /// launch has 512 already. Worked by hand: 1024×2736 at r = 256 is 43·4 = 172 blocks of
    /// 64×64 (3 splits: 516) or 22·2 = 44 of 128×128 (⌈512/44⌉ = 12, capped at 1024/128 = 8).
    #[test]
    fn split_count_fills_the_grid_within_its_caps() {
        let at = |tile, a, r, b| split_count(tile, a, r, b, Limits::WEBGPU);
        // 60m: 22·2 = 44 and 11·1 = 11 blocks, both capped at 512/128 = 4.
        assert_eq!(at(Block64, 512, 128, 1376), Some(4));
        assert_eq!(at(Block128, 512, 128, 1376), Some(4));
        // 130m: 32·4 = 128 → 4 (512 exactly); 16·2 = 32 → 16, capped at 768/128 = 6.
        assert_eq!(at(Block64, 768, 256, 2048), Some(4));
        assert_eq!(at(Block128, 768, 256, 2048), Some(6));
        assert_eq!(at(Block64, 1024, 256, 2736), Some(3));
        assert_eq!(at(Block128, 1024, 256, 2736), Some(8));
        // 1b: 86·8 = 688 blocks of 64×64 need no split; 43·4 = 172 of 128×128 take 3.
        assert_eq!(at(Block64, 2048, 512, 5461), None);
        assert_eq!(at(Block128, 2048, 512, 5461), Some(3));
        // 16 at most, and never fewer than 128 rows a split.
        assert_eq!(at(Block128, 4096, 64, 64), Some(16));
        assert_eq!(at(Block64, 255, 64, 64), None);
        // As many 256×256 partial sums (256 KiB each) as one binding holds: 8 wanted at
        // a = 1024, 4 fit in 1 MiB; at 384 KiB S and G (a = 384) fit but two sums do not.
        let binding = |kib: usize| Limits::with_binding_bytes(kib << 10);
        assert_eq!(
            split_count(Block64, 1024, 256, 256, Limits::WEBGPU),
            Some(8)
        );
        assert_eq!(split_count(Block64, 1024, 256, 256, binding(1024)), Some(4));
        assert_eq!(split_count(Block64, 384, 256, 256, binding(384)), None);
        // S and G past the binding (row chunks): split-K does not take them.
        assert_eq!(split_count(Block64, 1024, 256, 256, binding(512)), None);
    }
}
