//! Small dense linear algebra on the host, in f64.
//!
//! The optimizer keeps every m×n product on the device; what reaches the host is an r×r or
//! a×a symmetric matrix (a = the smaller side of a weight) whose eigen-decomposition gives
//! the top singular vectors of §3, §4 and §6 of `algorithm.md`. Matrices are row-major
//! `Vec<f64>` of `n * n` elements.

/// Eigen-decomposition of a symmetric `n×n` matrix (row-major).
///
/// Returns `(values, vectors)` with the eigenvalues in descending order and `vectors` row-major
/// `n×n` whose column `j` is the unit eigenvector of `values[j]`. Householder reduction to
/// tridiagonal form followed by the implicit QL algorithm (EISPACK `tred2`/`tql2`).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    symmetric_eigen_on(a, n, threads)
}

/// [`symmetric_eigen`] with the QL rotations spread over at most `threads` threads (the
/// result does not depend on it).
fn symmetric_eigen_on(a: &[f64], n: usize, threads: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen: expected {n}x{n} elements");
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    // Work on the symmetrised copy so that round-off asymmetry cannot bias the result.
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            v[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    }
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    tridiagonalize(&mut v, &mut d, &mut e, n, threads);
    ql_implicit(&mut v, &mut d, &mut e, n, threads);

    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| d[y].total_cmp(&d[x]));
    let values = order.iter().map(|&j| d[j]).collect();
    let mut vectors = vec![0.0; n * n];
    let at = col_major(n);
    for (col, &j) in order.iter().enumerate() {
        for i in 0..n {
            vectors[i * n + col] = v[at(i, j)];
        }
    }
    (values, vectors)
}

/// Element (i, j) of the work matrix, stored column-major: every O(n³) inner loop of
/// `tred2`/`tql2` runs down a column, so this keeps them on contiguous memory. (The input
/// is symmetric, so storing it either way is the same matrix.)
fn col_major(n: usize) -> impl Fn(usize, usize) -> usize {
    move |i, j| j * n + i
}

