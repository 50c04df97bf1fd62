//! The subspace diagnostics against an f64 computation from the same G and bases, and their
//! cost to the step: no read-back added on the WGSL route.

use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor};
use subtrack::{ProjectedState, SubTrackConfig, SubTrackState, SubspaceDiagnostics};

use crate::reference::{Mat, Rng, jacobi_eigen};
use crate::{devices, download, presets, upload, wgpu_device};

/// What the f64 side needs of one update: the canonical G, S before and S' after, N and
/// Λ_prev of the step.
struct Seen {
    g: Mat,
    old: Mat,
    new: Mat,
    normalized: Mat,
    previous: Option<f64>,
}

fn projected(state: &Option<SubTrackState<2>>) -> &ProjectedState {
    match state {
        Some(SubTrackState::Projected(s)) => s,
        _ => panic!("expected a projected state"),
    }
}

fn scalar(t: &Tensor<1>) -> f64 {
    download(t.clone().unsqueeze::<2>()).data[0]
}

/// The diagnostics of one update in f64 (docs/algorithm.md §4, §7), from definitions: the
/// residual formed explicitly, σ from the tangent's Gram matrix, the principal angle from
/// S − S'·S'ᵀ·S, and Λ formed explicitly for the limiter.
fn expected(seen: &Seen, config: &SubTrackConfig) -> SubspaceDiagnostics {
    let (g, s, s_new) = (&seen.g, &seen.old, &seen.new);
    let coeff = s.t().mul(g);
    let outside = g.sub(&s.mul(&coeff));
    let residual_fraction = outside.norm().powi(2) / g.norm().powi(2);
    let tangent = outside.mul(&coeff.t()).scale(-2.0);
    let sigma = jacobi_eigen(&tangent.t().mul(&tangent)).0[0]
        .max(0.0)
        .sqrt();
    let theta = config.max_theta.map_or(config.step_size * sigma, |max| {
        (config.step_size * sigma).min(max)
    });
    let d = s.sub(&s_new.mul(&s_new.t().mul(s)));
    let top = jacobi_eigen(&d.t().mul(&d)).0[0];
    let principal_angle = top.clamp(0.0, 1.0).sqrt().asin();
    let limiter_scale = (config.recovery_scaling != subtrack::RecoveryScaling::Off).then(|| {
        let g_low = s_new.t().mul(g);
        let k = match config.recovery_scaling {
            subtrack::RecoveryScaling::Code => config.scale,
            _ => 1.0,
        };
        let mut lambda = g.sub(&s_new.mul(&g_low).scale(k));
        for j in 0..g.cols {
            let nn = seen
                .normalized
                .col(j)
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt();
            let gn = g_low.col(j).iter().map(|x| x * x).sum::<f64>().sqrt();
            for i in 0..g.rows {
                lambda.data[i * g.cols + j] *= nn / (gn + 1e-8);
            }
        }
        seen.previous.map_or(1.0, |prev| {
            (config.norm_growth_limit * prev / lambda.norm()).min(1.0)
        })
    });
    let tracked = config.subspace_update == subtrack::SubspaceUpdate::Geodesic;
    SubspaceDiagnostics {
        shape: [0, 0],
        step: 0,
        sigma: tracked.then_some(sigma),
        theta: tracked.then_some(theta),
        principal_angle,
        residual_fraction,
        limiter_scale,
    }
}

/// Step a `rows`×`cols` weight `steps` times with the diagnostics on; returns the
/// diagnostics taken and what the f64 side needs of each update.
fn run(
    config: &SubTrackConfig,
    [rows, cols]: [usize; 2],
    steps: usize,
    device: &Device,
) -> (Vec<SubspaceDiagnostics>, Vec<Seen>) {
    let optim = config.build().unwrap();
    let report = optim.report();
    report.set_subspace_diagnostics(true);
    let mut rng = Rng::new(rows as u64 * 31 + cols as u64);
    let target = rng.mat(rows, cols);
    let mut w = upload(&rng.mat(rows, cols), device);
    let mut state: Option<SubTrackState<2>> = None;
    let mut seen = Vec::new();
    for k in 0..steps {
        let grad = download(w.clone())
            .sub(&target)
            .add(&rng.mat(rows, cols).scale(0.5));
        let g = if rows < cols { grad.clone() } else { grad.t() };
        let update = k > 0 && k % config.update_interval == 0;
        let before = update.then(|| {
            let s = projected(&state);
            (
                download(s.basis.clone()),
                s.limiter_norm.as_ref().map(scalar),
            )
        });
        let (nw, ns) = optim.step(0.01, w, upload(&grad, device), state);
        (w, state) = (nw, ns);
        if let Some((old, previous)) = before {
            let s = projected(&state);
            let (m, v) = (download(s.moment_1.clone()), download(s.moment_2.clone()));
            let normalized = m.zip(&v, |m, v| m / (v.sqrt() + config.epsilon));
            let new = download(s.basis.clone());
            seen.push(Seen {
                g,
                old,
                new,
                normalized,
                previous,
            });
        }
    }
    (report.take_subspace_diagnostics(), seen)
}

#[track_caller]
fn assert_near(got: f64, want: f64, tol: f64, what: &str) {
    let err = (got - want).abs() / want.abs().max(1.0);
    assert!(
        err <= tol,
        "{what}: {got} against f64 {want} (error {err:e}, limit {tol:e})"
    );
}

