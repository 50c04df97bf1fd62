//! The crate's building blocks for its own tests, benchmark and example job: the launch
//! counters, the tile, split and norm pins, the tuning hooks, the host solver, and each
//! operation of the step on the route a request resolves to. Not API: hidden from the
//! documentation, and any of it may change in any release.

/// The basis: initial and refreshed bases, projection, orthonormality upkeep.
pub mod basis {
    pub use crate::basis::*;
}

/// The geodesic step on the host.
pub mod geodesic {
    pub use crate::geodesic::*;
}

/// The WGSL kernels, their plans, pins, tuner and launch counts.
#[cfg(feature = "wgpu")]
pub mod kernels {
    pub use crate::kernels::*;
}

/// The host eigensolver and its counters.
pub mod linalg {
    pub use crate::linalg::*;
}

/// Adam's moments and coefficients.
pub mod moments {
    pub use crate::moments::*;
}

/// Recovery scaling's scales and limiter, as tensor ops.
pub mod recovery {
    pub use crate::recovery::*;
}

/// The seeded streams (SplitMix64).
pub mod rng {
    pub use crate::rng::*;
}

/// The routes, and each operation of the step on the route a [`RouteRequest`](crate::route::RouteRequest) resolves to.
pub mod route {
    use burn::tensor::Tensor;

    use crate::config::RecoveryScaling;
    use crate::moments::AdamParams;
    use crate::recovery::RecoveryScales;
    pub use crate::route::*;

    /// G̃ = SᵀG (§2) on the route `route` resolves to for G's device (see [`Ops::project`]).
    pub fn project(basis: &Tensor<2>, g: &Tensor<2>, route: RouteRequest) -> Tensor<2> {
        resolve(route, &g.device()).project(basis, g, &[]).0
    }

    /// (G̃, G's step flag): [`project()`] with the flag ([`step_flag`]), which the WGSL kernel
    /// finds while it reads G (no pass of its own); the other routes take a pass for it.
    pub fn project_checked(
        basis: &Tensor<2>,
        g: &Tensor<2>,
        route: RouteRequest,
    ) -> (Tensor<2>, Tensor<1>) {
        crate::route::with_step_flag(resolve(route, &g.device()).project(basis, g, &[]), g)
    }

    /// (G̃, the step's parameter buffer): the projection with G's step flag in the last slot of
    /// a buffer that holds `values` (layout in `step_buffer.rs`), for the later operations to take as
    /// [`StepFlag::Packed`]. On the WGSL route the projection kernel writes the flag into that
    /// buffer, so a step uploads one buffer and concatenates nothing; elsewhere the buffer is
    /// built from G's flag.
    pub fn project_packed(
        basis: &Tensor<2>,
        g: &Tensor<2>,
        route: RouteRequest,
        values: ParamValues,
    ) -> (Tensor<2>, StepParams) {
        crate::route::project_packed_on(&*resolve(route, &g.device()), basis, g, values)
    }

    /// Low-rank Adam ([`Ops::adam`]) on the route `route` resolves to for G̃'s device.
    pub fn adam(
        moment_1: Tensor<2>,
        moment_2: Tensor<2>,
        g_low: &Tensor<2>,
        adam: &AdamParams,
        rotation: Option<Rotation>,
        flag: Option<StepFlag>,
        route: RouteRequest,
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
        route: RouteRequest,
    ) -> RecoveryScales {
        resolve(route, &inputs.grad.device()).recovery(inputs, variant, scale, growth_limit, flag)
    }

    /// G's column sums of squares ([`Ops::column_sq`]) on the route `route` resolves to.
    pub fn column_sq_fused(g: &Tensor<2>, transposed: bool, route: RouteRequest) -> Tensor<2> {
        resolve(route, &g.device()).column_sq(g, transposed)
    }

    /// The weight update ([`Ops::update`]) on the route `route` resolves to for W's device.
    pub fn update(
        inputs: UpdateInputs,
        coefficients: UpdateCoefficients,
        flag: Option<StepFlag>,
        route: RouteRequest,
    ) -> Tensor<2> {
        resolve(route, &inputs.weight.device()).update(inputs, coefficients, flag)
    }
}
