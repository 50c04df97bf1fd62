//! WGSL kernels (`src/kernels`, `shaders/`) against the portable path on the same inputs.

use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor, TensorData};
use subtrack::kernels::{
    self, Limits, RecoveryInputs, RecoveryTerm, Rotation, Route, UpdateCoefficients, UpdateInputs,
};
use subtrack::moments::AdamParams;
use subtrack::{ProjectionAware, RecoveryScaling, SubTrackConfig, SubTrackState};
use subtrack::{basis, geodesic};

use crate::reference::{Mat, Rng};
use crate::{assert_close, download, upload, wgpu_device};

/// WebGPU's limits with a smaller storage binding.
/// The WGSL route with storage bindings of at most `max_binding_bytes`.
fn wgsl_within(max_binding_bytes: usize) -> Route {
    Route::WGSL.within(Limits {
        max_binding_bytes,
        ..Limits::WEBGPU
    })
}

/// A random a×r matrix with orthonormal columns (Gram–Schmidt in f64).
fn orthonormal(a: usize, r: usize, rng: &mut Rng) -> Mat {
    let mut m = rng.mat(a, r);
    for j in 0..r {
        for k in 0..j {
            let dot: f64 = (0..a).map(|i| m.at(i, j) * m.at(i, k)).sum();
            for i in 0..a {
                m.data[i * r + j] -= dot * m.at(i, k);
            }
        }
        let norm: f64 = (0..a).map(|i| m.at(i, j).powi(2)).sum::<f64>().sqrt();
        for i in 0..a {
            m.data[i * r + j] /= norm;
        }
    }
    m
}

#[test]
fn projection_kernel_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    assert!(
        kernels::wgsl_available(&device),
        "the test adapter should compile WGSL"
    );
    let mut rng = Rng(17);
    // Sizes that are not multiples of the 16×16 tile, a single tile, and a tall one.
    for (a, r, b) in [
        (37, 5, 53),
        (16, 16, 16),
        (100, 17, 300),
        (257, 32, 40),
        (200, 80, 70),
    ] {
        let s = orthonormal(a, r, &mut rng);
        let g = rng.mat(a, b);
        let expected = s.t().mul(&g);
        let s_dev = upload(&s, &device);
        // G stored a×b, and G as the transposed view of a stored b×a (the right case's
        // G = ∇Wᵀ, which the kernel reads in place).
        for view in [false, true] {
            let g_dev = stored(&g, view, &device);
            let before = kernels::launches("project", [a, r, b]);
            let in_place = kernels::launches("project: Gᵀ in place", [a, r, b]);
            let (got, flag) = kernels::project_checked(&s_dev, &g_dev, Route::WGSL);
            let got = download(got);
            assert_eq!(
                kernels::launches("project", [a, r, b]),
                before + 1,
                "the WGSL kernel did not run"
            );
            assert_eq!(
                kernels::launches("project: Gᵀ in place", [a, r, b]),
                in_place + u64::from(view),
                "{a}×{r}×{b}: the view is read in place, and only the view"
            );
            assert_eq!(flag.into_scalar::<f32>(), 1.0);
            let portable = download(basis::project(&s_dev, &g_dev));
            let case = format!("{a}×{r}×{b}, view {view}");
            assert_close(
                &got,
                &portable,
                1e-5,
                format_args!("{case}: kernel vs portable"),
            );
            assert_close(&got, &expected, 1e-5, format_args!("{case}: kernel vs f64"));
            // The flag sees a NaN or ∞ anywhere, here in the last row and column.
            for bad in [f64::NAN, f64::INFINITY] {
                let mut g_bad = g.clone();
                g_bad.data[a * b - 1] = bad;
                let (_, flag) =
                    kernels::project_checked(&s_dev, &stored(&g_bad, view, &device), Route::WGSL);
                assert_eq!(flag.into_scalar::<f32>(), 0.0, "{case}: {bad}");
            }
        }
    }
}

/// `m` on `device`, stored as it is or (`view`) as the transposed view of its stored
/// transpose, the layout of the right case's canonical gradient.
fn stored(m: &Mat, view: bool, device: &Device) -> Tensor<2> {
    if view {
        upload(&m.t(), device).transpose()
    } else {
        upload(m, device)
    }
}

/// Split-K projection: partial sums over row ranges of S and G, added by Burn, equal SᵀG,
/// also where the last split is short or some are empty (a = 70 in 8 splits of 16 rows);
/// the flag sees a NaN in any split's rows.
#[test]
fn split_projection_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng(23);
    for (a, r, b, splits) in [
        (70, 5, 53, 2),
        (70, 9, 37, 3),
        (70, 4, 20, 8),
        (257, 32, 40, 4),
    ] {
        let s = orthonormal(a, r, &mut rng);
        let mut g = rng.mat(a, b);
        let expected = s.t().mul(&g);
        let (s_dev, g_dev) = (upload(&s, &device), upload(&g, &device));
        let before = kernels::launches("project_split", [a, r, b]);
        let (got, flag) = kernels::project_split(&s_dev, &g_dev, splits);
        let got = download(got);
        assert_eq!(
            kernels::launches("project_split", [a, r, b]),
            before + 1,
            "the split kernel did not run"
        );
        let portable = download(basis::project(&s_dev, &g_dev));
        for (what, reference) in [("portable", &portable), ("f64", &expected)] {
            assert_close(
                &got,
                reference,
                1e-5,
                format_args!("{a}×{r}×{b} in {splits}: vs {what}"),
            );
        }
        assert_eq!(flag.into_scalar::<f32>(), 1.0);
        // A NaN in the last row (the last non-empty split).
        g.data[(a - 1) * b + 2] = f64::NAN;
        let (_, flag) = kernels::project_split(&s_dev, &upload(&g, &device), splits);
        assert_eq!(
            flag.into_scalar::<f32>(),
            0.0,
            "{a}×{r}×{b} in {splits}: NaN missed"
        );
    }
}

