//! Hand-written WGSL compute shaders (`shaders/`) on Burn's wgpu backend, and the routing
//! that uses them only where they can run: a wgpu device whose runtime compiles WGSL. The
//! optimizer asks for them through [`SubTrackConfig::wgsl_kernels`](crate::SubTrackConfig)
//! (on by default). Everywhere else (CPU backends, CUDA,
//! ROCm, wgpu builds on SPIR-V or MSL) the portable tensor-op path runs, and the first
//! fallback is logged once. Each call names its [`Route`]: the WGSL kernels, the fused CPU
//! loops on `flex`, or Burn's tensor ops alone.
//!
//! The kernels: [`project()`], [`adam()`] (with the moment rotation), [`recovery()`] (column norms
//! and limiter), [`update()`] (back-projection fused with the weight update) and [`track`] (the
//! geodesic tracking step). The projection finds the step flag ([`project_checked`]: 0 where
//! G holds NaN or ±∞) in the same pass over G, and the later kernels take it, so such a
//! gradient is skipped without a read-back.
//!
//! Each kernel is an operation of the [`SubTrackKernels`] backend extension
//! (`extension.rs`), registered for Burn's CubeCL backend and, lazily, for its fusion layer,
//! so it works with Burn's default kernel fusion on; `launch.rs` holds what the launchers
//! share, `params.rs` the parameter buffer a projected step's kernels bind (made by
//! [`project_packed`], whose kernel writes the step flag into it), and `tune.rs` the choice
//! of tile for large projections and weight updates by CubeCL's autotuner ([`TileChoice`]).

mod adam;
mod extension;
mod flex;
mod launch;
mod params;
mod project;
mod recovery;
mod tracking;
mod tune;
mod update;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::config::{ProjectionAware, RecoveryScaling};
use crate::moments::{AdamParams, rotate_moments};
use crate::recovery::{RecoveryScales, column_sq, kept_weight, recovery_scales};

pub use extension::SubTrackKernels;
pub use launch::{Limits, launches, wgsl_dispatches};
pub use params::{ParamValues, StepFlag, StepParams};
pub use project::{ProjectionTile, projected_shape};
pub use recovery::ColumnNorms;
pub use tune::{
    NormsChoice, TUNED_MIN_MACS, TileChoice, TileKey, Tuned, TunedTile, UpdateLaunch, tuned_norms,
    tuned_tile, tuned_tiles,
};

use launch::{WGSL, count_launch};

/// Where a kernel call may run. The WGSL kernels and the fused CPU loops each run only where
/// they can (see [`wgsl_available`]; the loops on Burn's `flex` backend, f32); anything else
/// takes Burn's tensor ops, the portable path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The WGSL kernels, on wgpu devices that compile WGSL, for f32 tensors within `limits`.
    pub wgsl: bool,
    /// The fused CPU loops on `flex`.
    pub cpu: bool,
    /// The device limits the WGSL launches plan for.
    pub limits: Limits,
}

impl Route {
    /// Burn's tensor ops alone.
    pub const PORTABLE: Route = Route::new(false, false);
    /// The WGSL kernels where they run, else the tensor ops.
    pub const WGSL: Route = Route::new(true, false);
    /// The fused CPU loops where they run, else the tensor ops.
    pub const CPU: Route = Route::new(false, true);

    /// `wgsl` and `cpu` as given, under WebGPU's default limits ([`Limits::WEBGPU`]).
    pub const fn new(wgsl: bool, cpu: bool) -> Self {
        Route {
            wgsl,
            cpu,
            limits: Limits::WEBGPU,
        }
    }

    /// This route with the WGSL launches planned for `limits` (smaller limits exercise the
    /// row chunks and the launches split across columns on small tensors).
    pub const fn within(self, limits: Limits) -> Self {
        Route { limits, ..self }
    }
}

/// Whether the WGSL kernels run for tensors on `device`: a wgpu device whose runtime
/// compiles WGSL (not SPIR-V or MSL). Opens the device's client.
pub fn wgsl_available(device: &Device) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Cube(cube) => {
            matches!(cube, burn::cubecl::Device::Wgpu(_)) && cube.client().name() == WGSL
        }
        _ => false,
    }
}

static FALLBACK_REPORTED: AtomicBool = AtomicBool::new(false);
/// Log, once per process, that the portable path runs where the kernels were asked for.
fn report_fallback(device: &Device) {
    if !FALLBACK_REPORTED.swap(true, Ordering::Relaxed) {
        log::info!(
            "subtrack: WGSL kernels requested but not usable on {device:?} (not a WGSL \
             runtime, not f32, or sizes past the kernels' limits); using the portable path"
        );
    }
}

