//! Subspace diagnostics: what each subspace update (docs/algorithm.md §4, §6) did to one
//! projected matrix, and the limiter's scale (§7) at that step.
//!
//! The values are formed as device tensors while the step runs, only where
//! [`SubTrackReport::set_subspace_diagnostics`](crate::SubTrackReport::set_subspace_diagnostics)
//! turned them on, and read back only when
//! [`SubTrackReport::take_subspace_diagnostics`](crate::SubTrackReport::take_subspace_diagnostics)
//! asks: the step itself waits on no transfer for them.
//!
//! Canonical left layout (§1): S and S' a×r, G a×b.

use burn::tensor::Tensor;

use crate::basis::project;
use crate::config::RecoveryScaling;
use crate::host;
use crate::linalg;
use crate::recovery::{column_sq, limiter_factor, recovery_scales};

/// What one subspace update did to one projected matrix. Angles in radians; fractions in
/// [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct SubspaceDiagnostics {
    /// The parameter's shape as stored, `[m, n]`.
    pub shape: [usize; 2],
    /// The parameter's completed steps k when the update ran (it runs at the start of step
    /// k + 1, k a multiple of the update interval).
    pub step: usize,
    /// σ, the top singular value of the tangent ∇F (§4); `None` for an SVD refresh (§6).
    pub sigma: Option<f64>,
    /// θ = η·σ after the optional clamp θ_max (§4), 0 where the basis stayed; `None` for an
    /// SVD refresh.
    pub theta: Option<f64>,
    /// The largest principal angle between the old basis S and the new one S', in
    /// [0, π/2]: arcsin of the largest singular value of S − S'·(S'ᵀS).
    pub principal_angle: f64,
    /// The fraction of the gradient's energy outside the old basis,
    /// ‖G − S·Sᵀ·G‖²_F / ‖G‖²_F, before the update.
    pub residual_fraction: f64,
    /// SubTrack++'s limiter factor f = min(1, ζ·Λ_prev/‖Λ‖) at this step (1 where there is
    /// no previous norm yet); `None` without recovery scaling.
    pub limiter_scale: Option<f64>,
}

/// The slots of [`Probe::values`] before the r×r Gram matrix.
const SIGMA: usize = 0;
const THETA: usize = 1;
const RESIDUAL: usize = 2;
const LIMITER: usize = 3;
const HEAD: usize = 4;

/// One update's diagnostics, still on the device: `values` = [σ, θ, residual fraction,
/// limiter scale, then the r×r Gram matrix DᵀD of D = S − S'·(S'ᵀS), row-major], whose top
/// eigenvalue is sin² of the largest principal angle. One read-back per probe.
#[derive(Debug)]
pub(crate) struct Probe {
    shape: [usize; 2],
    step: usize,
    rank: usize,
    tracked: bool,
    recovers: bool,
    values: Tensor<1>,
}

/// A probe begun before the subspace update: the old basis and the residual fraction.
pub(crate) struct Before {
    shape: [usize; 2],
    step: usize,
    old_basis: Tensor<2>,
    residual: Tensor<1>,
}

/// σ and θ of a geodesic step, each \[1\] on the basis's device.
pub(crate) struct Tangent {
    pub sigma: Tensor<1>,
    pub theta: Tensor<1>,
}

/// A probe after the update, waiting for the step's limiter scale.
pub(crate) struct After {
    before: Before,
    tangent: Option<Tangent>,
    gram: Tensor<1>,
}

/// What the limiter's scale is formed from (§7): G and G̃ = S'ᵀG, N, and Λ_prev from
/// before this step.
pub(crate) struct LimiterInputs<'a> {
    pub grad: &'a Tensor<2>,
    pub transposed: bool,
    pub g_low: &'a Tensor<2>,
    pub normalized: &'a Tensor<2>,
    pub previous: Option<&'a Tensor<1>>,
    pub variant: RecoveryScaling,
    pub scale: f64,
    pub growth_limit: f64,
}

impl Before {
    /// Begin a probe for the `shape` parameter at completed step `step`, with S (a×r) and
    /// G (a×b) before the update: ‖G − S·SᵀG‖² / ‖G‖², formed directly (not as
    /// 1 − ‖SᵀG‖²/‖G‖², which cancels where the residual is small).
    pub(crate) fn new(shape: [usize; 2], step: usize, basis: &Tensor<2>, g: &Tensor<2>) -> Self {
        let outside = g.clone() - basis.clone().matmul(project(basis, g));
        let residual = outside.square().sum() / g.clone().square().sum();
        Self {
            shape,
            step,
            old_basis: basis.clone(),
            residual,
        }
    }

    /// The update has run: S' = `basis`, with σ and θ where it was a geodesic step.
    pub(crate) fn after(self, basis: &Tensor<2>, tangent: Option<Tangent>) -> After {
        let old = &self.old_basis;
        let kept = basis.clone().transpose().matmul(old.clone());
        let outside = old.clone() - basis.clone().matmul(kept);
        let gram = outside.clone().transpose().matmul(outside);
        let r = gram.dims()[0];
        After {
            before: self,
            tangent,
            gram: gram.reshape([r * r]),
        }
    }
}

impl After {
    /// Close the probe with the limiter's scale where the step has recovery scaling.
    pub(crate) fn finish(self, limiter: Option<LimiterInputs>) -> Probe {
        let residual = self.before.residual;
        let zero = || residual.zeros_like();
        let limiter = limiter.map(|inputs| limiter_scale(&inputs));
        let (sigma, theta) = match &self.tangent {
            Some(t) => (t.sigma.clone(), t.theta.clone()),
            None => (zero(), zero()),
        };
        let recovers = limiter.is_some();
        let limiter = limiter.unwrap_or_else(zero);
        let rank = self.before.old_basis.dims()[1];
        Probe {
            shape: self.before.shape,
            step: self.before.step,
            rank,
            tracked: self.tangent.is_some(),
            recovers,
            values: Tensor::cat(vec![sigma, theta, residual, limiter, self.gram], 0),
        }
    }
}

/// f = min(1, ζ·Λ_prev/‖Λ‖), with ‖Λ‖ formed from column norms as the step forms it
/// ([`recovery_scales`]); 1 where there is no Λ_prev.
fn limiter_scale(inputs: &LimiterInputs) -> Tensor<1> {
    let g_sq = column_sq(inputs.grad, inputs.transposed);
    let unlimited = recovery_scales(
        g_sq,
        column_sq(inputs.g_low, false),
        column_sq(inputs.normalized, false),
        inputs.variant,
        inputs.scale,
        inputs.growth_limit,
        None,
    );
    match inputs.previous {
        Some(previous) => limiter_factor(previous, &unlimited.norm, inputs.growth_limit),
        None => unlimited.norm.ones_like(),
    }
}

impl Probe {
    /// Read the probe back (one transfer) and find the principal angle on the host.
    pub(crate) fn read(self) -> SubspaceDiagnostics {
        let values = host::read(self.values);
        let r = self.rank;
        let gram = &values[HEAD..HEAD + r * r];
        let top = linalg::largest_eigenvalue(gram, r);
        SubspaceDiagnostics {
            shape: self.shape,
            step: self.step,
            sigma: self.tracked.then_some(values[SIGMA]),
            theta: self.tracked.then_some(values[THETA]),
            principal_angle: top.clamp(0.0, 1.0).sqrt().asin(),
            residual_fraction: values[RESIDUAL],
            limiter_scale: self.recovers.then_some(values[LIMITER]),
        }
    }
}