/// With split-K projections turned on for this thread, SubTrack++ steps on the WGSL route
/// use them and stay within 1e-5 of the single-launch steps.
#[test]
fn optimizer_steps_with_split_projections_match() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let (m, n) = (70, 45);
    let run = |splits: usize| {
        kernels::set_projection_splits(splits);
        let optim = SubTrackConfig::subtrack_plus_plus()
            .with_rank(6)
            .with_update_interval(3)
            .build()
            .unwrap();
        let mut rng = Rng(31);
        let mut w = upload(&rng.mat(m, n), &device);
        let mut state = None;
        for _ in 0..5 {
            let (nw, ns) = optim.step(0.01, w, upload(&rng.mat(m, n), &device), state);
            (w, state) = (nw, ns);
        }
        kernels::set_projection_splits(1);
        download(w)
    };
    let single = run(1);
    // Right case: G is 70×45, so the canonical a×b is 45×70.
    let before = kernels::launches("project_split", [45, 6, 70]);
    let split = run(3);
    assert!(
        kernels::launches("project_split", [45, 6, 70]) > before,
        "the split projection did not run"
    );
    assert_close(&split, &single, 1e-5, "split-K steps vs single launch");
}

#[test]
fn projection_splits_tensors_over_the_binding_limit() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng(29);
    // 300×90 and 300×20 at 4 bytes: 360 bytes a row, so a 46,080-byte limit holds 128 rows
    // and the projection runs as chunks of 128, 128 and 44 rows (offsets 256-byte aligned).
    let (a, r, b) = (300, 20, 90);
    let s = orthonormal(a, r, &mut rng);
    let g = rng.mat(a, b);
    let expected = s.t().mul(&g);
    let (s_dev, g_dev) = (upload(&s, &device), upload(&g, &device));
    let before = kernels::launches("project", [a, r, b]);
    let got = download(kernels::project_checked(&s_dev, &g_dev, wgsl_within(46_080)).0);
    assert_eq!(
        kernels::launches("project", [a, r, b]),
        before + 3,
        "three chunks"
    );
    assert_close(&got, &expected, 1e-5, "chunked vs f64");
    // A transposed view over the limit is laid out a×b and chunked the same way.
    let viewed = stored(&g, true, &device);
    let in_place = kernels::launches("project: Gᵀ in place", [a, r, b]);
    let got = download(kernels::project_checked(&s_dev, &viewed, wgsl_within(46_080)).0);
    assert_eq!(
        kernels::launches("project", [a, r, b]),
        before + 6,
        "three chunks of the view"
    );
    assert_eq!(
        kernels::launches("project: Gᵀ in place", [a, r, b]),
        in_place,
        "a chunked view is copied first"
    );
    assert_close(&got, &expected, 1e-5, "chunked view vs f64");
    let before = before + 3;
    // A limit under 64 rows cannot be chunked with aligned offsets: Burn's matmul runs.
    let fallback = download(kernels::project_checked(&s_dev, &g_dev, wgsl_within(10_000)).0);
    assert_eq!(
        kernels::launches("project", [a, r, b]),
        before + 3,
        "no launch"
    );
    assert_close(&fallback, &expected, 1e-5, "Burn matmul fallback vs f64");
    // The step flag comes from the same pass over G, in every chunk: 1 for this G, 0 when a
    // NaN or −∞ sits in the last chunk, on the kernel and on the fallback alike.
    let flag = |g: &Mat, limit: usize| {
        let (_, f) = kernels::project_checked(&s_dev, &upload(g, &device), wgsl_within(limit));
        f.into_scalar::<f32>()
    };
    assert_eq!(flag(&g, 46_080), 1.0);
    for bad in [f64::NAN, f64::NEG_INFINITY] {
        let mut g_bad = g.clone();
        g_bad.data[290 * b + 17] = bad;
        assert_eq!(flag(&g_bad, 46_080), 0.0, "{bad} in a chunk");
        assert_eq!(flag(&g_bad, 10_000), 0.0, "{bad}, fallback");
    }
}

#[test]
fn update_splits_tensors_over_the_binding_limit() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng(31);
    let (a, r, b) = (300, 20, 90);
    let coefficients = UpdateCoefficients {
        alpha: 0.05,
        decay: 0.99,
        scale: 0.25,
    };
    for transposed in [false, true] {
        let case = UpdateCase::new(a, r, b, transposed, &mut rng);
        let expected = case.expected(coefficients, true);
        let before = kernels::launches("update", [a, r, b]);
        // 360 bytes a row: chunks of 128, 128 and 44 rows in the left layout; a transposed
        // W cannot be split by rows, so it takes the tensor-op path.
        let got = case.run_on(coefficients, true, None, &device, wgsl_within(46_080));
        let launched = kernels::launches("update", [a, r, b]) - before;
        assert_eq!(
            launched,
            if transposed { 0 } else { 3 },
            "transposed {transposed}"
        );
        assert_close(
            &got,
            &expected,
            1e-5,
            format_args!("transposed {transposed}: vs f64"),
        );
    }
}

#[test]
fn projection_falls_back_off_wgsl() {
    let device = Device::flex();
    assert!(!kernels::wgsl_available(&device));
    let s = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0], [3, 2]),
        &device,
    );
    let g = Tensor::<2>::from_data(
        TensorData::new((0..12).map(|x| x as f32).collect::<Vec<_>>(), [3, 4]),
        &device,
    );
    let got: Vec<f32> = kernels::project(&s, &g, Route::WGSL)
        .into_data()
        .try_into_vec()
        .unwrap();
    assert_eq!(got, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
}

/// Inputs of one weight update and its f64 reference.
struct UpdateCase {
    basis: Mat,
    normalized: Mat,
    weight: Mat,
    grad: Mat,
    psi: Mat,
    g_low: Mat,
    kept_weight: f64,
    transposed: bool,
    /// With `transposed`: G as the transposed view of ∇W (else stored a×b).
    grad_view: bool,
}

impl UpdateCase {
    fn new(a: usize, r: usize, b: usize, transposed: bool, rng: &mut Rng) -> Self {
        let basis = orthonormal(a, r, rng);
        let grad = rng.mat(a, b);
        let g_low = basis.t().mul(&grad);
        Self {
            normalized: rng.mat(r, b),
            weight: if transposed {
                rng.mat(b, a)
            } else {
                rng.mat(a, b)
            },
            psi: rng.mat(1, b),
            basis,
            grad,
            g_low,
            kept_weight: 0.7,
            transposed,
            grad_view: true,
        }
    }

