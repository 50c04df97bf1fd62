//! Where the step's operations run. Each route implements the same small set of operations
//! ([`Ops`]), and the step (`optimizer.rs`) runs over whichever one [`choose`] picks for a
//! parameter:
//!
//! - [`Portable`](portable::Portable): Burn's tensor ops on any backend, the reference;
//! - `Flex`: fused CPU loops on Burn's `flex` backend (`flex/`);
//! - `Wgsl`: the WGSL kernels (`kernels/`, `shaders/`) on wgpu devices that compile WGSL
//!   (`wgsl/`), each operation falling back to the portable one where its kernel cannot run
//!   the sizes.
//!
//! `docs/routes.md` lists every operation against every route. The functions below that
//! take a [`Route`] run one operation on the route it resolves to, for the tests and the
//! benchmark.

mod flex;
mod portable;
#[cfg(feature = "wgpu")]
mod wgsl;

use std::collections::BTreeSet;
use std::sync::Mutex;

use burn::tensor::{DType, Device, Tensor};

use crate::config::{RecoveryScaling, SubTrackConfig};
use crate::moments::AdamParams;
use crate::recovery::RecoveryScales;

pub use crate::launches::launches;
pub use crate::limits::Limits;
pub use crate::ops::{
    LowRankAdam, RecoveryInputs, RecoveryTerm, Rotation, TrackedStep, UpdateCoefficients,
    UpdateInputs,
};
pub use crate::params::{ParamValues, StepFlag, StepParams};
pub use portable::Portable;
#[cfg(feature = "wgpu")]
pub use wgsl::{project_split, track};

/// The operations of one projected step (docs/algorithm.md §2), as each route implements
/// them. Shapes: S a×r, G a×b (the canonical layout of §1), G̃, M, V and N r×b. `flag` is
/// the device-side step flag ([`step_flag`]; `None`: the step runs); where it is 0 every
/// operation leaves its state as it was.
pub trait Ops {
    /// The route's name, for the log.
    fn name(&self) -> &'static str;

    /// (G̃ = SᵀG, `head` followed by G's step flag): the flag only where the route finds it
    /// while reading G (the WGSL kernel); `None` leaves it to the caller.
    fn project(
        &self,
        basis: &Tensor<2>,
        g: &Tensor<2>,
        head: &[f32],
    ) -> (Tensor<2>, Option<Tensor<1>>);

    /// G's column sums of squares, 1×b (`transposed`: G is the transposed view of a b×a
    /// tensor), as [`crate::recovery::column_sq`] computes them.
    fn column_sq(&self, g: &Tensor<2>, transposed: bool) -> Tensor<2>;

    /// Low-rank Adam on M and V with G̃, after the projection-aware rotation (§5) where
    /// `rotation` is given. Where the step is skipped N is 0.
    fn adam(
        &self,
        moment_1: Tensor<2>,
        moment_2: Tensor<2>,
        g_low: &Tensor<2>,
        adam: &AdamParams,
        rotation: Option<Rotation>,
        flag: Option<StepFlag>,
    ) -> LowRankAdam;

    /// Recovery scales and the limiter (§7) with the kept weight of `variant` and `scale`
    /// and growth limit ζ = `growth_limit`; where the step is skipped the norm is the
    /// previous one (when there is one).
    fn recovery(
        &self,
        inputs: RecoveryInputs,
        variant: RecoveryScaling,
        scale: f64,
        growth_limit: f64,
        flag: Option<StepFlag>,
    ) -> RecoveryScales;

    /// The weight update (§2 with §7 folded in): W' = d·(W − α·(S·L + G⊙ψ)) with
    /// L = s·N − k·G̃⊙ψ, or W' = d·(W − α·s·S·N) without recovery, in W's layout. Where the
    /// step is skipped W is returned unchanged.
    fn update(
        &self,
        inputs: UpdateInputs,
        coefficients: UpdateCoefficients,
        flag: Option<StepFlag>,
    ) -> Tensor<2>;