/// Householder reduction of the symmetric matrix in `v` to tridiagonal form; on return `v`
/// holds the accumulated orthogonal transformation, `d` the diagonal and `e` the
/// sub-diagonal (in `e[1..]`).
fn tridiagonalize(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize, threads: usize) {
    let at = col_major(n);
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
    }
    for i in (1..n).rev() {
        let mut scale = 0.0;
        let mut h = 0.0;
        for dk in d.iter().take(i) {
            scale += dk.abs();
        }
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
                v[at(j, i)] = 0.0;
            }
        } else {
            for dk in d.iter_mut().take(i) {
                *dk /= scale;
                h += *dk * *dk;
            }
            let f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            for ej in e.iter_mut().take(i) {
                *ej = 0.0;
            }
            for j in 0..i {
                let f = d[j];
                v[at(j, i)] = f;
                let mut g = e[j] + v[at(j, j)] * f;
                for k in j + 1..i {
                    g += v[at(k, j)] * d[k];
                    e[k] += v[at(k, j)] * f;
                }
                e[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let f = d[j];
                let g = e[j];
                for k in j..i {
                    v[at(k, j)] -= f * e[k] + g * d[k];
                }
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    accumulate(v, d, n, threads);
    e[0] = 0.0;
}

/// Accumulate the Householder transformations of [`tridiagonalize`] into `v` (EISPACK
/// `tred2`'s second half), and leave the diagonal in `d`.
///
/// On entry column i + 1 of `v` holds the vector u_i of reflection i in rows 0..=i, with
/// h_i = d[i + 1], the diagonal holds the tridiagonal's diagonal, and everything below it is
/// zero. Column j of the result starts as the unit vector e_j and takes reflections
/// i = j … n − 2 in turn, never reading another column of the result; so the columns are
/// shared out across threads (round robin, as the work falls with j), and each column sees
/// the same operations in the same order as in `tred2`, which interleaves them by i.
fn accumulate(v: &mut [f64], d: &mut [f64], n: usize, threads: usize) {
    let at = col_major(n);
    let reflections = v.to_vec();
    let h = d.to_vec();
    for (j, dj) in d.iter_mut().enumerate() {
        *dj = reflections[at(j, j)];
    }
    v.fill(0.0);
    let column = |j: usize, col: &mut [f64]| {
        col[j] = 1.0;
        for i in j..n.saturating_sub(1) {
            let hi = h[i + 1];
            if hi != 0.0 {
                let u = &reflections[at(0, i + 1)..=at(i, i + 1)];
                let mut g = 0.0;
                for (uk, ck) in u.iter().zip(col.iter()) {
                    g += uk * ck;
                }
                for (ck, uk) in col.iter_mut().zip(u) {
                    *ck -= g * (uk / hi);
                }
            }
        }
    };
    let threads = threads.min(n / 32).max(1);
    if threads == 1 {
        for (j, col) in v.chunks_mut(n).enumerate() {
            column(j, col);
        }
        return;
    }
    let mut shares: Vec<Vec<(usize, &mut [f64])>> = (0..threads).map(|_| Vec::new()).collect();
    for (j, col) in v.chunks_mut(n).enumerate() {
        shares[j % threads].push((j, col));
    }
    std::thread::scope(|scope| {
        for share in shares {
            scope.spawn(move || {
                for (j, col) in share {
                    column(j, col);
                }
            });
        }
    });
}

/// Implicit QL iterations on the tridiagonal matrix `(d, e)`, rotating the columns of `v`.
///
/// The rotations never read `v`, so they are recorded and applied in batches by
/// [`Rotations::apply`], rows split across threads; each element of `v` sees the same
/// operations in the same order as when applied one by one, so the result is identical.
fn ql_implicit(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize, threads: usize) {
    let mut rotations = Rotations::new(n, threads);
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1: f64 = 0.0;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            for _iteration in 0..64 {
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for di in d.iter_mut().take(n).skip(l + 2) {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let mut c = 1.0;
                let mut c2 = c;
                let mut c3 = c;
                let el1 = e[l + 1];
                let mut s = 0.0;
                let mut s2 = 0.0;
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    rotations.push(i, c, s, v);
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    rotations.apply(v);
}

/// Plane rotations of columns (i, i + 1) of an n×n column-major matrix, recorded in order.
struct Rotations {
    n: usize,
    threads: usize,
    list: Vec<(usize, f64, f64)>,
}

impl Rotations {
    /// Rotations held before a batch is applied (about 24 MB).
    const BATCH: usize = 1 << 20;

    fn new(n: usize, threads: usize) -> Self {
        Self {
            n,
            threads,
            list: Vec::new(),
        }
    }

    /// Record the rotation of columns (i, i + 1) by (c, s); applies the batch when full.
    fn push(&mut self, i: usize, c: f64, s: f64, v: &mut [f64]) {
        self.list.push((i, c, s));
        if self.list.len() >= Self::BATCH {
            self.apply(v);
        }
    }

    /// Apply every recorded rotation, in order, to the rows of `v`: row blocks in parallel
    /// when the work is large enough to pay for the threads.
    fn apply(&mut self, v: &mut [f64]) {
        let n = self.n;
        let list = std::mem::take(&mut self.list);
        let rotate = |rows: std::ops::Range<usize>, v: &mut [f64]| {
            // `v` holds rows `rows` of every column, column-major: column j at j·len.
            let len = rows.len();
            for &(i, c, s) in &list {
                let (left, right) = v.split_at_mut((i + 1) * len);
                let a = &mut left[i * len..];
                let b = &mut right[..len];
                for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                    let h = *y;
                    *y = s * *x + c * h;
                    *x = c * *x - s * h;
                }
            }
        };
        let threads = self.threads.min(n / 32).max(1);
        if threads == 1 || list.len() * n < 1 << 20 {
            rotate(0..n, v);
            return;
        }
        // Gather each row block into its own column-major buffer, rotate in parallel, and
        // scatter back.
        let block = n.div_ceil(threads);
        let mut parts: Vec<(std::ops::Range<usize>, Vec<f64>)> = (0..n)
            .step_by(block)
            .map(|k0| {
                let rows = k0..(k0 + block).min(n);
                let mut part = Vec::with_capacity(rows.len() * n);
                for j in 0..n {
                    part.extend_from_slice(&v[j * n + rows.start..j * n + rows.end]);
                }
                (rows, part)
            })
            .collect();
        std::thread::scope(|scope| {
            for (rows, part) in &mut parts {
                let rows = rows.clone();
                scope.spawn(move || rotate(rows, part));
            }
        });
        for (rows, part) in &parts {
            let len = rows.len();
            for j in 0..n {
                v[j * n + rows.start..j * n + rows.end]
                    .copy_from_slice(&part[j * len..(j + 1) * len]);
            }
        }
    }
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
    let (_, vectors) = symmetric_eigen(gram, a);
    let mut out = vec![0.0; a * r];
    for j in 0..r {
        let mut pivot = 0.0f64;
        for i in 0..a {
            let x = vectors[i * a + j];
            if x.abs() > pivot.abs() {
                pivot = x;
            }
        }
        let sign = if pivot < 0.0 { -1.0 } else { 1.0 };
        for i in 0..a {
            out[i * r + j] = sign * vectors[i * a + j];
        }
    }
    out
}

/// Cholesky factor `L` (row-major, lower triangular) of a symmetric positive-definite `n×n`
/// matrix, or `None` when a pivot is not positive.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j];
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return None;
                }
                l[i * n + i] = sum.sqrt();
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Inverse of the transpose of a lower-triangular `L`: returns `L⁻ᵀ` (upper triangular,
/// row-major `n×n`).
pub fn inverse_transpose_lower(l: &[f64], n: usize) -> Vec<f64> {
    // Column c of L⁻¹ solves L·x = e_c by forward substitution; x is zero above row c, and
    // it is row c of L⁻ᵀ, so each solve writes one contiguous output row. n³/6 multiply-adds,
    // all along contiguous rows.
    let mut out = vec![0.0; n * n];
    for c in 0..n {
        let x = &mut out[c * n..(c + 1) * n];
        for i in c..n {
            let row = &l[i * n..i * n + i];
            let dot: f64 = row[c..].iter().zip(&x[c..i]).map(|(a, b)| a * b).sum();
            let unit = if i == c { 1.0 } else { 0.0 };
            x[i] = (unit - dot) / l[i * n + i];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let b: Vec<f64> = (0..n * n).map(|_| next()).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = b[i * n + j] + b[j * n + i];
            }
        }
        a
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

    /// The QL rotations applied by row blocks on several threads (uneven blocks at n = 150)
    /// give the same bits as applied on one.
    #[test]
    fn eigen_is_the_same_on_any_number_of_threads() {
        let n = 150;
        let a = sym(n, 3);
        let one = symmetric_eigen_on(&a, n, 1);
        for threads in [2, 4] {
            assert!(
                one == symmetric_eigen_on(&a, n, threads),
                "{threads} threads"
            );
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
        for n in [1, 4, 37] {
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
