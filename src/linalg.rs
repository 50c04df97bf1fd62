//! Small dense linear algebra on the host, in f64.
//!
//! The optimizer keeps every m×n product on the device; what reaches the host is an r×r or
//! a×a symmetric matrix (a = the smaller side of a weight) whose top eigenvectors give the
//! top singular vectors of §3, §4 and §6 of `docs/algorithm.md` ([`top_eigen`]; the full
//! [`symmetric_eigen`] is its fallback), and the k×k Gram matrices of Cholesky-QR
//! ([`cholesky`], [`inverse_transpose_lower`]). Matrices are row-major `Vec<f64>` of `n * n`
//! elements. Every routine gives the same bits on any number of threads, and with or
//! without AVX2 (see `wide!`).

use crate::simd::wide;

/// Eigen-decomposition of a symmetric `n×n` matrix (row-major).
///
/// Returns `(values, vectors)` with the eigenvalues in descending order and `vectors` row-major
/// `n×n` whose column `j` is the unit eigenvector of `values[j]`. Householder reduction to
/// tridiagonal form followed by the implicit QL algorithm (EISPACK `tred2`/`tql2`).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    timed_solve(n, || symmetric_eigen_on(a, n, cores()))
}

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
static SOLVES: std::sync::Mutex<std::collections::BTreeMap<usize, (u64, f64)>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

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

/// The threads the routines here may use: every core.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |t| t.get())
}

/// Threads for a job of `multiply_adds`: one below about a million, where spawning costs
/// more than it saves, else [`cores`].
fn threads_for(multiply_adds: usize) -> usize {
    if multiply_adds < 1 << 20 { 1 } else { cores() }
}

/// The symmetrised copy (A + Aᵀ)/2 of the row-major n×n `a`, so that round-off asymmetry
/// cannot bias the result. Being symmetric, it reads the same row- or column-major.
fn symmetrised(a: &[f64], n: usize) -> Vec<f64> {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            v[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    }
    v
}

/// [`symmetric_eigen`] with the QL rotations spread over at most `threads` threads (the
/// result does not depend on it).
fn symmetric_eigen_on(a: &[f64], n: usize, threads: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen: expected {n}x{n} elements");
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut v = symmetrised(a, n);
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    reduce(&mut v, &mut d, &mut e, n, threads);
    accumulate(&mut v, &mut d, n, threads);
    let mut rotations = Rotations::new(n, threads);
    ql_implicit(&mut d, &mut e, n, |i, c, s| rotations.push(i, c, s, &mut v));
    rotations.apply(&mut v);

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

/// The `k` largest eigenpairs of a symmetric `n×n` matrix (row-major).
///
/// Returns `(values, vectors)`: `k` eigenvalues in descending order and `vectors` row-major
/// `n×k` with orthonormal columns, column `j` the eigenvector of `values[j]`. Where values
/// tie, any orthonormal basis of their eigenspace may come back. Same Householder reduction
/// as [`symmetric_eigen`], then only what the top `k` need: the eigenvalues by QL without
/// vectors (O(n²)), the `k` eigenvectors of the tridiagonal by inverse iteration (O(n·k),
/// re-orthogonalised within clusters of eigenvalues closer than 1e-7·‖T‖), and the
/// reflections applied to those `k` vectors alone (2·n²·k, columns spread over the cores).
/// That skips the accumulation of the n×n transformation (4/3·n³) and the QL rotations of
/// its columns. The result is checked (finite, orthonormal to 1e-9, residuals at round-off);
/// where the check fails it comes from [`symmetric_eigen`] instead. Deterministic: the
/// same bits on any number of threads.
pub fn top_eigen(a: &[f64], n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let threads = cores();
    timed_solve(n, || {
        top_eigen_on(a, n, k, threads).unwrap_or_else(|| {
            let (values, vectors) = symmetric_eigen_on(a, n, threads);
            leading(values, vectors, n, k)
        })
    })
}

/// The first `k` of `values` and the first `k` columns of the row-major `n×n` `vectors`.
fn leading(values: Vec<f64>, vectors: Vec<f64>, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; n * k];
    for i in 0..n {
        out[i * k..(i + 1) * k].copy_from_slice(&vectors[i * n..i * n + k]);
    }
    (values[..k].to_vec(), out)
}

/// [`top_eigen`] on at most `threads` threads, or `None` when the inverse-iteration result
/// fails its check.
fn top_eigen_on(a: &[f64], n: usize, k: usize, threads: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    assert_eq!(a.len(), n * n, "top_eigen: expected {n}x{n} elements");
    assert!(k <= n, "top_eigen: {k} eigenpairs of a {n}x{n} matrix");
    if k == 0 {
        return Some((Vec::new(), Vec::new()));
    }
    let at = col_major(n);
    let mut v = symmetrised(a, n);
    let mut h = vec![0.0; n];
    let mut e = vec![0.0; n];
    reduce(&mut v, &mut h, &mut e, n, threads);
    let diag: Vec<f64> = (0..n).map(|j| v[at(j, j)]).collect();
    // off[i] couples rows i and i + 1 of T.
    let off: Vec<f64> = e[1..].to_vec();

    let mut values = diag.clone();
    ql_implicit(&mut values, &mut e, n, |_, _, _| {});
    if !values.iter().all(|x| x.is_finite()) {
        return None;
    }
    values.sort_by(|x, y| y.total_cmp(x));
    values.truncate(k);

    let mut z = tridiagonal_vectors(&diag, &off, &values)?;
    apply_reflections(&v, &h, &mut z, n, threads);
    if !orthonormal(&z, n, k, 1e-9, threads) {
        return None;
    }
    let mut vectors = vec![0.0; n * k];
    for (j, col) in z.chunks(n).enumerate() {
        for (i, x) in col.iter().enumerate() {
            vectors[i * k + j] = *x;
        }
    }
    Some((values, vectors))
}

