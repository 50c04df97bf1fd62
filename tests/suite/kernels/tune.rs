//! The tuned tile (`src/kernels/tune.rs`): above `TUNED_MIN_MACS` the projection and the
//! weight update run the tile CubeCL's autotuner chose, and give the portable path's result;
//! below it they run the 64×64 tile untimed.

use burn::tensor::{Device, Tensor};
use subtrack::RecoveryScaling;
use subtrack::testing::basis;
use subtrack::testing::kernels::{
    self, ColumnNorms, Limits, ProjectionTile, TUNED_MIN_MACS, TileChoice, Tuned, TunedTile,
};
use subtrack::testing::route::{self, RecoveryInputs, RouteRequest, UpdateCoefficients};

use crate::reference::Rng;
use crate::{assert_close, download, upload, wgpu_device};

use super::recovery::recovery_f64;
use super::update::UpdateCase;
use super::{orthonormal, stored};

/// Launches of `kernel` (`"project"` or `"update"`) at `sizes`: single launches, by 128×128
/// tiles, split-K launches and their reductions, and Burn's matmul with its flag kernel.
fn launches(kernel: &str, sizes: [usize; 3]) -> [u64; 5] {
    [
        kernels::launches(kernel, sizes),
        kernels::launches(&format!("{kernel}: 128×128 tiles"), sizes),
        kernels::launches(&format!("{kernel}_split"), sizes),
        kernels::launches(&format!("{kernel}_reduce"), sizes),
        kernels::launches(&format!("{kernel}: Burn matmul"), sizes),
    ]
}

/// `before` plus one launch of `chosen`, as [`launches`] counts them.
fn after_one(before: [u64; 5], chosen: Tuned) -> [u64; 5] {
    let [single, wide, splits, reduce, matmul] = before;
    match chosen {
        Tuned::Tile(chosen) => {
            let split = chosen.splits > 1;
            [
                single + u64::from(!split),
                wide + u64::from(chosen.tile == ProjectionTile::Block128),
                splits + u64::from(split),
                reduce + u64::from(split),
                matmul,
            ]
        }
        Tuned::Matmul => [single, wide, splits, reduce, matmul + 1],
        Tuned::Norms(norms) => panic!("{norms} chosen for a product"),
    }
}

/// The projection's and the update's tuners weigh Burn's matmul beside the WGSL tiles, and
/// compile and time only the candidates whose shaders fit the adapter's limits: with three
/// storage buffers (the projection's tiles bind four, the update's five) only Burn's matmul
/// remains (with its two-binding flag kernel for the projection); recovery's kernels need
/// four.
#[test]
fn the_tuner_weighs_burn_matmul_and_only_candidates_that_fit() {
    let sizes = [1100, 130, 120];
    assert_eq!(
        kernels::tuner_candidates("project", sizes, Limits::WEBGPU),
        [
            "64×64",
            "128×128",
            "64×64 split-K",
            "128×128 split-K",
            "Burn matmul"
        ]
    );
    let three = Limits {
        max_storage_buffers: 3,
        ..Limits::WEBGPU
    };
    assert_eq!(
        kernels::tuner_candidates("project", sizes, three),
        ["Burn matmul"]
    );
    assert_eq!(
        kernels::tuner_candidates("update", sizes, Limits::WEBGPU),
        ["64×64", "128×128", "Burn matmul"]
    );
    assert_eq!(
        kernels::tuner_candidates("update", sizes, three),
        ["Burn matmul"]
    );
    assert!(kernels::tuner_candidates("recovery", sizes, three).is_empty());
    // Workgroup memory: the tiled norms hold 4 KiB, the per-column ones none.
    let small = Limits {
        max_workgroup_bytes: 2 << 10,
        ..Limits::WEBGPU
    };
    assert_eq!(
        kernels::tuner_candidates("recovery", sizes, small),
        ["per-column norms"]
    );
}

