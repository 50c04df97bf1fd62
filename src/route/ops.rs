//! [`Ops`]: the operations of one projected step (docs/algorithm.md §2) that each route
//! implements, and the values they take and return, whichever route runs them.

use burn::tensor::Tensor;

use super::Sizes;
use super::step_buffer::{StepFlag, StepParams};
use crate::config::{ProjectionAware, RecoveryScaling};
use crate::moments::AdamParams;
use crate::recovery::RecoveryScales;

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
    /// The step flag of G ([`step_flag`](crate::route::step_flag)), found by the first projection.
    pub flag: Tensor<1>,
}

/// The tensors recovery scaling (§7) reads.
pub struct RecoveryInputs<'a> {
    /// G, a×b; with `transposed`, the transposed view of the parameter's gradient (b×a
    /// stored), read in place.
    pub grad: &'a Tensor<2>,
    /// Whether `grad` is such a view (the right case of §1).
    pub transposed: bool,
    /// G's column sums of squares, 1×b ([`column_sq`](crate::recovery::column_sq)), where the caller has them: the
    /// portable path then skips its pass over G (the kernels form their own).
    pub grad_sq: Option<Tensor<2>>,
    /// G̃, r×b.
    pub g_low: &'a Tensor<2>,
    /// N, r×b.
    pub normalized: &'a Tensor<2>,
    /// The limiter's previous norm Λ_prev (\[1\]); `None` on the first step.
    pub previous: Option<&'a Tensor<1>>,
}

/// The recovery inputs of the weight update: G (a×b), ψ (1×b), G̃ (r×b) and the residual's
/// weight k on S·G̃ (see [`RecoveryScales`](crate::recovery::RecoveryScales)).
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

/// The operations of one projected step (docs/algorithm.md §2), as each route implements
/// them. Shapes: S a×r, G a×b (the canonical layout of §1), G̃, M, V and N r×b. `flag` is
/// the device-side step flag ([`step_flag`](super::step_flag); `None`: the step runs); where it is 0 every
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

    /// Whether this route runs the geodesic tracking step (§4) on the device for a basis
    /// a×r and a gradient a×b: the [`Tracking`] that [`track`](Ops::track) takes, or `None`
    /// (the step then takes the host path, [`crate::geodesic::geodesic_step`]).
    fn tracking(&self, _sizes: Sizes) -> Option<Tracking> {
        None
    }

    /// The geodesic tracking step (§4) on the device, reading nothing back, where
    /// [`tracking`](Ops::tracking) gave `tracking` for these sizes.
    fn track(
        &self,
        _basis: &Tensor<2>,
        _g: &Tensor<2>,
        _step_size: f64,
        _max_theta: Option<f64>,
        _tolerance: f64,
        _tracking: Tracking,
    ) -> TrackedStep {
        unreachable!(
            "{} has no tracking step to give a Tracking for",
            self.name()
        )
    }

    /// Whether this route fuses recovery scaling (§7) into low-rank Adam and the weight
    /// update for a parameter of `sizes` whose basis did not move, with or without a
    /// previous norm: the [`Fused`] choice that
    /// [`update_limited`](Ops::update_limited) takes, after
    /// [`adam_recovery`](Ops::adam_recovery), in place of [`adam`](Ops::adam),
    /// [`recovery`](Ops::recovery) and [`update`](Ops::update); or `None`.
    fn fused_recovery(&self, _sizes: Sizes, _previous: bool) -> Option<Fused> {
        None
    }

    /// Low-rank Adam (§2) fused with recovery scaling's column norms and scales (§7), for a
    /// step whose basis did not move: (M', V', N) and a scratch buffer of φ and partial sums
    /// for [`update_limited`](Ops::update_limited). `params` is the step's parameter buffer,
    /// its flag included. Only where [`fused_recovery`](Ops::fused_recovery) gave a
    /// [`Fused`].
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
    /// (Λ_prev). `inputs.recovery` is `None`: G and G̃ come as `grad` and `g_low`. `fused`
    /// is what [`fused_recovery`](Ops::fused_recovery) chose.
    fn update_limited(
        &self,
        _inputs: UpdateInputs,
        _limited: LimitedInputs,
        _params: &StepParams,
        _fused: Fused,
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

/// A route's word that it runs the geodesic tracking step on the device for some sizes
/// ([`Ops::tracking`]); only a route makes one.
#[derive(Clone, Copy, Debug)]
pub struct Tracking(pub(super) ());

/// A route's choice to fuse recovery scaling into low-rank Adam and the weight update for
/// some sizes ([`Ops::fused_recovery`]); only a route makes one.
#[derive(Clone, Copy, Debug)]
pub struct Fused {
    /// The tile of the limited update.
    #[cfg(feature = "wgpu")]
    pub(super) tile: crate::kernels::ProjectionTile,
}

/// What the limited update ([`Ops::update_limited`]) reads beside the update's inputs.
pub struct LimitedInputs<'a> {
    /// G, a×b in the canonical layout.
    pub grad: &'a Tensor<2>,
    /// G̃, r×b.
    pub g_low: &'a Tensor<2>,
    /// φ and the partial sums from [`Ops::adam_recovery`].
    pub scratch: Tensor<1>,
    /// Λ_prev (\[1\]), where there is one.
    pub previous: Option<&'a Tensor<1>>,
}