/// G̃ = SᵀG (docs/algorithm.md §2), S a×r and G a×b → r×b: with `route.cpu`, one gemm on `flex`
/// read from S's and G's views (`flex::project`); with `route.wgsl`, the WGSL kernel on
/// wgpu/WGSL devices for f32 tensors within `route.limits` (S and G over the binding limit
/// in row chunks, columns past the workgroup limit in several launches); tensor ops
/// otherwise.
pub fn project(basis: &Tensor<2>, g: &Tensor<2>, route: Route) -> Tensor<2> {
    project_tuned(basis, g, route, &[]).0
}

thread_local! {
    static PROJECTION_SPLITS: Cell<usize> = const { Cell::new(1) };
    static PROJECTION_TILE: Cell<TileChoice> = const { Cell::new(TileChoice::Tuned) };
    static RECOVERY_NORMS: Cell<NormsChoice> = const { Cell::new(NormsChoice::Tuned) };
}

/// Tuning hook: from now on, the WGSL recovery column norms on this thread ([`recovery()`],
/// so the optimizer's SubTrack++ steps run here) use `norms`: a [`ColumnNorms`] pins one
/// kernel (`benchmark --recovery-norms per-column|tiled`), [`NormsChoice::Tuned`] (the
/// default) lets the autotuner time both per shape. The per-column kernel
/// (`recovery_norms.wgsl`) runs ⌈b/256⌉ workgroups, 2–6 at the 60m shapes; the tiled one
/// (`recovery_norms_tiled.wgsl`) fills a GPU but was slower on lavapipe (437–448 against
/// 389–418 ms for a 20m SubTrack++ step, both pinned).
pub fn set_recovery_norms(norms: impl Into<NormsChoice>) {
    let norms = norms.into();
    RECOVERY_NORMS.with(|t| t.set(norms));
}

/// The column-norm kernel [`set_recovery_norms`] chose for this thread.
pub fn recovery_norms() -> NormsChoice {
    RECOVERY_NORMS.with(Cell::get)
}

/// Tuning hook: from now on, the WGSL projections on this thread ([`project()`],
/// [`project_checked`], [`project_packed`], so the optimizer's steps run here) use
/// [`project_split`] with `splits` partial sums, by the tile [`set_projection_tile`] pins
/// (64×64 where it is tuned). 1, the default, leaves split-K to the autotuner, which
/// weighs it per shape (`tune.rs`). For measuring (`benchmark --projection-splits N`).
pub fn set_projection_splits(splits: usize) {
    PROJECTION_SPLITS.with(|s| s.set(splits.max(1)));
}

/// Tuning hook: from now on, the WGSL projections on this thread ([`project()`],
/// [`project_checked`], [`project_packed`], [`track`]'s A = SᵀG) and back-projections
/// fused with the weight update ([`update()`]), so the optimizer's steps run here, compute
/// blocks of `tile`: a [`ProjectionTile`] pins one (`benchmark --projection-tile 64|128`),
/// [`TileChoice::Tuned`] (the default) lets the autotuner pick per shape.
pub fn set_projection_tile(tile: impl Into<TileChoice>) {
    let tile = tile.into();
    PROJECTION_TILE.with(|t| t.set(tile));
}

/// The tile [`set_projection_tile`] chose for this thread.
pub fn projection_tile() -> TileChoice {
    PROJECTION_TILE.with(Cell::get)
}

/// The split count [`set_projection_splits`] chose for this thread.
pub fn projection_splits() -> usize {
    PROJECTION_SPLITS.with(Cell::get)
}

/// (G̃, flag): [`project()`] with the step flag of G ([`step_flag`]), which the WGSL kernel
/// finds while it reads G (no pass of its own); the other routes take a pass for it.
pub fn project_checked(basis: &Tensor<2>, g: &Tensor<2>, route: Route) -> (Tensor<2>, Tensor<1>) {
    with_step_flag(project_tuned(basis, g, route, &[]), g)
}

