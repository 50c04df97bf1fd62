//! The projection G̃ = SᵀG (`project.wgsl`, and `project_wide.wgsl` for the 128×128 tile):
//! single launch, split-K, the optimizer's hooks and the fallback.

use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor, TensorData};
use subtrack::SubTrackConfig;
use subtrack::testing::basis;
use subtrack::testing::kernels::{self, Limits, ProjectionTile, TileChoice};
use subtrack::testing::route::{self, RouteRequest};

use crate::reference::{Mat, Rng};
use crate::{assert_close, download, upload, wgpu_device};

use super::{orthonormal, stored, wgsl_within};

#[test]
fn projection_kernel_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    assert!(
        kernels::wgsl_available(&device),
        "the test adapter should compile WGSL"
    );
    let mut rng = Rng::new(17);
    let cpu = Device::flex();
    // Sizes that are not multiples of the 16×16 tile, a single tile, and a tall one.
    for (a, r, b) in [
        (37, 5, 57),
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
            let (got, flag) = route::project_checked(&s_dev, &g_dev, RouteRequest::WGSL);
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
            // The portable path on the CPU backend: on lavapipe, Burn's matmul would compile
            // and autotune for each of these shapes (most of this test's cold time).
            let portable = download(basis::project(&upload(&s, &cpu), &stored(&g, view, &cpu)));
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
                let (_, flag) = route::project_checked(
                    &s_dev,
                    &stored(&g_bad, view, &device),
                    RouteRequest::WGSL,
                );
                assert_eq!(flag.into_scalar::<f32>(), 0.0, "{case}: {bad}");
            }
        }
    }
}

/// Split-K projection: partial sums over row ranges of S and G, added by `project_reduce.wgsl`, equal SᵀG,
/// also where the last split is short or some are empty (a = 70 in 8 splits of 16 rows);
/// the flag sees a NaN in any split's rows. Both tiles, the 128×128 one also on r and b
/// past one block.
#[test]
fn split_projection_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(23);
    use ProjectionTile::{Block64, Block128};
    for (a, r, b, splits, tile) in [
        (70, 5, 53, 2, Block64),
        (70, 9, 37, 3, Block64),
        (70, 4, 20, 8, Block64),
        (257, 32, 40, 4, Block64),
        (70, 9, 37, 3, Block128),
        (70, 4, 20, 8, Block128),
        (300, 130, 270, 4, Block128),
    ] {
        let s = orthonormal(a, r, &mut rng);
        let mut g = rng.mat(a, b);
        let expected = s.t().mul(&g);
        let (s_dev, g_dev) = (upload(&s, &device), upload(&g, &device));
        let before = kernels::launches("project_split", [a, r, b]);
        let reduced = kernels::launches("project_reduce", [a, r, b]);
        let wide = kernels::launches("project: 128×128 tiles", [a, r, b]);
        let (got, flag) = route::project_split(&s_dev, &g_dev, splits, tile);
        let got = download(got);
        assert_eq!(
            kernels::launches("project_split", [a, r, b]),
            before + 1,
            "the split kernel did not run"
        );
        assert_eq!(
            kernels::launches("project_reduce", [a, r, b]),
            reduced + 1,
            "the partial sums were not reduced"
        );
        assert_eq!(
            kernels::launches("project: 128×128 tiles", [a, r, b]),
            wide + u64::from(tile == Block128),
            "{tile:?}"
        );
        let portable = download(basis::project(&s_dev, &g_dev));
        for (what, reference) in [("portable", &portable), ("f64", &expected)] {
            assert_close(
                &got,
                reference,
                1e-5,
                format_args!("{a}×{r}×{b} in {splits}, {tile:?}: vs {what}"),
            );
        }
        assert_eq!(flag.into_scalar::<f32>(), 1.0);
        // A NaN in the last row (the last non-empty split).
        g.data[(a - 1) * b + 2] = f64::NAN;
        let (_, flag) = route::project_split(&s_dev, &upload(&g, &device), splits, tile);
        assert_eq!(
            flag.into_scalar::<f32>(),
            0.0,
            "{a}×{r}×{b} in {splits}, {tile:?}: NaN missed"
        );
    }
}