#[test]
fn diagnostics_agree_with_f64_from_the_same_gradients_and_bases() {
    for device in devices() {
        for (name, preset) in presets() {
            let config = preset
                .with_rank(4)
                .with_update_interval(3)
                .with_step_size(2e-3);
            // Left (24×40) and right (40×24) layouts; updates at k = 3, 6 and 9.
            for shape in [[24, 40], [40, 24]] {
                let what = format!("{name} {shape:?} on {device:?}");
                let (got, seen) = run(&config, shape, 10, &device);
                assert_eq!(got.len(), 3, "{what}: one entry per subspace update");
                for (i, (got, seen)) in got.iter().zip(&seen).enumerate() {
                    let what = format!("{what}, update {i}");
                    let want = expected(seen, &config);
                    assert_eq!(got.shape, shape, "{what}: shape");
                    assert_eq!(got.step, 3 * (i + 1), "{what}: step");
                    assert!(
                        want.residual_fraction > 1e-3 && want.principal_angle > 1e-3,
                        "{what}: the test wants a basis that moves ({want:?})"
                    );
                    let tol = 1e-5;
                    assert_near(got.residual_fraction, want.residual_fraction, tol, &what);
                    assert_near(got.principal_angle, want.principal_angle, tol, &what);
                    match (got.sigma, want.sigma, got.theta, want.theta) {
                        (Some(s), Some(ws), Some(t), Some(wt)) => {
                            assert_near(s / ws, 1.0, tol, &format!("{what}: σ"));
                            assert_near(t, wt, tol, &format!("{what}: θ"));
                            // One rank-1 rotation: its principal angle is θ (folded).
                            let folded = wt.rem_euclid(std::f64::consts::PI);
                            let folded = folded.min(std::f64::consts::PI - folded);
                            assert_near(got.principal_angle, folded, tol, &what);
                        }
                        (None, None, None, None) => {}
                        other => panic!("{what}: σ and θ {other:?}"),
                    }
                    match (got.limiter_scale, want.limiter_scale) {
                        (Some(f), Some(wf)) => {
                            assert!(f > 0.0 && f <= 1.0, "{what}: limiter scale {f}");
                            assert_near(f, wf, tol, &format!("{what}: limiter scale"));
                        }
                        (None, None) => {}
                        other => panic!("{what}: limiter scale {other:?}"),
                    }
                }
            }
        }
    }
}

/// Off by default, nothing is formed or kept; taking empties the report.
#[test]
fn diagnostics_are_off_by_default_and_taken_once() {
    let device = Device::flex();
    let config = SubTrackConfig::subtrack_plus_plus()
        .with_rank(4)
        .with_update_interval(2);
    let optim = config.build().unwrap();
    let report = optim.report();
    assert!(!report.subspace_diagnostics());
    let mut rng = Rng::new(3);
    let mut w = upload(&rng.mat(24, 40), &device);
    let mut state = None;
    for k in 0..9 {
        if k == 5 {
            report.set_subspace_diagnostics(true);
        }
        let (nw, ns) = optim.step(0.01, w, upload(&rng.mat(24, 40), &device), state);
        (w, state) = (nw, ns);
    }
    let taken = report.take_subspace_diagnostics();
    let steps: Vec<usize> = taken.iter().map(|d| d.step).collect();
    assert_eq!(steps, [6, 8], "only the updates after turning them on");
    assert_eq!(report.subspace_updates(), 4);
    assert!(report.take_subspace_diagnostics().is_empty());
}

/// On the WGSL route the diagnostics add no read-back to any step: the per-step counts
/// are the same with them on as off (0 between subspace updates), and the values come
/// back only when taken.
#[test]
fn diagnostics_add_no_read_back_on_the_wgsl_route() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let reads = |diagnose: bool| {
        let config = SubTrackConfig::subtrack_plus_plus()
            .with_rank(4)
            .with_update_interval(4)
            .with_wgsl_kernels(true);
        let optim = config.build().unwrap();
        let report = optim.report();
        report.set_subspace_diagnostics(diagnose);
        let mut rng = Rng::new(17);
        let mut w = upload(&rng.mat(24, 40), &device);
        let mut state = None;
        let mut per_step = Vec::new();
        for _ in 0..13 {
            let before = report.host_reads();
            let (nw, ns) = optim.step(0.01, w, upload(&rng.mat(24, 40), &device), state);
            (w, state) = (nw, ns);
            per_step.push(report.host_reads() - before);
        }
        (per_step, report.take_subspace_diagnostics())
    };
    let (off, none) = reads(false);
    let (on, taken) = reads(true);
    assert_eq!(on, off, "read-backs per step, diagnostics on against off");
    assert!(
        off[1..].iter().all(|&r| r == 0),
        "steps after the first read back: {off:?}"
    );
    assert!(none.is_empty());
    let steps: Vec<usize> = taken.iter().map(|d| d.step).collect();
    assert_eq!(steps, [4, 8, 12]);
    assert!(
        taken
            .iter()
            .all(|d| d.sigma.is_some() && d.residual_fraction.is_finite()),
        "{taken:?}"
    );
}
