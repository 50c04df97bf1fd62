//! The portable route: every operation as Burn's tensor ops, on any backend. It is the
//! reference the other routes are tested against, and their fallback.

use burn::tensor::Tensor;

use super::{Ops, keep_on_skip};
use crate::basis;
use crate::config::RecoveryScaling;
use crate::moments::{AdamParams, rotate_moments};
use crate::recovery::{RecoveryScales, column_sq, recovery_scales};
use crate::route::step_buffer::StepFlag;
use crate::route::{LowRankAdam, RecoveryInputs, Rotation, UpdateCoefficients, UpdateInputs};

/// Burn's tensor ops.
#[derive(Clone, Copy, Debug, Default)]
pub struct Portable;

impl Ops for Portable {
    fn name(&self) -> &'static str {
        "portable"
    }

    fn project(
        &self,
        basis: &Tensor<2>,
        g: &Tensor<2>,
        _head: &[f32],
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        (basis::project(basis, g), None)
    }

    fn column_sq(&self, g: &Tensor<2>, transposed: bool) -> Tensor<2> {
        column_sq(g, transposed)
    }

    fn adam(
        &self,
        moment_1: Tensor<2>,
        moment_2: Tensor<2>,
        g_low: &Tensor<2>,
        adam: &AdamParams,
        rotation: Option<Rotation>,
        flag: Option<StepFlag>,
    ) -> LowRankAdam {
        let flag = flag.map(|f| f.tensor());
        let old = flag.as_ref().map(|_| (moment_1.clone(), moment_2.clone()));
        let (m, v) = rotate(moment_1, moment_2, rotation, adam);
        let (m, v) = adam.update_moments(m, v, g_low);
        let n = adam.normalize(&m, &v);
        match (flag, old) {
            (Some(flag), Some((m0, v0))) => LowRankAdam {
                moment_1: keep_on_skip(m, m0, &flag),
                moment_2: keep_on_skip(v, v0, &flag),
                normalized: keep_on_skip(n.clone(), n.zeros_like(), &flag),
            },
            _ => LowRankAdam {
                moment_1: m,
                moment_2: v,
                normalized: n,
            },
        }
    }

    fn recovery(
        &self,
        inputs: RecoveryInputs,
        variant: RecoveryScaling,
        scale: f64,
        growth_limit: f64,
        flag: Option<StepFlag>,
    ) -> RecoveryScales {
        recovery_with(self, inputs, variant, scale, growth_limit, flag)
    }

    fn update(
        &self,
        inputs: UpdateInputs,
        coefficients: UpdateCoefficients,
        flag: Option<StepFlag>,
    ) -> Tensor<2> {
        let UpdateInputs {
            basis,
            normalized,
            weight,
            transposed,
            recovery,
        } = inputs;
        let UpdateCoefficients {
            alpha,
            decay,
            scale,
        } = coefficients;
        // α is folded into the r×b and 1×b factors, so that no a×b pass scales by it:
        // α·(S·L + G⊙ψ) = S·(α·L) + G⊙(α·ψ); α·k scales ψ (1×b) rather than G̃⊙ψ (r×b).
        let low = match &recovery {
            Some(t) => {
                normalized.mul_scalar(alpha * scale)
                    - t.g_low.clone() * t.psi.clone().mul_scalar(alpha * t.kept_weight)
            }
            None => normalized.mul_scalar(alpha * scale),
        };
        // The a×b terms are formed in W's own layout: in the right case (S·L)ᵀ = Lᵀ·Sᵀ and
        // (G⊙ψ)ᵀ = Gᵀ⊙ψᵀ, so no element-wise pass runs over a transposed view (on `flex`
        // such a pass costs about 10× a contiguous one).
        let own_layout = |x: Tensor<2>| if transposed { x.transpose() } else { x };
        let mut u = if transposed {
            basis::project_back_transposed(basis, low)
        } else {
            basis::project_back(basis, low)
        };
        if let Some(t) = recovery {
            u = u + own_layout(t.grad) * own_layout(t.psi.mul_scalar(alpha));
        }
        let flag = flag.map(|f| f.tensor());
        let old = flag.as_ref().map(|_| weight.clone());
        let stepped = weight - u;
        let stepped = if decay == 1.0 {
            stepped
        } else {
            stepped.mul_scalar(decay)
        };
        match (flag, old) {
            (Some(flag), Some(old)) => keep_on_skip(stepped, old, &flag),
            _ => stepped,
        }
    }
}

/// M and V after the projection-aware rotation (§5) where `rotation` is given (kept where
/// its `moved` flag says the basis stayed), else as they are.
pub(super) fn rotate(
    moment_1: Tensor<2>,
    moment_2: Tensor<2>,
    rotation: Option<Rotation>,
    adam: &AdamParams,
) -> (Tensor<2>, Tensor<2>) {
    let Some(rot) = rotation else {
        return (moment_1, moment_2);
    };
    let (m0, v0) = (moment_1.clone(), moment_2.clone());
    let c = rot.change_of_basis;
    let (m, v) = rotate_moments(moment_1, moment_2, c, rot.variant, adam.beta_2);
    match rot.moved {
        Some(moved) => (keep_on_skip(m, m0, moved), keep_on_skip(v, v0, moved)),
        None => (m, v),
    }
}

/// Recovery scaling (§7) as tensor ops, with the column sums of squares from `ops` (the
/// fused CPU route forms them in one pass).
pub(super) fn recovery_with(
    ops: &dyn Ops,
    inputs: RecoveryInputs,
    variant: RecoveryScaling,
    scale: f64,
    growth_limit: f64,
    flag: Option<StepFlag>,
) -> RecoveryScales {
    let RecoveryInputs {
        grad: g,
        transposed,
        grad_sq: g_sq,
        g_low,
        normalized,
        previous,
    } = inputs;
    let scales = recovery_scales(
        g_sq.unwrap_or_else(|| ops.column_sq(g, transposed)),
        ops.column_sq(g_low, false),
        ops.column_sq(normalized, false),
        variant,
        scale,
        growth_limit,
        previous,
    );
    match (flag.map(|f| f.tensor()), previous) {
        (Some(flag), Some(previous)) => RecoveryScales {
            norm: keep_on_skip(scales.norm, previous.clone(), &flag),
            ..scales
        },
        _ => scales,
    }
}