    /// The geodesic tracking step (§4) on the device, reading nothing back, for a basis
    /// a×r and a gradient a×b; `None` where this route does not run it (the caller takes
    /// the host path, [`crate::geodesic::geodesic_step`]).
    fn track(
        &self,
        _basis: &Tensor<2>,
        _g: &Tensor<2>,
        _step_size: f64,
        _max_theta: Option<f64>,
        _tolerance: f64,
    ) -> Option<TrackedStep> {
        None
    }

    /// Whether [`track`](Ops::track) runs for a basis a×r and a gradient a×b.
    fn tracks(&self, _sizes: Sizes) -> bool {
        false
    }

    /// Whether this route fuses recovery scaling (§7) into low-rank Adam and the weight
    /// update for a parameter of `sizes` whose basis did not move, with or without a
    /// previous norm ([`adam_recovery`](Ops::adam_recovery) then
    /// [`update_limited`](Ops::update_limited), in place of [`adam`](Ops::adam),
    /// [`recovery`](Ops::recovery) and [`update`](Ops::update)).
    fn fuses_recovery(&self, _sizes: Sizes, _previous: bool) -> bool {
        false
    }

    /// Low-rank Adam (§2) fused with recovery scaling's column norms and scales (§7), for a
    /// step whose basis did not move: (M', V', N) and a scratch buffer of φ and partial sums
    /// for [`update_limited`](Ops::update_limited). `params` is the step's parameter buffer,
    /// its flag included. Only where [`fuses_recovery`](Ops::fuses_recovery) says so.
    fn adam_recovery(
        &self,
        _moment_1: Tensor<2>,
        _moment_2: Tensor<2>,
        _g_low: &Tensor<2>,
        _grad: &Tensor<2>,
        _params: &StepParams,
    ) -> (LowRankAdam, Tensor<1>) {
        unreachable!("{} fuses no recovery scaling", self.name())
    }

    /// (W', Λ_prev') of the weight update with recovery scaling's limiter fused in (§2, §7):
    /// ψ = f·φ from [`adam_recovery`](Ops::adam_recovery)'s `scratch` and `previous`
    /// (Λ_prev). `inputs.recovery` is `None`: G and G̃ come as `grad` and `g_low`. Only where
    /// [`fuses_recovery`](Ops::fuses_recovery) says so.
    fn update_limited(
        &self,
        _inputs: UpdateInputs,
        _grad: &Tensor<2>,
        _g_low: &Tensor<2>,
        _scratch: Tensor<1>,
        _previous: Option<&Tensor<1>>,
        _params: &StepParams,
    ) -> (Tensor<2>, Tensor<1>) {
        unreachable!("{} fuses no recovery scaling", self.name())
    }

    /// Whether this route finds the step flag on the device as it projects, so that a step
    /// may leave its finite check to the device and read nothing back.
    fn checks_on_device(&self) -> bool {
        false
    }

    /// Whether [`recovery`](Ops::recovery) takes G's column sums of squares from the caller
    /// ([`RecoveryInputs::grad_sq`]); the WGSL kernels form their own.
    fn takes_grad_sq(&self) -> bool {
        true
    }

    /// The operations that fall back to the portable ones at these sizes.
    fn fallbacks(&self, _sizes: Sizes) -> Vec<&'static str> {
        Vec::new()
    }
}

/// The sizes of one projected parameter: S a×r, G a×b, W stored b×a where `transposed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Rows of G (the smaller side of W).
    pub a: usize,
    /// The rank.
    pub r: usize,
    /// Columns of G.
    pub b: usize,
    /// Whether W is stored b×a (the right case of §1).
    pub transposed: bool,
}

/// The routes a call may take, as asked for: the WGSL kernels and the fused CPU loops each
/// run only where they can (the WGSL kernels on wgpu devices that compile WGSL, the loops
/// on `flex`); anything else takes Burn's tensor ops, the portable path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The WGSL kernels, on wgpu devices that compile WGSL, for f32 tensors within `limits`.
    pub wgsl: bool,
    /// The fused CPU loops on `flex`.
    pub cpu: bool,
    /// The device limits the WGSL launches plan for, at most: each is lowered to the
    /// adapter's where that is smaller.
    pub limits: Limits,
}