/// (G̃, the step's parameter buffer): [`project_checked`] with the flag in the last slot of
/// a buffer that holds `values` (layout in `params.rs`), for [`adam()`], [`recovery()`] and
/// [`update()`] to take as [`StepFlag::Packed`]. On the WGSL route the projection kernel
/// writes the flag into that buffer, so a step uploads one buffer and concatenates nothing;
/// elsewhere the buffer is built from G's flag.
pub fn project_packed(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    route: Route,
    values: ParamValues,
) -> (Tensor<2>, StepParams) {
    let head = values.head();
    let (g_low, buffer) = project_tuned(basis, g, route, &head);
    let buffer = buffer.unwrap_or_else(|| values.upload(None, Some(&step_flag(g)), &g.device()));
    (g_low, StepParams { buffer, values })
}

/// The projection under this thread's tuning hooks ([`set_projection_splits`],
/// [`set_projection_tile`]): split-K where more than one split is asked for on the WGSL
/// route and G is on a WGSL device, else [`project_flagged`].
fn project_tuned(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    route: Route,
    head: &[f32],
) -> (Tensor<2>, Option<Tensor<1>>) {
    let splits = projection_splits();
    if route.wgsl && splits > 1 && wgsl_available(&g.device()) {
        // Splits pinned: a tuned tile takes its default there.
        let [a, r, b] = [basis.dims()[0], basis.dims()[1], g.dims()[1]];
        let tile = projection_tile().fixed(a * r * b).unwrap_or_default();
        return project_split_with(basis, g, splits, tile, head);
    }
    project_flagged(basis, g, route, projection_tile(), head)
}

/// (G̃, flag) from [`project_flagged`]'s result (empty head): its flag, or G's own
/// ([`step_flag`]).
fn with_step_flag(
    projected: (Tensor<2>, Option<Tensor<1>>),
    g: &Tensor<2>,
) -> (Tensor<2>, Tensor<1>) {
    match projected {
        (g_low, Some(flag)) => (g_low, flag),
        (g_low, None) => (g_low, step_flag(g)),
    }
}

/// (G̃, `head` followed by the kernel's step flag): the flag only where the WGSL kernel (by
/// blocks of `tile`) found it while reading G; the other routes leave it to the caller, who
/// may not need it (two passes over G).
fn project_flagged(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    route: Route,
    tile: TileChoice,
    head: &[f32],
) -> (Tensor<2>, Option<Tensor<1>>) {
    let device = g.device();
    let ([a, r], b) = (basis.dims(), g.dims()[1]);
    if route.cpu && flex::runs(&device, &[basis, g]) {
        count_launch("project: flex", [a, r, b]);
        return (flex::project(basis, g), None);
    }
    let limits = route.limits;
    let runs = route.wgsl
        && [basis, g].iter().all(|t| t.dtype() == DType::F32)
        && project::plan(a, r, b, limits).is_some()
        && wgsl_available(&device);
    if runs {
        let (g_low, flag) = Dispatch::wgsl_project(
            basis.clone().into_dispatch(),
            g.clone().into_dispatch(),
            tile,
            limits,
            head.to_vec(),
        );
        (
            Tensor::from_dispatch(g_low),
            Some(Tensor::from_dispatch(flag)),
        )
    } else {
        if route.wgsl {
            report_fallback(&device);
        }
        (crate::basis::project(basis, g), None)
    }
}

/// (G̃, flag) by split-K with `splits` fixed (for measuring; the autotuner weighs split-K
/// itself, see `tune.rs`): the WGSL kernel, by blocks of `tile`, writes `splits` partial
/// sums over row ranges of S and G, and `project_reduce.wgsl` adds them. More workgroups than [`project()`] where r×b is
/// small next to a (the 60m shapes on a GPU with many multiprocessors), at the cost of
/// splits·r·b floats. Falls back to the single launch by blocks of `tile` (or the tensor
/// ops) where `splits` is 1 or the split launch cannot run.
pub fn project_split(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    splits: usize,
    tile: ProjectionTile,
) -> (Tensor<2>, Tensor<1>) {
    with_step_flag(project_split_with(basis, g, splits, tile, &[]), g)
}

/// [`project_split`] with the flag after `head`, as [`project_flagged`] gives it.
fn project_split_with(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    splits: usize,
    tile: ProjectionTile,
    head: &[f32],
) -> (Tensor<2>, Option<Tensor<1>>) {
    let ([a, r], b) = (basis.dims(), g.dims()[1]);
    let runs = splits > 1
        && [basis, g].iter().all(|t| t.dtype() == DType::F32)
        && project::split_plan(a, r, b, splits, Limits::WEBGPU).is_some()
        && wgsl_available(&g.device());
    if !runs {
        return project_flagged(basis, g, Route::WGSL, tile.into(), head);
    }
    let (g_low, flag) = Dispatch::wgsl_project_split(
        basis.clone().into_dispatch(),
        g.clone().into_dispatch(),
        splits,
        tile,
        head.to_vec(),
    );
    (
        Tensor::from_dispatch(g_low),
        Some(Tensor::from_dispatch(flag)),
    )
}

