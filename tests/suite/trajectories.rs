//! 50-step trajectories of each preset against the independent f64 reference.

use burn::optim::Optimizer;
use burn::tensor::Device;
use subtrack::testing::kernels;
use subtrack::{ProjectionAware, RecoveryScaling, SubTrackConfig, SubspaceUpdate};

use crate::reference::{self, Hyper, Mat, Rng, Update, Variant};
use crate::{assert_close, devices, download, upload};

fn hyper(c: &SubTrackConfig) -> Hyper {
    let variant = |p: bool, code: bool| match (p, code) {
        (false, _) => Variant::Off,
        (true, false) => Variant::Paper,
        (true, true) => Variant::Code,
    };
    Hyper {
        rank: c.rank,
        interval: c.update_interval,
        eta: c.step_size,
        max_theta: c.max_theta,
        scale: c.scale,
        beta_1: c.beta_1,
        beta_2: c.beta_2,
        eps: c.epsilon,
        wd: c.weight_decay,
        update: match c.subspace_update {
            SubspaceUpdate::Geodesic => Update::Geodesic,
            SubspaceUpdate::Svd => Update::Svd,
        },
        aware: variant(
            c.projection_aware != ProjectionAware::Off,
            c.projection_aware == ProjectionAware::Code,
        ),
        recovery: variant(
            c.recovery_scaling != RecoveryScaling::Off,
            c.recovery_scaling == RecoveryScaling::Code,
        ),
        zeta: c.norm_growth_limit,
    }
}

/// Run `steps` steps of G = (W − T) + 0.5·E_t on both sides; returns (ΔW crate, ΔW ref).
pub fn run(
    config: &SubTrackConfig,
    rows: usize,
    cols: usize,
    steps: usize,
    device: &Device,
) -> (Mat, Mat) {
    let optim = config.build().unwrap();
    let h = hyper(config);
    let mut rng = Rng::new(rows as u64 * 1000 + cols as u64);
    let w0 = rng.mat(rows, cols);
    let target = rng.mat(rows, cols);
    let lr = 0.01;
    let grad = |w: &Mat, t: usize| {
        let mut noise = Rng::new(7 + t as u64);
        w.sub(&target).add(&noise.mat(rows, cols).scale(0.5))
    };

    let mut w = upload(&w0, device);
    let mut state = None;
    let mut w_ref = w0.clone();
    let mut ref_state = None;
    for t in 0..steps {
        // Each side differentiates at its own iterate.
        let g = grad(&download(w.clone()), t);
        let (nw, ns) = optim.step(lr, w, upload(&g, device), state);
        w = nw;
        state = ns;
        let g_ref = grad(&w_ref, t);
        w_ref = reference::step(&h, &w_ref, &g_ref, &mut ref_state, lr);
    }
    (download(w).sub(&w0), w_ref.sub(&w0))
}

fn presets() -> Vec<(&'static str, SubTrackConfig)> {
    let base = |c: SubTrackConfig| {
        c.with_rank(4)
            .with_update_interval(10)
            .with_step_size(0.01)
            .with_weight_decay(0.01)
    };
    vec![
        ("subtrack-grad", base(SubTrackConfig::subtrack_grad())),
        ("subtrack++", base(SubTrackConfig::subtrack_plus_plus())),
        ("galore", base(SubTrackConfig::galore())),
        (
            "subtrack++ code variants, clamped theta",
            base(SubTrackConfig::subtrack_plus_plus())
                .with_step_size(10.0)
                .with_max_theta(Some(0.3))
                .with_projection_aware(ProjectionAware::Code)
                .with_recovery_scaling(RecoveryScaling::Code),
        ),
        (
            "galore with projection-aware moments",
            base(SubTrackConfig::galore()).with_projection_aware(ProjectionAware::Paper),
        ),
    ]
}

#[test]
fn presets_match_the_f64_reference_for_50_steps() {
    for device in devices() {
        // Both routes of each device: the portable path and the WGSL kernels on wgpu, the
        // portable path and the fused CPU loops on flex (as (wgsl, cpu) switches).
        let wgsl = kernels::wgsl_available(&device);
        let routes: &[(bool, bool)] = if wgsl {
            &[(false, false), (true, false)]
        } else {
            &[(false, false), (false, true)]
        };
        let fused_before = kernels::launches("update: flex", [12, 4, 20]);
        for (name, config) in presets().into_iter().flat_map(|(n, c)| {
            routes
                .iter()
                .map(move |&(k, cpu)| (n, c.clone().with_wgsl_kernels(k).with_cpu_kernels(cpu)))
        }) {
            for (rows, cols) in [(12, 20), (20, 12)] {
                let (got, want) = run(&config, rows, cols, 50, &device);
                assert_close(
                    &got,
                    &want,
                    1e-4,
                    format_args!(
                        "{name} {rows}x{cols} on {device:?} (WGSL kernels {}, CPU loops {}): the 50-step change",
                        config.wgsl_kernels, config.cpu_kernels
                    ),
                );
                // The trajectory must actually go somewhere.
                assert!(want.norm() > 0.1, "{name}: reference barely moved");
            }
        }
        if !wgsl {
            // 5 presets × 2 shapes × 50 steps with the loops on.
            assert!(
                kernels::launches("update: flex", [12, 4, 20]) >= fused_before + 500,
                "the fused CPU update did not run"
            );
        }
        if wgsl {
            // Both shapes share the canonical layout a = 12, b = 20 at r = 4.
            for (kernel, sizes) in [
                ("project", [12, 4, 20]),
                ("update", [12, 4, 20]),
                ("recovery", [12, 4, 20]),
                ("adam", [4, 4, 20]),
                ("geodesic_step", [12, 4, 4]),
            ] {
                assert!(
                    kernels::launches(kernel, sizes) > 0,
                    "the {kernel} kernel never ran"
                );
            }
        }
    }
}

#[test]
fn right_projection_equals_left_projection_on_transposes() {
    let config = SubTrackConfig::subtrack_plus_plus()
        .with_rank(3)
        .with_update_interval(4)
        .with_step_size(0.02);
    let device = Device::flex();
    let optim = config.build().unwrap();
    let mut rng = Rng::new(99);
    let w0 = rng.mat(9, 14);
    let (mut left, mut right) = (upload(&w0, &device), upload(&w0.t(), &device));
    let (mut sl, mut sr) = (None, None);
    for _ in 0..12 {
        let g = rng.mat(9, 14);
        let (l, s) = optim.step(0.01, left, upload(&g, &device), sl);
        (left, sl) = (l, s);
        let (r, s) = optim.step(0.01, right, upload(&g.t(), &device), sr);
        (right, sr) = (r, s);
    }
    assert_close(
        &download(right).t().sub(&w0),
        &download(left).sub(&w0),
        1e-5,
        "right vs left",
    );
}
