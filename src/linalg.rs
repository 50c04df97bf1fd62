//! Small dense linear algebra on the host, in f64, by [faer](https://docs.rs/faer).
//!
//! The optimizer keeps every m×n product on the device; what reaches the host is an r×r or
//! a×a symmetric matrix (a = the smaller side of a weight) whose top eigenvectors give the
//! top singular vectors of §3, §4 and §6 of `docs/algorithm.md` ([`top_eigen`]), and the k×k
//! Gram matrices of Cholesky-QR ([`cholesky`], [`inverse_transpose_lower`]). Matrices are
//! row-major `Vec<f64>` of `n * n` elements. faer runs sequentially here (it is built
//! without its thread pool), so every routine gives the same bits on every run on a
//! machine: a resumed run ends where an uninterrupted one does.

use std::collections::BTreeMap;
use std::sync::Mutex;

use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Mat, MatRef, Par, Side};

/// Host eigen-solves of one matrix side in this process ([`host_solves`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostSolves {
    /// Side n of the n×n matrices.
    pub n: usize,
    /// Calls of [`top_eigen`] or [`symmetric_eigen`] at that side.
    pub calls: u64,
    /// Their wall time, seconds.
    pub seconds: f64,
}

/// Calls and seconds of the host eigensolver, by side.
static SOLVES: Mutex<BTreeMap<usize, (u64, f64)>> = Mutex::new(BTreeMap::new());

/// Every host eigen-solve of this process so far ([`top_eigen`], [`symmetric_eigen`]), by
/// matrix side, ascending: what the optimizer's exact SVDs and tracking steps cost on the
/// host (the benchmark reports it per section).
pub fn host_solves() -> Vec<HostSolves> {
    let solves = SOLVES.lock().unwrap_or_else(|e| e.into_inner());
    solves
        .iter()
        .map(|(&n, &(calls, seconds))| HostSolves { n, calls, seconds })
        .collect()
}

/// `solve()`, counted in [`host_solves`] under side `n`.
fn timed_solve<T>(n: usize, solve: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let out = solve();
    let seconds = start.elapsed().as_secs_f64();
    let mut solves = SOLVES.lock().unwrap_or_else(|e| e.into_inner());
    let entry = solves.entry(n).or_default();
    entry.0 += 1;
    entry.1 += seconds;
    out
}

/// The symmetrised (A + Aᵀ)/2 of the row-major n×n `a`, so that round-off asymmetry cannot
/// bias the result.
fn symmetrised(a: &[f64], n: usize) -> Mat<f64> {
    assert_eq!(a.len(), n * n, "expected {n}x{n} elements, got {}", a.len());
    Mat::from_fn(n, n, |i, j| 0.5 * (a[i * n + j] + a[j * n + i]))
}

/// The row-major elements of `m`.
fn row_major(m: MatRef<'_, f64>) -> Vec<f64> {
    let (rows, cols) = (m.nrows(), m.ncols());
    (0..rows * cols).map(|k| m[(k / cols, k % cols)]).collect()
}

/// Eigen-decomposition of a symmetric `n×n` matrix (row-major).
///
/// Returns `(values, vectors)` with the eigenvalues in descending order and `vectors`
/// row-major `n×n` whose column `j` is the unit eigenvector of `values[j]`. See
/// [`top_eigen`] for the method and the fallback.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    top_eigen(a, n, n)
}