    fn recovery(&self, device: &Device) -> RecoveryTerm {
        RecoveryTerm {
            // Transposed: G = ∇Wᵀ as the optimizer holds it, a view of the stored ∇W.
            grad: stored(&self.grad, self.transposed && self.grad_view, device),
            psi: upload(&self.psi, device),
            g_low: upload(&self.g_low, device),
            kept_weight: self.kept_weight,
        }
    }

    /// f64: d·(W − α·(S·L + G⊙ψ)), L = s·N − k·G̃⊙ψ, transposed into W's layout.
    fn expected(&self, c: UpdateCoefficients, recovery: bool) -> Mat {
        let (r, b) = (self.normalized.rows, self.normalized.cols);
        let a = self.basis.rows;
        let low = Mat::from_fn(r, b, |i, j| {
            let mut l = c.scale * self.normalized.at(i, j);
            if recovery {
                l -= self.kept_weight * self.g_low.at(i, j) * self.psi.at(0, j);
            }
            l
        });
        let mut u = self.basis.mul(&low);
        if recovery {
            u = u.add(&Mat::from_fn(a, b, |i, j| {
                self.grad.at(i, j) * self.psi.at(0, j)
            }));
        }
        if self.transposed {
            u = u.t();
        }
        self.weight.sub(&u.scale(c.alpha)).scale(c.decay)
    }

    /// On the WGSL route (the tensor ops where the kernel cannot run).
    fn run(
        &self,
        c: UpdateCoefficients,
        recovery: bool,
        flag: Option<f32>,
        device: &Device,
    ) -> Mat {
        self.run_on(c, recovery, flag, device, Route::WGSL)
    }

    fn run_on(
        &self,
        c: UpdateCoefficients,
        recovery: bool,
        flag: Option<f32>,
        device: &Device,
        route: Route,
    ) -> Mat {
        let flag = flag.map(|f| Tensor::<1>::from_floats([f], device));
        let basis = upload(&self.basis, device);
        let inputs = UpdateInputs {
            basis: &basis,
            normalized: upload(&self.normalized, device),
            weight: upload(&self.weight, device),
            transposed: self.transposed,
            recovery: recovery.then(|| self.recovery(device)),
        };
        download(kernels::update(inputs, c, flag.as_ref(), route))
    }
}

#[test]
fn update_kernel_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng(23);
    let coefficients = UpdateCoefficients {
        alpha: 0.03,
        decay: 0.999,
        scale: 0.25,
    };
    let cpu = Device::flex();
    for (a, r, b) in [(37, 5, 53), (16, 16, 16), (70, 17, 150), (130, 70, 90)] {
        for (transposed, grad_view) in [(false, false), (true, true), (true, false)] {
            for recovery in [false, true] {
                let case = UpdateCase {
                    grad_view,
                    ..UpdateCase::new(a, r, b, transposed, &mut rng)
                };
                let expected = case.expected(coefficients, recovery);
                let before = kernels::launches("update", [a, r, b]);
                let in_place = kernels::launches("update: Gᵀ in place", [a, r, b]);
                let got = case.run(coefficients, recovery, None, &device);
                assert_eq!(
                    kernels::launches("update", [a, r, b]),
                    before + 1,
                    "the WGSL kernel did not run"
                );
                assert_eq!(
                    kernels::launches("update: Gᵀ in place", [a, r, b]),
                    in_place + u64::from(recovery && grad_view),
                    "only a transposed view of ∇W is read in place"
                );
                // The portable path: the same formula in tensor ops on the CPU backend.
                let portable = case.run(coefficients, recovery, None, &cpu);
                let name = format!(
                    "{a}×{r}×{b}, transposed {transposed} (G a view {grad_view}), recovery {recovery}"
                );
                assert_close(&got, &portable, 1e-5, format_args!("{name}: vs portable"));
                assert_close(&got, &expected, 1e-5, format_args!("{name}: vs f64"));
                // A skipped step (flag 0) returns W exactly, on both paths.
                for dev in [&device, &cpu] {
                    let kept = case.run(coefficients, recovery, Some(0.0), dev);
                    assert_eq!(
                        kept.data,
                        case.weight
                            .data
                            .iter()
                            .map(|&x| x as f32 as f64)
                            .collect::<Vec<_>>(),
                        "{name}: skip"
                    );
                }
            }
        }
    }
}

/// The fused CPU update on `flex` against the tensor-op path on the same device and the f64
/// formula: both layouts, G a view or stored, with and without recovery and decay.
#[test]
fn fused_cpu_update_matches_the_portable_path() {
    let mut rng = Rng(29);
    let cpu = Device::flex();
    for decay in [1.0, 0.999] {
        let c = UpdateCoefficients {
            alpha: 0.03,
            decay,
            scale: 0.25,
        };
        // 400×40×700 is past the sizes where the recovery pass and the gemm run on
        // several threads.
        for (a, r, b) in [(37, 5, 53), (1, 1, 9), (70, 17, 150), (400, 40, 700)] {
            for (transposed, grad_view) in [(false, false), (true, true), (true, false)] {
                for recovery in [false, true] {
                    let case = UpdateCase {
                        grad_view,
                        ..UpdateCase::new(a, r, b, transposed, &mut rng)
                    };
                    let name = format!(
                        "{a}×{r}×{b}, transposed {transposed} (G a view {grad_view}), recovery {recovery}, decay {decay}"
                    );
                    let before = kernels::launches("update: flex", [a, r, b]);
                    let fused = case.run_on(c, recovery, None, &cpu, Route::CPU);
                    assert_eq!(
                        kernels::launches("update: flex", [a, r, b]),
                        before + 1,
                        "{name}: the fused loop did not run"
                    );
                    let portable = case.run_on(c, recovery, None, &cpu, Route::PORTABLE);
                    let expected = case.expected(c, recovery);
                    assert_close(&fused, &portable, 1e-6, format_args!("{name}: vs portable"));
                    assert_close(&fused, &expected, 1e-5, format_args!("{name}: vs f64"));
                }
            }
        }
    }
}