/// Eigenvectors of the symmetric tridiagonal T (diagonal `diag`, off-diagonal `off`) for
/// its eigenvalues `values` (descending), by inverse iteration (LAPACK `dstein`'s scheme):
/// column-major n×k, unit columns. Vectors whose eigenvalues lie within 1e-7·‖T‖ of each
/// other in a chain form a cluster and are orthogonalised against the cluster's earlier
/// members at every iteration, and shifts closer than 10·ε·‖T‖ are pulled apart. `None`
/// when a vector's residual ‖T·z − λ·z‖ does not reach round-off level.
fn tridiagonal_vectors(diag: &[f64], off: &[f64], values: &[f64]) -> Option<Vec<f64>> {
    let (n, k) = (diag.len(), values.len());
    let norm = (0..n)
        .map(|i| {
            let left = if i > 0 { off[i - 1].abs() } else { 0.0 };
            let right = if i + 1 < n { off[i].abs() } else { 0.0 };
            diag[i].abs() + left + right
        })
        .fold(0.0, f64::max);
    let mut z = vec![0.0; n * k];
    if norm == 0.0 {
        // T = 0: every unit vector is an eigenvector.
        for j in 0..k {
            z[j * n + j] = 1.0;
        }
        return Some(z);
    }
    // Work on T/‖T‖, so that the tolerances below are relative.
    let diag: Vec<f64> = diag.iter().map(|x| x / norm).collect();
    let off: Vec<f64> = off.iter().map(|x| x / norm).collect();
    let eps = f64::EPSILON;
    let (cluster_gap, separation) = (1e-7, 10.0 * eps);
    let mut cluster_start = 0;
    let mut previous_shift = f64::INFINITY;
    let mut x = vec![0.0; n];
    for j in 0..k {
        let value = values[j] / norm;
        let mut shift = value;
        if j > 0 && values[j - 1] / norm - value > cluster_gap {
            cluster_start = j;
        } else if j > 0 && previous_shift - shift < separation {
            shift = previous_shift - separation;
        }
        previous_shift = shift;
        let lu = TridiagonalLu::new(&diag, &off, shift, eps);
        // A fixed pseudo-random start (as dstein), different for every vector.
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (j as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let (before, rest) = z.split_at_mut(j * n);
        let out = &mut rest[..n];
        for xi in out.iter_mut() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *xi = ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
        }
        for _ in 0..3 {
            x.copy_from_slice(out);
            lu.solve(&mut x);
            for member in before[cluster_start * n..].chunks(n) {
                let dot = dot(member, &x);
                for (xi, p) in x.iter_mut().zip(member) {
                    *xi -= dot * p;
                }
            }
            let length = dot(&x, &x).sqrt();
            if !length.is_finite() || length == 0.0 {
                return None;
            }
            for (o, xi) in out.iter_mut().zip(&x) {
                *o = xi / length;
            }
        }
        // ‖T·z − shift·z‖ at round-off level (the shift is within k·10·ε of the value).
        let residual = (0..n)
            .map(|i| {
                let mut t = (diag[i] - shift) * out[i];
                if i > 0 {
                    t += off[i - 1] * out[i - 1];
                }
                if i + 1 < n {
                    t += off[i] * out[i + 1];
                }
                t * t
            })
            .sum::<f64>()
            .sqrt();
        if residual > 1e3 * (n as f64).sqrt() * eps {
            return None;
        }
    }
    Some(z)
}

/// LU factors of T − λ·I (T symmetric tridiagonal) with partial pivoting (LAPACK
/// `dlagtf`): row i of U holds columns i, i + 1, i + 2; pivots below `tiny` are raised to it
/// when solving, so an exact eigenvalue as λ still gives a (large) solution.
struct TridiagonalLu {
    upper: Vec<[f64; 3]>,
    multiplier: Vec<f64>,
    swapped: Vec<bool>,
    tiny: f64,
}

impl TridiagonalLu {
    fn new(diag: &[f64], off: &[f64], shift: f64, tiny: f64) -> Self {
        let n = diag.len();
        let coupling = |i: usize| if i + 1 < n { off[i] } else { 0.0 };
        let mut upper = Vec::with_capacity(n);
        let mut multiplier = Vec::with_capacity(n);
        let mut swapped = Vec::with_capacity(n);
        // The row that is the pivot candidate at step i: columns i, i + 1, i + 2.
        let mut current = [diag[0] - shift, coupling(0), 0.0];
        for i in 0..n - 1 {
            let next = [off[i], diag[i + 1] - shift, coupling(i + 1)];
            if current[0].abs() >= next[0].abs() {
                let m = if current[0] == 0.0 {
                    0.0
                } else {
                    next[0] / current[0]
                };
                upper.push(current);
                multiplier.push(m);
                swapped.push(false);
                current = [next[1] - m * current[1], next[2] - m * current[2], 0.0];
            } else {
                let m = current[0] / next[0];
                upper.push(next);
                multiplier.push(m);
                swapped.push(true);
                current = [current[1] - m * next[1], current[2] - m * next[2], 0.0];
            }
        }
        upper.push(current);
        Self {
            upper,
            multiplier,
            swapped,
            tiny,
        }
    }

