//! Fused loops for Burn's `flex` CPU backend: the projected step's two memory-bound passes
//! over a×b matrices, each of which Burn's tensor ops run as several (flex has no fused
//! element-wise ops, so every op reads and writes whole matrices):
//!
//! - [`column_sq`]: Σ_i x_ij² (recovery scaling, algorithm.md §7) in one read of x, instead
//!   of a squared copy and a sum;
//! - [`low`]: the r×b factor L = α·s·N − α·k·G̃⊙ψ of the back-projection in one pass;
//! - [`update`]: W' = d·(W − U − G⊙ψ) (§2 with §7 folded in) in one pass, written into the
//!   back-projection product U's own buffer, instead of up to four passes.
//!
//! Both work in the matrix's stored layout; `along_rows` says that the per-column scale
//! runs along the stored rows (the right case of §1, where G = ∇Wᵀ). Each is tested against
//! the tensor-op path it replaces.

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::tensor::{DType, Device, Tensor, TensorData};

/// Operations with a fused implementation on `flex`.
#[backend_extension(Flex)]
pub trait FlexKernels: Backend {
    /// Σ x² of the f32 matrix `x` (rows×cols) down its columns, [1, cols], or with
    /// `along_rows` along its rows, [1, rows].
    fn flex_column_sq(x: FloatTensor<Self>, along_rows: bool) -> FloatTensor<Self>;

    /// L = p·N − q·G̃⊙ψ (r×b, ψ of length b broadcast down the columns), in one pass.
    fn flex_low(
        normalized: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        psi: FloatTensor<Self>,
        p: f64,
        q: f64,
    ) -> FloatTensor<Self>;

    /// d·(W − U), element-wise over f32 matrices of one shape, in U's buffer.
    fn flex_update(
        weight: FloatTensor<Self>,
        product: FloatTensor<Self>,
        decay: f64,
    ) -> FloatTensor<Self>;

    /// d·(W − U − α·G⊙ψ), ψ broadcast down the columns (length cols) or, with
    /// `along_rows`, along the rows (length rows), in U's buffer.
    #[allow(clippy::too_many_arguments)]
    fn flex_update_recovery(
        weight: FloatTensor<Self>,
        product: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        psi: FloatTensor<Self>,
        alpha: f64,
        decay: f64,
        along_rows: bool,
    ) -> FloatTensor<Self>;
}

/// Contiguous f32 values and [rows, cols] of a flex matrix, copied only when it is a view.
fn values(x: &mut FloatTensor<Flex>) -> (&[f32], [usize; 2]) {
    if x.as_slice::<f32>().is_none() {
        *x = x.to_contiguous();
    }
    let shape = x.layout().shape();
    let dims = [shape[0], shape[1]];
    (x.as_slice::<f32>().expect("contiguous f32"), dims)
}

/// The values of ψ times `factor`.
fn scaled(psi: &mut FloatTensor<Flex>, factor: f64) -> Vec<f32> {
    let factor = factor as f32;
    values(psi).0.iter().map(|p| p * factor).collect()
}

/// U made contiguous and uniquely owned, so that its buffer can take the result.
fn writable(mut u: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let elements = u.layout().num_elements();
    let exact = u.as_slice::<f32>().is_some()
        && u.layout().start_offset() == 0
        && u.bytes().len() == 4 * elements;
    if !exact || !u.is_unique() {
        u = u.to_contiguous();
    }
    u
}