/// The fused CPU update writes into W's buffer: where another tensor shares that buffer
/// (a clone the caller kept), the clone keeps its values and the result is still right.
#[test]
fn fused_cpu_update_leaves_a_shared_weight_intact() {
    let mut rng = Rng(37);
    let cpu = Device::flex();
    let c = UpdateCoefficients {
        alpha: 0.03,
        decay: 0.999,
        scale: 0.25,
    };
    for transposed in [false, true] {
        for recovery in [false, true] {
            let case = UpdateCase::new(40, 6, 70, transposed, &mut rng);
            let weight = upload(&case.weight, &cpu);
            let kept = weight.clone();
            let basis = upload(&case.basis, &cpu);
            let inputs = UpdateInputs {
                basis: &basis,
                normalized: upload(&case.normalized, &cpu),
                weight,
                transposed,
                recovery: recovery.then(|| case.recovery(&cpu)),
            };
            let stepped = download(kernels::update(inputs, c, None, Route::CPU));
            let name = format!("transposed {transposed}, recovery {recovery}");
            assert_eq!(
                download(kept).data,
                upload_roundtrip(&case.weight),
                "{name}: the shared W changed"
            );
            assert_close(
                &stepped,
                &case.expected(c, recovery),
                1e-5,
                format_args!("{name}: vs f64"),
            );
        }
    }
}

/// The fused column sums of squares on `flex` against the tensor ops and f64: G stored a×b,
/// the transposed view of a stored b×a tensor, and a strided view (a column slice).
#[test]
fn fused_cpu_column_sums_match_the_portable_path() {
    let mut rng = Rng(31);
    let cpu = Device::flex();
    for (a, b) in [(37, 53), (1, 9), (9, 1), (256, 688), (512, 600)] {
        let g = rng.mat(a, b);
        let expected: Vec<f64> = (0..b)
            .map(|j| (0..a).map(|i| (g.at(i, j) as f32 as f64).powi(2)).sum())
            .collect();
        let wide = rng.mat(a, b + 3);
        let sliced: Vec<f64> = (0..b)
            .map(|j| {
                (0..a)
                    .map(|i| (wide.at(i, j + 2) as f32 as f64).powi(2))
                    .sum()
            })
            .collect();
        let cases = [
            ("stored", stored(&g, false, &cpu), false, &expected),
            ("view", stored(&g, true, &cpu), true, &expected),
            (
                "slice",
                upload(&wide, &cpu).slice([0..a, 2..b + 2]),
                false,
                &sliced,
            ),
        ];
        for (what, x, transposed, expected) in cases {
            let before = kernels::launches("column_sq: flex", [a, 0, b]);
            let fused = download(kernels::column_sq_fused(&x, transposed, Route::CPU));
            assert_eq!(kernels::launches("column_sq: flex", [a, 0, b]), before + 1);
            let portable = download(kernels::column_sq_fused(&x, transposed, Route::PORTABLE));
            let expected = Mat {
                rows: 1,
                cols: b,
                data: expected.clone(),
            };
            assert_eq!(fused.cols, b);
            assert_close(
                &fused,
                &portable,
                1e-5,
                format_args!("{a}×{b} {what}: vs portable"),
            );
            assert_close(
                &fused,
                &expected,
                1e-5,
                format_args!("{a}×{b} {what}: vs f64"),
            );
        }
    }
}

/// The fused CPU projection on `flex` against the tensor ops and f64: G stored, the
/// transposed view of a stored b×a tensor, a column slice and a row-flipped view (negative
/// stride), S stored and a column slice; one size past the gemm's parallel threshold.
#[test]
fn fused_cpu_projection_matches_the_portable_path() {
    let mut rng = Rng(41);
    let cpu = Device::flex();
    for (a, r, b) in [(37, 5, 53), (1, 1, 9), (256, 64, 688), (600, 64, 900)] {
        let round = |m: &Mat| Mat::from_fn(m.rows, m.cols, |i, j| m.at(i, j) as f32 as f64);
        let s = rng.mat(a, r);
        let g = rng.mat(a, b);
        let wide_s = rng.mat(a, r + 2);
        let wide_g = rng.mat(a, b + 3);
        let s_slice = Mat::from_fn(a, r, |i, j| wide_s.at(i, j + 1));
        let g_slice = Mat::from_fn(a, b, |i, j| wide_g.at(i, j + 2));
        let g_flip = Mat::from_fn(a, b, |i, j| g.at(a - 1 - i, j));
        let cases = [
            ("stored", upload(&s, &cpu), &s, stored(&g, false, &cpu), &g),
            (
                "G a transposed view",
                upload(&s, &cpu),
                &s,
                stored(&g, true, &cpu),
                &g,
            ),
            (
                "G a slice",
                upload(&s, &cpu),
                &s,
                upload(&wide_g, &cpu).slice([0..a, 2..b + 2]),
                &g_slice,
            ),
            (
                "G flipped",
                upload(&s, &cpu),
                &s,
                upload(&g, &cpu).flip([0]),
                &g_flip,
            ),
            (
                "S a slice",
                upload(&wide_s, &cpu).slice([0..a, 1..r + 1]),
                &s_slice,
                upload(&g, &cpu),
                &g,
            ),
        ];
        for (what, basis, s_ref, grad, g_ref) in cases {
            let expected = round(s_ref).t().mul(&round(g_ref));
            let before = kernels::launches("project: flex", [a, r, b]);
            let fused = download(kernels::project(&basis, &grad, Route::CPU));
            assert_eq!(
                kernels::launches("project: flex", [a, r, b]),
                before + 1,
                "{a}×{r}×{b} {what}: the fused projection did not run"
            );
            let portable = download(kernels::project(&basis, &grad, Route::PORTABLE));
            assert_eq!((fused.rows, fused.cols), (r, b));
            let case = format!("{a}×{r}×{b} {what}");
            assert_close(&fused, &portable, 1e-6, format_args!("{case}: vs portable"));
            assert_close(&fused, &expected, 1e-5, format_args!("{case}: vs f64"));
        }
    }
}