/// With split-K projections or the 128×128 tile turned on for this thread, SubTrack++ steps
/// on the WGSL route (projections, A = SᵀG of the tracking steps, and with the tile the
/// weight updates) use them and stay within 1e-5 of the default single-launch 64×64 steps.
#[test]
fn optimizer_steps_with_tuned_projections_match() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let (m, n) = (70, 45);
    let run = |splits: usize, tile: ProjectionTile| {
        kernels::set_projection_splits(splits);
        kernels::set_projection_tile(tile);
        let optim = SubTrackConfig::subtrack_plus_plus()
            .with_rank(6)
            .with_update_interval(3)
            .build()
            .unwrap();
        let mut rng = Rng::new(31);
        let mut w = upload(&rng.mat(m, n), &device);
        let mut state = None;
        for _ in 0..5 {
            let (nw, ns) = optim.step(0.01, w, upload(&rng.mat(m, n), &device), state);
            (w, state) = (nw, ns);
        }
        kernels::set_projection_splits(1);
        kernels::set_projection_tile(TileChoice::Tuned);
        download(w)
    };
    let single = run(1, ProjectionTile::Block64);
    // Right case: G is 70×45, so the canonical a×b is 45×70.
    let sizes = [45, 6, 70];
    for (splits, tile) in [
        (3, ProjectionTile::Block64),
        (1, ProjectionTile::Block128),
        (3, ProjectionTile::Block128),
    ] {
        let split = kernels::launches("project_split", sizes);
        let wide = kernels::launches("project: 128×128 tiles", sizes);
        let wide_update = kernels::launches("update: 128×128 tiles", sizes);
        let tuned = run(splits, tile);
        assert_eq!(
            kernels::launches("project_split", sizes) > split,
            splits > 1,
            "{splits} splits, {tile:?}: split launches"
        );
        assert_eq!(
            kernels::launches("project: 128×128 tiles", sizes) > wide,
            tile == ProjectionTile::Block128,
            "{splits} splits, {tile:?}: 128×128 launches"
        );
        assert_eq!(
            kernels::launches("update: 128×128 tiles", sizes) > wide_update,
            tile == ProjectionTile::Block128,
            "{splits} splits, {tile:?}: 128×128 update launches"
        );
        assert_close(
            &tuned,
            &single,
            1e-5,
            format_args!("{splits} splits, {tile:?} vs the default"),
        );
    }
}

/// The 128×128 tile (`project_wide.wgsl`) against the tensor ops (on the CPU) and f64: sizes that are not
/// multiples of the tile or of its 8-row step, r and b over one block, G read in place as a
/// transposed view, row chunks past the binding limit, launches split across columns past
/// the workgroup limit, and the step flag.
#[test]
fn wide_tile_projection_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(41);
    let cpu = Device::flex();
    let narrow = RouteRequest::WGSL.within(Limits {
        max_workgroups: 2,
        ..Limits::WEBGPU
    });
    // (a, r, b, route, launches, whether a view is read in place). 300×20 and 300×90 under a
    // 46,080-byte binding take chunks of 128, 128 and 44 rows; b = 300 is three 128-column
    // blocks, two and one under a limit of 2 workgroups.
    for (a, r, b, route, launches, in_place) in [
        (37, 5, 59, RouteRequest::WGSL, 1, true),
        (129, 128, 129, RouteRequest::WGSL, 1, true),
        (300, 130, 270, RouteRequest::WGSL, 1, true),
        (300, 20, 90, wgsl_within(46_080), 3, false),
        (70, 6, 300, narrow, 2, true),
    ] {
        let s = orthonormal(a, r, &mut rng);
        let g = rng.mat(a, b);
        let expected = s.t().mul(&g);
        let s_dev = upload(&s, &device);
        for view in [false, true] {
            let case = format!("{a}×{r}×{b}, view {view}");
            let project = |g: &Mat| {
                kernels::set_projection_tile(ProjectionTile::Block128);
                let out = route::project_checked(&s_dev, &stored(g, view, &device), route);
                kernels::set_projection_tile(TileChoice::Tuned);
                out
            };
            let before = kernels::launches("project: 128×128 tiles", [a, r, b]);
            let read_in_place = kernels::launches("project: Gᵀ in place", [a, r, b]);
            let (got, flag) = project(&g);
            let got = download(got);
            assert_eq!(
                kernels::launches("project: 128×128 tiles", [a, r, b]),
                before + launches,
                "{case}: launches of the 128×128 kernel"
            );
            assert_eq!(
                kernels::launches("project: Gᵀ in place", [a, r, b]),
                read_in_place + if view && in_place { launches } else { 0 },
                "{case}: G read in place"
            );
            assert_eq!(flag.into_scalar::<f32>(), 1.0, "{case}: flag");
            // The portable path on the CPU backend: on lavapipe, Burn's matmul would compile
            // and autotune for each of these shapes (about 70 s of a cold CI run).
            let portable = download(basis::project(&upload(&s, &cpu), &stored(&g, view, &cpu)));
            assert_close(&got, &portable, 1e-5, format_args!("{case}: vs portable"));
            assert_close(&got, &expected, 1e-5, format_args!("{case}: vs f64"));
            for bad in [f64::NAN, f64::NEG_INFINITY] {
                let mut g_bad = g.clone();
                g_bad.data[a * b - 1] = bad;
                let (_, flag) = project(&g_bad);
                assert_eq!(flag.into_scalar::<f32>(), 0.0, "{case}: {bad}");
            }
        }
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
    let got: Vec<f32> = route::project(&s, &g, RouteRequest::WGSL)
        .into_data()
        .try_into_vec()
        .unwrap();
    assert_eq!(got, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
}