/// Σ x² in f32 with eight independent partial sums, so that the loop vectorises.
fn sum_sq(x: &[f32]) -> f32 {
    let mut partial = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (p, v) in partial.iter_mut().zip(chunk) {
            *p += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    partial.iter().sum::<f32>() + tail
}

impl FlexKernels for Flex {
    fn flex_column_sq(mut x: FloatTensor<Self>, along_rows: bool) -> FloatTensor<Self> {
        let (v, [rows, cols]) = values(&mut x);
        let out: Vec<f32> = if along_rows {
            v.chunks_exact(cols).map(sum_sq).collect()
        } else {
            let mut acc = vec![0.0f32; cols];
            for row in v.chunks_exact(cols) {
                for (a, x) in acc.iter_mut().zip(row) {
                    *a += x * x;
                }
            }
            acc
        };
        let len = out.len();
        debug_assert_eq!(len, if along_rows { rows } else { cols });
        Flex::float_from_data(TensorData::new(out, [1, len]), &Default::default())
    }

    fn flex_low(
        mut normalized: FloatTensor<Self>,
        mut g_low: FloatTensor<Self>,
        mut psi: FloatTensor<Self>,
        p: f64,
        q: f64,
    ) -> FloatTensor<Self> {
        let (n, [r, b]) = values(&mut normalized);
        let (g, _) = values(&mut g_low);
        let psi = scaled(&mut psi, q);
        let p = p as f32;
        let mut out = Vec::with_capacity(r * b);
        for (n, g) in n.chunks_exact(b).zip(g.chunks_exact(b)) {
            out.extend(n.iter().zip(g).zip(&psi).map(|((n, g), s)| p * n - g * s));
        }
        Flex::float_from_data(TensorData::new(out, [r, b]), &Default::default())
    }

    fn flex_update(
        mut weight: FloatTensor<Self>,
        product: FloatTensor<Self>,
        decay: f64,
    ) -> FloatTensor<Self> {
        let (w, _) = values(&mut weight);
        let mut u = writable(product);
        let d = decay as f32;
        for (u, w) in u.storage_mut::<f32>().iter_mut().zip(w) {
            *u = d * (w - *u);
        }
        u
    }

    fn flex_update_recovery(
        mut weight: FloatTensor<Self>,
        product: FloatTensor<Self>,
        mut grad: FloatTensor<Self>,
        mut psi: FloatTensor<Self>,
        alpha: f64,
        decay: f64,
        along_rows: bool,
    ) -> FloatTensor<Self> {
        let (w, [_, cols]) = values(&mut weight);
        let (g, _) = values(&mut grad);
        let psi = scaled(&mut psi, alpha);
        let mut u = writable(product);
        let d = decay as f32;
        let rows = u.storage_mut::<f32>().chunks_exact_mut(cols);
        for (i, ((u, w), g)) in rows
            .zip(w.chunks_exact(cols))
            .zip(g.chunks_exact(cols))
            .enumerate()
        {
            if along_rows {
                let p = psi[i];
                for ((u, w), g) in u.iter_mut().zip(w).zip(g) {
                    *u = d * (w - *u - g * p);
                }
            } else {
                for (((u, w), g), p) in u.iter_mut().zip(w).zip(g).zip(&psi) {
                    *u = d * (w - *u - g * p);
                }
            }
        }
        u
    }
}

/// Whether the fused loops run for these tensors: all f32 on a `flex` device.
pub fn runs(device: &Device, tensors: &[&Tensor<2>]) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Flex(_))
        && tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// Σ x² of `x` (stored rows×cols) down the columns, [1, cols], or along the rows, [1, rows].
pub fn column_sq(x: Tensor<2>, along_rows: bool) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::flex_column_sq(x.into_dispatch(), along_rows))
}

/// L = p·N − q·G̃⊙ψ (r×b; ψ [1, b]).
pub fn low(normalized: Tensor<2>, g_low: Tensor<2>, psi: Tensor<2>, p: f64, q: f64) -> Tensor<2> {
    let (n, g, psi) = (
        normalized.into_dispatch(),
        g_low.into_dispatch(),
        psi.into_dispatch(),
    );
    Tensor::from_dispatch(Dispatch::flex_low(n, g, psi, p, q))
}

/// d·(W − U), or d·(W − U − α·G⊙ψ) with `recovery` = (G, ψ, α, along_rows), all in W's
/// stored layout.
pub fn update(
    weight: Tensor<2>,
    product: Tensor<2>,
    recovery: Option<(Tensor<2>, Tensor<2>, f64, bool)>,
    decay: f64,
) -> Tensor<2> {
    let (w, u) = (weight.into_dispatch(), product.into_dispatch());
    Tensor::from_dispatch(match recovery {
        None => Dispatch::flex_update(w, u, decay),
        Some((g, psi, alpha, along_rows)) => Dispatch::flex_update_recovery(
            w,
            u,
            g.into_dispatch(),
            psi.into_dispatch(),
            alpha,
            decay,
            along_rows,
        ),
    })
}