/// A projection over the threshold (sizes not multiples of either tile, G as the right
/// case's transposed view) is tuned once: afterwards each call launches the chosen
/// candidate once, and every result matches the tensor ops and f64. One under it launches
/// 64×64 untimed.
#[test]
fn tuned_projection_runs_the_chosen_tile() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(61);
    let (a, r, b) = (1100, 130, 120);
    assert!(a * r * b >= TUNED_MIN_MACS, "the case must be tuned");
    let s = orthonormal(a, r, &mut rng);
    let g = rng.mat(a, b);
    let expected = s.t().mul(&g);
    let cpu = Device::flex();
    let portable = download(basis::project(&upload(&s, &cpu), &stored(&g, true, &cpu)));
    let (s_dev, g_dev) = (upload(&s, &device), stored(&g, true, &device));
    let sizes = [a, r, b];
    // The first call tunes (unless CubeCL's persistent cache already knows the shape).
    let first = download(route::project(&s_dev, &g_dev, RouteRequest::WGSL));
    let chosen = kernels::tuned_choice("project", sizes).expect("a candidate was chosen");
    let before = launches("project", sizes);
    let again = download(route::project(&s_dev, &g_dev, RouteRequest::WGSL));
    assert_eq!(
        launches("project", sizes),
        after_one(before, chosen),
        "after tuning, one launch of the chosen {chosen}"
    );
    for got in [&first, &again] {
        assert_close(got, &portable, 1e-5, format_args!("{chosen}: vs portable"));
        assert_close(got, &expected, 1e-5, format_args!("{chosen}: vs f64"));
    }
    // Over the threshold but with a = 200 rows, too few to split (128 at least per split):
    // both split-K candidates decline, and the tuner picks among the single launches.
    let (a, r, b) = (200, 300, 300);
    assert!(a * r * b >= TUNED_MIN_MACS);
    let short = orthonormal(a, r, &mut rng);
    let g = rng.mat(a, b);
    let got = download(route::project(
        &upload(&short, &device),
        &upload(&g, &device),
        RouteRequest::WGSL,
    ));
    assert_close(
        &got,
        &short.t().mul(&g),
        1e-5,
        format_args!("200×300×300 vs f64"),
    );
    let chosen = kernels::tuned_choice("project", [a, r, b]).expect("a candidate was chosen");
    if let Tuned::Tile(tile) = chosen {
        assert_eq!(tile.splits, 1, "no split-K candidate at a = {a}");
    }
    // Under the threshold: 64×64, one launch, nothing tuned.
    let (a, r, b) = (1100, 130, 117);
    assert!(a * r * b < TUNED_MIN_MACS);
    let g = rng.mat(a, b);
    let before = launches("project", [a, r, b]);
    // Read back: with fusion on, the launch runs when the stream is flushed.
    download(route::project(
        &s_dev,
        &upload(&g, &device),
        RouteRequest::WGSL,
    ));
    let untuned = TunedTile {
        tile: ProjectionTile::Block64,
        splits: 1,
    };
    assert_eq!(
        launches("project", [a, r, b]),
        after_one(before, Tuned::Tile(untuned))
    );
    assert_eq!(kernels::tuned_tile("project", [a, r, b]), None);
}

/// The weight update with recovery over the threshold, W stored transposed: the tuner's
/// candidates (the tiles and Burn's ops) write buffers of their own, so W is updated once,
/// as by the tensor ops and in f64; after tuning each call launches the chosen candidate
/// once.
#[test]
fn tuned_update_runs_the_chosen_tile() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(67);
    let (a, r, b) = (1100, 130, 120);
    let case = UpdateCase::new(a, r, b, true, &mut rng);
    let coefficients = UpdateCoefficients {
        alpha: 0.03,
        decay: 0.999,
        scale: 0.25,
    };
    let expected = case.expected(coefficients, true);
    let portable = case.run(coefficients, true, None, &Device::flex());
    let first = case.run(coefficients, true, None, &device);
    let chosen = kernels::tuned_choice("update", [a, r, b]).expect("a candidate was chosen");
    if let Tuned::Tile(tile) = chosen {
        assert_eq!(tile.splits, 1, "the update has no split-K candidate");
    }
    let before = launches("update", [a, r, b]);
    let again = case.run(coefficients, true, None, &device);
    assert_eq!(
        launches("update", [a, r, b]),
        after_one(before, chosen),
        "after tuning, one launch of the chosen {chosen}"
    );
    for got in [&first, &again] {
        assert_close(got, &portable, 1e-5, format_args!("{chosen}: vs portable"));
        assert_close(got, &expected, 1e-5, format_args!("{chosen}: vs f64"));
    }
}

