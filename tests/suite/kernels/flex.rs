//! The fused CPU loops on `flex` (`src/route/flex/loops.rs`).

use burn::tensor::Device;
use subtrack::ProjectionAware;
use subtrack::testing::kernels;
use subtrack::testing::moments::AdamParams;
use subtrack::testing::route::{self, Rotation, RouteRequest, UpdateCoefficients, UpdateInputs};

use crate::reference::{Mat, Rng};
use crate::{assert_close, download, upload};

use super::adam::{adam_f64, adam_inputs, assert_adam_close};
use super::update::UpdateCase;
use super::{orthonormal, stored, upload_roundtrip};

/// The fused CPU update on `flex` against the tensor-op path on the same device and the f64
/// formula: both layouts, G a view or stored, with and without recovery and decay.
#[test]
fn fused_cpu_update_matches_the_portable_path() {
    let mut rng = Rng::new(29);
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
                    let fused = case.run_on(c, recovery, None, &cpu, RouteRequest::CPU);
                    assert_eq!(
                        kernels::launches("update: flex", [a, r, b]),
                        before + 1,
                        "{name}: the fused loop did not run"
                    );
                    let portable = case.run_on(c, recovery, None, &cpu, RouteRequest::PORTABLE);
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
    let mut rng = Rng::new(37);
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
            let stepped = download(route::update(inputs, c, None, RouteRequest::CPU));
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
    let mut rng = Rng::new(31);
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
            let fused = download(route::column_sq_fused(&x, transposed, RouteRequest::CPU));
            assert_eq!(kernels::launches("column_sq: flex", [a, 0, b]), before + 1);
            let portable = download(route::column_sq_fused(
                &x,
                transposed,
                RouteRequest::PORTABLE,
            ));
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
    let mut rng = Rng::new(41);
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
            let fused = download(route::project(&basis, &grad, RouteRequest::CPU));
            assert_eq!(
                kernels::launches("project: flex", [a, r, b]),
                before + 1,
                "{a}×{r}×{b} {what}: the fused projection did not run"
            );
            let portable = download(route::project(&basis, &grad, RouteRequest::PORTABLE));
            assert_eq!((fused.rows, fused.cols), (r, b));
            let case = format!("{a}×{r}×{b} {what}");
            assert_close(&fused, &portable, 1e-6, format_args!("{case}: vs portable"));
            assert_close(&fused, &expected, 1e-5, format_args!("{case}: vs f64"));
            // With the step flag: the same fused projection, and G's flag from a pass of its
            // own (1 here: every element is finite).
            let (checked, flag) = route::project_checked(&basis, &grad, RouteRequest::CPU);
            assert_eq!(
                kernels::launches("project: flex", [a, r, b]),
                before + 2,
                "{case}: project_checked took the fused projection"
            );
            assert_eq!(
                download(checked).data,
                fused.data,
                "{case}: checked vs plain"
            );
            assert_eq!(flag.into_scalar::<f32>(), 1.0, "{case}: flag");
        }
    }
    // A NaN or ±∞ anywhere in G gives flag 0 on the fused route too.
    let (basis, g) = (orthonormal(40, 6, &mut rng), rng.mat(40, 70));
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut g_bad = g.clone();
        g_bad.data[39 * 70 + 69] = bad;
        let (_, flag) = route::project_checked(
            &upload(&basis, &cpu),
            &upload(&g_bad, &cpu),
            RouteRequest::CPU,
        );
        assert_eq!(flag.into_scalar::<f32>(), 0.0, "{bad} in G");
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
    let mut rng = Rng::new(43);
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
                let out = route::adam(
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
                    if fused {
                        RouteRequest::CPU
                    } else {
                        RouteRequest::PORTABLE
                    },
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
