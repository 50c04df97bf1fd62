//! The basis S: its initial and SVD-refreshed value (algorithm.md §3, §6), the projection
//! G̃ = SᵀG and back-projection S·X (§1), and orthonormality upkeep (§4).
//!
//! All matrices are in the canonical left layout: S is a×r, G is a×b with a ≤ b.

use burn::tensor::Tensor;

use crate::host;
use crate::linalg;

/// Top-r left singular subspace of `g` (a×b), as an a×r orthonormal basis.
///
/// The a×a Gram matrix G·Gᵀ is formed on the device and eigen-decomposed on the host in
/// f64; column signs are canonical (largest-magnitude entry positive). Cost O(a²·b) on the
/// device plus O(a³) on the host.
pub fn top_singular_basis(g: &Tensor<2>, rank: usize) -> Tensor<2> {
    let [a, _] = g.dims();
    let gram = g.clone().matmul(g.clone().transpose());
    let vectors = linalg::top_left_singular_vectors(&host::read(gram), a, rank);
    host::upload(vectors, a, rank, g.dtype(), &g.device())
}

/// G̃ = SᵀG: the r×b coordinates of `g` (a×b) in the basis `basis` (a×r).
pub fn project(basis: &Tensor<2>, g: &Tensor<2>) -> Tensor<2> {
    basis.clone().transpose().matmul(g.clone())
}

/// S·X: an r×b matrix `x` mapped back to the a×b parameter space.
pub fn project_back(basis: &Tensor<2>, x: Tensor<2>) -> Tensor<2> {
    basis.clone().matmul(x)
}

/// max |SᵀS − I| of an a×r basis, with the r×r Gram matrix SᵀS (row-major, f64).
pub fn orthonormality_drift(basis: &Tensor<2>) -> (f64, Vec<f64>) {
    let r = basis.dims()[1];
    let gram = host::read(basis.clone().transpose().matmul(basis.clone()));
    let drift = gram
        .iter()
        .enumerate()
        .map(|(idx, x)| {
            let id = if idx / r == idx % r { 1.0 } else { 0.0 };
            (x - id).abs()
        })
        .fold(0.0, f64::max);
    (drift, gram)
}

/// Cholesky re-orthonormalisation S ← S·L⁻ᵀ, where SᵀS = L·Lᵀ (`gram` is SᵀS, row-major).
///
/// Returns the new basis and L⁻¹ (row-major r×r, so that S_newᵀ·X = L⁻¹·SᵀX), or `None`
/// when SᵀS is not positive definite.
pub fn reorthonormalize(basis: &Tensor<2>, gram: &[f64]) -> Option<(Tensor<2>, Vec<f64>)> {
    let r = basis.dims()[1];
    let l = linalg::cholesky(gram, r)?;
    let l_inv_t = linalg::inverse_transpose_lower(&l, r);
    let mut l_inv = vec![0.0; r * r];
    for i in 0..r {
        for j in 0..r {
            l_inv[i * r + j] = l_inv_t[j * r + i];
        }
    }
    let factor = host::upload(l_inv_t, r, r, basis.dtype(), &basis.device());
    Some((basis.clone().matmul(factor), l_inv))
}
