//! Bad input: non-finite gradients, zero gradients, awkward shapes, bad learning rates.

use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor, TensorData};
use subtrack::{SubTrackConfig, SubTrackState, SubspaceUpdate};

use crate::reference::{DenseRef, Hyper, Rng, Update, Variant, dense_step};
use crate::{devices, download, max_abs_diff, presets, upload, values};

fn tensor<const D: usize>(values: Vec<f64>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape).convert::<f32>(), device)
}

#[test]
fn non_finite_gradients_change_nothing_and_are_counted() {
    // Both routes: the WGSL kernels (where the device runs them) and the portable path.
    // Every preset; with T = 2 the bad steps (k = 3 on the host route) do not refresh the
    // subspace, with T = 3 the first one does (so its G also reaches the subspace update).
    for (device, optim_wgsl) in devices()
        .into_iter()
        .flat_map(|d| [(d.clone(), true), (d, false)])
    {
        for (name, preset) in presets() {
            for interval in [2, 3] {
                let config = preset
                    .clone()
                    .with_rank(2)
                    .with_update_interval(interval)
                    .with_wgsl_kernels(optim_wgsl);
                let what = format!("{name}, T = {interval}, WGSL {optim_wgsl}");
                non_finite_gradients_are_skipped(&device, config, &what);
            }
        }
    }
}

/// Steps with NaN and ±∞ in G leave W and the state as they were and are counted, on a
/// projected and a dense parameter; training then goes on.
fn non_finite_gradients_are_skipped(device: &Device, config: SubTrackConfig, what: &str) {
    let optim_wgsl = config.wgsl_kernels;
    let (interval, svd) = (
        config.update_interval,
        config.subspace_update == SubspaceUpdate::Svd,
    );
    let optim = config.build().unwrap();
    let report = optim.report();
    let mut rng = Rng::new(11);
    for (rows, cols) in [(6, 9), (2, 3)] {
        // (6, 9) is projected at rank 2; (2, 3) is dense.
        let mut w = upload(&rng.mat(rows, cols), device);
        let mut state = None;
        for _ in 0..3 {
            let (nw, ns) = optim.step(0.01, w, upload(&rng.mat(rows, cols), device), state);
            (w, state) = (nw, ns);
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let before_skips = report.nonfinite_skips();
            let mut g = rng.mat(rows, cols);
            g.data[4] = bad;
            let w_before = download(w.clone());
            let s_before = state.clone().unwrap();
            let (nw, ns) = optim.step(0.01, w, upload(&g, device), state);
            assert_eq!(
                download(nw.clone()),
                w_before,
                "{what}: weights changed on {bad}"
            );
            let ns = ns.unwrap();
            // On the WGSL route the check runs on the device (no read-back; every step
            // here, the tracking kernels run these sizes, GaLore's refresh does not) and
            // the skipped step still counts toward k; elsewhere the host check keeps k.
            let svd_refresh = svd && rows == 6 && s_before.step().is_multiple_of(interval);
            let on_device =
                optim_wgsl && subtrack::testing::kernels::wgsl_available(device) && !svd_refresh;
            assert_eq!(
                ns.step(),
                s_before.step() + usize::from(on_device),
                "{what}: k on {bad}"
            );
            match (&ns, &s_before) {
                (SubTrackState::Projected(a), SubTrackState::Projected(b)) => {
                    assert_eq!(values(&a.basis), values(&b.basis), "{what}: basis");
                    assert_eq!(values(&a.moment_1), values(&b.moment_1), "{what}: M");
                    assert_eq!(values(&a.moment_2), values(&b.moment_2), "{what}: V");
                }
                (SubTrackState::Dense(a), SubTrackState::Dense(b)) => {
                    assert_eq!(values(&a.moment_1), values(&b.moment_1), "{what}: M");
                    assert_eq!(values(&a.moment_2), values(&b.moment_2), "{what}: V");
                }
                _ => panic!("{what}: state kind changed"),
            }
            assert_eq!(report.nonfinite_skips(), before_skips + 1, "{what}: count");
            (w, state) = (nw, Some(ns));
        }
        // Training continues normally afterwards, through a subspace update.
        for _ in 0..3 {
            let (nw, ns) = optim.step(0.01, w, upload(&rng.mat(rows, cols), device), state);
            (w, state) = (nw, ns);
        }
        assert!(download(w).data.iter().all(|x| x.is_finite()), "{what}");
    }
    // A non-finite gradient at the very first step leaves no state behind.
    let w = upload(&rng.mat(6, 9), device);
    let mut g = rng.mat(6, 9);
    g.data[0] = f64::NAN;
    let (_, state) = optim.step(0.01, w, upload(&g, device), None);
    assert!(state.is_none(), "{what}");
}