/// The `k` largest eigenpairs of a symmetric `n×n` matrix (row-major).
///
/// Returns `(values, vectors)`: `k` eigenvalues in descending order and `vectors` row-major
/// `n×k` with orthonormal columns, column `j` the eigenvector of `values[j]`. Where values
/// tie, any orthonormal basis of their eigenspace may come back.
///
/// faer's self-adjoint eigendecomposition of (A + Aᵀ)/2 (a diagonal matrix is read off
/// exactly), checked: finite and orthonormal to 1e-9. Where the check fails (or faer reports no convergence), the top `k` left
/// singular vectors of faer's SVD replace it, which are the same eigenvectors for the
/// positive semi-definite Gram matrices the optimizer passes. Non-finite input gives
/// non-finite output.
pub fn top_eigen(a: &[f64], n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    assert!(k <= n, "top_eigen: {k} eigenpairs of a {n}x{n} matrix");
    let m = symmetrised(a, n);
    if k == 0 {
        return (Vec::new(), Vec::new());
    }
    timed_solve(n, || {
        diagonal_leading(m.as_ref(), k)
            .or_else(|| eigen_leading(m.as_ref(), k))
            .or_else(|| svd_leading(m.as_ref(), k))
            .unwrap_or_else(|| (vec![f64::NAN; k], vec![f64::NAN; n * k]))
    })
}

/// The top `k` eigenpairs of a diagonal matrix exactly (its diagonal, descending, and unit
/// vectors; a zero matrix, from a zero gradient, among them), or `None` where `m` is not
/// diagonal. faer's iterations would return such values only to round-off.
fn diagonal_leading(m: MatRef<'_, f64>, k: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let n = m.nrows();
    let diagonal = (0..n).all(|j| (0..n).all(|i| i == j || m[(i, j)] == 0.0));
    if !diagonal {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| m[(y, y)].total_cmp(&m[(x, x)]));
    let values = order[..k].iter().map(|&j| m[(j, j)]).collect();
    let vectors = Mat::from_fn(n, k, |i, j| if i == order[j] { 1.0 } else { 0.0 });
    checked(values, vectors)
}

/// The top `k` eigenpairs from faer's self-adjoint eigendecomposition (eigenvalues
/// ascending there), or `None` where it fails or its vectors fail the check.
fn eigen_leading(m: MatRef<'_, f64>, k: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let n = m.nrows();
    let evd = m.self_adjoint_eigen(Side::Lower).ok()?;
    let (s, u) = (evd.S().column_vector(), evd.U());
    let values = (0..k).map(|j| s[n - 1 - j]).collect();
    let vectors = Mat::from_fn(n, k, |i, j| u[(i, n - 1 - j)]);
    checked(values, vectors)
}

/// The top `k` singular pairs from faer's SVD (singular values sorted descending here), or
/// `None` where it fails or its vectors fail the check.
fn svd_leading(m: MatRef<'_, f64>, k: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let n = m.nrows();
    let svd = m.svd().ok()?;
    let (s, u) = (svd.S().column_vector(), svd.U());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| s[y].total_cmp(&s[x]));
    let values = order[..k].iter().map(|&j| s[j]).collect();
    let vectors = Mat::from_fn(n, k, |i, j| u[(i, order[j])]);
    checked(values, vectors)
}

/// `(values, vectors)` as row-major vectors where every entry is finite and the columns are
/// orthonormal to 1e-9 (max |VᵀV − I|), else `None`.
fn checked(values: Vec<f64>, vectors: Mat<f64>) -> Option<(Vec<f64>, Vec<f64>)> {
    let finite = values.iter().all(|x| x.is_finite())
        && (0..vectors.ncols()).all(|j| vectors.col(j).iter().all(|x| x.is_finite()));
    if !finite {
        return None;
    }
    let gram = vectors.transpose() * &vectors;
    let k = vectors.ncols();
    let drift = (0..k * k)
        .map(|p| {
            let (i, j) = (p / k, p % k);
            (gram[(i, j)] - if i == j { 1.0 } else { 0.0 }).abs()
        })
        .fold(0.0, f64::max);
    (drift <= 1e-9).then(|| (values, row_major(vectors.as_ref())))
}

/// The largest eigenvalue of the symmetric row-major n×n `a` (symmetrised first), by
/// faer's self-adjoint eigenvalues; NaN where they fail. Not counted in [`host_solves`]: it
/// serves the diagnostics, read outside the step.
pub fn largest_eigenvalue(a: &[f64], n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    symmetrised(a, n)
        .self_adjoint_eigenvalues(Side::Lower)
        .ok()
        .and_then(|values| values.last().copied())
        .unwrap_or(f64::NAN)
}