/// The step flag of a gradient on its device: [1.0] when every element is finite, [0.0]
/// when one is NaN or ±∞. Computed without a read-back.
pub fn step_flag<const D: usize>(grad: &Tensor<D>) -> Tensor<1> {
    // f32 whatever the device's default float type, like the kernels' flags.
    grad.clone().is_finite().all().float().cast(DType::F32)
}

/// `new` where the step runs, `old` where `flag` says it is skipped (a select, so NaN in
/// `new` never leaks through).
pub fn keep_on_skip<const D: usize>(new: Tensor<D>, old: Tensor<D>, flag: &Tensor<1>) -> Tensor<D> {
    let skip = flag
        .clone()
        .equal_elem(0.0)
        .reshape([1; D])
        .expand(new.dims());
    new.mask_where(skip, old)
}

/// Host `values` followed by device values (\[1\] each; [1.0] where `None`), as one f32
/// tensor: the tracking kernels' parameters, and the parameter buffer where the projection
/// did not make it (`ParamValues::upload`).
fn with_flags(values: &[f64], flags: &[Option<&Tensor<1>>], device: &Device) -> Tensor<1> {
    let mut host: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    if flags.iter().all(Option::is_none) {
        // Every value is known on the host: one upload, no concatenation.
        host.resize(values.len() + flags.len(), 1.0);
        let n = host.len();
        return Tensor::from_data(TensorData::new(host, [n]), (device, DType::F32));
    }
    let n = host.len();
    let mut parts = vec![Tensor::<1>::from_data(
        TensorData::new(host, [n]),
        (device, DType::F32),
    )];
    parts.extend(flags.iter().map(|f| {
        f.cloned()
            .unwrap_or_else(|| Tensor::ones([1], (device, DType::F32)))
    }));
    Tensor::cat(parts, 0)
}

/// Low-rank Adam's result (docs/algorithm.md §2): the new moments and N = M' ⊘ (sqrt(V') + ε),
/// all r×b. Where the step is skipped M and V are unchanged and N is 0.
pub struct LowRankAdam {
    /// M'.
    pub moment_1: Tensor<2>,
    /// V'.
    pub moment_2: Tensor<2>,
    /// N, before the scale s and the bias correction c.
    pub normalized: Tensor<2>,
}

/// The projection-aware rotation of the moments at a basis change (§5).
#[derive(Clone, Copy)]
pub struct Rotation<'a> {
    /// C = S_newᵀ·S_old, r×r.
    pub change_of_basis: &'a Tensor<2>,
    /// The paper's V or the authors' code's (× (1 − β2)); not `Off`.
    pub variant: ProjectionAware,
    /// Device flag: \[1\] where the basis moved, \[0\] where it did not (no rotation then);
    /// `None` means it moved.
    pub moved: Option<&'a Tensor<1>>,
}