/// The host check reads a sum first (of G, or of its column sums of squares): a sum
/// that overflows to ∞ although every element of G is finite must not skip the step.
#[test]
fn huge_finite_gradients_are_not_skipped() {
    for (device, optim_wgsl) in devices()
        .into_iter()
        .flat_map(|d| [(d.clone(), true), (d, false)])
    {
        for (name, preset) in presets() {
            let optim = preset
                .with_rank(2)
                .with_wgsl_kernels(optim_wgsl)
                .build()
                .unwrap();
            let report = optim.report();
            let mut rng = Rng::new(12);
            for (rows, cols) in [(6, 9), (2, 3)] {
                let what = format!("{name}, WGSL {optim_wgsl}, {rows}×{cols}");
                let w = upload(&rng.mat(rows, cols), &device);
                let (w, state) = optim.step(0.01, w, upload(&rng.mat(rows, cols), &device), None);
                let mut g = rng.mat(rows, cols);
                g.data[1] = f32::MAX as f64;
                g.data[4] = f32::MAX as f64;
                let w_before = download(w.clone());
                let (nw, ns) = optim.step(0.01, w, upload(&g, &device), state);
                assert_eq!(report.nonfinite_skips(), 0, "{what}: skipped");
                assert_eq!(ns.unwrap().step(), 2, "{what}: k did not advance");
                assert_ne!(download(nw), w_before, "{what}: the weight did not move");
            }
        }
    }
}

/// A NaN or ∞ in a row of G that the basis does not reach (S's row is zero, so G̃ = SᵀG
/// would be finite in exact arithmetic) is still caught, on every route: a check that
/// looked only at G̃ or the step's result would rely on IEEE products carrying it
/// (NaN·0 = ∞·0 = NaN). Left and right case (a zero row of W's gradient, or a zero
/// column).
#[test]
fn non_finite_values_outside_the_basis_are_caught() {
    for (device, optim_wgsl) in devices()
        .into_iter()
        .flat_map(|d| [(d.clone(), true), (d, false)])
    {
        for (name, preset) in presets() {
            for (rows, cols) in [(6, 9), (9, 6)] {
                let what = format!("{name}, WGSL {optim_wgsl}, {rows}×{cols}");
                let optim = preset
                    .clone()
                    .with_rank(2)
                    .with_wgsl_kernels(optim_wgsl)
                    .build()
                    .unwrap();
                let report = optim.report();
                let mut rng = Rng::new(13);
                // G with the short side's index 2 zero: row 2 (left case) or column 2.
                let zeroed = |mut g: crate::reference::Mat| {
                    for i in 0..rows {
                        for j in 0..cols {
                            if (rows < cols && i == 2) || (rows >= cols && j == 2) {
                                g.data[i * cols + j] = 0.0;
                            }
                        }
                    }
                    g
                };
                let mut w = upload(&rng.mat(rows, cols), &device);
                let mut state = None;
                for _ in 0..2 {
                    let g = upload(&zeroed(rng.mat(rows, cols)), &device);
                    (w, state) = optim.step(0.01, w, g, state);
                }
                let Some(SubTrackState::Projected(p)) = &state else {
                    panic!("{what}: not projected")
                };
                let basis = download(p.basis.clone());
                let row: Vec<f64> = basis.data[2 * basis.cols..3 * basis.cols].to_vec();
                assert!(
                    row.iter().all(|x| x.abs() < 1e-6),
                    "{what}: the basis reaches index 2: {row:?}"
                );
                for bad in [f64::NAN, f64::INFINITY] {
                    let mut g = zeroed(rng.mat(rows, cols));
                    let at = if rows < cols {
                        2 * cols + 4
                    } else {
                        4 * cols + 2
                    };
                    g.data[at] = bad;
                    let before = report.nonfinite_skips();
                    let w_before = download(w.clone());
                    let (nw, ns) = optim.step(0.01, w, upload(&g, &device), state);
                    assert_eq!(report.nonfinite_skips(), before + 1, "{what}: {bad} missed");
                    assert_eq!(download(nw.clone()), w_before, "{what}: W moved on {bad}");
                    (w, state) = (nw, ns);
                }
            }
        }
    }
}