    /// Overwrite `x` with (T − λ·I)⁻¹·x.
    fn solve(&self, x: &mut [f64]) {
        let n = x.len();
        for i in 0..n - 1 {
            if self.swapped[i] {
                x.swap(i, i + 1);
            }
            x[i + 1] -= self.multiplier[i] * x[i];
        }
        for i in (0..n).rev() {
            let [pivot, u1, u2] = self.upper[i];
            let mut t = x[i];
            if i + 1 < n {
                t -= u1 * x[i + 1];
            }
            if i + 2 < n {
                t -= u2 * x[i + 2];
            }
            let pivot = if pivot.abs() < self.tiny {
                self.tiny.copysign(pivot)
            } else {
                pivot
            };
            x[i] = t / pivot;
        }
    }
}

/// Overwrite each column z of the column-major n×k `z` with Q·z = P_{n−2}⋯P_0·z, the
/// reflections as left by [`reduce`] in `v` (column-major n×n) and `h`; columns are shared
/// out across threads, each computed exactly as on one.
fn apply_reflections(v: &[f64], h: &[f64], z: &mut [f64], n: usize, threads: usize) {
    let k = z.len() / n.max(1);
    let threads = threads.min(n * n * k / (1 << 18) + 1);
    run_shares(
        shares(z.chunks_mut(n.max(1) * REFLECT_GROUP), threads),
        |cols| reflect(v, h, cols, n),
    );
}

/// Columns that [`reflect`] takes through each reflection together, so that its vector is
/// read from memory once for all of them.
const REFLECT_GROUP: usize = 4;

wide!(
    /// [`apply_reflections`] on the columns (n each) of `cols`.
    fn reflect = reflect_body(v: &[f64], h: &[f64], cols: &mut [f64], n: usize);
);

/// [`reflect`]'s body, built twice by `wide!`.
#[inline(always)]
fn reflect_body(v: &[f64], h: &[f64], cols: &mut [f64], n: usize) {
    for i in 0..n.saturating_sub(1) {
        let hi = h[i + 1];
        if hi != 0.0 {
            let u = &v[(i + 1) * n..(i + 1) * n + i + 1];
            for col in cols.chunks_mut(n) {
                let g = dot(u, &col[..=i]) / hi;
                for (c, p) in col.iter_mut().zip(u) {
                    *c -= g * p;
                }
            }
        }
    }
}

/// Whether the `k` columns of the column-major n×k `z` are finite and orthonormal: every
/// entry of ZᵀZ − I within `tolerance`. Rows of ZᵀZ are shared out over at most `threads`
/// threads.
fn orthonormal(z: &[f64], n: usize, k: usize, tolerance: f64, threads: usize) -> bool {
    if !z.iter().all(|x| x.is_finite()) {
        return false;
    }
    let threads = threads.min(n * k * k / (1 << 20) + 1);
    let row = |i: usize| {
        let zi = &z[i * n..(i + 1) * n];
        (i..k).all(|j| {
            let zj = &z[j * n..(j + 1) * n];
            let id = if i == j { 1.0 } else { 0.0 };
            (dot(zi, zj) - id).abs() <= tolerance
        })
    };
    run_shares(shares(0..k, threads), row)
        .into_iter()
        .all(|ok| ok)
}

/// Σ aᵢ·bᵢ over the shorter of the two, in eight interleaved partial sums (which the
/// compiler can vectorise; one running sum is a chain of dependent additions) added in a
/// fixed order, so the result depends only on the inputs.
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let mut lanes = [0.0f64; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
        + tail
}

/// Element (i, j) of the work matrix, stored column-major: every O(n³) inner loop of the
/// reduction and of `tql2` runs down a column, so this keeps them on contiguous memory.
/// (The input is symmetric, so storing it either way is the same matrix.)
fn col_major(n: usize) -> impl Fn(usize, usize) -> usize {
    move |i, j| j * n + i
}

/// Reflections per panel in [`reduce`]: the leading block is brought up to date once per
/// panel, by a rank-2·`PANEL` update, instead of once per reflection.
const PANEL: usize = 32;

/// Leading blocks at most this many rows and columns are reduced one reflection at a time
/// ([`reduce_unblocked`]); larger ones by panels.
const UNBLOCKED: usize = 512;

/// Columns per partial sum of [`block_matvec`] (fixed, so that the order of the additions,
/// and the result, do not depend on the number of threads).
const MATVEC_BLOCK: usize = 64;

/// Householder reduction of the symmetric matrix in `v` to tridiagonal form (the first half
/// of EISPACK `tred2`, blocked as in LAPACK `dsytrd`). On return column i + 1 of `v` holds
/// the vector u_i of reflection P_i = I − u_i·u_iᵀ/h_i in rows 0..=i, with h_i = `d[i + 1]`
/// (0: no reflection), the diagonal of `v` holds the tridiagonal's diagonal, everything
/// below it is zero, and `e` holds the sub-diagonal in `e[1..]`. The orthogonal Q with
/// A = Q·T·Qᵀ is P_{n−2}⋯P_0.
///
/// The work is on the upper triangle, so the row that each reflection annihilates is a
/// contiguous column. Reflections come `PANEL` at a time: within a panel the leading block
/// stays as stored and the true one is A − U·Wᵀ − W·Uᵀ, U holding the panel's vectors u and
/// W the matching w = p − (uᵀp / 2h)·u of `tred2` (p = A·u / h); after the panel one
/// rank-2·`PANEL` update brings the block up to date. So the block is read once per
/// reflection (for A·u) and once per panel, where `tred2` reads it twice per reflection:
/// at a = 2048 (32 MiB in f64) the block no longer stays in cache and those reads are the
/// cost. Once the leading block is down to `UNBLOCKED` rows, where it stays in cache and
/// the panel's extra products would cost more than they save, the rest goes one reflection
/// at a time ([`reduce_unblocked`]; LAPACK `dsytrd` does the same with `dsytd2`). The
/// products A·u (one thread per 2^19 multiply-adds) and the panel updates are shared out
/// over at most `threads` threads, each element computed in the same order on any number.
fn reduce(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize, threads: usize) {
    reduce_with(v, d, e, n, threads, UNBLOCKED);
}

