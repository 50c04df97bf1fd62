//! Recovery scaling with the norm-growth limiter (algorithm.md §7, from Fira).
//!
//! Canonical left layout: G a×b, S a×r, G̃ and N r×b; one scale φ_j per column j < b.

use burn::tensor::Tensor;

use crate::basis::project_back;
use crate::config::RecoveryScaling;

/// The recovery term Λ (a×b) after limiting, and ‖Λ‖_F after limiting (shape `[1]`, on the device).
pub struct Recovery {
    /// Λ, a×b.
    pub term: Tensor<2>,
    /// ‖Λ‖_F after limiting: the next step's Λ_prev.
    pub norm: Tensor<1>,
}

/// Λ = (G − S·G̃)⊙φ with φ_j = ‖N[:, j]‖ / (‖G̃[:, j]‖ + 1e-8), limited so that
/// ‖Λ‖ ≤ ζ·Λ_prev when `previous_norm` (Λ_prev) exists. The `Code` variant uses the
/// residual G − s·S·G̃. Computed without host read-back.
#[allow(clippy::too_many_arguments)]
pub fn recovery_term(
    g: &Tensor<2>,
    basis: &Tensor<2>,
    g_low: &Tensor<2>,
    normalized: &Tensor<2>,
    variant: RecoveryScaling,
    scale: f64,
    growth_limit: f64,
    previous_norm: Option<&Tensor<1>>,
) -> Recovery {
    let column_norm = |x: &Tensor<2>| x.clone().square().sum_dim(0).sqrt();
    let phi = column_norm(normalized) / column_norm(g_low).add_scalar(1e-8);
    let kept = project_back(basis, g_low.clone());
    let kept = match variant {
        RecoveryScaling::Code => kept.mul_scalar(scale),
        RecoveryScaling::Paper | RecoveryScaling::Off => kept,
    };
    let term = (g.clone() - kept) * phi;
    let norm = term.clone().square().sum().sqrt();
    match previous_norm {
        None => Recovery { term, norm },
        Some(previous) => {
            // factor = min(1, ζ·Λ_prev/‖Λ‖): the limiter of §7 without a branch.
            let factor = (previous.clone().mul_scalar(growth_limit)
                / norm.clone().clamp_min(1e-30))
            .clamp_max(1.0);
            Recovery {
                term: term * factor.clone().unsqueeze::<2>(),
                norm: norm * factor,
            }
        }
    }
}
