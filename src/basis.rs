//! The basis S: its initial and SVD-refreshed value (docs/algorithm.md §3, §6), the projection
//! G̃ = SᵀG and back-projection S·X (§1), and orthonormality upkeep (§4).
//!
//! All matrices are in the canonical left layout: S is a×r, G is a×b with a ≤ b.

use burn::tensor::Tensor;

use crate::host;
use crate::linalg;
use crate::rng;

/// Short sides a above this take [`randomized_singular_basis`]: the exact host eigensolver
/// is O(a³) in f64, its Householder reduction (4/3·a³) memory bound past a few thousand.
pub const EXACT_SVD_MAX_SIDE: usize = 1024;

/// Power iterations of [`randomized_singular_basis`] when [`top_singular_basis`] uses it.
pub const POWER_ITERATIONS: usize = 6;

/// Top-r left singular subspace of `g` (a×b), as an a×r orthonormal basis with canonical
/// column signs (largest-magnitude entry positive): [`exact_singular_basis`] for
/// a ≤ [`EXACT_SVD_MAX_SIDE`], [`randomized_singular_basis`] above.
pub fn top_singular_basis(g: &Tensor<2>, rank: usize) -> Tensor<2> {
    if g.dims()[0] > EXACT_SVD_MAX_SIDE {
        randomized_singular_basis(g, rank, POWER_ITERATIONS)
    } else {
        exact_singular_basis(g, rank)
    }
}

/// The exact top-r left singular vectors of `g` (a×b): the a×a Gram matrix G·Gᵀ is formed
/// on the device and its top r eigenvectors found on the host in f64
/// ([`linalg::top_eigen`]). Cost O(a²·b) on the device plus 4/3·a³ + O(a²·r) on the host.
pub fn exact_singular_basis(g: &Tensor<2>, rank: usize) -> Tensor<2> {
    let [a, _] = g.dims();
    let gram = g.clone().matmul(g.clone().transpose());
    let vectors = linalg::top_left_singular_vectors(&host::read(gram), a, rank);
    host::upload(vectors, a, rank, g.dtype(), &g.device())
}

/// The top-r left singular vectors of `g` (a×b) by randomized subspace iteration (Halko,
/// Martinsson & Tropp 2011, Alg. 4.4) with k = r + max(8, ⌈r/4⌉) columns and `iterations`
/// power iterations, each half-step re-orthonormalised by Cholesky-QR (the last by
/// Cholesky-QR2), then a Rayleigh–Ritz step: the top r eigenvectors of the k×k matrix
/// (QᵀG)(QᵀG)ᵀ, found on the host. The products run on the device (O(a·b·k) each); only
/// k×k matrices are read back. Accurate
/// where the spectrum has a gap after r (error shrinks like (σ_{k+1}/σ_r)^(2q+1)). Falls back
/// to [`exact_singular_basis`] when G is rank-deficient (a zero gradient included). The
/// random start is a fixed pseudo-random Gaussian matrix made on the host (seeded by the
/// shape), so the basis is reproducible and the device's random generator is left alone.
pub fn randomized_singular_basis(g: &Tensor<2>, rank: usize, iterations: usize) -> Tensor<2> {
    let [a, b] = g.dims();
    let k = (rank + (rank.div_ceil(4)).max(8)).min(a).min(b);
    let omega = host::upload(
        rng::gaussian(b * k, (a * 31 + b) as u64),
        b,
        k,
        g.dtype(),
        &g.device(),
    );
    // Intermediate bases only carry the span to the next product: one Cholesky-QR pass
    // (orthonormal to about u·κ², a well-conditioned basis of the same span) is enough; the
    // last one, which the Rayleigh–Ritz step needs orthonormal, takes two.
    let passes = |last: bool| if last { 2 } else { 1 };
    let Some(mut q) = orthonormal_columns(g.clone().matmul(omega), passes(iterations == 0)) else {
        return exact_singular_basis(g, rank);
    };
    for i in 0..iterations {
        let Some(z) = orthonormal_columns(g.clone().transpose().matmul(q), 1) else {
            return exact_singular_basis(g, rank);
        };
        let Some(next) = orthonormal_columns(g.clone().matmul(z), passes(i + 1 == iterations))
        else {
            return exact_singular_basis(g, rank);
        };
        q = next;
    }
    let coefficients = q.clone().transpose().matmul(g.clone());
    let small = host::read(coefficients.clone().matmul(coefficients.transpose()));
    let rotation = linalg::top_left_singular_vectors(&small, k, rank);
    let basis = q.matmul(host::upload(rotation, k, rank, g.dtype(), &g.device()));
    canonical_signs(basis)
}

/// Y·R⁻¹ with YᵀY = RᵀR, `passes` times (2: Cholesky-QR2), or `None` when YᵀY is not
/// positive definite.
fn orthonormal_columns(mut y: Tensor<2>, passes: usize) -> Option<Tensor<2>> {
    let k = y.dims()[1];
    for _ in 0..passes {
        let gram = host::read(y.clone().transpose().matmul(y.clone()));
        let l = linalg::cholesky(&gram, k)?;
        let factor = host::upload(
            linalg::inverse_transpose_lower(&l, k),
            k,
            k,
            y.dtype(),
            &y.device(),
        );
        y = y.matmul(factor);
    }
    Some(y)
}

/// Each column times the sign of its largest-magnitude entry, on the device.
fn canonical_signs(basis: Tensor<2>) -> Tensor<2> {
    let pivots = basis.clone().gather(0, basis.clone().abs().argmax(0));
    let signs = pivots
        .lower_elem(0.0)
        .float()
        .cast(basis.dtype())
        .mul_scalar(-2.0)
        .add_scalar(1.0);
    basis * signs
}

/// G̃ = SᵀG: the r×b coordinates of `g` (a×b) in the basis `basis` (a×r).
pub fn project(basis: &Tensor<2>, g: &Tensor<2>) -> Tensor<2> {
    basis.clone().transpose().matmul(g.clone())
}

/// S·X: an r×b matrix `x` mapped back to the a×b parameter space.
pub fn project_back(basis: &Tensor<2>, x: Tensor<2>) -> Tensor<2> {
    basis.clone().matmul(x)
}

/// (S·X)ᵀ = Xᵀ·Sᵀ, b×a: [`project_back`] in the right case's own layout, computed as one
/// product so that the result is stored b×a rather than as a transposed view.
pub fn project_back_transposed(basis: &Tensor<2>, x: Tensor<2>) -> Tensor<2> {
    x.transpose().matmul(basis.clone().transpose())
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