wide!(
    /// [`reduce`] with leading blocks of at most `unblocked` rows and columns reduced one
    /// reflection at a time (0: panels down to the last reflection).
    fn reduce_with = reduce_body(
        v: &mut [f64],
        d: &mut [f64],
        e: &mut [f64],
        n: usize,
        threads: usize,
        unblocked: usize,
    );
);

/// [`reduce_with`]'s body, built twice by `wide!`.
#[inline(always)]
fn reduce_body(
    v: &mut [f64],
    d: &mut [f64],
    e: &mut [f64],
    n: usize,
    threads: usize,
    unblocked: usize,
) {
    let at = col_major(n);
    // Column p (n rows) of `us` and `ws`: u and w of the panel's p-th reflection.
    let len = if n > unblocked.max(1) { n } else { 0 };
    let mut us = vec![0.0; len * PANEL];
    let mut ws = vec![0.0; len * PANEL];
    let mut partials = vec![0.0; len.div_ceil(MATVEC_BLOCK) * len];
    let mut x = vec![0.0; len];
    let mut top = n.saturating_sub(1);
    while top >= unblocked.max(1) {
        let bottom = top.saturating_sub(PANEL - 1).max(1);
        for (t, i) in (bottom..=top).rev().enumerate() {
            let (done_u, rest_u) = us.split_at_mut(t * n);
            let (done_w, rest_w) = ws.split_at_mut(t * n);
            let (u, w) = (&mut rest_u[..i], &mut rest_w[..i]);
            let panel = |p: usize| (&done_u[p * n..(p + 1) * n], &done_w[p * n..(p + 1) * n]);
            // Row i of the true leading block, columns 0..=i.
            x[..=i].copy_from_slice(&v[at(0, i)..=at(i, i)]);
            for p in 0..t {
                let (up, wp) = panel(p);
                let (ui, wi) = (up[i], wp[i]);
                for ((xj, uj), wj) in x[..=i].iter_mut().zip(up).zip(wp) {
                    *xj -= ui * wj + wi * uj;
                }
            }
            v[at(i, i)] = x[i];
            let scale: f64 = x[..i].iter().map(|a| a.abs()).sum();
            let mut h = 0.0;
            if scale == 0.0 {
                e[i] = x[i - 1];
                u.fill(0.0);
                w.fill(0.0);
            } else {
                for (uj, xj) in u.iter_mut().zip(&x[..i]) {
                    *uj = xj / scale;
                    h += *uj * *uj;
                }
                let f = u[i - 1];
                let g = if f > 0.0 { -h.sqrt() } else { h.sqrt() };
                e[i] = scale * g;
                h -= f * g;
                u[i - 1] = f - g;
                // w = (A − U·Wᵀ − W·Uᵀ)·u / h over the leading i×i block, then
                // w −= (uᵀw / 2h)·u.
                block_matvec(v, n, i, u, w, &mut partials, threads);
                for p in 0..t {
                    let (up, wp) = panel(p);
                    let (up, wp) = (&up[..i], &wp[..i]);
                    let (a, b) = (dot(wp, u), dot(up, u));
                    for ((wj, uj), vj) in w.iter_mut().zip(up).zip(wp) {
                        *wj -= uj * a + vj * b;
                    }
                }
                let mut f = 0.0;
                for (wj, uj) in w.iter_mut().zip(u.iter()) {
                    *wj /= h;
                    f += *wj * uj;
                }
                let hh = f / (h + h);
                for (wj, uj) in w.iter_mut().zip(u.iter()) {
                    *wj -= hh * uj;
                }
            }
            v[at(0, i)..at(i, i)].copy_from_slice(u);
            d[i] = h;
        }
        update_block(v, n, bottom, &us, &ws, top - bottom + 1, threads);
        top = bottom - 1;
    }
    if top >= 1 {
        // The rest as in `tred2`, which works on the lower triangle: mirror the block.
        for j in 1..=top {
            for k in 0..j {
                v[at(j, k)] = v[at(k, j)];
            }
        }
        reduce_unblocked(v, d, e, n, top);
    }
    if n > 0 {
        d[0] = v[at(0, 0)];
        e[0] = 0.0;
    }
    for j in 0..n {
        v[at(j + 1, j)..at(n, j)].fill(0.0);
    }
}