/// Top `r` left singular vectors of a matrix, given its Gram matrix `gram = X·Xᵀ`
/// (`a×a`, row-major).
///
/// Returns a row-major `a×r` orthonormal matrix. Signs are canonical: the entry of largest
/// magnitude in each column is positive, so the result does not depend on the
/// eigen-solver's sign convention. A rank-deficient `X` (zero gradient included) still
/// yields orthonormal columns.
pub fn top_left_singular_vectors(gram: &[f64], a: usize, r: usize) -> Vec<f64> {
    assert!(r <= a, "rank {r} exceeds the side {a}");
    let (_, mut out) = top_eigen(gram, a, r);
    for j in 0..r {
        let mut pivot = 0.0f64;
        for i in 0..a {
            let x = out[i * r + j];
            if x.abs() > pivot.abs() {
                pivot = x;
            }
        }
        if pivot < 0.0 {
            for i in 0..a {
                out[i * r + j] = -out[i * r + j];
            }
        }
    }
    out
}

/// Cholesky factor `L` (row-major, lower triangular) of a symmetric positive-definite `n×n`
/// matrix (its lower triangle is read), or `None` when a pivot is not positive or the
/// factor is not finite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    assert_eq!(a.len(), n * n, "cholesky: expected {n}x{n} elements");
    let m = Mat::from_fn(n, n, |i, j| a[i * n + j]);
    let llt = m.llt(Side::Lower).ok()?;
    let l = row_major(llt.L());
    l.iter().all(|x| x.is_finite()).then_some(l)
}