/// f64 low-rank Adam: (M', V', N), after the rotation by C when given (`code`: V × (1 − β2)).
fn adam_f64(m: &Mat, v: &Mat, g: &Mat, c: Option<(&Mat, bool)>, p: &AdamParams) -> [Mat; 3] {
    let (m, v) = match c {
        None => (m.clone(), v.clone()),
        Some((c, code)) => {
            let rotated = c.mul(m);
            let cc = Mat::from_fn(c.rows, c.cols, |i, j| c.at(i, j).powi(2));
            let centred = Mat::from_fn(v.rows, v.cols, |i, j| v.at(i, j) - m.at(i, j).powi(2));
            let var = cc.mul(&centred);
            let scale = if code { 1.0 - p.beta_2 } else { 1.0 };
            let v = Mat::from_fn(v.rows, v.cols, |i, j| {
                (var.at(i, j) + rotated.at(i, j).powi(2)).abs() * scale
            });
            (rotated, v)
        }
    };
    let m = Mat::from_fn(m.rows, m.cols, |i, j| {
        p.beta_1 * m.at(i, j) + (1.0 - p.beta_1) * g.at(i, j)
    });
    let v = Mat::from_fn(v.rows, v.cols, |i, j| {
        p.beta_2 * v.at(i, j) + (1.0 - p.beta_2) * g.at(i, j).powi(2)
    });
    let n = Mat::from_fn(m.rows, m.cols, |i, j| {
        m.at(i, j) / (v.at(i, j).sqrt() + p.epsilon)
    });
    [m, v, n]
}

#[test]
fn adam_kernel_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let cpu = Device::flex();
    let params = AdamParams {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-6,
    };
    let mut rng = Rng(41);
    for (r, b) in [(5, 53), (16, 16), (17, 150), (70, 90)] {
        // (rotation, moved): no rotation, both variants, and a rotation whose basis did not
        // move (device flag 0), which must equal no rotation.
        let variants = [
            (None, true),
            (Some(ProjectionAware::Paper), true),
            (Some(ProjectionAware::Code), true),
            (Some(ProjectionAware::Paper), false),
        ];
        for (rotation, moved) in variants {
            let [m, v, g] = adam_inputs(r, b, &mut rng);
            // A change of basis of the geodesic's form I − (1 − cos θ)·w·wᵀ, perturbed so
            // that it is a general dense matrix.
            let w = orthonormal(r, 1, &mut rng);
            let c = Mat::from_fn(r, r, |i, j| {
                let id = if i == j { 1.0 } else { 0.0 };
                id - 0.4 * w.at(i, 0) * w.at(j, 0) + 0.01 * ((i * 7 + j * 3) % 5) as f64
            });
            let code = rotation == Some(ProjectionAware::Code);
            let applied = rotation.filter(|_| moved).map(|_| (&c, code));
            let expected = adam_f64(&m, &v, &g, applied, &params);
            let run = |dev: &Device, flag: Option<f32>| {
                let flag = flag.map(|f| Tensor::<1>::from_floats([f], dev));
                let moved = (!moved).then(|| Tensor::<1>::from_floats([0.0], dev));
                let c_dev = upload(&c, dev);
                let out = kernels::adam(
                    upload(&m, dev),
                    upload(&v, dev),
                    &upload(&g, dev),
                    &params,
                    rotation.map(|variant| Rotation {
                        change_of_basis: &c_dev,
                        variant,
                        moved: moved.as_ref(),
                    }),
                    flag.as_ref(),
                    Route::WGSL,
                );
                [out.moment_1, out.moment_2, out.normalized].map(download)
            };
            let before = kernels::launches("adam", [r, r, b]);
            let got = run(&device, None);
            assert_eq!(
                kernels::launches("adam", [r, r, b]),
                before + 1,
                "the WGSL kernel did not run"
            );
            let portable = run(&cpu, None);
            let case = format!("{r}×{b}, rotation {rotation:?}, moved {moved}");
            assert_adam_close(&got, &portable, &expected, 1e-5, &case);
            // A skipped step keeps M and V exactly and gives N = 0, on both paths.
            for dev in [&device, &cpu] {
                let [m2, v2, n2] = run(dev, Some(0.0));
                assert_eq!(m2.data, upload_roundtrip(&m), "skip keeps M");
                assert_eq!(v2.data, upload_roundtrip(&v), "skip keeps V");
                assert!(n2.data.iter().all(|&x| x == 0.0), "skip zeroes N");
            }
        }
    }
}

/// The fused CPU Adam on `flex` against the tensor ops on the same device and f64, with and
/// without the rotation (which stays tensor ops, the moments' update after it fused); the
/// moments passed in share their buffers with kept clones, which must not change.
#[test]
fn fused_cpu_adam_matches_the_portable_path() {
    let cpu = Device::flex();
    let params = AdamParams {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-6,
    };
    let mut rng = Rng(43);
    for (r, b) in [(5, 53), (1, 1), (64, 688)] {
        for rotation in [
            None,
            Some(ProjectionAware::Paper),
            Some(ProjectionAware::Code),
        ] {
            let [m, v, g] = adam_inputs(r, b, &mut rng);
            let c = Mat::from_fn(r, r, |i, j| if i == j { 0.9 } else { 0.05 });
            let code = rotation == Some(ProjectionAware::Code);
            let expected = adam_f64(&m, &v, &g, rotation.map(|_| (&c, code)), &params);
            let c_dev = upload(&c, &cpu);
            let run = |fused: bool| {
                let (m_dev, v_dev) = (upload(&m, &cpu), upload(&v, &cpu));
                let kept = (m_dev.clone(), v_dev.clone());
                let out = kernels::adam(
                    m_dev,
                    v_dev,
                    &upload(&g, &cpu),
                    &params,
                    rotation.map(|variant| Rotation {
                        change_of_basis: &c_dev,
                        variant,
                        moved: None,
                    }),
                    None,
                    if fused { Route::CPU } else { Route::PORTABLE },
                );
                assert_eq!(
                    download(kept.0).data,
                    upload_roundtrip(&m),
                    "kept M changed"
                );
                assert_eq!(
                    download(kept.1).data,
                    upload_roundtrip(&v),
                    "kept V changed"
                );
                [out.moment_1, out.moment_2, out.normalized].map(download)
            };
            let before = kernels::launches("adam: flex", [r, 0, b]);
            let fused = run(true);
            assert_eq!(
                kernels::launches("adam: flex", [r, 0, b]),
                before + 1,
                "{r}×{b}: the fused loop did not run"
            );
            let portable = run(false);
            let case = format!("{r}×{b}, rotation {rotation:?}");
            assert_adam_close(&fused, &portable, &expected, 1e-6, &case);
        }
    }
}

