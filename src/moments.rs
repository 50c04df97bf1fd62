//! Low-rank Adam in the subspace (docs/algorithm.md §2) and projection-aware moments (§5).
//!
//! M and V are r×b in the canonical left layout; the same code serves AdamW's dense moments.

use burn::tensor::Tensor;

use crate::config::ProjectionAware;

/// Adam's moment decay rates and ε.
#[derive(Clone, Copy, Debug)]
pub struct AdamParams {
    /// β1.
    pub beta_1: f64,
    /// β2.
    pub beta_2: f64,
    /// ε, added to sqrt(V).
    pub epsilon: f64,
}

impl AdamParams {
    /// M = β1·M + (1−β1)·G̃ and V = β2·V + (1−β2)·G̃⊙G̃.
    pub fn update_moments<const D: usize>(
        &self,
        moment_1: Tensor<D>,
        moment_2: Tensor<D>,
        g: &Tensor<D>,
    ) -> (Tensor<D>, Tensor<D>) {
        let m = moment_1.mul_scalar(self.beta_1) + g.clone().mul_scalar(1.0 - self.beta_1);
        let v = moment_2.mul_scalar(self.beta_2) + g.clone().square().mul_scalar(1.0 - self.beta_2);
        (m, v)
    }

    /// Bias correction c = sqrt(1 − β2^k) / (1 − β1^k) after `step` = k ≥ 1 steps.
    pub fn bias_correction(&self, step: usize) -> f64 {
        let k = step as i32;
        (1.0 - self.beta_2.powi(k)).sqrt() / (1.0 - self.beta_1.powi(k))
    }

    /// N = M ⊘ (sqrt(V) + ε).
    pub fn normalize<const D: usize>(
        &self,
        moment_1: &Tensor<D>,
        moment_2: &Tensor<D>,
    ) -> Tensor<D> {
        moment_1.clone() / (moment_2.clone().sqrt().add_scalar(self.epsilon))
    }
}

/// Rotate M and V into a new basis with C = S_newᵀ·S_old (r×r):
/// M' = C·M, V' = |(C⊙C)·(V − M⊙M) + M'⊙M'|, times (1 − β2) in the `Code` variant.
pub fn rotate_moments(
    moment_1: Tensor<2>,
    moment_2: Tensor<2>,
    change_of_basis: &Tensor<2>,
    variant: ProjectionAware,
    beta_2: f64,
) -> (Tensor<2>, Tensor<2>) {
    let rotated = change_of_basis.clone().matmul(moment_1.clone());
    let centred = moment_2 - moment_1.square();
    let variance = change_of_basis.clone().square().matmul(centred);
    let v = (variance + rotated.clone().square()).abs();
    let v = match variant {
        ProjectionAware::Code => v.mul_scalar(1.0 - beta_2),
        ProjectionAware::Paper | ProjectionAware::Off => v,
    };
    (rotated, v)
}