/// Inverse of the transpose of a lower-triangular `L`: returns `L⁻ᵀ` (upper triangular,
/// row-major `n×n`).
pub fn inverse_transpose_lower(l: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(
        l.len(),
        n * n,
        "inverse_transpose_lower: expected {n}x{n} elements"
    );
    let l = Mat::from_fn(n, n, |i, j| if j <= i { l[i * n + j] } else { 0.0 });
    let mut inverse = Mat::<f64>::zeros(n, n);
    invert_lower_triangular(inverse.as_mut(), l.as_ref(), Par::Seq);
    row_major(inverse.transpose())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each solve is counted under its side, with its time (other tests may solve the same
    /// side concurrently, hence "at least").
    #[test]
    fn host_solves_counts_each_solve_by_side() {
        let at = |n| {
            host_solves()
                .into_iter()
                .find(|s| s.n == n)
                .unwrap_or_default()
        };
        let before = at(97);
        let a = sym(97, 5);
        top_eigen(&a, 97, 3);
        symmetric_eigen(&a, 97);
        let after = at(97);
        assert_eq!(after.n, 97);
        assert!(after.calls >= before.calls + 2, "{before:?} → {after:?}");
        assert!(after.seconds > before.seconds, "{before:?} → {after:?}");
    }

    /// A symmetric n×n matrix B + Bᵀ, B's entries uniform in [-0.5, 0.5).
    fn sym(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::rng::SplitMix::new(seed);
        let b: Vec<f64> = (0..n * n).map(|_| rng.next_f64() - 0.5).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = b[i * n + j] + b[j * n + i];
            }
        }
        a
    }

    /// The n×n identity, row-major.
    fn identity(n: usize) -> Vec<f64> {
        (0..n * n)
            .map(|p| if p / n == p % n { 1.0 } else { 0.0 })
            .collect()
    }

    /// A block-diagonal n×n matrix (n a multiple of 5) repeating one random symmetric 5×5
    /// block: its eigenvalues repeat.
    fn repeated_blocks(n: usize) -> Vec<f64> {
        let block = sym(5, 8);
        let mut blocks = vec![0.0; n * n];
        for b in 0..n / 5 {
            for i in 0..5 {
                for j in 0..5 {
                    blocks[(5 * b + i) * n + 5 * b + j] = block[i * 5 + j];
                }
            }
        }
        blocks
    }

    #[test]
    fn eigen_reconstructs_and_is_orthonormal() {
        for n in [1, 2, 3, 7, 33, 150] {
            let a = sym(n, n as u64);
            let (w, v) = symmetric_eigen(&a, n);
            for j in 1..n {
                assert!(w[j - 1] >= w[j], "descending order");
            }
            for i in 0..n {
                for j in 0..n {
                    let mut vtv = 0.0;
                    let mut rec = 0.0;
                    for k in 0..n {
                        vtv += v[k * n + i] * v[k * n + j];
                        rec += v[i * n + k] * w[k] * v[j * n + k];
                    }
                    let id = if i == j { 1.0 } else { 0.0 };
                    assert!((vtv - id).abs() < 1e-12, "VᵀV at n={n}");
                    assert!((rec - a[i * n + j]).abs() < 1e-12, "V·W·Vᵀ at n={n}");
                }
            }
        }
    }

    /// ‖A·x − λ·x‖ for column j of the row-major n×k `vectors`.
    fn residual(a: &[f64], n: usize, value: f64, vectors: &[f64], k: usize, j: usize) -> f64 {
        (0..n)
            .map(|i| {
                let ax: f64 = (0..n).map(|p| a[i * n + p] * vectors[p * k + j]).sum();
                (ax - value * vectors[i * k + j]).powi(2)
            })
            .sum::<f64>()
            .sqrt()
    }

    /// Max |XᵀX − I| over the k columns of the row-major n×k `x`.
    fn drift(x: &[f64], n: usize, k: usize) -> f64 {
        let mut worst = 0.0f64;
        for i in 0..k {
            for j in 0..k {
                let dot: f64 = (0..n).map(|p| x[p * k + i] * x[p * k + j]).sum();
                let id = if i == j { 1.0 } else { 0.0 };
                worst = worst.max((dot - id).abs());
            }
        }
        worst
    }

    /// Checks `top_eigen`'s first path (faer's eigendecomposition, no fallback) on `a`
    /// against the full solver: the same values, eigen-residuals at round-off, orthonormal
    /// columns, and the same top-k subspace where the spectrum has a gap after k.
    fn check_top(a: &[f64], n: usize, k: usize, what: &str) {
        let (values, vectors) = eigen_leading(symmetrised(a, n).as_ref(), k)
            .unwrap_or_else(|| panic!("{what}: fell back"));
        let (all, full) = symmetric_eigen(a, n);
        let scale = all.iter().fold(1e-300f64, |m, x| m.max(x.abs()));
        for j in 0..k {
            assert!(
                (values[j] - all[j]).abs() <= 1e-12 * scale,
                "{what}: value {j}: {} vs {}",
                values[j],
                all[j]
            );
            let res = residual(a, n, values[j], &vectors, k, j);
            assert!(res <= 1e-11 * scale, "{what}: residual {j}: {res}");
        }
        assert!(drift(&vectors, n, k) < 1e-10, "{what}: not orthonormal");
        if k < n && all[k - 1] - all[k] > 1e-6 * scale {
            // ‖P_top − P_full‖ through ‖Vfullᵀ·Vtop‖_F² = k on equal subspaces.
            let mut captured = 0.0;
            for p in 0..k {
                for q in 0..k {
                    let dot: f64 = (0..n).map(|i| full[i * n + p] * vectors[i * k + q]).sum();
                    captured += dot * dot;
                }
            }
            assert!(
                (captured - k as f64).abs() < 1e-10,
                "{what}: subspace {captured}"
            );
        }
    }

    #[test]
    fn top_eigen_matches_the_full_solver() {
        for n in [1, 2, 3, 7, 33, 150, 301] {
            let a = sym(n, 100 + n as u64);
            for k in [1, n.div_ceil(4), n] {
                check_top(&a, n, k, &format!("random n={n} k={k}"));
            }
        }
    }

    /// Ties and near-ties: the identity, zero, a Gram matrix of rank 3, a block-diagonal
    /// matrix repeating one block (its tridiagonal splits), and Wilkinson's W21+, whose top
    /// two eigenvalues agree to about 14 digits.
    #[test]
    fn top_eigen_handles_clusters_and_ties() {
        let n = 40;
        let identity = identity(n);
        check_top(&identity, n, 10, "identity");
        check_top(&vec![0.0; n * n], n, 10, "zero");

        let x = sym(n, 5);
        let mut gram = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                gram[i * n + j] = (0..3).map(|p| x[i * n + p] * x[j * n + p]).sum();
            }
        }
        check_top(&gram, n, 10, "rank 3");

        let blocks = repeated_blocks(n);
        check_top(&blocks, n, 16, "repeated blocks");

        let w = 21;
        let mut wilkinson = vec![0.0; w * w];
        for i in 0..w {
            wilkinson[i * w + i] = (10.0 - i as f64).abs();
            if i + 1 < w {
                wilkinson[i * w + i + 1] = 1.0;
                wilkinson[(i + 1) * w + i] = 1.0;
            }
        }
        check_top(&wilkinson, w, 2, "Wilkinson W21+");
        check_top(&wilkinson, w, 7, "Wilkinson W21+, k = 7");
    }

    /// The same input gives the same bits on every call: a resumed run depends on it.
    #[test]
    fn top_eigen_is_the_same_on_every_call() {
        let n = 150;
        let a = sym(n, 4);
        let first = top_eigen(&a, n, 40);
        for _ in 0..3 {
            assert!(first == top_eigen(&a, n, 40));
        }
        assert!(symmetric_eigen(&a, n) == symmetric_eigen(&a, n));
    }

    /// The fallback gives the eigenpairs of a positive semi-definite matrix (a Gram
    /// matrix, as the optimizer passes) that the first path gives.
    #[test]
    fn svd_fallback_matches_the_eigendecomposition() {
        let (n, k) = (60, 12);
        let x = sym(n, 11);
        let mut gram = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                gram[i * n + j] = (0..n).map(|p| x[i * n + p] * x[j * n + p]).sum();
            }
        }
        let m = symmetrised(&gram, n);
        let (ev, evec) = eigen_leading(m.as_ref(), k).unwrap();
        let (sv, svec) = svd_leading(m.as_ref(), k).expect("the SVD passes its check");
        for j in 0..k {
            assert!((ev[j] - sv[j]).abs() <= 1e-12 * ev[0], "value {j}");
            // Each vector up to its sign (the gaps of a random Gram matrix are wide).
            let dot: f64 = (0..n).map(|i| evec[i * k + j] * svec[i * k + j]).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-8, "vector {j}: {dot}");
        }
    }

    #[test]
    fn eigen_of_diagonal_and_zero() {
        let (w, _) = symmetric_eigen(&[3.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0], 3);
        assert_eq!(w, vec![5.0, 3.0, -1.0]);
        let (w, v) = symmetric_eigen(&[0.0; 4], 2);
        assert_eq!(w, vec![0.0, 0.0]);
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn cholesky_inverse_orthonormalises() {
        for n in [1, 4, 37, 70] {
            let mut a = sym(n, 9);
            for i in 0..n {
                a[i * n + i] += 5.0 * n as f64;
            }
            let l = cholesky(&a, n).unwrap();
            let r_inv = inverse_transpose_lower(&l, n);
            // L⁻ᵀ is upper triangular, and L⁻¹·A·L⁻ᵀ = I.
            for i in 0..n {
                for j in 0..i {
                    assert_eq!(r_inv[i * n + j], 0.0);
                }
            }
            for i in 0..n {
                for j in 0..n {
                    let mut s = 0.0;
                    for p in 0..n {
                        for q in 0..n {
                            s += r_inv[p * n + i] * a[p * n + q] * r_inv[q * n + j];
                        }
                    }
                    let id = if i == j { 1.0 } else { 0.0 };
                    assert!((s - id).abs() < 1e-12, "n = {n}: ({i}, {j}) = {s}");
                }
            }
        }
        assert!(cholesky(&[-1.0], 1).is_none());
    }
}