/// Low-rank Adam on M, V (r×b) with G̃ (r×b), after the projection-aware rotation (§5)
/// when `rotation` is given. `flag` is the device-side step flag ([`step_flag`]); `None`
/// means the step runs. With `route.wgsl`, one WGSL kernel on wgpu/WGSL devices for f32
/// tensors within `route.limits` (columns past the workgroup limit in several launches);
/// with `route.cpu` and no flag, the moments and N in one fused pass on `flex`
/// (`flex::adam`, after the rotation's tensor ops); tensor ops otherwise.
pub fn adam(
    moment_1: Tensor<2>,
    moment_2: Tensor<2>,
    g_low: &Tensor<2>,
    adam: &AdamParams,
    rotation: Option<Rotation>,
    flag: Option<StepFlag>,
    route: Route,
) -> LowRankAdam {
    let device = g_low.device();
    let [r, b] = moment_1.dims();
    let limits = route.limits;
    let runs = route.wgsl
        && [&moment_1, &moment_2, g_low]
            .into_iter()
            .chain(rotation.map(|rot| rot.change_of_basis))
            .all(|t| t.dtype() == DType::F32)
        && adam::plan(r, b, limits)
        && wgsl_available(&device);
    if runs {
        let values = params::adam_values(adam, rotation.map(|rot| rot.variant));
        let moved = rotation.and_then(|rot| rot.moved);
        let params = params::params_for(params::ADAM, &values, moved, flag, [r, b], &device);
        let params = params.into_dispatch();
        let (m, v, g) = (
            moment_1.into_dispatch(),
            moment_2.into_dispatch(),
            g_low.clone().into_dispatch(),
        );
        let (m, v, n) = match rotation {
            None => Dispatch::wgsl_adam(m, v, g, params, limits),
            Some(rot) => {
                let c = rot.change_of_basis.clone().into_dispatch();
                Dispatch::wgsl_adam_rotate(m, v, g, params, c, limits)
            }
        };
        return LowRankAdam {
            moment_1: Tensor::from_dispatch(m),
            moment_2: Tensor::from_dispatch(v),
            normalized: Tensor::from_dispatch(n),
        };
    }
    if route.wgsl {
        report_fallback(&device);
    }
    let flag = flag.map(|f| f.tensor());
    let flag = flag.as_ref();
    let old = flag.map(|_| (moment_1.clone(), moment_2.clone()));
    let (m, v) = match rotation {
        Some(rot) => {
            let (m0, v0) = (moment_1.clone(), moment_2.clone());
            let c = rot.change_of_basis;
            let (m, v) = rotate_moments(moment_1, moment_2, c, rot.variant, adam.beta_2);
            match rot.moved {
                Some(moved) => (keep_on_skip(m, m0, moved), keep_on_skip(v, v0, moved)),
                None => (m, v),
            }
        }
        None => (moment_1, moment_2),
    };
    if route.cpu && flag.is_none() && flex::runs(&device, &[&m, &v, g_low]) {
        count_launch("adam: flex", [r, 0, b]);
        let (moment_1, moment_2, normalized) = flex::adam(m, v, g_low, adam);
        return LowRankAdam {
            moment_1,
            moment_2,
            normalized,
        };
    }
    let (m, v) = adam.update_moments(m, v, g_low);
    let n = adam.normalize(&m, &v);
    match (flag, old) {
        (Some(flag), Some((m0, v0))) => LowRankAdam {
            moment_1: keep_on_skip(m, m0, flag),
            moment_2: keep_on_skip(v, v0, flag),
            normalized: keep_on_skip(n.clone(), n.zeros_like(), flag),
        },
        _ => LowRankAdam {
            moment_1: m,
            moment_2: v,
            normalized: n,
        },
    }
}

/// One SubTrack tracking step on the device (docs/algorithm.md §4), with no read-back.
pub struct TrackedStep {
    /// S', a×r, re-orthonormalised where its drift exceeded the tolerance.
    pub basis: Tensor<2>,
    /// C = S'ᵀ·S, r×r (I where the basis did not move).
    pub change_of_basis: Tensor<2>,
    /// \[1\] where the basis moved; \[0\] where σ was at round-off level, zero or not finite.
    pub moved: Tensor<1>,
    /// \[1\] where S' was re-orthonormalised, else \[0\].
    pub reorthonormalized: Tensor<1>,
    /// The top singular value σ of the tangent (\[1\]; 0 where not finite).
    pub sigma: Tensor<1>,
    /// The rotation angle θ = min(η·σ, θ_max) in radians (\[1\]; 0 where the basis stayed).
    pub theta: Tensor<1>,
    /// The step flag of G ([`step_flag`]), found by the first projection.
    pub flag: Tensor<1>,
}

/// Squarings of the normalised ∇Fᵀ∇F before the power iterations of `top_singular.wgsl`:
/// the start vector's error shrinks like (λ2/λ1)^(2^10).
const SQUARINGS: usize = 10;

/// Whether [`track`] runs its kernels for a basis a×r and a gradient a×b on `device`.
pub fn tracking_runs(a: usize, r: usize, b: usize, dtype: DType, device: &Device) -> bool {
    dtype == DType::F32 && tracking::plan(a, r, b, Limits::WEBGPU) && wgsl_available(device)
}