/// Recovery scaling over the threshold (G as the right case's transposed view, with the
/// limiter): the autotuner picks a column-norm kernel once; afterwards each call launches
/// that kernel once, and ψ and ‖Λ‖ match the tensor ops and f64. Under the threshold the
/// per-column kernel runs untimed.
#[test]
fn tuned_recovery_runs_the_chosen_norms() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(71);
    let (zeta, scale, variant) = (1.01, 0.25, RecoveryScaling::Code);
    for (a, r, b) in [(1100, 130, 120), (1100, 130, 117)] {
        let tuned = a * r * b >= TUNED_MIN_MACS;
        let s = orthonormal(a, r, &mut rng);
        let g = rng.mat(a, b);
        let g_low = s.t().mul(&g);
        let n = rng.mat(r, b);
        let previous = 0.5 * recovery_f64(&s, &g, &n, scale, zeta, None).1;
        let (psi_f64, norm_f64) = recovery_f64(&s, &g, &n, scale, zeta, Some(previous));
        let run = |dev: &Device| {
            let prev = Tensor::<1>::from_floats([previous as f32], dev);
            let (grad, g_low, n) = (stored(&g, true, dev), upload(&g_low, dev), upload(&n, dev));
            let inputs = RecoveryInputs {
                grad: &grad,
                transposed: true,
                grad_sq: None,
                g_low: &g_low,
                normalized: &n,
                previous: Some(&prev),
            };
            let out = route::recovery(inputs, variant, scale, zeta, None, RouteRequest::WGSL);
            let norm = out.norm.into_scalar::<f32>() as f64;
            (download(out.scaled_phi), norm)
        };
        let sizes = [a, r, b];
        let counts = || {
            [
                kernels::launches("recovery", sizes),
                kernels::launches("recovery: tiled", sizes),
            ]
        };
        // The first call tunes (unless CubeCL's persistent cache already knows the shape).
        let first = run(&device);
        let chosen = kernels::tuned_norms(sizes);
        assert_eq!(chosen.is_some(), tuned, "{sizes:?}: tuned or not");
        let chosen = chosen.unwrap_or(ColumnNorms::PerColumn);
        let [before, tiled] = counts();
        let again = run(&device);
        assert_eq!(
            counts(),
            [before + 1, tiled + u64::from(chosen == ColumnNorms::Tiled)],
            "{sizes:?}: one launch of the chosen {chosen}"
        );
        let (psi_cpu, norm_cpu) = run(&Device::flex());
        for (psi, norm) in [&first, &again] {
            assert_close(psi, &psi_cpu, 1e-5, format_args!("{chosen}: ψ vs portable"));
            assert_close(psi, &psi_f64, 1e-5, format_args!("{chosen}: ψ vs f64"));
            for (what, reference) in [("portable", norm_cpu), ("f64", norm_f64)] {
                assert!(
                    (norm - reference).abs() < 1e-5 * reference,
                    "{chosen}: ‖Λ‖ {norm} vs {what} {reference}"
                );
            }
        }
    }
}

/// Burn's ops pinned in place of the tiles (the autotuner's other candidate, which lavapipe
/// need not pick): the projection of a transposed-view G and the update with recovery of a
/// transposed W match the tensor ops and f64, the flag kernel finds a NaN in G on the
/// device, and a skipped update returns W bit for bit. No WGSL tile is launched.
#[test]
fn pinned_burn_matmul_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(71);
    let (a, r, b) = (301, 21, 91);
    let s = orthonormal(a, r, &mut rng);
    let mut g = rng.mat(a, b);
    let counts = |kernel: &str| {
        [
            kernels::launches(kernel, [a, r, b]),
            kernels::launches(&format!("{kernel}: Burn matmul"), [a, r, b]),
        ]
    };
    let (project_before, update_before) = (counts("project"), counts("update"));
    kernels::set_projection_tile(TileChoice::Matmul);
    let s_dev = upload(&s, &device);
    let (g_low, flag) =
        route::project_checked(&s_dev, &stored(&g, true, &device), RouteRequest::WGSL);
    let portable = download(basis::project(
        &upload(&s, &Device::flex()),
        &upload(&g, &Device::flex()),
    ));
    assert_close(
        &download(g_low.clone()),
        &portable,
        1e-5,
        "Burn matmul vs portable",
    );
    assert_close(
        &download(g_low.clone()),
        &s.t().mul(&g),
        1e-5,
        "Burn matmul vs f64",
    );
    assert_eq!(flag.into_data().try_to_vec::<f32>().unwrap(), [1.0]);
    g.data[5 * b + 7] = f64::NAN;
    let (_, flag) = route::project_checked(&s_dev, &stored(&g, true, &device), RouteRequest::WGSL);
    assert_eq!(
        flag.into_data().try_to_vec::<f32>().unwrap(),
        [0.0],
        "NaN found"
    );

    let case = UpdateCase::new(a, r, b, true, &mut rng);
    let coefficients = UpdateCoefficients {
        alpha: 0.03,
        decay: 0.999,
        scale: 0.25,
    };
    let updated = case.run(coefficients, true, Some(1.0), &device);
    let skipped = case.run(coefficients, true, Some(0.0), &device);
    kernels::set_projection_tile(TileChoice::Tuned);
    assert_close(
        &updated,
        &case.expected(coefficients, true),
        1e-5,
        "update vs f64",
    );
    assert_eq!(
        skipped.data,
        super::upload_roundtrip(&case.weight),
        "a skipped update"
    );
    assert_eq!(
        counts("project"),
        [project_before[0], project_before[1] + 2]
    );
    assert_eq!(counts("update"), [update_before[0], update_before[1] + 2]);
}
