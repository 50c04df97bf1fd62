//! The values the step's operations exchange (docs/algorithm.md §2): what each route's
//! [`Ops`](crate::route::Ops) takes and returns, whichever route runs it.

use burn::tensor::Tensor;

use crate::config::ProjectionAware;

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