/// The geodesic step of [`crate::geodesic::geodesic_step`] as WGSL kernels, reading nothing
/// back: A = SᵀG, G·Aᵀ and A·Aᵀ, the tangent ∇F = −2·(G·Aᵀ − S·(A·Aᵀ)) (update.wgsl), the
/// top singular triplet of ∇F through the r×r problem (repeated squaring, then power
/// iterations), the geodesic update of S with C = S'ᵀS, and the Cholesky
/// re-orthonormalisation where the drift max |S'ᵀS' − I| exceeds `tolerance`.
///
/// `None` when [`tracking_runs`] is false: the caller takes the host path.
/// The step flag of G comes from the first projection (A = SᵀG); where G holds NaN or ±∞
/// the basis stays, and [`TrackedStep::flag`] carries the flag on to the rest of the step.
pub fn track(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    step_size: f64,
    max_theta: Option<f64>,
    tolerance: f64,
) -> Option<TrackedStep> {
    let ([a, r], b) = (basis.dims(), g.dims()[1]);
    let device = g.device();
    if basis.dtype() != g.dtype() || !tracking_runs(a, r, b, g.dtype(), &device) {
        return None;
    }
    let limits = Limits::WEBGPU;
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

    let (coefficients, flag) =
        Dispatch::wgsl_project(d(basis), d(g), projection_tile(), limits, Vec::new());
    let (coefficients, flag) = (
        Tensor::<2>::from_dispatch(coefficients),
        Tensor::<1>::from_dispatch(flag),
    );
    let g_at = product(g, &coefficients);
    let a_at = product(&coefficients, &coefficients);
    // ∇F = −2·(G·Aᵀ − S·(A·Aᵀ)): the update kernel's d·(W − α·S·(s·N)) with W = G·Aᵀ,
    // N = A·Aᵀ, α = s = 1 and d = −2.
    let values = [1.0, -2.0, 1.0, 0.0];
    let scalars = params::params_for(params::UPDATE, &values, None, None, [r, r], &device);
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
    Some(TrackedStep {
        // S'·Fᵀ and F·C (C is symmetric): exact copies where F = I.
        basis: product(&moved_basis, &factor),
        change_of_basis: product(&factor, &change),
        moved: triplet.clone().narrow(0, r + 4, 1),
        reorthonormalized: Tensor::from_dispatch(status),
        sigma: triplet.clone().narrow(0, r, 1),
        theta: triplet.narrow(0, r + 1, 1),
        flag,
    })
}

/// The tensors recovery scaling (§7) reads.
pub struct RecoveryInputs<'a> {
    /// G, a×b; with `transposed`, the transposed view of the parameter's gradient (b×a
    /// stored), read in place.
    pub grad: &'a Tensor<2>,
    /// Whether `grad` is such a view (the right case of §1).
    pub transposed: bool,
    /// G's column sums of squares, 1×b ([`column_sq`]), where the caller has them: the
    /// portable path then skips its pass over G (the kernels form their own).
    pub grad_sq: Option<Tensor<2>>,
    /// G̃, r×b.
    pub g_low: &'a Tensor<2>,
    /// N, r×b.
    pub normalized: &'a Tensor<2>,
    /// The limiter's previous norm Λ_prev (\[1\]); `None` on the first step.
    pub previous: Option<&'a Tensor<1>>,
}

/// Recovery scales and the limiter (§7) with kept weight from `variant` and `scale` and
/// growth limit ζ = `growth_limit`: see [`recovery_scales`]. `flag` as in [`adam()`]: where
/// the step is skipped the returned norm is the previous one (when there is one). With
/// `route.wgsl`, two WGSL kernels (column norms, then limiter) on wgpu/WGSL devices for f32
/// tensors within `route.limits` (G over the binding limit in row chunks); tensor ops
/// otherwise, where `route.cpu` makes G's column sums one fused pass on `flex`
/// ([`column_sq_fused`]).
pub fn recovery(
    inputs: RecoveryInputs,
    variant: RecoveryScaling,
    scale: f64,
    growth_limit: f64,
    flag: Option<StepFlag>,
    route: Route,
) -> RecoveryScales {
    let RecoveryInputs {
        grad: g,
        transposed,
        grad_sq: g_sq,
        g_low,
        normalized,
        previous,
    } = inputs;
    let limits = route.limits;
    let max_binding_bytes = limits.max_binding_bytes;
    let device = g.device();
    let ([a, b], r) = (g.dims(), g_low.dims()[0]);
    let k = kept_weight(variant, scale);
    let runs = route.wgsl
        && [g, g_low, normalized]
            .into_iter()
            .map(|t| t.dtype())
            .chain(previous.map(|p| p.dtype()))
            .all(|d| d == DType::F32)
        && recovery::plan(a, r, b, limits).is_some()
        && wgsl_available(&device);
    if runs {
        let values = params::recovery_values(variant, scale, growth_limit);
        let params = params::params_for(params::RECOVERY, &values, None, flag, [r, b], &device);
        let params = params.into_dispatch();
        let (gd, ld, nd) = (
            g.clone().into_dispatch(),
            g_low.clone().into_dispatch(),
            normalized.clone().into_dispatch(),
        );
        let norms = recovery_norms();
        let (psi, norm) = match previous {
            None => Dispatch::wgsl_recovery(gd, ld, nd, params, max_binding_bytes, norms),
            Some(p) => Dispatch::wgsl_recovery_limited(
                gd,
                ld,
                nd,
                params,
                p.clone().into_dispatch(),
                max_binding_bytes,
                norms,
            ),
        };
        return RecoveryScales {
            scaled_phi: Tensor::from_dispatch(psi),
            kept_weight: k,
            norm: Tensor::from_dispatch(norm),
        };
    }
    if route.wgsl {
        report_fallback(&device);
    }
    let flag = flag.map(|f| f.tensor());
    let flag = flag.as_ref();
    let scales = recovery_scales(
        g_sq.unwrap_or_else(|| column_sq_fused(g, transposed, route)),
        column_sq_fused(g_low, false, route),
        column_sq_fused(normalized, false, route),
        variant,
        scale,
        growth_limit,
        previous,
    );
    match (flag, previous) {
        (Some(flag), Some(previous)) => RecoveryScales {
            norm: keep_on_skip(scales.norm, previous.clone(), flag),
            ..scales
        },
        _ => scales,
    }
}

