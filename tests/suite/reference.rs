//! An independent f64 host implementation of docs/algorithm.md §2–§7.
//!
//! It calls nothing of the crate's math: its own matrices, its own Jacobi eigen-solver, and
//! the right-projected case written out with right multiplications (not via the transpose).
//! Only the test inputs ([`Rng`]) come from the crate's generator, `subtrack::testing::rng`.

use subtrack::testing::rng::SplitMix;

/// Row-major dense matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }
    pub fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Self {
        let mut m = Self::zeros(rows, cols);
        for i in 0..rows {
            for j in 0..cols {
                m.data[i * cols + j] = f(i, j);
            }
        }
        m
    }
    pub fn identity(n: usize) -> Self {
        Self::from_fn(n, n, |i, j| if i == j { 1.0 } else { 0.0 })
    }
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }
    pub fn t(&self) -> Self {
        Self::from_fn(self.cols, self.rows, |i, j| self.at(j, i))
    }
    pub fn mul(&self, o: &Self) -> Self {
        assert_eq!(self.cols, o.rows);
        let mut out = Self::zeros(self.rows, o.cols);
        for i in 0..self.rows {
            for k in 0..self.cols {
                let x = self.at(i, k);
                for j in 0..o.cols {
                    out.data[i * o.cols + j] += x * o.at(k, j);
                }
            }
        }
        out
    }
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Self {
        Self {
            rows: self.rows,
            cols: self.cols,
            data: self.data.iter().map(|&x| f(x)).collect(),
        }
    }
    pub fn zip(&self, o: &Self, f: impl Fn(f64, f64) -> f64) -> Self {
        assert_eq!((self.rows, self.cols), (o.rows, o.cols));
        let data = self
            .data
            .iter()
            .zip(&o.data)
            .map(|(&a, &b)| f(a, b))
            .collect();
        Self {
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }
    pub fn add(&self, o: &Self) -> Self {
        self.zip(o, |a, b| a + b)
    }
    pub fn sub(&self, o: &Self) -> Self {
        self.zip(o, |a, b| a - b)
    }
    pub fn scale(&self, s: f64) -> Self {
        self.map(|x| x * s)
    }
    pub fn norm(&self) -> f64 {
        self.data.iter().map(|x| x * x).sum::<f64>().sqrt()
    }
    pub fn col(&self, j: usize) -> Vec<f64> {
        (0..self.rows).map(|i| self.at(i, j)).collect()
    }
}

/// Jacobi eigen-decomposition of a symmetric matrix: (values descending, vectors as columns).
pub fn jacobi_eigen(a: &Mat) -> (Vec<f64>, Mat) {
    let n = a.rows;
    let mut m = a.clone();
    let mut v = Mat::identity(n);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m.at(i, j).powi(2))
            .sum();
        if off < 1e-30 * (1.0 + m.norm().powi(2)) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m.at(p, q);
                if apq.abs() < 1e-300 {
                    continue;
                }
                let tau = (m.at(q, q) - m.at(p, p)) / (2.0 * apq);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let t = if tau == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m.at(k, p), m.at(k, q));
                    m.data[k * n + p] = c * mkp - s * mkq;
                    m.data[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m.at(p, k), m.at(q, k));
                    m.data[p * n + k] = c * mpk - s * mqk;
                    m.data[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v.at(k, p), v.at(k, q));
                    v.data[k * n + p] = c * vkp - s * vkq;
                    v.data[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| m.at(y, y).total_cmp(&m.at(x, x)));
    let values = order.iter().map(|&j| m.at(j, j)).collect();
    let vectors = Mat::from_fn(n, n, |i, c| v.at(i, order[c]));
    (values, vectors)
}