/// y = A·u for the symmetric leading `size`×`size` block A of the column-major `v`, read
/// from its upper triangle: a partial sum over each `MATVEC_BLOCK` columns (in `partials`,
/// n elements per block), the partials added in block order. Blocks are shared out over at
/// most `threads` threads, one per 2^19 multiply-adds (below that a spawn costs more than
/// it saves).
fn block_matvec(
    v: &[f64],
    n: usize,
    size: usize,
    u: &[f64],
    y: &mut [f64],
    partials: &mut [f64],
    threads: usize,
) {
    let blocks = size.div_ceil(MATVEC_BLOCK);
    let bounds = |b: usize| (b * MATVEC_BLOCK, ((b + 1) * MATVEC_BLOCK).min(size));
    let block = |(b, part): (usize, &mut [f64])| {
        let (b0, b1) = bounds(b);
        let part = &mut part[..b1];
        part.fill(0.0);
        let mut c = b0;
        while c + 4 <= b1 {
            column_quad(v, n, c, u, part);
            c += 4;
        }
        for c in c..b1 {
            // Column c holds A[0..=c, c]: its dot with u gives y[c]'s terms from rows
            // 0..=c, and by symmetry it adds A[k, c]·u[c] to every y[k], k < c.
            let col = &v[c * n..=c * n + c];
            let uc = u[c];
            let g = dot(col, &u[..=c]);
            for (pk, ck) in part[..c].iter_mut().zip(col) {
                *pk += ck * uc;
            }
            part[c] += g;
        }
    };
    let threads = threads.min(size * size / (1 << 19)).max(1);
    run_shares(
        shares(partials.chunks_mut(n).take(blocks).enumerate(), threads),
        block,
    );
    let y = &mut y[..size];
    y.fill(0.0);
    for (b, part) in partials.chunks(n).take(blocks).enumerate() {
        let b1 = bounds(b).1;
        for (yk, pk) in y[..b1].iter_mut().zip(part) {
            *yk += pk;
        }
    }
}

wide!(
    /// [`block_matvec`]'s terms from the four columns c..c + 4 into `part`: their dots with
    /// u into `part[c..c + 4]` and their symmetric contributions `A[k, c + j]·u[c + j]` into
    /// every `part[k]` above the diagonal. The rows below c are taken four at a time with
    /// four partial dots per column, so each row's `u[k]` and `part[k]` are loaded once for
    /// eight multiply-adds.
    fn column_quad = column_quad_body(v: &[f64], n: usize, c: usize, u: &[f64], part: &mut [f64]);
);

/// [`column_quad`]'s body, built twice by `wide!`.
// The lanes l index five arrays at once, which an iterator would hide.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn column_quad_body(v: &[f64], n: usize, c: usize, u: &[f64], part: &mut [f64]) {
    let cols: [&[f64]; 4] = std::array::from_fn(|j| &v[(c + j) * n..=(c + j) * n + c + j]);
    let uc: [f64; 4] = std::array::from_fn(|j| u[c + j]);
    let body = c / 4 * 4;
    let (c0, c1, c2, c3) = (
        &cols[0][..body],
        &cols[1][..body],
        &cols[2][..body],
        &cols[3][..body],
    );
    let (ub, pb) = (&u[..body], &mut part[..body]);
    let mut acc = [[0.0f64; 4]; 4];
    for k0 in (0..body).step_by(4) {
        for l in 0..4 {
            let k = k0 + l;
            let (a0, a1, a2, a3) = (c0[k], c1[k], c2[k], c3[k]);
            let uk = ub[k];
            acc[0][l] += a0 * uk;
            acc[1][l] += a1 * uk;
            acc[2][l] += a2 * uk;
            acc[3][l] += a3 * uk;
            pb[k] += (a0 * uc[0] + a1 * uc[1]) + (a2 * uc[2] + a3 * uc[3]);
        }
    }
    let mut dots: [f64; 4] =
        std::array::from_fn(|j| (acc[j][0] + acc[j][2]) + (acc[j][1] + acc[j][3]));
    // Rows body..c + 4: the few rows left below c, and the 4×4 triangle at the diagonal.
    for k in body..c + 4 {
        for j in 0..4 {
            if k <= c + j {
                dots[j] += cols[j][k] * u[k];
                if k < c + j {
                    part[k] += cols[j][k] * uc[j];
                }
            }
        }
    }
    for j in 0..4 {
        part[c + j] += dots[j];
    }
}

/// A −= U·Wᵀ + W·Uᵀ on the upper triangle of the leading `size`×`size` block of the
/// column-major `v`, with U and W the first `width` columns (n rows each) of `us` and `ws`
/// ([`reduce`]'s panel). Columns are shared out over threads; each element takes the
/// `width` terms in order.
fn update_block(
    v: &mut [f64],
    n: usize,
    size: usize,
    us: &[f64],
    ws: &[f64],
    width: usize,
    threads: usize,
) {
    let threads = threads.min(size * size * width / (1 << 20) + 1);
    run_shares(
        shares(v[..size * n].chunks_mut(n).enumerate(), threads),
        |(j, col)| update_column(&mut col[..=j], n, j, us, ws, width),
    );
}

wide!(
    /// [`update_block`] on column j (rows 0..=j, in `col`).
    fn update_column = update_column_body(
        col: &mut [f64],
        n: usize,
        j: usize,
        us: &[f64],
        ws: &[f64],
        width: usize,
    );
);

/// [`update_column`]'s body, built twice by `wide!`.
#[inline(always)]
fn update_column_body(col: &mut [f64], n: usize, j: usize, us: &[f64], ws: &[f64], width: usize) {
    for p in 0..width {
        let (u, w) = (&us[p * n..=p * n + j], &ws[p * n..=p * n + j]);
        let (uj, wj) = (u[j], w[j]);
        for ((c, uk), wk) in col.iter_mut().zip(u).zip(w) {
            *c -= uk * wj + wk * uj;
        }
    }
}

