//! Invariants of the geodesic update (docs/algorithm.md §4) and GaLore's SVD refresh (§6).

use burn::optim::Optimizer;
use burn::tensor::Device;
use subtrack::SubTrackConfig;
use subtrack::SubTrackState;
use subtrack::testing::basis::{orthonormality_drift, top_singular_basis};
use subtrack::testing::geodesic::{geodesic_step, tangent};

use crate::reference::{Mat, Rng, jacobi_eigen, top_eigvecs};
use crate::{devices, download, upload};

/// A random a×r orthonormal basis (Gram–Schmidt in f64).
fn random_basis(rng: &mut Rng, a: usize, r: usize) -> Mat {
    let x = rng.mat(a, r);
    let mut q = Mat::zeros(a, r);
    for j in 0..r {
        let mut v = x.col(j);
        for k in 0..j {
            let qk = q.col(k);
            let d: f64 = v.iter().zip(&qk).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(&qk).for_each(|(x, q)| *x -= d * q);
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for (i, x) in v.iter().enumerate() {
            q.data[i * r + j] = x / n;
        }
    }
    q
}

/// F(S) = ‖G − S·SᵀG‖²_F.
fn residual(s: &Mat, g: &Mat) -> f64 {
    g.sub(&s.mul(&s.t().mul(g))).norm().powi(2)
}

fn max_abs_diff(x: &Mat, y: &Mat) -> f64 {
    x.sub(y).data.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Cosines of the principal angles between two orthonormal bases' spans, ascending.
fn principal_cosines(x: &Mat, y: &Mat) -> Vec<f64> {
    let c = x.t().mul(y);
    let (vals, _) = jacobi_eigen(&c.t().mul(&c));
    let mut cos: Vec<f64> = vals.iter().map(|v| v.max(0.0).sqrt()).collect();
    cos.sort_by(f64::total_cmp);
    cos
}

#[test]
fn orthonormal_after_every_update_and_closed_form_change_of_basis() {
    for device in devices() {
        let mut rng = Rng::new(1);
        let mut s = upload(&random_basis(&mut rng, 24, 5), &device);
        for _ in 0..20 {
            let g = rng.mat(24, 40);
            let old = download(s.clone());
            let step = geodesic_step(&s, &upload(&g, &device), 0.05, None, 1e-5);
            let new = download(step.basis.clone());
            let drift = max_abs_diff(&new.t().mul(&new), &Mat::identity(5));
            assert!(
                drift < 1e-5,
                "drift {drift:e} after one update on {device:?}"
            );
            // C = S'ᵀS = I − (1 − cos θ)·v·vᵀ, returned in closed form.
            let c = step
                .change_of_basis
                .expect("a random gradient moves the basis");
            let c = Mat {
                rows: 5,
                cols: 5,
                data: c,
            };
            let err = max_abs_diff(&c, &new.t().mul(&old));
            assert!(err < 1e-5, "closed-form C off by {err:e}");
            assert!(step.theta > 0.0 && step.sigma > 0.0);
            s = step.basis;
        }
    }
}

#[test]
fn drift_stays_bounded_over_10000_updates() {
    let device = Device::flex();
    let mut rng = Rng::new(2);
    let (a, b, r) = (16, 24, 4);
    let mut s = upload(&random_basis(&mut rng, a, r), &device);
    let g_fixed: Vec<Mat> = (0..16).map(|_| rng.mat(a, b)).collect();
    let tolerance = 1e-5;
    let mut worst: f64 = 0.0;
    let mut reorth = 0;
    for i in 0..10_000 {
        let step = geodesic_step(&s, &upload(&g_fixed[i % 16], &device), 0.3, None, tolerance);
        reorth += step.reorthonormalized as usize;
        s = step.basis;
        let (drift, _) = orthonormality_drift(&s);
        worst = worst.max(drift);
        assert!(
            drift <= tolerance,
            "update {i}: drift {drift:e} > {tolerance:e}"
        );
    }
    eprintln!("10,000 geodesic updates: worst drift {worst:e}, {reorth} re-orthonormalisations");
}

#[test]
fn small_theta_descends_and_the_opposite_sign_ascends() {
    for device in devices() {
        let mut rng = Rng::new(3);
        for _ in 0..5 {
            let s = random_basis(&mut rng, 20, 4);
            let g = rng.mat(20, 30);
            let (st, gt) = (upload(&s, &device), upload(&g, &device));
            let step = geodesic_step(&st, &gt, 1e-4, None, 1e-5);
            assert!(step.theta < 0.05, "θ = {} is not small", step.theta);
            let new = download(step.basis);
            let (f0, f1) = (residual(&s, &g), residual(&new, &g));
            assert!(f1 < f0, "F rose from {f0} to {f1}");
            // The same step with +sin θ (moving along +∇F) must increase F.
            let grad = download(tangent(&st, &gt));
            let (vals, vecs) = jacobi_eigen(&grad.t().mul(&grad));
            let sigma = vals[0].sqrt();
            let v = Mat::from_fn(4, 1, |i, _| vecs.at(i, 0));
            let u = grad.mul(&v).scale(1.0 / sigma);
            let th = 1e-4 * sigma;
            let wrong = s
                .add(&s.mul(&v).mul(&v.t()).scale(th.cos() - 1.0))
                .add(&u.mul(&v.t()).scale(th.sin()));
            assert!(
                residual(&wrong, &g) > f0,
                "the +sin θ direction should ascend"
            );
        }
    }
}

#[test]
fn tangent_is_orthogonal_to_the_basis() {
    for device in devices() {
        let mut rng = Rng::new(4);
        let s = random_basis(&mut rng, 18, 3);
        let g = rng.mat(18, 25);
        let grad = download(tangent(&upload(&s, &device), &upload(&g, &device)));
        let sg = s.t().mul(&grad);
        assert!(sg.norm() < 1e-4 * grad.norm(), "Sᵀ∇F = {:e}", sg.norm());
        // ∇F = −2·R·Aᵀ with the residual R = G − S·SᵀG, computed here in f64.
        let want = g
            .sub(&s.mul(&s.t().mul(&g)))
            .mul(&s.t().mul(&g).t())
            .scale(-2.0);
        assert!(grad.sub(&want).norm() < 1e-5 * want.norm());
    }
}

#[test]
fn sign_flips_of_the_basis_carry_through() {
    for device in devices() {
        let mut rng = Rng::new(5);
        let s = random_basis(&mut rng, 15, 4);
        let g = rng.mat(15, 22);
        let d = [1.0, -1.0, -1.0, 1.0];
        let sd = Mat::from_fn(15, 4, |i, j| s.at(i, j) * d[j]);
        let gt = upload(&g, &device);
        let plain = download(geodesic_step(&upload(&s, &device), &gt, 0.05, None, 1e-5).basis);
        let flipped = download(geodesic_step(&upload(&sd, &device), &gt, 0.05, None, 1e-5).basis);
        let want = Mat::from_fn(15, 4, |i, j| plain.at(i, j) * d[j]);
        assert!(max_abs_diff(&flipped, &want) < 1e-5);
    }
}

#[test]
fn sigma_zero_is_a_no_op() {
    for device in devices() {
        let (a, b, r) = (10, 16, 3);
        let s = Mat::from_fn(a, r, |i, j| if i == j { 1.0 } else { 0.0 });
        let mut rng = Rng::new(6);
        let coeffs = rng.mat(r, b);
        let g = s.mul(&coeffs); // G lies in span(S)
        for g in [g, Mat::zeros(a, b)] {
            let st = upload(&s, &device);
            let step = geodesic_step(&st, &upload(&g, &device), 10.0, None, 1e-5);
            assert!(step.change_of_basis.is_none());
            assert_eq!(step.theta, 0.0);
            assert_eq!(download(step.basis), s);
        }
    }
}

#[test]
fn svd_refresh_spans_the_top_singular_subspace() {
    for device in devices() {
        let mut rng = Rng::new(8);
        for (a, b, r) in [(12, 30, 4), (25, 40, 6)] {
            let g = rng.mat(a, b);
            let got = download(top_singular_basis(&upload(&g, &device), r));
            let want = top_eigvecs(&g.mul(&g.t()), r);
            let cos = principal_cosines(&got, &want);
            assert!(
                cos[0] > 1.0 - 1e-5,
                "smallest principal cosine {} on {device:?}",
                cos[0]
            );
        }
    }
    // Inside the optimizer: after the refresh at step T, S spans the top-r subspace of that
    // step's gradient (right-projected here: the basis is of Gᵀ).
    let device = Device::flex();
    let optim = SubTrackConfig::galore()
        .with_rank(3)
        .with_update_interval(5)
        .build()
        .unwrap();
    let mut rng = Rng::new(9);
    let mut w = upload(&rng.mat(20, 11), &device);
    let mut state = None;
    let mut last = Mat::zeros(1, 1);
    for _ in 0..6 {
        last = rng.mat(20, 11);
        let (nw, ns) = optim.step(0.01, w, upload(&last, &device), state);
        (w, state) = (nw, ns);
    }
    let Some(SubTrackState::Projected(p)) = state else {
        panic!("not projected")
    };
    assert_eq!(p.step, 6);
    let gt = last.t();
    let cos = principal_cosines(&download(p.basis), &top_eigvecs(&gt.mul(&gt.t()), 3));
    assert!(
        cos[0] > 1.0 - 1e-5,
        "refreshed basis off the SVD subspace: {cos:?}"
    );
}

/// G = U·diag(σ)·Vᵀ + noise·N with orthonormal U (a×r), V (b×r) and σ = 20, 19, … (distinct),
/// so that the top-r singular subspace is U's up to the noise.
fn gapped(rng: &mut Rng, a: usize, b: usize, r: usize, noise: f64) -> (Mat, Mat) {
    let u = random_basis(rng, a, r);
    let v = random_basis(rng, b, r);
    let sigma = Mat::from_fn(r, r, |i, j| if i == j { 20.0 - i as f64 } else { 0.0 });
    let g = u.mul(&sigma).mul(&v.t()).add(&rng.mat(a, b).scale(noise));
    (g, u)
}

#[test]
fn randomized_basis_matches_the_exact_one_on_a_gapped_spectrum() {
    let device = Device::flex();
    let mut rng = Rng::new(61);
    let (a, b, r) = (120, 200, 6);
    let (g, _) = gapped(&mut rng, a, b, r, 0.05);
    let g_dev = upload(&g, &device);
    let exact = download(subtrack::testing::basis::exact_singular_basis(&g_dev, r));
    let randomized = download(subtrack::testing::basis::randomized_singular_basis(
        &g_dev, r, 4,
    ));
    // Both have canonical signs, so the columns themselves agree.
    let err = max_abs_diff(&randomized, &exact);
    assert!(err < 1e-4, "randomized vs exact singular vectors: {err}");
    let (drift, _) = orthonormality_drift(&upload(&randomized, &device));
    assert!(drift < 1e-5, "drift {drift}");
    // A zero gradient falls back to the exact path and still gives orthonormal columns.
    let zero = subtrack::testing::basis::randomized_singular_basis(
        &upload(&Mat::zeros(a, b), &device),
        r,
        2,
    );
    let (drift, _) = orthonormality_drift(&zero);
    assert!(drift < 1e-5, "zero gradient: drift {drift}");
}

/// A full-rank spectrum decaying by a decade every six values, so that the power iterates
/// are ill-conditioned (σ₁/σ₁₆ ≈ 300): the single-pass Cholesky-QR of the intermediate
/// iterates still gives the top-r singular vectors of an independent f64 computation
/// (Jacobi on G·Gᵀ), to f32 precision.
#[test]
fn randomized_basis_is_accurate_on_a_decaying_spectrum() {
    let device = Device::flex();
    let mut rng = Rng::new(71);
    let (a, b, r) = (120, 200, 8);
    let u = random_basis(&mut rng, a, a);
    let v = random_basis(&mut rng, b, a);
    let sigma = Mat::from_fn(a, a, |i, j| {
        if i == j {
            10f64.powf(-(i as f64) / 6.0)
        } else {
            0.0
        }
    });
    let g = u.mul(&sigma).mul(&v.t());
    let expected = top_eigvecs(&g.mul(&g.t()), r);
    let g_dev = upload(&g, &device);
    let randomized = download(subtrack::testing::basis::randomized_singular_basis(
        &g_dev, r, 6,
    ));
    let captured = randomized.t().mul(&expected).norm().powi(2);
    assert!(
        (captured - r as f64).abs() < 1e-5,
        "captured {captured} of {r}"
    );
    // Both have canonical signs, so the columns themselves agree.
    let err = max_abs_diff(&randomized, &expected);
    assert!(err < 1e-4, "randomized vs f64 singular vectors: {err}");
    // It did not fall back to the exact path, whose f32 result differs in the last bits.
    let exact = download(subtrack::testing::basis::exact_singular_basis(&g_dev, r));
    assert!(
        max_abs_diff(&randomized, &exact) > 0.0,
        "fell back to the exact SVD"
    );
    let (drift, _) = orthonormality_drift(&upload(&randomized, &device));
    assert!(drift < 1e-5, "drift {drift}");
}

#[test]
fn top_singular_basis_goes_randomized_past_the_exact_limit() {
    // a = 1100 > 1024: the randomized path; it must find the exact top singular vectors
    // (the noise moves them off U's by about 0.05 rad, the same for both).
    let device = Device::flex();
    let mut rng = Rng::new(67);
    let (a, b, r) = (subtrack::testing::basis::EXACT_SVD_MAX_SIDE + 76, 1200, 8);
    let (g, u) = gapped(&mut rng, a, b, r, 0.01);
    let g_dev = upload(&g, &device);
    let s = download(top_singular_basis(&g_dev, r));
    let exact = download(subtrack::testing::basis::exact_singular_basis(&g_dev, r));
    let err = max_abs_diff(&s, &exact);
    assert!(err < 1e-4, "randomized vs exact singular vectors: {err}");
    // ‖SᵀU‖²_F ≈ r: the subspace is U's up to the noise.
    let captured = s.t().mul(&u).norm().powi(2);
    assert!(
        (captured - r as f64).abs() < 1e-2,
        "captured {captured} of {r}"
    );
    let (drift, _) = orthonormality_drift(&upload(&s, &device));
    assert!(drift < 1e-5, "drift {drift}");
}