/// Inputs of a low-rank Adam case, r×b each: M, V (at least M⊙M, as a second moment is)
/// and G̃.
fn adam_inputs(r: usize, b: usize, rng: &mut Rng) -> [Mat; 3] {
    let m = rng.mat(r, b);
    let spread = rng.mat(r, b);
    let v = Mat::from_fn(r, b, |i, j| m.at(i, j).powi(2) + spread.at(i, j).powi(2));
    let g = rng.mat(r, b);
    [m, v, g]
}

/// (M', V', N) `got` within `portable_tol` (relative) of the tensor-op path and 1e-5 of f64.
fn assert_adam_close(
    got: &[Mat; 3],
    portable: &[Mat; 3],
    expected: &[Mat; 3],
    portable_tol: f64,
    case: &str,
) {
    for (k, name) in ["M", "V", "N"].iter().enumerate() {
        let what = format!("{case}, {name}");
        assert_close(
            &got[k],
            &portable[k],
            portable_tol,
            format_args!("{what}: vs portable"),
        );
        assert_close(&got[k], &expected[k], 1e-5, format_args!("{what}: vs f64"));
    }
}

/// `m` as f32 values, back in f64: what a skipped step must return bit for bit.
fn upload_roundtrip(m: &Mat) -> Vec<f64> {
    m.data.iter().map(|&x| x as f32 as f64).collect()
}

/// f64 recovery scales: (ψ, Λ_prev') from the explicit residual G − k·S·G̃.
fn recovery_f64(s: &Mat, g: &Mat, n: &Mat, k: f64, zeta: f64, previous: Option<f64>) -> (Mat, f64) {
    let g_low = s.t().mul(g);
    let residual = g.sub(&s.mul(&g_low).scale(k));
    let col = |x: &Mat, j: usize| (0..x.rows).map(|i| x.at(i, j).powi(2)).sum::<f64>().sqrt();
    let phi: Vec<f64> = (0..g.cols)
        .map(|j| col(n, j) / (col(&g_low, j) + 1e-8))
        .collect();
    let norm = (0..g.cols)
        .map(|j| (col(&residual, j) * phi[j]).powi(2))
        .sum::<f64>()
        .sqrt();
    let factor = previous.map_or(1.0, |p| (zeta * p / norm.max(1e-30)).min(1.0));
    (
        Mat::from_fn(1, g.cols, |_, j| phi[j] * factor),
        norm * factor,
    )
}

#[test]
fn recovery_kernels_match_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = Rng(43);
    let (zeta, scale) = (1.01, 0.25);
    // (a, r, b, binding limit): the last splits G into chunks of 128, 128 and 44 rows;
    // 150×70×130 takes three 64-row blocks of G and two of G̃ and N in one launch of the
    // tiled kernel. Both column-norm kernels, the default and the tiled one.
    for (tiled, (a, r, b, limit)) in [false, true].into_iter().flat_map(|t| {
        [
            (37, 5, 53, 128 << 20),
            (16, 4, 300, 128 << 20),
            (150, 70, 130, 128 << 20),
            (300, 20, 90, 46_080),
        ]
        .map(|size| (t, size))
    }) {
        kernels::set_tiled_recovery_norms(tiled);
        let s = orthonormal(a, r, &mut rng);
        let g = rng.mat(a, b);
        let g_low = s.t().mul(&g);
        let n = rng.mat(r, b);
        for variant in [RecoveryScaling::Paper, RecoveryScaling::Code] {
            let k = if variant == RecoveryScaling::Code {
                scale
            } else {
                1.0
            };
            let unlimited = recovery_f64(&s, &g, &n, k, zeta, None).1;
            // No previous norm, a previous norm that binds the limiter, and one that does
            // not; G stored a×b or as the transposed view of its stored transpose.
            let cases = [None, Some(0.5 * unlimited), Some(2.0 * unlimited)]
                .into_iter()
                .flat_map(|p| [(p, false), (p, true)]);
            for (previous, view) in cases {
                let (psi_f64, norm_f64) = recovery_f64(&s, &g, &n, k, zeta, previous);
                let run = |dev: &Device, flag: Option<f32>| {
                    let flag = flag.map(|f| Tensor::<1>::from_floats([f], dev));
                    let prev = previous.map(|p| Tensor::<1>::from_floats([p as f32], dev));
                    let (grad, g_low, n) =
                        (stored(&g, view, dev), upload(&g_low, dev), upload(&n, dev));
                    let inputs = RecoveryInputs {
                        grad: &grad,
                        transposed: view,
                        grad_sq: None,
                        g_low: &g_low,
                        normalized: &n,
                        previous: prev.as_ref(),
                    };
                    let route = wgsl_within(limit);
                    let out = kernels::recovery(inputs, variant, scale, zeta, flag.as_ref(), route);
                    assert_eq!(out.kept_weight, k);
                    let norm: f64 = out.norm.into_scalar::<f32>() as f64;
                    (download(out.scaled_phi), norm)
                };
                let before = kernels::launches("recovery", [a, r, b]);
                let in_place = kernels::launches("recovery: Gᵀ in place", [a, r, b]);
                let tiled_before = kernels::launches("recovery: tiled", [a, r, b]);
                let (psi, norm) = run(&device, None);
                let chunks = a.div_ceil(if limit < a * b * 4 { 128 } else { a });
                assert_eq!(
                    kernels::launches("recovery", [a, r, b]),
                    before + chunks as u64
                );
                assert_eq!(
                    kernels::launches("recovery: tiled", [a, r, b]),
                    tiled_before + if tiled { chunks as u64 } else { 0 },
                    "the kernel asked for ran"
                );
                // A view is read in place when one launch takes all of G, else copied.
                assert_eq!(
                    kernels::launches("recovery: Gᵀ in place", [a, r, b]),
                    in_place + u64::from(view && chunks == 1)
                );
                let (psi_cpu, norm_cpu) = run(&cpu, None);
                let case = format!(
                    "{a}×{r}×{b}, {variant:?}, previous {previous:?}, view {view}, tiled {tiled}"
                );
                assert_close(&psi, &psi_cpu, 1e-5, format_args!("{case}: ψ vs portable"));
                assert_close(&psi, &psi_f64, 1e-5, format_args!("{case}: ψ vs f64"));
                assert!(
                    (norm - norm_cpu).abs() < 1e-5 * norm_cpu,
                    "{case}: ‖Λ‖ {norm} vs portable {norm_cpu}"
                );
                assert!(
                    (norm - norm_f64).abs() < 1e-5 * norm_f64,
                    "{case}: ‖Λ‖ {norm} vs f64 {norm_f64}"
                );
                // A skipped step keeps the previous norm on both paths.
                if let Some(p) = previous {
                    for dev in [&device, &cpu] {
                        assert_eq!(run(dev, Some(0.0)).1, p as f32 as f64, "{case}: skip");
                    }
                }
            }
        }
    }
}