/// G's column sums of squares, [1, b], as [`column_sq`] computes them: with `route.cpu`, in
/// one fused pass on `flex` (G (a×b), or with `transposed` the transposed view of a b×a
/// tensor, whose rows then hold G's columns); `route.wgsl` plays no part.
pub fn column_sq_fused(g: &Tensor<2>, transposed: bool, route: Route) -> Tensor<2> {
    if route.cpu && flex::runs(&g.device(), &[g]) {
        let [a, b] = g.dims();
        count_launch("column_sq: flex", [a, 0, b]);
        let stored = if transposed {
            g.clone().transpose()
        } else {
            g.clone()
        };
        return flex::column_sq(stored, transposed);
    }
    column_sq(g, transposed)
}

/// The recovery inputs of the weight update: G (a×b), ψ (1×b), G̃ (r×b) and the residual's
/// weight k on S·G̃ (see [`RecoveryScales`]).
pub struct RecoveryTerm {
    /// G, a×b in the canonical layout.
    pub grad: Tensor<2>,
    /// ψ = f·φ, 1×b.
    pub psi: Tensor<2>,
    /// G̃, r×b.
    pub g_low: Tensor<2>,
    /// k: 1 (paper) or s (the authors' code).
    pub kept_weight: f64,
}

/// The coefficients of the weight update W' = d·(W − α·(S·L + G⊙ψ)), L = s·N − k·G̃⊙ψ.
#[derive(Clone, Copy, Debug)]
pub struct UpdateCoefficients {
    /// α = lr·c (learning rate times bias correction).
    pub alpha: f64,
    /// d = 1 − lr·wd (decoupled weight decay).
    pub decay: f64,
    /// s, the scale of the projected update.
    pub scale: f64,
}

/// The tensors of a projected matrix's weight update.
pub struct UpdateInputs<'a> {
    /// S, a×r.
    pub basis: &'a Tensor<2>,
    /// N, r×b.
    pub normalized: Tensor<2>,
    /// W, a×b, or b×a when `transposed` (the right case of §1).
    pub weight: Tensor<2>,
    /// Whether W is stored b×a.
    pub transposed: bool,
    /// The recovery term (§7), when recovery scaling is on.
    pub recovery: Option<RecoveryTerm>,
}