#[test]
fn zero_gradients_produce_no_nan() {
    for device in devices() {
        for update in [SubspaceUpdate::Geodesic, SubspaceUpdate::Svd] {
            let optim = SubTrackConfig::subtrack_plus_plus()
                .with_subspace_update(update)
                .with_rank(2)
                .with_update_interval(2)
                .build()
                .unwrap();
            let mut w = upload(&Rng::new(12).mat(5, 8), &device);
            let w0 = download(w.clone());
            let mut state = None;
            for _ in 0..5 {
                let (nw, ns) = optim.step(0.01, w, Tensor::zeros([5, 8], &device), state);
                (w, state) = (nw, ns);
            }
            assert_eq!(download(w), w0, "a zero gradient must not move the weights");
            let Some(SubTrackState::Projected(p)) = state else {
                panic!()
            };
            let basis = download(p.basis);
            assert!(basis.data.iter().all(|x| x.is_finite()));
            assert!(values(&p.moment_2).iter().all(|x| x.is_finite()));
        }
    }
}

/// Parameters that are not projected get exactly the dense AdamW of the reference.
#[test]
fn other_shapes_fall_back_to_adamw() {
    let config = SubTrackConfig::subtrack_plus_plus()
        .with_rank(4)
        .with_weight_decay(0.1);
    let h = Hyper {
        rank: 4,
        interval: 200,
        eta: 10.0,
        max_theta: None,
        scale: 0.25,
        beta_1: config.beta_1,
        beta_2: config.beta_2,
        eps: config.epsilon,
        wd: config.weight_decay,
        update: Update::Geodesic,
        aware: Variant::Paper,
        recovery: Variant::Paper,
        zeta: 1.01,
    };
    let optim = config.build().unwrap();
    fn check<const D: usize>(
        optim: &subtrack::SubTrack,
        h: &Hyper,
        shape: [usize; D],
        device: &Device,
    ) {
        let n: usize = shape.iter().product();
        let mut rng = Rng::new(n as u64);
        let w0: Vec<f64> = (0..n).map(|_| rng.next()).collect();
        let mut w = tensor(w0.clone(), shape, device);
        let mut w_ref = w0;
        let mut reference = DenseRef {
            m: vec![0.0; n],
            v: vec![0.0; n],
            k: 0,
        };
        let mut state = None;
        for _ in 0..5 {
            let g: Vec<f64> = (0..n).map(|_| rng.next()).collect();
            let (nw, ns) = optim.step(0.01, w, tensor(g.clone(), shape, device), state);
            (w, state) = (nw, ns);
            w_ref = dense_step(h, &w_ref, &g, &mut reference, 0.01);
        }
        assert!(
            matches!(state, Some(SubTrackState::Dense(_))),
            "{shape:?} should be dense"
        );
        let err = max_abs_diff(&values(&w), &w_ref);
        assert!(err < 1e-6, "{shape:?}: max error {err:e}");
    }
    for device in devices() {
        check(&optim, &h, [7], &device);
        check(&optim, &h, [1, 9], &device);
        check(&optim, &h, [9, 1], &device);
        check(&optim, &h, [4, 10], &device); // r = min(m, n)
        check(&optim, &h, [3, 10], &device); // r > min(m, n)
        check(&optim, &h, [2, 3, 4], &device);
        check(&optim, &h, [2, 3, 2, 2], &device);
    }
}

#[test]
#[should_panic(expected = "learning rate must be finite")]
fn negative_learning_rate_is_refused() {
    let optim = SubTrackConfig::new().build().unwrap();
    let device = Device::flex();
    let _ = optim.step(
        -1.0,
        Tensor::<1>::zeros([3], &device),
        Tensor::<1>::ones([3], &device),
        None,
    );
}

#[test]
#[should_panic(expected = "learning rate must be finite")]
fn nan_learning_rate_is_refused() {
    let optim = SubTrackConfig::new().build().unwrap();
    let device = Device::flex();
    let _ = optim.step(
        f64::NAN,
        Tensor::<1>::zeros([3], &device),
        Tensor::<1>::ones([3], &device),
        None,
    );
}

#[test]
fn invalid_configs_fail_at_init_naming_the_field() {
    let err = SubTrackConfig::new().with_rank(0).init().err().unwrap();
    assert!(err.to_string().contains("`rank`"), "{err}");
    let err = SubTrackConfig::new()
        .with_beta_2(1.0)
        .build()
        .err()
        .unwrap();
    assert!(err.to_string().contains("`beta_2`"), "{err}");
    let err = SubTrackConfig::new()
        .with_epsilon(f64::NAN)
        .adamw()
        .err()
        .unwrap();
    assert!(err.to_string().contains("`epsilon`"), "{err}");
}