/// Top-r eigenvectors of a symmetric PSD matrix, signs canonical (largest |entry| positive).
pub fn top_eigvecs(gram: &Mat, r: usize) -> Mat {
    let (_, v) = jacobi_eigen(gram);
    let mut out = Mat::zeros(gram.rows, r);
    for j in 0..r {
        let col = v.col(j);
        let pivot = col
            .iter()
            .copied()
            .fold(0.0f64, |p, x| if x.abs() > p.abs() { x } else { p });
        let s = if pivot < 0.0 { -1.0 } else { 1.0 };
        for (i, x) in col.iter().enumerate() {
            out.data[i * r + j] = s * x;
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Update {
    Geodesic,
    Svd,
}
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    Off,
    Paper,
    Code,
}

#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    pub rank: usize,
    pub interval: usize,
    pub eta: f64,
    pub max_theta: Option<f64>,
    pub scale: f64,
    pub beta_1: f64,
    pub beta_2: f64,
    pub eps: f64,
    pub wd: f64,
    pub update: Update,
    pub aware: Variant,
    pub recovery: Variant,
    pub zeta: f64,
}

/// One projected matrix's reference state.
pub struct RefState {
    pub s: Mat,
    pub m: Mat,
    pub v: Mat,
    pub k: usize,
    pub lambda_prev: Option<f64>,
}

/// Geodesic update of §4 on a left-layout basis `s` (a×r) for gradient `g` (a×b).
/// Returns (S', C) with C = S'ᵀS, or None when σ = 0.
pub fn geodesic(s: &Mat, g: &Mat, eta: f64, max_theta: Option<f64>) -> Option<(Mat, Mat)> {
    let a = s.t().mul(g);
    let grad = g.mul(&a.t()).sub(&s.mul(&a.mul(&a.t()))).scale(-2.0);
    let (vals, vecs) = jacobi_eigen(&grad.t().mul(&grad));
    let sigma = vals[0].max(0.0).sqrt();
    if sigma <= 16.0 * f32::EPSILON as f64 * g.norm().powi(2) {
        return None;
    }
    let r = s.cols;
    let v = Mat::from_fn(r, 1, |i, _| vecs.at(i, 0));
    let u = grad.mul(&v).scale(1.0 / sigma);
    let mut theta = eta * sigma;
    if let Some(mx) = max_theta {
        theta = theta.min(mx);
    }
    let s_new = s
        .add(&s.mul(&v).mul(&v.t()).scale(theta.cos() - 1.0))
        .sub(&u.mul(&v.t()).scale(theta.sin()));
    let c = s_new.t().mul(s);
    Some((s_new, c))
}

/// One optimizer step (§2) of an m×n projected matrix; returns the new W.
pub fn step(h: &Hyper, w: &Mat, g: &Mat, state: &mut Option<RefState>, lr: f64) -> Mat {
    let left = w.rows < w.cols;
    // Work with the basis side explicitly.
    let gl = if left { g.clone() } else { g.t() }; // only to find/update the basis
    let st = state.get_or_insert_with(|| {
        let s = top_eigvecs(&gl.mul(&gl.t()), h.rank);
        let (mr, mc) = if left {
            (h.rank, w.cols)
        } else {
            (w.rows, h.rank)
        };
        RefState {
            s,
            m: Mat::zeros(mr, mc),
            v: Mat::zeros(mr, mc),
            k: 0,
            lambda_prev: None,
        }
    });
    if st.k > 0 && st.k.is_multiple_of(h.interval) {
        let change = match h.update {
            Update::Geodesic => geodesic(&st.s, &gl, h.eta, h.max_theta).map(|(s, c)| {
                st.s = s;
                c
            }),
            Update::Svd => {
                let s_new = top_eigvecs(&gl.mul(&gl.t()), h.rank);
                let c = s_new.t().mul(&st.s);
                st.s = s_new;
                Some(c)
            }
        };
        if let (Some(c), true) = (change, h.aware != Variant::Off) {
            let cc = c.map(|x| x * x);
            let centred = st.v.sub(&st.m.zip(&st.m, |a, b| a * b));
            let (m_rot, var) = if left {
                (c.mul(&st.m), cc.mul(&centred))
            } else {
                (st.m.mul(&c.t()), centred.mul(&cc.t()))
            };
            let mut v = var.add(&m_rot.zip(&m_rot, |a, b| a * b)).map(f64::abs);
            if h.aware == Variant::Code {
                v = v.scale(1.0 - h.beta_2);
            }
            st.m = m_rot;
            st.v = v;
        }
    }
    let s = &st.s;
    let gt = if left { s.t().mul(g) } else { g.mul(s) };
    st.k += 1;
    st.m = st.m.scale(h.beta_1).add(&gt.scale(1.0 - h.beta_1));
    st.v =
        st.v.scale(h.beta_2)
            .add(&gt.zip(&gt, |a, b| a * b).scale(1.0 - h.beta_2));
    let k = st.k as i32;
    let c = (1.0 - h.beta_2.powi(k)).sqrt() / (1.0 - h.beta_1.powi(k));
    let n = st.m.zip(&st.v, |m, v| m / (v.sqrt() + h.eps));
    let mut u = if left { s.mul(&n) } else { n.mul(&s.t()) }.scale(h.scale);
    if h.recovery != Variant::Off {
        let kept = if left { s.mul(&gt) } else { gt.mul(&s.t()) };
        let kept = if h.recovery == Variant::Code {
            kept.scale(h.scale)
        } else {
            kept
        };
        let resid = g.sub(&kept);
        // φ per column (left) or per row (right) of the full matrix.
        let mut lam = resid.clone();
        if left {
            for j in 0..w.cols {
                let nn = (0..h.rank).map(|i| n.at(i, j).powi(2)).sum::<f64>().sqrt();
                let gn = (0..h.rank).map(|i| gt.at(i, j).powi(2)).sum::<f64>().sqrt();
                let phi = nn / (gn + 1e-8);
                for i in 0..w.rows {
                    lam.data[i * w.cols + j] *= phi;
                }
            }
        } else {
            for i in 0..w.rows {
                let nn = (0..h.rank).map(|j| n.at(i, j).powi(2)).sum::<f64>().sqrt();
                let gn = (0..h.rank).map(|j| gt.at(i, j).powi(2)).sum::<f64>().sqrt();
                let phi = nn / (gn + 1e-8);
                for j in 0..w.cols {
                    lam.data[i * w.cols + j] *= phi;
                }
            }
        }
        let norm = lam.norm();
        if let Some(prev) = st.lambda_prev
            && norm > h.zeta * prev
        {
            lam = lam.scale(h.zeta * prev / norm);
        }
        st.lambda_prev = Some(lam.norm());
        u = u.add(&lam);
    }
    let w = w.sub(&u.scale(lr * c));
    w.sub(&w.scale(lr * h.wd))
}

/// Plain AdamW step of the same form (for parameters that are not projected).
pub struct DenseRef {
    pub m: Vec<f64>,
    pub v: Vec<f64>,
    pub k: usize,
}

pub fn dense_step(h: &Hyper, w: &[f64], g: &[f64], st: &mut DenseRef, lr: f64) -> Vec<f64> {
    st.k += 1;
    let k = st.k as i32;
    let c = (1.0 - h.beta_2.powi(k)).sqrt() / (1.0 - h.beta_1.powi(k));
    w.iter()
        .zip(g)
        .enumerate()
        .map(|(i, (&wi, &gi))| {
            st.m[i] = h.beta_1 * st.m[i] + (1.0 - h.beta_1) * gi;
            st.v[i] = h.beta_2 * st.v[i] + (1.0 - h.beta_2) * gi * gi;
            let w1 = wi - lr * c * st.m[i] / (st.v[i].sqrt() + h.eps);
            w1 - lr * h.wd * w1
        })
        .collect()
}

/// Deterministic pseudo-random numbers in [-1, 1), from the crate's one generator.
pub struct Rng(SplitMix);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix::new(seed))
    }
    pub fn next(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    pub fn mat(&mut self, rows: usize, cols: usize) -> Mat {
        let mut m = Mat::zeros(rows, cols);
        for x in &mut m.data {
            *x = self.next();
        }
        m
    }
}
