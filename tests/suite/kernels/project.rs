//! The projection G̃ = SᵀG (`project.wgsl`): single launch, split-K and the fallback.

use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor, TensorData};
use subtrack::SubTrackConfig;
use subtrack::basis;
use subtrack::kernels::{self, Route};

use crate::reference::Rng;
use crate::{assert_close, download, upload, wgpu_device};

use super::{orthonormal, stored};

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