/// [`reduce`]'s reflections for the leading (`top` + 1)-sided block, one at a time as in
/// EISPACK `tred2` (its first half): the block in the lower triangle of the column-major
/// `v`, each reflection's vector left in the upper part of its column and its h in `d`, as
/// [`reduce`] describes. Each reflection reads the block twice, once for A·u (a dot and an
/// axpy per column) and once for the rank-2 update, which also gathers the next row; while
/// the block stays in cache that beats a panel's extra products.
#[inline(always)]
fn reduce_unblocked(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize, top: usize) {
    let at = col_major(n);
    for j in 0..=top {
        d[j] = v[at(top, j)];
    }
    for i in (1..=top).rev() {
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
                // Column j of the leading block, below the diagonal: one dot product and
                // one axpy (the block's upper part is its transpose).
                let below = &v[at(j + 1, j)..at(i, j)];
                let g = e[j] + v[at(j, j)] * f + dot(below, &d[j + 1..i]);
                for (ek, vk) in e[j + 1..i].iter_mut().zip(below) {
                    *ek += vk * f;
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
}

/// Columns per block in [`cholesky`].
const COLUMN_BLOCK: usize = 64;

/// Round-robin shares of `items` for at most `threads` threads (fewer where there are
/// fewer items).
fn shares<T>(items: impl Iterator<Item = T>, threads: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..threads.max(1)).map(|_| Vec::new()).collect();
    for (b, item) in items.enumerate() {
        out[b % threads.max(1)].push(item);
    }
    out.retain(|s| !s.is_empty());
    out
}

/// `f` over every item of every share: the first share on the caller's thread, each other
/// as a task on rayon's pool (the one the fused CPU passes and gemm use, so a call costs no
/// thread spawns); the results in item order within each share, shares in order. Each
/// share's items run in order on one thread, so a result never depends on the number of
/// threads.
fn run_shares<T: Send, R: Send>(shares: Vec<Vec<T>>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let f = &f;
    let mut shares = shares.into_iter();
    let Some(first) = shares.next() else {
        return Vec::new();
    };
    let rest: Vec<Vec<T>> = shares.collect();
    let mut outs: Vec<Vec<R>> = rest.iter().map(|_| Vec::new()).collect();
    let mut out: Vec<R> = rayon::in_place_scope(|scope| {
        for (share, slot) in rest.into_iter().zip(outs.iter_mut()) {
            scope.spawn(move |_| *slot = share.into_iter().map(f).collect());
        }
        first.into_iter().map(f).collect()
    });
    out.extend(outs.into_iter().flatten());
    out
}

/// Accumulate the Householder transformations of [`reduce`] into `v` (EISPACK
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
                let g = dot(u, &col[..=i]);
                for (ck, uk) in col.iter_mut().zip(u) {
                    *ck -= g * (uk / hi);
                }
            }
        }
    };
    let threads = threads.min(n / 32);
    run_shares(shares(v.chunks_mut(n).enumerate(), threads), |(j, col)| {
        column(j, col)
    });
}