/// The weight update of a projected matrix (docs/algorithm.md §2, with §7 folded in):
/// W' = d·(W − α·(S·L + G⊙ψ)) with L = s·N − k·G̃⊙ψ, or W' = d·(W − α·s·S·N) without
/// recovery; returns W' in W's layout.
///
/// `flag` as in [`adam()`]: where the step is skipped W is returned unchanged. With
/// `route.wgsl`, one fused WGSL kernel on wgpu/WGSL devices for f32 tensors within
/// `route.limits` (S·L is never stored; S, W and G over the binding limit in row chunks, the
/// left layout only, a transposed W over it taking the tensor ops; columns past the
/// workgroup limit in several launches); tensor ops otherwise, where `route.cpu` makes the
/// a×b part W's own buffer on `flex`: one pass over W and G, then one gemm into W (S·L is
/// never stored; not with a `flag`).
pub fn update(
    inputs: UpdateInputs,
    coefficients: UpdateCoefficients,
    flag: Option<StepFlag>,
    route: Route,
) -> Tensor<2> {
    let UpdateInputs {
        basis,
        normalized,
        weight,
        transposed,
        recovery,
    } = inputs;
    let limits = route.limits;
    let device = weight.device();
    let ([a, r], b) = (basis.dims(), normalized.dims()[1]);
    let UpdateCoefficients {
        alpha,
        decay,
        scale,
    } = coefficients;
    let runs = route.wgsl
        && [basis, &normalized, &weight]
            .into_iter()
            .chain(recovery.iter().flat_map(|t| [&t.grad, &t.psi, &t.g_low]))
            .all(|t| t.dtype() == DType::F32)
        && update::plan(a, r, b, transposed, limits).is_some()
        && wgsl_available(&device);
    if runs {
        let kept = recovery.as_ref().map_or(0.0, |t| t.kept_weight);
        let values = params::update_values(coefficients, kept);
        let scalars = params::params_for(params::UPDATE, &values, None, flag, [r, b], &device);
        let scalars = scalars.into_dispatch();
        let (basis, normalized, weight) = (
            basis.clone().into_dispatch(),
            normalized.into_dispatch(),
            weight.into_dispatch(),
        );
        let how = UpdateLaunch {
            transposed,
            tile: projection_tile(),
            limits,
        };
        return Tensor::from_dispatch(match recovery {
            None => Dispatch::wgsl_update(basis, normalized, weight, scalars, how),
            Some(t) => Dispatch::wgsl_update_recovery(
                basis,
                normalized,
                weight,
                scalars,
                t.grad.into_dispatch(),
                t.psi.into_dispatch(),
                t.g_low.into_dispatch(),
                how,
            ),
        });
    }
    if route.wgsl {
        report_fallback(&device);
    }
    let flag = flag.map(|f| f.tensor());
    let flag = flag.as_ref();
    // α is folded into the r×b and 1×b factors, so that no a×b pass scales by it:
    // α·(S·L + G⊙ψ) = S·(α·L) + G⊙(α·ψ); α·k scales ψ (1×b) rather than G̃⊙ψ (r×b).
    // The fused CPU loops (not with a device-side flag, which only the WGSL route makes).
    let fused = route.cpu && flag.is_none() && {
        let terms = recovery.iter().flat_map(|t| [&t.grad, &t.psi, &t.g_low]);
        let all: Vec<_> = [basis, &normalized, &weight]
            .into_iter()
            .chain(terms)
            .collect();
        flex::runs(&device, &all)
    };
    let low = match &recovery {
        Some(t) if fused => flex::low(
            normalized,
            t.g_low.clone(),
            t.psi.clone(),
            alpha * scale,
            alpha * t.kept_weight,
        ),
        Some(t) => {
            normalized.mul_scalar(alpha * scale)
                - t.g_low.clone() * t.psi.clone().mul_scalar(alpha * t.kept_weight)
        }
        None => normalized.mul_scalar(alpha * scale),
    };
    // The a×b terms are formed in W's own layout: in the right case (S·L)ᵀ = Lᵀ·Sᵀ and
    // (G⊙ψ)ᵀ = Gᵀ⊙ψᵀ, so no element-wise pass runs over a transposed view (on `flex` such a
    // pass costs about 10× a contiguous one).
    let own_layout = |x: Tensor<2>| if transposed { x.transpose() } else { x };
    if fused {
        // W's own buffer takes the result: one pass over W and G for the recovery term,
        // then one gemm into W; S·L is never stored.
        count_launch("update: flex", [a, r, b]);
        let recovery = recovery.map(|t| (own_layout(t.grad), t.psi, alpha));
        return flex::step(weight, basis, low, recovery, decay, transposed);
    }
    let mut u = if transposed {
        crate::basis::project_back_transposed(basis, low)
    } else {
        crate::basis::project_back(basis, low)
    };
    if let Some(t) = recovery {
        u = u + own_layout(t.grad) * own_layout(t.psi.mul_scalar(alpha));
    }
    let old = flag.map(|_| weight.clone());
    let stepped = weight - u;
    let stepped = if decay == 1.0 {
        stepped
    } else {
        stepped.mul_scalar(decay)
    };
    match (flag, old) {
        (Some(flag), Some(old)) => keep_on_skip(stepped, old, flag),
        _ => stepped,
    }
}
