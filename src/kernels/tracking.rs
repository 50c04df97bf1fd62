//! Launches of the tracking step's shaders (docs/algorithm.md §4): `tangent.wgsl` (X·Yᵀ
//! products), `top_singular.wgsl`, `geodesic_step.wgsl` and `reorthonormalize.wgsl`.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::Shape;

use super::fit::fits;
use super::launch::{
    self, BLOCK, Limits, MAX_WORKGROUPS, Templated, assert_f32_on_wgsl, chunk_rows, empty_f32,
    row_chunk,
};

const TANGENT: &str = include_str!("../../shaders/tangent.wgsl");
const TOP_SINGULAR: &str = include_str!("../../shaders/top_singular.wgsl");
const GEODESIC_STEP: &str = include_str!("../../shaders/geodesic_step.wgsl");
const REORTHONORMALIZE: &str = include_str!("../../shaders/reorthonormalize.wgsl");

/// Largest rank the single-workgroup kernels hold in workgroup memory.
pub const MAX_RANK: usize = 1024;
/// Power iterations with ∇Fᵀ∇F after the start from the repeated squaring.
const REFINE: usize = 4;
/// Rows per dispatch dimension of the geodesic kernel (one workgroup per row).
const ROWS_PER_DIM: usize = 32_768;

/// `tangent.wgsl`: out = X·Yᵀ over `m` rows of X (m×k), Y n×k.
pub(super) fn tangent_kernel(m: usize, n: usize, k: usize) -> Templated {
    Templated::new("tangent", TANGENT)
        .with("m", m)
        .with("n", n)
        .with("k", k)
}

/// `top_singular.wgsl` at rank r.
pub(super) fn top_singular_kernel(r: usize) -> Templated {
    Templated::new("top_singular", TOP_SINGULAR)
        .with("r", r)
        .with("refine", REFINE)
}

/// `geodesic_step.wgsl` for a basis a×r.
pub(super) fn geodesic_kernel(a: usize, r: usize) -> Templated {
    Templated::new("geodesic_step", GEODESIC_STEP)
        .with("a", a)
        .with("r", r)
}

/// `reorthonormalize.wgsl` at rank r.
pub(super) fn reorthonormalize_kernel(r: usize) -> Templated {
    Templated::new("reorthonormalize", REORTHONORMALIZE).with("r", r)
}

/// Whether the four tracking shaders fit the adapter's `limits` (`top_singular.wgsl` holds
/// two r-vectors of [`MAX_RANK`] in workgroup memory: 10 KiB).
fn shaders_fit(limits: Limits) -> bool {
    [
        tangent_kernel(1, 1, 1),
        top_singular_kernel(1),
        geodesic_kernel(1, 1),
        reorthonormalize_kernel(1),
    ]
    .iter()
    .all(|kernel| fits(kernel, limits))
}

/// Rows of X per launch of out = X·Yᵀ (X m×k, Y n×k) under a `limit`-byte binding, or
/// `None` when the kernel cannot run these sizes.
pub fn product_plan(m: usize, n: usize, k: usize, limit: usize) -> Option<usize> {
    let fits = n * k * 4 <= limit
        && n.div_ceil(BLOCK) <= MAX_WORKGROUPS
        && m.div_ceil(BLOCK) <= MAX_WORKGROUPS;
    chunk_rows(m, k.max(n), limit).filter(|_| fits)
}

/// Whether the tracking step's kernels run for S a×r and G a×b under `limits`.
pub fn plan(a: usize, r: usize, b: usize, limits: Limits) -> bool {
    let limit = limits.max_binding_bytes;
    r <= MAX_RANK
        && shaders_fit(limits)
        && product_plan(a, r, b, limit).is_some()
        && a.div_ceil(ROWS_PER_DIM) <= limits.max_workgroups
        && super::project::plan(a, r, b, limits).is_some()
        && super::project::plan(a, r, r, limits).is_some()
        && super::update::plan(a, r, r, false, false, limits).is_some()
}