/// Implicit QL iterations (EISPACK `tql2`) on the tridiagonal matrix with diagonal `d` and
/// sub-diagonal `e[1..]`: on return `d` holds its eigenvalues, unordered. Each plane
/// rotation of columns (i, i + 1) that `tql2` applies to the eigenvectors is passed to
/// `rotate(i, c, s)` instead, in order.
///
/// The rotations never read the eigenvectors, so [`symmetric_eigen`] records them and
/// applies them in batches by [`Rotations::apply`], rows split across threads; each element
/// sees the same operations in the same order as when applied one by one, so the result is
/// identical. [`top_eigen`] ignores them.
fn ql_implicit(d: &mut [f64], e: &mut [f64], n: usize, mut rotate: impl FnMut(usize, f64, f64)) {
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
                let mut r = radius(p, 1.0);
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
                    r = radius(p, e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    rotate(i, c, s);
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
}

/// √(x² + y²): the plain formula where x² + y² is far from overflow and underflow, else
/// `f64::hypot`, which scales its arguments and costs about twice as much (it took half of
/// [`ql_implicit`]'s time at n = 512).
fn radius(x: f64, y: f64) -> f64 {
    let r2 = x * x + y * y;
    if (1e-290..1e290).contains(&r2) {
        r2.sqrt()
    } else {
        x.hypot(y)
    }
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
/// matrix, or `None` when a pivot is not positive.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    cholesky_on(a, n, threads_for(n * n * n / 3))
}

/// [`cholesky`] on at most `threads` threads, by blocks of [`COLUMN_BLOCK`] columns: the
/// block's diagonal rows first, then every row below it for the block's columns, rows
/// shared out over the threads. Each entry is the same expression as in the row-by-row
/// algorithm, so the result is too.
fn cholesky_on(a: &[f64], n: usize, threads: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for j0 in (0..n).step_by(COLUMN_BLOCK) {
        let j1 = (j0 + COLUMN_BLOCK).min(n);
        for i in j0..j1 {
            let (above, row) = l.split_at_mut(i * n);
            if !cholesky_row(a, n, above, &mut row[..n], i, j0, i + 1) {
                return None;
            }
        }
        let (above, below) = l.split_at_mut(j1 * n);
        let above = &*above;
        let rows = below
            .chunks_mut(n)
            .enumerate()
            .map(|(p, row)| (j1 + p, row));
        run_shares(shares(rows, threads), |(i, row)| {
            cholesky_row(a, n, above, row, i, j0, j1)
        });
    }
    Some(l)
}

wide!(
    /// Entries j0..j1 of row i of [`cholesky`]'s L into `row`, from the rows of L above it
    /// (`above`, row-major, n each); false when the diagonal entry, if among them, has no
    /// positive pivot.
    fn cholesky_row = cholesky_row_body(
        a: &[f64],
        n: usize,
        above: &[f64],
        row: &mut [f64],
        i: usize,
        j0: usize,
        j1: usize,
    ) -> bool;
);

/// [`cholesky_row`]'s body, built twice by `wide!`.
#[inline(always)]
fn cholesky_row_body(
    a: &[f64],
    n: usize,
    above: &[f64],
    row: &mut [f64],
    i: usize,
    j0: usize,
    j1: usize,
) -> bool {
    for j in j0..j1 {
        if j < i {
            let l_j = &above[j * n..j * n + n];
            row[j] = (a[i * n + j] - dot(&row[..j], &l_j[..j])) / l_j[j];
        } else {
            let sum = a[i * n + i] - dot(&row[..i], &row[..i]);
            if sum <= 0.0 || !sum.is_finite() {
                return false;
            }
            row[i] = sum.sqrt();
        }
    }
    true
}

/// Inverse of the transpose of a lower-triangular `L`: returns `L⁻ᵀ` (upper triangular,
/// row-major `n×n`).
pub fn inverse_transpose_lower(l: &[f64], n: usize) -> Vec<f64> {
    inverse_transpose_lower_on(l, n, threads_for(n * n * n / 6))
}

/// [`inverse_transpose_lower`] with the rows shared out over at most `threads` threads
/// (each row is computed the same way on any number).
fn inverse_transpose_lower_on(l: &[f64], n: usize, threads: usize) -> Vec<f64> {
    // Column c of L⁻¹ solves L·x = e_c by forward substitution; x is zero above row c, and
    // it is row c of L⁻ᵀ, so each solve writes one contiguous output row. n³/6 multiply-adds,
    // all along contiguous rows; the solves are independent.
    let mut out = vec![0.0; n * n];
    run_shares(
        shares(out.chunks_mut(n.max(1)).enumerate(), threads),
        |(c, x)| forward_solve(l, n, c, x),
    );
    out
}

wide!(
    /// Row c of [`inverse_transpose_lower`]'s result into `x`: L·x = e_c by forward
    /// substitution.
    fn forward_solve = forward_solve_body(l: &[f64], n: usize, c: usize, x: &mut [f64]);
);

/// [`forward_solve`]'s body, built twice by `wide!`.
#[inline(always)]
fn forward_solve_body(l: &[f64], n: usize, c: usize, x: &mut [f64]) {
    for i in c..n {
        let row = &l[i * n..i * n + i];
        let unit = if i == c { 1.0 } else { 0.0 };
        x[i] = (unit - dot(&row[c..], &x[c..i])) / l[i * n + i];
    }
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

    /// The n×n identity, row-major.
    fn identity(n: usize) -> Vec<f64> {
        (0..n * n)
            .map(|p| if p / n == p % n { 1.0 } else { 0.0 })
            .collect()
    }

    /// A block-diagonal n×n matrix (n a multiple of 5) repeating one random symmetric 5×5
    /// block: its tridiagonal splits, so reflections vanish and eigenvalues repeat.
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

    /// Checks `top_eigen`'s fast path (no fallback) on `a` against the full solver: the same
    /// values, eigen-residuals at round-off, orthonormal columns, and the same top-k
    /// subspace where the spectrum has a gap after k.
    fn check_top(a: &[f64], n: usize, k: usize, what: &str) {
        let (values, vectors) =
            top_eigen_on(a, n, k, 2).unwrap_or_else(|| panic!("{what}: fell back"));
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

    #[test]
    fn top_eigen_is_the_same_on_any_number_of_threads() {
        let n = 150;
        let a = sym(n, 4);
        let one = top_eigen_on(&a, n, 40, 1).unwrap();
        for threads in [2, 4, 7] {
            assert!(
                one == top_eigen_on(&a, n, 40, threads).unwrap(),
                "{threads}"
            );
        }
    }

    /// The reduction by panels, one reflection at a time, and the two in turn give
    /// A = Q·T·Qᵀ with Q orthogonal, to round-off: random matrices around the panel and
    /// block widths (32, 64), and ones whose rows vanish (zero, the identity, repeated
    /// blocks), where reflections are skipped.
    #[test]
    fn reduction_reconstructs_by_panels_and_unblocked() {
        let mut cases: Vec<(String, usize, Vec<f64>)> = [1, 2, 31, 33, 64, 65, 150, 301]
            .into_iter()
            .map(|n| (format!("random n={n}"), n, sym(n, 200 + n as u64)))
            .collect();
        let n = 40;
        cases.push(("zero".into(), n, vec![0.0; n * n]));
        cases.push(("identity".into(), n, identity(n)));
        let blocks = repeated_blocks(n);
        cases.push(("repeated blocks".into(), n, blocks));
        for (what, n, a) in &cases {
            let n = *n;
            let scale = a.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            // Panels throughout, panels then one at a time from 20 rows down (the switch
            // mirrors the block into the lower triangle), and one at a time throughout.
            for unblocked in [0, 20, usize::MAX] {
                let mut v = symmetrised(a, n);
                let (mut d, mut e) = (vec![0.0; n], vec![0.0; n]);
                reduce_with(&mut v, &mut d, &mut e, n, 2, unblocked);
                let at = col_major(n);
                for j in 0..n {
                    assert!(
                        (j + 1..n).all(|k| v[at(k, j)] == 0.0),
                        "{what}, unblocked {unblocked}: below the diagonal"
                    );
                }
                let diag: Vec<f64> = (0..n).map(|j| v[at(j, j)]).collect();
                accumulate(&mut v, &mut d, n, 2);
                assert_eq!(d, diag, "{what}: accumulate keeps the diagonal");
                // (T·Qᵀ)[i][c] = Σ_j T[i][j]·Q[c][j], T tridiagonal (diag, e[1..]) and Q
                // column-major in v.
                let tq = |i: usize, c: usize| {
                    let mut x = diag[i] * v[at(c, i)];
                    if i > 0 {
                        x += e[i] * v[at(c, i - 1)];
                    }
                    if i + 1 < n {
                        x += e[i + 1] * v[at(c, i + 1)];
                    }
                    x
                };
                for r in 0..n {
                    for c in 0..n {
                        let rec: f64 = (0..n).map(|i| v[at(r, i)] * tq(i, c)).sum();
                        let qq: f64 = (0..n).map(|i| v[at(i, r)] * v[at(i, c)]).sum();
                        let id = if r == c { 1.0 } else { 0.0 };
                        assert!(
                            (rec - a[r * n + c]).abs() <= 1e-12 * scale * n as f64,
                            "{what}, unblocked {unblocked}: Q·T·Qᵀ at ({r}, {c})"
                        );
                        assert!(
                            (qq - id).abs() <= 1e-12 * n as f64,
                            "{what}, unblocked {unblocked}: QᵀQ at ({r}, {c})"
                        );
                    }
                }
            }
        }
    }

    /// The reduction alone past the size where its products A·u go onto several threads
    /// (a leading block of 1024 and more): the same bits on one thread and on three.
    #[test]
    fn reduction_is_the_same_on_any_number_of_threads() {
        let n = 1030;
        let a = sym(n, 6);
        let run = |threads| {
            let mut v = symmetrised(&a, n);
            let (mut d, mut e) = (vec![0.0; n], vec![0.0; n]);
            reduce(&mut v, &mut d, &mut e, n, threads);
            (v, d, e)
        };
        assert!(run(1) == run(3));
    }

    /// The AVX2 builds of the `wide!` functions give the same bits as the baseline builds:
    /// the reduction by panels and unblocked (n = 600 > `UNBLOCKED`), the reflections, the
    /// full solver, and Cholesky with the inverse of Lᵀ, all on two threads. (On a CPU
    /// without AVX2 both runs take the baseline and this checks nothing.)
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_gives_the_same_bits_as_the_baseline() {
        use crate::simd::{BASELINE_ONLY, avx2};
        use std::sync::atomic::Ordering;
        if !avx2() {
            eprintln!("no AVX2 on this CPU: both builds are the baseline");
        }
        let big = sym(600, 11);
        let small = sym(150, 12);
        let mut spd = small.clone();
        for i in 0..150 {
            spd[i * 150 + i] += 150.0;
        }
        let run = || {
            let top = top_eigen_on(&big, 600, 150, 2).expect("no fallback");
            let full = symmetric_eigen_on(&small, 150, 2);
            let l = cholesky_on(&spd, 150, 2).expect("positive definite");
            let inv = inverse_transpose_lower_on(&l, 150, 2);
            (top, full, l, inv)
        };
        let wide = run();
        BASELINE_ONLY.store(true, Ordering::Relaxed);
        let baseline = run();
        BASELINE_ONLY.store(false, Ordering::Relaxed);
        assert!(wide.0 == baseline.0, "top_eigen");
        assert!(wide.1 == baseline.1, "symmetric_eigen");
        assert!(wide.2 == baseline.2, "cholesky");
        assert!(wide.3 == baseline.3, "inverse_transpose_lower");
    }

    /// `radius` against `hypot`: within an ulp or two across the range, including where
    /// the plain formula would overflow or underflow.
    #[test]
    fn radius_matches_hypot() {
        for &(x, y) in &[
            (3.0, 4.0),
            (1.0, 0.0),
            (0.0, 0.0),
            (-2.5, 1e-9),
            (1e200, 3e200),
            (1e-200, 1e-200),
            (1e-160, 0.0),
            (5e-324, 0.0),
            (1e154, 1e154),
            (f64::MAX, 1.0),
        ] {
            let (r, h) = (radius(x, y), x.hypot(y));
            assert!(
                (r - h).abs() <= 2.0 * f64::EPSILON * h,
                "radius({x}, {y}) = {r}, hypot {h}"
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
        for n in [1, 4, 37, 70] {
            let mut a = sym(n, 9);
            for i in 0..n {
                a[i * n + i] += 5.0 * n as f64;
            }
            let l = cholesky(&a, n).unwrap();
            let r_inv = inverse_transpose_lower(&l, n);
            for threads in [1, 3] {
                assert!(
                    r_inv == inverse_transpose_lower_on(&l, n, threads),
                    "{threads}"
                );
            }
            // The blocked, threaded factor has the bits of the row-by-row algorithm.
            let mut rows = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..=i {
                    let sum = a[i * n + j] - dot(&rows[i * n..i * n + j], &rows[j * n..j * n + j]);
                    rows[i * n + j] = if i == j {
                        sum.sqrt()
                    } else {
                        sum / rows[j * n + j]
                    };
                }
            }
            for threads in [1, 3] {
                assert!(
                    rows == cholesky_on(&a, n, threads).unwrap(),
                    "n = {n}, {threads}"
                );
            }
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