impl Route {
    /// Burn's tensor ops alone.
    pub const PORTABLE: Route = Route::new(false, false);
    /// The WGSL kernels where they run, else the tensor ops.
    pub const WGSL: Route = Route::new(true, false);
    /// The fused CPU loops where they run, else the tensor ops.
    pub const CPU: Route = Route::new(false, true);

    /// `wgsl` and `cpu` as given, under [`Limits::ROUTE`] (WebGPU's binding size and
    /// workgroup count; what a shader binds and holds as the adapter allows).
    pub const fn new(wgsl: bool, cpu: bool) -> Self {
        Route {
            wgsl,
            cpu,
            limits: Limits::ROUTE,
        }
    }

    /// This route with the WGSL launches planned for `limits` (smaller limits exercise the
    /// row chunks and the launches split across columns on small tensors).
    pub const fn within(self, limits: Limits) -> Self {
        Route { limits, ..self }
    }
}

/// The route that runs: one of the three implementations of [`Ops`].
pub enum Chosen {
    /// Burn's tensor ops.
    Portable(Portable),
    /// The fused CPU loops on `flex`.
    Flex(flex::Flex),
    /// The WGSL kernels.
    #[cfg(feature = "wgpu")]
    Wgsl(wgsl::Wgsl),
}

impl std::ops::Deref for Chosen {
    type Target = dyn Ops;

    fn deref(&self) -> &(dyn Ops + 'static) {
        match self {
            Chosen::Portable(ops) => ops,
            Chosen::Flex(ops) => ops,
            #[cfg(feature = "wgpu")]
            Chosen::Wgsl(ops) => ops,
        }
    }
}

/// The route `route` takes for tensors on `device`: the WGSL kernels where asked for, built
/// (the `wgpu` feature) and `device` compiles WGSL, else the fused CPU loops where asked for
/// and `device` is `flex`, else the portable path. Opens the device's client.
pub fn resolve(route: Route, device: &Device) -> Chosen {
    #[cfg(feature = "wgpu")]
    if route.wgsl && wgsl::runs_on(device) {
        let limits = crate::kernels::device_limits(device)
            .map_or(route.limits, |adapter| route.limits.min(adapter));
        return Chosen::Wgsl(wgsl::Wgsl::within(limits));
    }
    if route.cpu && flex::runs_on(device) {
        Chosen::Flex(flex::Flex)
    } else {
        Chosen::Portable(Portable)
    }
}

/// The route of a parameter of `dtype` on `device` under `config`
/// ([`wgsl_kernels`](SubTrackConfig::wgsl_kernels),
/// [`cpu_kernels`](SubTrackConfig::cpu_kernels)): [`resolve`], except that a dtype other
/// than f32 takes the portable path (the kernels and loops are f32). `sizes` are a projected
/// parameter's, `None` for one AdamW steps. Each distinct choice (route, device, sizes and
/// the operations that fall back) is logged once per process, at info level.
pub fn choose(
    config: &SubTrackConfig,
    device: &Device,
    dtype: DType,
    sizes: Option<Sizes>,
) -> Chosen {
    let chosen = if dtype == DType::F32 {
        resolve(Route::new(config.wgsl_kernels, config.cpu_kernels), device)
    } else {
        Chosen::Portable(Portable)
    };
    // The message is built only where it would be logged: this runs at every step.
    if log::log_enabled!(log::Level::Info) {
        log_once(&chosen, device, sizes);
    }
    chosen
}

