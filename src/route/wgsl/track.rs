//! The geodesic tracking step (docs/algorithm.md §4) as WGSL kernels, with no read-back.

use burn::backend::Dispatch;
use burn::tensor::{DType, Tensor};

use crate::kernels::{self, Limits, ProjectionTile, SubTrackKernels, TileChoice, UpdateLaunch};
use crate::route::TrackedStep;
use crate::route::step_buffer::{self as buffer, with_flags};

/// Squarings of the normalised ∇Fᵀ∇F before the power iterations of `top_singular.wgsl`:
/// the start vector's error shrinks like (λ2/λ1)^(2^10).
const SQUARINGS: usize = 10;

/// The geodesic step on the WGSL kernels (see `track_within`), under [`Limits::ROUTE`]
/// lowered to the adapter's.
pub fn track(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    step_size: f64,
    max_theta: Option<f64>,
    tolerance: f64,
) -> Option<TrackedStep> {
    let limits = kernels::device_limits(&g.device())
        .map_or(Limits::WEBGPU, |adapter| Limits::ROUTE.min(adapter));
    track_within(basis, g, step_size, max_theta, tolerance, limits)
}

/// The geodesic step of [`crate::geodesic::geodesic_step`] as WGSL kernels, reading nothing
/// back: A = SᵀG, G·Aᵀ and A·Aᵀ, the tangent ∇F = −2·(G·Aᵀ − S·(A·Aᵀ)) (update.wgsl), the
/// top singular triplet of ∇F through the r×r problem (repeated squaring, then power
/// iterations), the geodesic update of S with C = S'ᵀS, and the Cholesky
/// re-orthonormalisation where the drift max |S'ᵀS' − I| exceeds `tolerance`.
///
/// `None` where the kernels cannot run these tensors (not f32 on a WGSL device, or sizes
/// or shaders past their plan under `limits`): the caller takes the host path.
/// The step flag of G comes from the first projection (A = SᵀG); where G holds NaN or ±∞
/// the basis stays, and [`TrackedStep::flag`] carries the flag on to the rest of the step.
fn track_within(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    step_size: f64,
    max_theta: Option<f64>,
    tolerance: f64,
    limits: Limits,
) -> Option<TrackedStep> {
    let ([a, r], b) = (basis.dims(), g.dims()[1]);
    let runs = [basis, g].iter().all(|t| t.dtype() == DType::F32)
        && kernels::tracking_plan(a, r, b, limits)
        && kernels::wgsl_available(&g.device());
    runs.then(|| launch_tracking(basis, g, step_size, max_theta, tolerance, limits))
}

/// [`track_within`]'s kernels, for f32 tensors on a WGSL device whose sizes fit
/// [`kernels::tracking_plan`] under `limits` (what the route's [`Tracking`] says).
///
/// [`Tracking`]: crate::route::Tracking
pub(super) fn launch_tracking(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    step_size: f64,
    max_theta: Option<f64>,
    tolerance: f64,
    limits: Limits,
) -> TrackedStep {
    let r = basis.dims()[1];
    let device = g.device();
    let limit = limits.max_binding_bytes;
    let d = |t: &Tensor<2>| t.clone().into_dispatch();
    let product = |x: &Tensor<2>, y: &Tensor<2>| {
        Tensor::<2>::from_dispatch(Dispatch::wgsl_product(d(x), d(y), limit))
    };
    // The r×r products keep the 64×64 tile: r×r has few blocks as it is.
    let gram = |x: &Tensor<2>| {
        let tile = TileChoice::Fixed(ProjectionTile::Block64);
        Tensor::<2>::from_dispatch(Dispatch::wgsl_project(d(x), d(x), tile, limits, Vec::new()).0)
    };
    let unit = |x: Tensor<2>| {
        let norm = x.clone().square().sum().sqrt().reshape([1, 1]);
        x / norm
    };

    let (coefficients, flag) = Dispatch::wgsl_project(
        d(basis),
        d(g),
        kernels::projection_tile(),
        limits,
        Vec::new(),
    );
    let (coefficients, flag) = (
        Tensor::<2>::from_dispatch(coefficients),
        Tensor::<1>::from_dispatch(flag),
    );
    let g_at = product(g, &coefficients);
    let a_at = product(&coefficients, &coefficients);
    // ∇F = −2·(G·Aᵀ − S·(A·Aᵀ)): the update kernel's d·(W − α·S·(s·N)) with W = G·Aᵀ,
    // N = A·Aᵀ, α = s = 1 and d = −2.
    let values = [1.0, -2.0, 1.0, 0.0];
    let scalars = buffer::params_for(buffer::UPDATE, &values, None, None, [r, r], &device);
    let tangent = Tensor::<2>::from_dispatch(Dispatch::wgsl_update(
        d(basis),
        d(&a_at),
        g_at.into_dispatch(),
        scalars.into_dispatch(),
        UpdateLaunch {
            transposed: false,
            tile: TileChoice::Fixed(ProjectionTile::Block64),
            limits,
        },
    ));
    let normal = gram(&tangent);
    let mut powered = unit(normal.clone());
    for _ in 0..SQUARINGS {
        powered = unit(gram(&powered));
    }
    let g_norm2 = g.clone().square().sum();
    let values = [
        step_size,
        max_theta.unwrap_or(-1.0),
        crate::geodesic::SIGMA_FLOOR,
    ];
    let params = with_flags(&values, &[Some(&g_norm2), Some(&flag)], &device);
    let triplet = Tensor::<1>::from_dispatch(Dispatch::wgsl_top_singular(
        d(&normal),
        d(&powered),
        params.into_dispatch(),
    ));
    let (moved_basis, change) =
        Dispatch::wgsl_geodesic_step(d(basis), d(&tangent), triplet.clone().into_dispatch());
    let (moved_basis, change) = (
        Tensor::<2>::from_dispatch(moved_basis),
        Tensor::<2>::from_dispatch(change),
    );
    let tol = with_flags(&[tolerance], &[], &device);
    let (factor, status) =
        Dispatch::wgsl_reorthonormalize(gram(&moved_basis).into_dispatch(), tol.into_dispatch());
    let factor = Tensor::<2>::from_dispatch(factor);
    TrackedStep {
        // S'·Fᵀ and F·C (C is symmetric): exact copies where F = I.
        basis: product(&moved_basis, &factor),
        change_of_basis: product(&factor, &change),
        moved: triplet.clone().narrow(0, r + 4, 1),
        reorthonormalized: Tensor::from_dispatch(status),
        sigma: triplet.clone().narrow(0, r, 1),
        theta: triplet.narrow(0, r + 1, 1),
        flag,
    }
}
