//! Where the step's operations run. Each route implements the same small set of operations
//! ([`Ops`]), and the step (`optimizer.rs`) runs over whichever one [`choose`] picks for a
//! parameter:
//!
//! - [`Portable`](portable::Portable): Burn's tensor ops on any backend, the reference;
//! - `FusedLoops`: fused CPU loops on Burn's `flex` backend (`flex/`);
//! - `Wgsl`: the WGSL kernels (`kernels/`, `shaders/`) on wgpu devices that compile WGSL
//!   (`wgsl/`), each operation falling back to the portable one where its kernel cannot run
//!   the sizes.
//!
//! `docs/routes.md` lists every operation against every route. `testing.rs` runs one
//! operation at a time on the route a [`RouteRequest`] resolves to, for the tests and the
//! benchmark.

mod flex;
mod ops;
mod portable;
pub(crate) mod step_buffer;
#[cfg(feature = "wgpu")]
mod wgsl;

use std::collections::BTreeSet;
use std::sync::Mutex;

use burn::tensor::{DType, Device, Tensor};

use crate::config::SubTrackConfig;

pub use crate::launches::launches;
pub use crate::limits::Limits;
pub use ops::{
    Fused, LimitedInputs, LowRankAdam, Ops, RecoveryInputs, RecoveryTerm, Rotation, TrackedStep,
    Tracking, UpdateCoefficients, UpdateInputs,
};
pub use portable::Portable;
pub use step_buffer::{ParamValues, StepFlag, StepParams};
#[cfg(feature = "wgpu")]
pub use wgsl::{project_split, track};

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
pub struct RouteRequest {
    /// The WGSL kernels, on wgpu devices that compile WGSL, for f32 tensors within `limits`.
    pub wgsl: bool,
    /// The fused CPU loops on `flex`.
    pub cpu: bool,
    /// The device limits the WGSL launches plan for, at most: each is lowered to the
    /// adapter's where that is smaller.
    pub limits: Limits,
}

impl RouteRequest {
    /// Burn's tensor ops alone.
    pub const PORTABLE: RouteRequest = RouteRequest::new(false, false);
    /// The WGSL kernels where they run, else the tensor ops.
    pub const WGSL: RouteRequest = RouteRequest::new(true, false);
    /// The fused CPU loops where they run, else the tensor ops.
    pub const CPU: RouteRequest = RouteRequest::new(false, true);

    /// `wgsl` and `cpu` as given, under [`Limits::ROUTE`] (WebGPU's binding size and
    /// workgroup count; what a shader binds and holds as the adapter allows).
    pub const fn new(wgsl: bool, cpu: bool) -> Self {
        RouteRequest {
            wgsl,
            cpu,
            limits: Limits::ROUTE,
        }
    }

    /// This route with the WGSL launches planned for `limits` (smaller limits exercise the
    /// row chunks and the launches split across columns on small tensors).
    pub const fn within(self, limits: Limits) -> Self {
        RouteRequest { limits, ..self }
    }
}

/// The route that runs: one of the three implementations of [`Ops`].
pub enum Route {
    /// Burn's tensor ops.
    Portable(Portable),
    /// The fused CPU loops on `flex`.
    Flex(flex::FusedLoops),
    /// The WGSL kernels.
    #[cfg(feature = "wgpu")]
    Wgsl(wgsl::Wgsl),
}

impl std::ops::Deref for Route {
    type Target = dyn Ops;

    fn deref(&self) -> &(dyn Ops + 'static) {
        match self {
            Route::Portable(ops) => ops,
            Route::Flex(ops) => ops,
            #[cfg(feature = "wgpu")]
            Route::Wgsl(ops) => ops,
        }
    }
}

/// The route `route` takes for tensors on `device`: the WGSL kernels where asked for, built
/// (the `wgpu` feature) and `device` compiles WGSL, else the fused CPU loops where asked for
/// and `device` is `flex`, else the portable path. Opens the device's client.
pub fn resolve(route: RouteRequest, device: &Device) -> Route {
    #[cfg(feature = "wgpu")]
    if route.wgsl && wgsl::runs_on(device) {
        let limits = crate::kernels::device_limits(device)
            .map_or(route.limits, |adapter| route.limits.min(adapter));
        return Route::Wgsl(wgsl::Wgsl::within(limits));
    }
    if route.cpu && flex::runs_on(device) {
        Route::Flex(flex::FusedLoops)
    } else {
        Route::Portable(Portable)
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
) -> Route {
    let chosen = if dtype == DType::F32 {
        resolve(
            RouteRequest::new(config.wgsl_kernels, config.cpu_kernels),
            device,
        )
    } else {
        Route::Portable(Portable)
    };
    // The message is built only where it would be logged: this runs at every step.
    if log::log_enabled!(log::Level::Info) {
        log_once(&chosen, device, sizes);
    }
    chosen
}

/// Log `chosen` for a parameter of `sizes` on `device`, unless this process has logged the
/// same choice before.
fn log_once(chosen: &Route, device: &Device, sizes: Option<Sizes>) {
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

/// The projection with G's step flag in the last slot of a buffer that holds `values`
/// (layout in `step_buffer.rs`), for the later operations to take as [`StepFlag::Packed`].
/// On the WGSL route the projection kernel writes the flag into that buffer, so a step
/// uploads one buffer and concatenates nothing; elsewhere the buffer is built from G's flag.
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