/// Log `chosen` for a parameter of `sizes` on `device`, unless this process has logged the
/// same choice before.
fn log_once(chosen: &Chosen, device: &Device, sizes: Option<Sizes>) {
    static LOGGED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let what = match sizes {
        Some(s) => {
            let fallbacks = chosen.fallbacks(s);
            let fallbacks = if fallbacks.is_empty() {
                String::new()
            } else {
                format!(" ({} on the portable path)", fallbacks.join(", "))
            };
            format!(
                "G {}×{} at rank {} on {device:?}: route {}{fallbacks}",
                s.a,
                s.b,
                s.r,
                chosen.name()
            )
        }
        None => format!("AdamW on {device:?}: route {}", chosen.name()),
    };
    let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    if logged.insert(what.clone()) {
        log::info!("subtrack: {what}");
    }
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

/// G̃ = SᵀG (§2) on the route `route` resolves to for G's device (see [`Ops::project`]).
pub fn project(basis: &Tensor<2>, g: &Tensor<2>, route: Route) -> Tensor<2> {
    resolve(route, &g.device()).project(basis, g, &[]).0
}

/// (G̃, G's step flag): [`project()`] with the flag ([`step_flag`]), which the WGSL kernel
/// finds while it reads G (no pass of its own); the other routes take a pass for it.
pub fn project_checked(basis: &Tensor<2>, g: &Tensor<2>, route: Route) -> (Tensor<2>, Tensor<1>) {
    with_step_flag(resolve(route, &g.device()).project(basis, g, &[]), g)
}

/// (G̃, the step's parameter buffer): the projection with G's step flag in the last slot of
/// a buffer that holds `values` (layout in `params.rs`), for the later operations to take as
/// [`StepFlag::Packed`]. On the WGSL route the projection kernel writes the flag into that
/// buffer, so a step uploads one buffer and concatenates nothing; elsewhere the buffer is
/// built from G's flag.
pub fn project_packed(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    route: Route,
    values: ParamValues,
) -> (Tensor<2>, StepParams) {
    project_packed_on(&*resolve(route, &g.device()), basis, g, values)
}

/// [`project_packed`] on `ops`.
pub(crate) fn project_packed_on(
    ops: &dyn Ops,
    basis: &Tensor<2>,
    g: &Tensor<2>,
    values: ParamValues,
) -> (Tensor<2>, StepParams) {
    let (g_low, buffer) = ops.project(basis, g, &values.head());
    let buffer = buffer.unwrap_or_else(|| values.upload(None, Some(&step_flag(g)), &g.device()));
    (g_low, StepParams { buffer, values })
}

/// (G̃, flag) from [`Ops::project`]'s result with an empty head: its flag, or G's own.
pub(crate) fn with_step_flag(
    projected: (Tensor<2>, Option<Tensor<1>>),
    g: &Tensor<2>,
) -> (Tensor<2>, Tensor<1>) {
    match projected {
        (g_low, Some(flag)) => (g_low, flag),
        (g_low, None) => (g_low, step_flag(g)),
    }
}

/// Low-rank Adam ([`Ops::adam`]) on the route `route` resolves to for G̃'s device.
pub fn adam(
    moment_1: Tensor<2>,
    moment_2: Tensor<2>,
    g_low: &Tensor<2>,
    adam: &AdamParams,
    rotation: Option<Rotation>,
    flag: Option<StepFlag>,
    route: Route,
) -> LowRankAdam {
    resolve(route, &g_low.device()).adam(moment_1, moment_2, g_low, adam, rotation, flag)
}

/// Recovery scaling ([`Ops::recovery`]) on the route `route` resolves to for G's device.
pub fn recovery(
    inputs: RecoveryInputs,
    variant: RecoveryScaling,
    scale: f64,
    growth_limit: f64,
    flag: Option<StepFlag>,
    route: Route,
) -> RecoveryScales {
    resolve(route, &inputs.grad.device()).recovery(inputs, variant, scale, growth_limit, flag)
}

/// G's column sums of squares ([`Ops::column_sq`]) on the route `route` resolves to.
pub fn column_sq_fused(g: &Tensor<2>, transposed: bool, route: Route) -> Tensor<2> {
    resolve(route, &g.device()).column_sq(g, transposed)
}

/// The weight update ([`Ops::update`]) on the route `route` resolves to for W's device.
pub fn update(
    inputs: UpdateInputs,
    coefficients: UpdateCoefficients,
    flag: Option<StepFlag>,
    route: Route,
) -> Tensor<2> {
    resolve(route, &inputs.weight.device()).update(inputs, coefficients, flag)
}
