//! SubTrack's subspace update: a rank-1 step along a Grassmannian geodesic (docs/algorithm.md §4).
//!
//! Canonical left layout: S is a×r orthonormal, G is a×b.

use burn::tensor::Tensor;

use crate::basis::{orthonormality_drift, project, reorthonormalize};
use crate::host;
use crate::linalg;

/// Round-off floor for σ, relative to ‖G‖²_F: σ below it counts as 0 (G already lies in
/// span(S)), so that noise is never turned into a rotation of θ = η·σ radians.
pub(crate) const SIGMA_FLOOR: f64 = 16.0 * f32::EPSILON as f64;

/// What one geodesic step did.
#[derive(Clone, Debug)]
pub struct GeodesicStep {
    /// The new basis S' (a×r), orthonormal to `orthonormality_tolerance`.
    pub basis: Tensor<2>,
    /// C = S'ᵀ·S (r×r, row-major f64), or `None` when the basis did not move (σ = 0).
    pub change_of_basis: Option<Vec<f64>>,
    /// Top singular value σ of the tangent ∇F.
    pub sigma: f64,
    /// Rotation angle θ = η·σ (after the optional clamp), radians.
    pub theta: f64,
    /// Whether S' was re-orthonormalised.
    pub reorthonormalized: bool,
}

/// The Grassmann gradient ∇F = −2·(G·Aᵀ − S·(A·Aᵀ)) with A = SᵀG: a×r, tangent (Sᵀ∇F = 0).
pub fn tangent(basis: &Tensor<2>, g: &Tensor<2>) -> Tensor<2> {
    let coefficients = project(basis, g);
    let g_at = g.clone().matmul(coefficients.clone().transpose());
    let a_at = coefficients.clone().matmul(coefficients.transpose());
    (g_at - basis.clone().matmul(a_at)).mul_scalar(-2.0)
}

/// One geodesic step S' = S + (cos θ − 1)·(S·v)·vᵀ − sin θ·u·vᵀ, θ = min(η·σ, θ_max),
/// with (σ, u, v) the top singular triplet of ∇F found through the r×r matrix ∇Fᵀ∇F (its
/// top eigenvector alone, [`linalg::top_eigen`], on the host).
///
/// Re-orthonormalises S' when max |S'ᵀS' − I| exceeds `tolerance`. σ at round-off level
/// relative to ‖G‖²_F is treated as σ = 0, which leaves S unchanged.
pub fn geodesic_step(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    step_size: f64,
    max_theta: Option<f64>,
    tolerance: f64,
) -> GeodesicStep {
    let [a, r] = basis.dims();
    let (dtype, device) = (basis.dtype(), basis.device());
    let unchanged = |sigma| GeodesicStep {
        basis: basis.clone(),
        change_of_basis: None,
        sigma,
        theta: 0.0,
        reorthonormalized: false,
    };

    let grad_f = tangent(basis, g);
    let normal = host::read(grad_f.clone().transpose().matmul(grad_f.clone()));
    let (_, v) = linalg::top_eigen(&normal, r, 1);
    let v_tensor = host::upload(v.clone(), r, 1, dtype, &device);
    // σ = ‖∇F·v‖ rather than sqrt(λ): exact for the vector actually used, so u is unit.
    let grad_f_v = grad_f.matmul(v_tensor.clone());
    let sigma = host::read_scalar(grad_f_v.clone().square().sum()).sqrt();
    let g_norm2 = host::read_scalar(g.clone().square().sum());
    if !sigma.is_finite() || sigma <= SIGMA_FLOOR * g_norm2 {
        return unchanged(if sigma.is_finite() { sigma } else { 0.0 });
    }
    let mut theta = step_size * sigma;
    if let Some(max) = max_theta {
        theta = theta.min(max);
    }
    if theta == 0.0 {
        return unchanged(sigma);
    }
    let (sin, cos) = theta.sin_cos();
    let u = grad_f_v.div_scalar(sigma);
    let direction =
        basis.clone().matmul(v_tensor.clone()).mul_scalar(cos - 1.0) - u.mul_scalar(sin);
    let mut new_basis = basis.clone() + direction.matmul(v_tensor.transpose());

    // C = S'ᵀS = I − (1 − cos θ)·v·vᵀ, because Sᵀu = 0.
    let mut change = vec![0.0; r * r];
    for i in 0..r {
        for j in 0..r {
            let id = if i == j { 1.0 } else { 0.0 };
            change[i * r + j] = id - (1.0 - cos) * v[i] * v[j];
        }
    }

    let (drift, gram) = orthonormality_drift(&new_basis);
    let mut reorthonormalized = false;
    if drift > tolerance {
        match reorthonormalize(&new_basis, &gram) {
            Some((fixed, l_inv)) => {
                new_basis = fixed;
                change = matmul_host(&l_inv, &change, r);
                reorthonormalized = true;
            }
            None => return unchanged(sigma),
        }
    }
    debug_assert_eq!(new_basis.dims(), [a, r]);
    GeodesicStep {
        basis: new_basis,
        change_of_basis: Some(change),
        sigma,
        theta,
        reorthonormalized,
    }
}

fn matmul_host(x: &[f64], y: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let xik = x[i * n + k];
            for j in 0..n {
                out[i * n + j] += xik * y[k * n + j];
            }
        }
    }
    out
}