/// Everything a skipped step must leave unchanged, as host values.
fn snapshot(w: &Tensor<2>, state: &Option<SubTrackState<2>>) -> Vec<Vec<f64>> {
    let mut out = vec![download(w.clone()).data];
    match state {
        Some(SubTrackState::Projected(s)) => {
            out.push(download(s.basis.clone()).data);
            out.push(download(s.moment_1.clone()).data);
            out.push(download(s.moment_2.clone()).data);
            out.extend(s.limiter_norm.clone().map(|n| download(n.unsqueeze()).data));
        }
        Some(SubTrackState::Dense(s)) => {
            out.push(download(s.moment_1.clone()).data);
            out.push(download(s.moment_2.clone()).data);
        }
        None => {}
    }
    out
}

#[test]
fn wgsl_route_checks_gradients_on_the_device_and_reads_nothing_back() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let config = SubTrackConfig::subtrack_plus_plus()
        .with_rank(4)
        .with_update_interval(5)
        .with_weight_decay(0.01)
        .with_wgsl_kernels(true);
    let optim = config.build().unwrap();
    let report = optim.report();
    let mut rng = Rng(5);
    // A projected 24×40 weight (left case) and a 1×40 one that AdamW updates.
    for (rows, cols, projected) in [(24, 40, true), (1, 40, false)] {
        let mut w = upload(&rng.mat(rows, cols), &device);
        let mut state = None;
        let step = |w: Tensor<2>, g: Tensor<2>, state| {
            let reads = report.host_reads();
            let (w, state) = optim.step(0.01, w, g, state);
            (w, state, report.host_reads() - reads)
        };
        // Steps k = 0 … 9, subspace updates at k = 5 and the NaN step k = 10 included.
        for t in 0..10 {
            let g = upload(&rng.mat(rows, cols), &device);
            let (nw, ns, reads) = step(w, g, state);
            (w, state) = (nw, ns);
            if projected && t == 0 {
                assert!(reads > 0, "the first basis is found on the host");
            } else {
                assert_eq!(reads, 0, "step {t} of a {rows}×{cols} weight read back");
            }
        }
        // A NaN gradient: nothing read back, nothing changed, the skip counted on the device.
        let before = snapshot(&w, &state);
        let skips = report.nonfinite_skips();
        let mut bad = rng.mat(rows, cols);
        bad.data[3] = f64::NAN;
        let (nw, ns, reads) = step(w, upload(&bad, &device), state);
        (w, state) = (nw, ns);
        assert_eq!(reads, 0, "a skipped {rows}×{cols} step read back");
        assert_eq!(
            snapshot(&w, &state),
            before,
            "a skipped {rows}×{cols} step changed the weight or its state"
        );
        assert_eq!(report.nonfinite_skips(), skips + 1);
        // The skipped step still counts toward k (the host never learnt of it).
        assert_eq!(state.as_ref().map(|s| s.step()), Some(11));
        // Steps go on normally after the skip.
        let (nw, _, _) = step(w, upload(&rng.mat(rows, cols), &device), state);
        assert!(download(nw).data.iter().all(|x| x.is_finite()));
    }
    assert!(
        kernels::launches("adam", [4, 4, 40]) > 0,
        "the Adam kernel ran"
    );
    assert!(
        kernels::launches("recovery", [24, 4, 40]) > 0,
        "the recovery kernels ran"
    );
    assert!(
        kernels::launches("geodesic_step", [24, 4, 4]) > 0,
        "the tracking kernels ran"
    );
    assert_eq!(report.subspace_updates(), 2, "k = 5 and the skipped k = 10");
}

