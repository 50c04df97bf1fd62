//! The geodesic tracking step (`tangent.wgsl`, `top_singular.wgsl`, `geodesic_step.wgsl`,
//! `reorthonormalize.wgsl`).

use burn::tensor::{Device, Tensor};
use subtrack::testing::geodesic;
use subtrack::testing::kernels;
use subtrack::testing::route::{self};

use crate::reference::{Mat, Rng};
use crate::{assert_close, download, upload, wgpu_device};

use super::{orthonormal, upload_roundtrip};

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
    let mut rng = Rng::new(47);
    let cpu = Device::flex();
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
        // The host step (the portable path) on the CPU backend: on lavapipe, Burn's ops
        // would compile and autotune for each shape (most of this test's cold time).
        let (s_cpu, g_cpu) = (upload(&s, &cpu), upload(&g, &cpu));
        let eta = target / geodesic::geodesic_step(&s_cpu, &g_cpu, 1.0, None, tol).sigma;
        let host = geodesic::geodesic_step(&s_cpu, &g_cpu, eta, max_theta, tol);
        let before = kernels::launches("geodesic_step", [a, r, r]);
        let got = route::track(&s_dev, &g_dev, eta, max_theta, tol).expect("the kernels run");
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
    let got = route::track(&upload(&s, &device), &upload(&g, &device), 10.0, None, 1e-5).unwrap();
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
            route::track(&upload(&s, &device), &upload(g, &device), 1e-2, None, 1e-5).unwrap();
        assert_eq!(scalar(step.flag), if finite { 1.0 } else { 0.0 });
        assert_eq!(scalar(step.moved), 0.0);
        assert_eq!(download(step.basis).data, upload_roundtrip(&s));
        let identity = Mat::from_fn(r, r, |i, j| if i == j { 1.0 } else { 0.0 });
        assert_eq!(download(step.change_of_basis).data, identity.data);
    }
}
