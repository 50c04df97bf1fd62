//! Fused loops for Burn's `flex` CPU backend: the projected step's memory-bound passes over
//! a×b matrices, each of which Burn's tensor ops run as several (flex has no fused
//! element-wise ops, so every op reads and writes whole matrices, on one thread below 4M
//! elements):
//!
//! - [`project`]: G̃ = SᵀG (§2) as one gemm read straight from S's and G's views, with this
//!   module's thread threshold instead of Burn's (see [`PARALLEL_GEMM`]);
//! - [`column_sq`]: Σ_i x_ij² (recovery scaling, docs/algorithm.md §7) in one read of x, instead
//!   of a squared copy and a sum;
//! - [`adam`]: low-rank Adam's M', V' and N (§2) in one r×b pass instead of ten tensor ops;
//! - [`low`]: the r×b factor L = α·s·N − α·k·G̃⊙ψ of the back-projection in one pass;
//! - [`step`]: W' = d·(W − α·G⊙ψ) − d·S·L (§2 with §7 folded in) in W's own buffer: the
//!   recovery term in one pass, then one gemm that reads and writes W (dst := d·dst −
//!   d·S·L). Burn's matmul would allocate, zero and copy an a×b product, and the update
//!   would read it again.
//!
//! All work in the matrix's stored layout; `along_rows` (or `transposed`) says that the
//! per-column scale runs along the stored rows (the right case of §1, where G = ∇Wᵀ).
//! Passes over at least [`PARALLEL_ELEMENTS`] elements split their rows into a fixed
//! number of blocks on rayon's pool (the one gemm uses), so results do not depend on the
//! thread count. Each is tested against the tensor-op path it replaces.

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::simd::wide;

/// Elements from which a pass runs on several threads: below it, the hand-off to rayon's
/// pool costs more than the pass (benches/RESULTS.md has the measurements).
const PARALLEL_ELEMENTS: usize = 1 << 18;
/// Row blocks of a parallel pass (fixed, so that sums do not depend on the thread count).
const BLOCKS: usize = 16;
/// m·n·k from which a gemm runs on several threads, above Burn flex's own threshold of
/// 192³: each hand-off to rayon's pool from the caller's thread wakes a sleeping worker and
/// then the caller, which products of the 20m shapes (256×688×64) do not repay and the
/// 512-wide 60m ones do (benches/RESULTS.md has the measurements).
const PARALLEL_GEMM: usize = 1 << 25;

/// Operations with a fused implementation on `flex`.
#[backend_extension(Flex)]
pub trait FlexKernels: Backend {
    /// Σ x² of the f32 matrix `x` (rows×cols) down its columns, [1, cols], or with
    /// `along_rows` along its rows, [1, rows].
    fn flex_column_sq(x: FloatTensor<Self>, along_rows: bool) -> FloatTensor<Self>;