/// max |XᵀX − I| of an a×r matrix, in f64.
fn drift(x: &Mat) -> f64 {
    let gram = x.t().mul(x);
    (0..x.cols)
        .flat_map(|i| (0..x.cols).map(move |j| (i, j)))
        .map(|(i, j)| (gram.at(i, j) - if i == j { 1.0 } else { 0.0 }).abs())
        .fold(0.0, f64::max)
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

#[test]
fn tracking_kernels_match_the_host_geodesic_step() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng(47);
    // (a, r, b, target θ, θ_max, tolerance): η is set from σ for θ = η·σ of 0.5–2 rad; a
    // clamp; a tolerance of 0 so that the Cholesky re-orthonormalisation runs.
    // The last case starts from a basis 1e-2 off orthonormal, so that the re-orthonormalisation
    // makes a difference well past round-off.
    let cases = [
        (37, 5, 53, 0.5, None, 1e-5, 0.0),
        (16, 4, 16, 1.0, None, 1e-5, 0.0),
        (100, 17, 300, 2.0, Some(0.3), 1e-5, 0.0),
        (70, 6, 90, 0.7, None, 0.0, 0.0),
        (50, 8, 64, 0.5, None, 1e-5, 1e-2),
    ];
    for (a, r, b, target, max_theta, tol, off) in cases {
        let s = orthonormal(a, r, &mut rng).add(&rng.mat(a, r).scale(off));
        let g = rng.mat(a, b);
        let (s_dev, g_dev) = (upload(&s, &device), upload(&g, &device));
        let eta = target / geodesic::geodesic_step(&s_dev, &g_dev, 1.0, None, tol).sigma;
        let host = geodesic::geodesic_step(&s_dev, &g_dev, eta, max_theta, tol);
        let before = kernels::launches("geodesic_step", [a, r, r]);
        let got = kernels::track(&s_dev, &g_dev, eta, max_theta, tol).expect("the kernels run");
        let case = format!("{a}×{r}×{b}, η {eta}, θ_max {max_theta:?}, tol {tol}, off {off}");
        if off > 0.0 {
            assert!(
                drift(&s) > 1e-3 && host.reorthonormalized,
                "{case}: the start is off"
            );
        }
        let basis = download(got.basis);
        let change = download(got.change_of_basis);
        assert_eq!(
            kernels::launches("geodesic_step", [a, r, r]),
            before + 1,
            "{case}"
        );
        assert_eq!(scalar(got.moved), 1.0, "{case}: moved");
        let (sigma, theta) = (scalar(got.sigma), scalar(got.theta));
        assert!(
            (sigma - host.sigma).abs() < 1e-5 * host.sigma,
            "{case}: σ {sigma} vs host {}",
            host.sigma
        );
        assert!(
            (theta - host.theta).abs() < 1e-5 * host.theta,
            "{case}: θ {theta} vs host {}",
            host.theta
        );
        assert!(
            host.theta > 0.05,
            "{case}: the step must rotate the basis, θ {}",
            host.theta
        );
        assert_eq!(
            scalar(got.reorthonormalized) == 1.0,
            host.reorthonormalized,
            "{case}: re-orthonormalised"
        );
        let host_basis = download(host.basis);
        assert_close(
            &basis,
            &host_basis,
            1e-5,
            format_args!("{case}: S' vs host"),
        );
        let host_change = Mat {
            rows: r,
            cols: r,
            data: host.change_of_basis.expect("moved"),
        };
        assert_close(
            &change,
            &host_change,
            1e-5,
            format_args!("{case}: C vs host"),
        );
        // Invariants, in f64: S' orthonormal and, from an orthonormal S, C = S'ᵀS.
        assert!(drift(&basis) < 1e-5, "{case}: drift {}", drift(&basis));
        if off == 0.0 {
            assert_close(
                &change,
                &basis.t().mul(&s),
                1e-5,
                format_args!("{case}: C vs S'ᵀS"),
            );
        }
    }

    // θ of hundreds of radians (the paper's η = 10 regime): S' stays orthonormal and C = S'ᵀS.
    let (a, r, b) = (40, 5, 60);
    let s = orthonormal(a, r, &mut rng);
    let g = rng.mat(a, b);
    let got = kernels::track(&upload(&s, &device), &upload(&g, &device), 10.0, None, 1e-5).unwrap();
    assert!(scalar(got.theta) > 100.0);
    let basis = download(got.basis);
    assert!(drift(&basis) < 1e-5, "large θ: drift {}", drift(&basis));
    assert_close(
        &download(got.change_of_basis),
        &basis.t().mul(&s),
        1e-5,
        "large θ: C vs S'ᵀS",
    );

    // G inside span(S): σ = 0, the basis stays exactly and C = I; likewise for a gradient
    // holding NaN or +∞ (a skipped step), whose flag the first projection reports.
    let inside = s.mul(&rng.mat(r, b));
    let (mut nan, mut inf) = (g.clone(), g.clone());
    nan.data[7] = f64::NAN;
    inf.data[b * 3 + 2] = f64::INFINITY;
    for (g, finite) in [(&inside, true), (&nan, false), (&inf, false)] {
        let step =
            kernels::track(&upload(&s, &device), &upload(g, &device), 1e-2, None, 1e-5).unwrap();
        assert_eq!(scalar(step.flag), if finite { 1.0 } else { 0.0 });
        assert_eq!(scalar(step.moved), 0.0);
        assert_eq!(download(step.basis).data, upload_roundtrip(&s));
        let identity = Mat::from_fn(r, r, |i, j| if i == j { 1.0 } else { 0.0 });
        assert_eq!(download(step.change_of_basis).data, identity.data);
    }
}

#[test]
fn wide_matrices_take_several_launches_past_the_workgroup_limit() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = Rng(53);
    // b = 300 is five 64-column blocks; a limit of 2 workgroups a dimension splits every
    // launch across the columns into 2 + 2 + 1 blocks.
    let (a, r, b) = (70, 6, 300);
    let narrow = Limits {
        max_workgroups: 2,
        ..Limits::WEBGPU
    };
    let s = orthonormal(a, r, &mut rng);
    let g = rng.mat(a, b);
    let before = kernels::launches("project", [a, r, b]);
    let got = download(kernels::project(
        &upload(&s, &device),
        &upload(&g, &device),
        Route::WGSL.within(narrow),
    ));
    assert_eq!(
        kernels::launches("project", [a, r, b]),
        before + 3,
        "three column groups"
    );
    assert_close(&got, &s.t().mul(&g), 1e-5, "projection vs f64");

    let params = AdamParams {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-6,
    };
    let (m, g_low) = (rng.mat(r, b), rng.mat(r, b));
    let v = Mat::from_fn(r, b, |i, j| m.at(i, j).powi(2) + 0.1);
    let c = Mat::from_fn(r, r, |i, j| if i == j { 0.9 } else { 0.05 });
    let run = |dev: &Device, route: Route| {
        let c_dev = upload(&c, dev);
        let rotation = Rotation {
            change_of_basis: &c_dev,
            variant: ProjectionAware::Paper,
            moved: None,
        };
        let out = kernels::adam(
            upload(&m, dev),
            upload(&v, dev),
            &upload(&g_low, dev),
            &params,
            Some(rotation),
            None,
            route,
        );
        [out.moment_1, out.moment_2, out.normalized].map(download)
    };
    let before = kernels::launches("adam", [r, r, b]);
    let got = run(&device, Route::WGSL.within(narrow));
    assert_eq!(
        kernels::launches("adam", [r, r, b]),
        before + 3,
        "three column groups"
    );
    let portable = run(&cpu, Route::PORTABLE);
    for k in 0..3 {
        assert_close(
            &got[k],
            &portable[k],
            1e-5,
            format_args!("adam output {k} vs portable"),
        );
    }

    let coefficients = UpdateCoefficients {
        alpha: 0.05,
        decay: 0.99,
        scale: 0.25,
    };
    for transposed in [false, true] {
        let case = UpdateCase::new(a, r, b, transposed, &mut rng);
        let before = kernels::launches("update", [a, r, b]);
        let got = case.run_on(
            coefficients,
            true,
            None,
            &device,
            Route::WGSL.within(narrow),
        );
        assert_eq!(
            kernels::launches("update", [a, r, b]),
            before + 3,
            "transposed {transposed}"
        );
        assert_close(
            &got,
            &case.expected(coefficients, true),
            1e-5,
            format_args!("update, transposed {transposed}: vs f64"),
        );
    }
}