/// out = X·Yᵀ: X m×k (split into row chunks over `limit`), Y n×k.
pub fn product(x: CubeTensor, y: CubeTensor, limit: usize) -> CubeTensor {
    let (m, k) = (x.meta.shape()[0], x.meta.shape()[1]);
    let n = y.meta.shape()[0];
    assert_eq!(
        y.meta.shape()[1],
        k,
        "product: X is {m}×{k}, Y has {:?}",
        y.meta.shape()
    );
    let rows = product_plan(m, n, k, limit).expect("product: sizes the kernel cannot run");
    assert_f32_on_wgsl("tangent", &[&x, &y]);
    let [x, y] = [x, y].map(into_contiguous);
    let output = empty_f32(&x, Shape::from([m, n]));
    for r0 in (0..m).step_by(rows) {
        let r1 = (r0 + rows).min(m);
        crate::launches::count_launch("tangent", [m, n, k]);
        launch::launch(
            &x.client,
            tangent_kernel(r1 - r0, n, k),
            CubeDim::new_2d(16, 16),
            CubeCount::Static(
                n.div_ceil(BLOCK) as u32,
                (r1 - r0).div_ceil(BLOCK) as u32,
                1,
            ),
            vec![
                row_chunk(&x, r0..r1, m, k),
                y.handle.clone().binding(),
                row_chunk(&output, r0..r1, m, n),
            ],
            Limits::with_binding_bytes(limit),
        );
    }
    output
}

/// The triplet [v (r), σ, θ, cos θ, sin θ, moved] from P = ∇Fᵀ∇F and its normalised power
/// Q (both r×r) and `params` [η, θ_max (< 0: none), floor, ‖G‖²_F, flag].
pub fn top_singular(normal: CubeTensor, powered: CubeTensor, params: CubeTensor) -> CubeTensor {
    let r = normal.meta.shape()[0];
    assert!(r <= MAX_RANK, "top_singular: rank {r} over {MAX_RANK}");
    assert_f32_on_wgsl("top_singular", &[&normal, &powered, &params]);
    let [normal, powered, params] = [normal, powered, params].map(into_contiguous);
    let triplet = empty_f32(&normal, Shape::from([r + 5]));
    crate::launches::count_launch("top_singular", [r, r, r]);
    launch::launch(
        &normal.client,
        top_singular_kernel(r),
        CubeDim::new_1d(256),
        CubeCount::Static(1, 1, 1),
        vec![
            normal.handle.clone().binding(),
            powered.handle.clone().binding(),
            params.handle.clone().binding(),
            triplet.handle.clone().binding(),
        ],
        Limits::WEBGPU,
    );
    triplet
}

/// (S', C) from S and ∇F (a×r) and the triplet of [`top_singular`].
pub fn geodesic_step(
    basis: CubeTensor,
    tangent: CubeTensor,
    triplet: CubeTensor,
) -> (CubeTensor, CubeTensor) {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    assert_f32_on_wgsl("geodesic_step", &[&basis, &tangent, &triplet]);
    let [basis, tangent, triplet] = [basis, tangent, triplet].map(into_contiguous);
    let output = empty_f32(&basis, Shape::from([a, r]));
    let change = empty_f32(&basis, Shape::from([r, r]));
    let rows = a.max(r);
    crate::launches::count_launch("geodesic_step", [a, r, r]);
    launch::launch(
        &basis.client,
        geodesic_kernel(a, r),
        CubeDim::new_1d(64),
        CubeCount::Static(
            rows.min(ROWS_PER_DIM) as u32,
            rows.div_ceil(ROWS_PER_DIM) as u32,
            1,
        ),
        vec![
            basis.handle.clone().binding(),
            tangent.handle.clone().binding(),
            triplet.handle.clone().binding(),
            output.handle.clone().binding(),
            change.handle.clone().binding(),
        ],
        Limits::WEBGPU,
    );
    (output, change)
}

/// (F, status) from S'ᵀS' (r×r) and `params` \[tol\]: F = L⁻¹ with S'ᵀS' = L·Lᵀ when the drift
/// exceeds tol (status \[1\]), else F = I (status \[0\]).
pub fn reorthonormalize(gram: CubeTensor, params: CubeTensor) -> (CubeTensor, CubeTensor) {
    let r = gram.meta.shape()[0];
    assert_f32_on_wgsl("reorthonormalize", &[&gram, &params]);
    let [gram, params] = [gram, params].map(into_contiguous);
    let lower = gram.client.empty(r * r * 4);
    let factor = empty_f32(&gram, Shape::from([r, r]));
    let status = empty_f32(&gram, Shape::from([1]));
    crate::launches::count_launch("reorthonormalize", [r, r, r]);
    launch::launch(
        &gram.client,
        reorthonormalize_kernel(r),
        CubeDim::new_1d(256),
        CubeCount::Static(1, 1, 1),
        vec![
            gram.handle.clone().binding(),
            lower.binding(),
            factor.handle.clone().binding(),
            params.handle.clone().binding(),
            status.handle.clone().binding(),
        ],
        Limits::WEBGPU,
    );
    (factor, status)
}