    /// G̃ = SᵀG (r×b) of S (a×r) and G (a×b), each possibly a strided view (G a transposed
    /// one in the right case), by one gemm that reads the views in place.
    fn flex_project(basis: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Low-rank Adam (docs/algorithm.md §2) in one pass over r×b: M' = β1·M + (1−β1)·G̃,
    /// V' = β2·V + (1−β2)·G̃⊙G̃ (in M's and V's buffers) and N = M' ⊘ (sqrt(V') + ε), in
    /// the tensor ops' order of f32 operations.
    fn flex_adam(
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        beta_1: f64,
        beta_2: f64,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// L = p·N − q·G̃⊙ψ (r×b, ψ of length b broadcast down the columns), in one pass.
    fn flex_low(
        normalized: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        psi: FloatTensor<Self>,
        p: f64,
        q: f64,
    ) -> FloatTensor<Self>;

    /// d·(W − S·L) in W's buffer: S a×r, L r×b, W a×b, or with `transposed` W b×a and
    /// d·(W − (S·L)ᵀ).
    fn flex_step(
        weight: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        low: FloatTensor<Self>,
        decay: f64,
        transposed: bool,
    ) -> FloatTensor<Self>;

    /// d·(W − α·G⊙ψ − S·L) in W's buffer, G in W's stored layout and ψ (length b) broadcast
    /// down W's columns, or with `transposed` along its rows.
    #[allow(clippy::too_many_arguments)]
    fn flex_step_recovery(
        weight: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        low: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        psi: FloatTensor<Self>,
        alpha: f64,
        decay: f64,
        transposed: bool,
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

/// `x` made contiguous over its whole buffer, so that the buffer can take the result. A
/// shared buffer is copied on the first write (flex's copy-on-write `storage_mut`), which
/// leaves the other owners' values as they were.
fn writable(mut x: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let elements = x.layout().num_elements();
    let exact = x.as_slice::<f32>().is_some()
        && x.layout().start_offset() == 0
        && x.bytes().len() == 4 * elements;
    if !exact {
        x = x.to_contiguous();
    }
    x
}

/// How a pass over `rows`×`cols` splits: `None` when it is too small to be worth it (it
/// then runs on the calling thread, without handing work to rayon's pool), else
/// `Some((rows per block, elements per block))` for [`BLOCKS`] blocks.
fn blocks(rows: usize, cols: usize) -> Option<(usize, usize)> {
    (rows * cols >= PARALLEL_ELEMENTS).then(|| {
        let rows_per_block = rows.div_ceil(BLOCKS);
        (rows_per_block, rows_per_block * cols)
    })
}

wide! {
    /// Σ x² in f32 with eight independent partial sums, so that the loop vectorises.
    fn sum_sq = sum_sq_body(x: &[f32]) -> f32;
}

#[inline(always)]
fn sum_sq_body(x: &[f32]) -> f32 {
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

wide! {
    /// Σ_i x_ij² of row-major `rows` (whole rows of `cols`) into `acc`.
    fn add_column_sq = add_column_sq_body(acc: &mut [f32], rows: &[f32]);
}

#[inline(always)]
fn add_column_sq_body(acc: &mut [f32], rows: &[f32]) {
    for row in rows.chunks_exact(acc.len()) {
        for (a, x) in acc.iter_mut().zip(row) {
            *a += x * x;
        }
    }
}

wide! {
    /// W −= G⊙ψ over whole rows of `cols`: ψ per column, or with `along_rows` ψ\[i\] per
    /// row i (`first` the index of the first row).
    fn subtract_scaled = subtract_scaled_body(
        w: &mut [f32],
        g: &[f32],
        psi: &[f32],
        cols: usize,
        first: usize,
        along_rows: bool,
    );
}

#[inline(always)]
fn subtract_scaled_body(
    w: &mut [f32],
    g: &[f32],
    psi: &[f32],
    cols: usize,
    first: usize,
    along_rows: bool,
) {
    for (i, (w, g)) in w
        .chunks_exact_mut(cols)
        .zip(g.chunks_exact(cols))
        .enumerate()
    {
        if along_rows {
            let p = psi[first + i];
            for (w, g) in w.iter_mut().zip(g) {
                *w -= g * p;
            }
        } else {
            for ((w, g), p) in w.iter_mut().zip(g).zip(psi) {
                *w -= g * p;
            }
        }
    }
}

wide! {
    /// M' = β1·M + (1−β1)·G̃, V' = β2·V + (1−β2)·G̃⊙G̃ in place and N = M' ⊘ (sqrt(V') + ε),
    /// element by element; `c` = [β1, 1−β1, β2, 1−β2, ε].
    fn adam_pass = adam_pass_body(ms: &mut [f32], vs: &mut [f32], g: &[f32], n: &mut [f32], c: [f32; 5]);
}

#[inline(always)]
fn adam_pass_body(ms: &mut [f32], vs: &mut [f32], g: &[f32], n: &mut [f32], c: [f32; 5]) {
    let [b1, c1, b2, c2, eps] = c;
    for (((m, v), g), n) in ms.iter_mut().zip(vs.iter_mut()).zip(g).zip(n) {
        *m = *m * b1 + *g * c1;
        *v = *v * b2 + (*g * *g) * c2;
        *n = *m / (v.sqrt() + eps);
    }
}

/// One thread below [`PARALLEL_GEMM`], rayon's pool from it.
fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_GEMM {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// (pointer to the first element, [rows, cols], [row stride, column stride]) of a 2-D f32
/// flex view, any strides the layout holds. The pointer comes from the whole buffer, so
/// it may step back by a negative stride.
fn view(x: &FloatTensor<Flex>) -> (*const f32, [usize; 2], [isize; 2]) {
    let layout = x.layout();
    let (rows, cols, rs, cs) = layout.as_2d_strides().expect("a 2-D tensor");
    let data: &[f32] = x.storage();
    let offset = layout.start_offset();
    assert!(offset <= data.len(), "view: offset past the buffer");
    // SAFETY: the offset is within the buffer (checked above).
    (unsafe { data.as_ptr().add(offset) }, [rows, cols], [rs, cs])
}

/// W ← d·W − d·S·L (or with `transposed`, (S·L)ᵀ into W b×a) by one gemm with W as the
/// destination.
fn back_project_into(
    w: &mut FloatTensor<Flex>,
    mut basis: FloatTensor<Flex>,
    mut low: FloatTensor<Flex>,
    decay: f64,
    transposed: bool,
) {
    let (s, [a, r]) = values(&mut basis);
    let (l, [r_low, b]) = values(&mut low);
    assert_eq!(r, r_low, "flex_step: S is {a}×{r} but L has {r_low} rows");
    let out = w.storage_mut::<f32>();
    assert_eq!(
        out.len(),
        a * b,
        "flex_step: W does not hold {a}×{b} values"
    );
    // Element (i, j) of the a×b product lands at W[i, j], or W[j, i] when transposed.
    let (dst_rs, dst_cs) = if transposed {
        (1, a as isize)
    } else {
        (b as isize, 1)
    };
    let parallelism = gemm_parallelism(a, b, r);
    let d = decay as f32;
    // SAFETY: `out` holds a·b values, written at i·dst_rs + j·dst_cs < a·b; S (a×r) and L
    // (r×b) are contiguous row-major slices of the sizes read; `out` is W's buffer, which
    // `storage_mut` made unique (copying it if shared), so it aliases neither.
    unsafe {
        gemm::gemm(
            a,
            b,
            r,
            out.as_mut_ptr(),
            dst_cs,
            dst_rs,
            true,
            s.as_ptr(),
            1,
            r as isize,
            l.as_ptr(),
            1,
            b as isize,
            d,
            -d,
            false,
            false,
            false,
            parallelism,
        );
    }
}

impl FlexKernels for Flex {
    fn flex_project(basis: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let (s, [a, r], [s_rs, s_cs]) = view(&basis);
        let (g, [a_g, b], [g_rs, g_cs]) = view(&grad);
        assert_eq!(a, a_g, "flex_project: S has {a} rows but G has {a_g}");
        let mut out = vec![0.0f32; r * b];
        if a > 0 && r > 0 && b > 0 {
            // SAFETY: element (i, j) of Sᵀ (r×a) is S[j, i] at j·s_rs + i·s_cs, element
            // (i, j) of G at i·g_rs + j·g_cs, all inside the views' storage (the layouts
            // were built for it, negative strides included); `out` holds r·b values
            // written at i·b + j and aliases neither.
            unsafe {
                gemm::gemm(
                    r,
                    b,
                    a,
                    out.as_mut_ptr(),
                    1,
                    b as isize,
                    false,
                    s,
                    s_rs,
                    s_cs,
                    g,
                    g_cs,
                    g_rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm_parallelism(r, b, a),
                );
            }
        }
        Flex::float_from_data(TensorData::new(out, [r, b]), &Default::default())
    }

    fn flex_column_sq(mut x: FloatTensor<Self>, along_rows: bool) -> FloatTensor<Self> {
        let (v, [rows, cols]) = values(&mut x);
        let out: Vec<f32> = if cols == 0 {
            vec![0.0; if along_rows { rows } else { 0 }]
        } else if along_rows {
            // Each row's sum is formed alone, so splitting does not change it.
            match blocks(rows, cols) {
                None => v.chunks_exact(cols).map(sum_sq).collect(),
                Some((rows_per_block, _)) => v
                    .par_chunks_exact(cols)
                    .with_min_len(rows_per_block)
                    .map(sum_sq)
                    .collect(),
            }
        } else {
            let column_sq = |block: &[f32]| {
                let mut acc = vec![0.0f32; cols];
                add_column_sq(&mut acc, block);
                acc
            };
            match blocks(rows, cols) {
                None => column_sq(v),
                Some((_, per_block)) => {
                    // Per-block column sums, added in block order.
                    let partial: Vec<Vec<f32>> = v.par_chunks(per_block).map(column_sq).collect();
                    let mut blocks = partial.into_iter();
                    let mut acc = blocks.next().unwrap_or_else(|| vec![0.0; cols]);
                    for block in blocks {
                        for (a, p) in acc.iter_mut().zip(block) {
                            *a += p;
                        }
                    }
                    acc
                }
            }
        };
        let len = out.len();
        debug_assert_eq!(len, if along_rows { rows } else { cols });
        Flex::float_from_data(TensorData::new(out, [1, len]), &Default::default())
    }

    fn flex_adam(
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        mut g_low: FloatTensor<Self>,
        beta_1: f64,
        beta_2: f64,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (mut m, mut v) = (writable(moment_1), writable(moment_2));
        let (g, dims) = values(&mut g_low);
        for (what, x) in [("M", &m), ("V", &v)] {
            let shape = x.layout().shape();
            assert_eq!(
                [shape[0], shape[1]],
                dims,
                "flex_adam: {what} is not G̃'s shape"
            );
        }
        let coefficients = [beta_1, 1.0 - beta_1, beta_2, 1.0 - beta_2, epsilon].map(|x| x as f32);
        let mut n = vec![0.0f32; g.len()];
        let (ms, vs) = (m.storage_mut::<f32>(), v.storage_mut::<f32>());
        adam_pass(ms, vs, g, &mut n, coefficients);
        let n = Flex::float_from_data(TensorData::new(n, dims), &Default::default());
        (m, v, n)
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

    fn flex_step(
        weight: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        low: FloatTensor<Self>,
        decay: f64,
        transposed: bool,
    ) -> FloatTensor<Self> {
        let mut w = writable(weight);
        back_project_into(&mut w, basis, low, decay, transposed);
        w
    }

    fn flex_step_recovery(
        weight: FloatTensor<Self>,
        basis: FloatTensor<Self>,
        low: FloatTensor<Self>,
        mut grad: FloatTensor<Self>,
        mut psi: FloatTensor<Self>,
        alpha: f64,
        decay: f64,
        transposed: bool,
    ) -> FloatTensor<Self> {
        let mut w = writable(weight);
        let [rows, cols] = {
            let shape = w.layout().shape();
            [shape[0], shape[1]]
        };
        let psi = scaled(&mut psi, alpha);
        let (g, g_dims) = values(&mut grad);
        assert_eq!(g_dims, [rows, cols], "flex_step: G is not in W's layout");
        let out = w.storage_mut::<f32>();
        match blocks(rows, cols) {
            None => subtract_scaled(out, g, &psi, cols, 0, transposed),
            Some((rows_per_block, per_block)) => out
                .par_chunks_mut(per_block)
                .zip(g.par_chunks(per_block))
                .enumerate()
                .for_each(|(k, (w, g))| {
                    subtract_scaled(w, g, &psi, cols, k * rows_per_block, transposed)
                }),
        }
        back_project_into(&mut w, basis, low, decay, transposed);
        w
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

/// G̃ = SᵀG (r×b) of S (a×r) and G (a×b, any strides).
pub fn project(basis: &Tensor<2>, grad: &Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::flex_project(
        basis.clone().into_dispatch(),
        grad.clone().into_dispatch(),
    ))
}

/// (M', V', N) of low-rank Adam (§2) on r×b moments, M' and V' in M's and V's buffers.
pub fn adam(
    moment_1: Tensor<2>,
    moment_2: Tensor<2>,
    g_low: &Tensor<2>,
    params: &crate::moments::AdamParams,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let (m, v, n) = Dispatch::flex_adam(
        moment_1.into_dispatch(),
        moment_2.into_dispatch(),
        g_low.clone().into_dispatch(),
        params.beta_1,
        params.beta_2,
        params.epsilon,
    );
    (
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
        Tensor::from_dispatch(n),
    )
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

/// d·(W − S·L), or d·(W − α·G⊙ψ − S·L) with `recovery` = (G, ψ, α), all in W's stored
/// layout: W a×b, or b×a with `transposed` (then S·L enters transposed and ψ runs along
/// W's rows).
pub fn step(
    weight: Tensor<2>,
    basis: &Tensor<2>,
    low: Tensor<2>,
    recovery: Option<(Tensor<2>, Tensor<2>, f64)>,
    decay: f64,
    transposed: bool,
) -> Tensor<2> {
    let (w, s, l) = (
        weight.into_dispatch(),
        basis.clone().into_dispatch(),
        low.into_dispatch(),
    );
    Tensor::from_dispatch(match recovery {
        None => Dispatch::flex_step(w, s, l, decay, transposed),
        Some((g, psi, alpha)) => Dispatch::flex_step_recovery(
            w,
            s,
            l,
            g.into_dispatch(),
            psi.into_dispatch(),
            alpha,
            decay,
            transposed,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` values in [-1, 1) from the crate's generator.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix::new(seed);
        (0..n)
            .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
            .collect()
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// The AVX2 builds of the passes give the same bits as the baseline builds, on lengths
    /// that leave tails past every register width (37×29, 1003). (On a CPU without AVX2
    /// both runs take the baseline and this checks nothing.)
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_passes_give_the_same_bits_as_the_baseline() {
        use crate::simd::{BASELINE_ONLY, avx2};
        use std::sync::atomic::Ordering;
        if !avx2() {
            eprintln!("no AVX2 on this CPU: both builds are the baseline");
        }
        let (rows, cols) = (37, 29);
        let g = values(rows * cols, 1);
        let w = values(rows * cols, 2);
        let psi_cols = values(cols, 3);
        let psi_rows = values(rows, 4);
        let long = values(1003, 5);
        let run = || {
            let mut out = vec![bits(&[sum_sq(&long)])];
            let mut acc = values(cols, 6);
            add_column_sq(&mut acc, &g);
            out.push(bits(&acc));
            for (psi, along_rows) in [(&psi_cols, false), (&psi_rows, true)] {
                let mut w = w.clone();
                // Rows 5… of the matrix, as a parallel block would take them.
                subtract_scaled(&mut w[5 * cols..], &g[5 * cols..], psi, cols, 5, along_rows);
                out.push(bits(&w));
            }
            let (mut m, mut v) = (values(1003, 7), values(1003, 8));
            v.iter_mut().for_each(|x| *x = x.abs());
            let mut n = vec![0.0; 1003];
            adam_pass(
                &mut m,
                &mut v,
                &long,
                &mut n,
                [0.9, 0.1, 0.999, 0.001, 1e-8],
            );
            out.extend([bits(&m), bits(&v), bits(&n)]);
            out
        };
        let wide = run();
        BASELINE_ONLY.store(true, Ordering::Relaxed);
        let baseline = run();
        BASELINE_ONLY.store(false, Ordering::Relaxed);
        let names = [
            "sum_sq",
            "add_column_sq",
            "subtract_scaled",
            "along rows",
            "M'",
            "V'",
            "N",
        ];
        for ((name, wide), baseline) in names.iter().zip(&wide).zip(&baseline) {
            assert!(wide == baseline, "{name}: the two builds differ");
        }
        assert_eq!(wide.len(), names.len());
    }
}
