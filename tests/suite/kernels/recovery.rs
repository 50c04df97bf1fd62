//! Recovery scaling's column norms and limiter (`recovery_norms*.wgsl`, `recovery_limit.wgsl`).

use burn::tensor::{Device, Tensor};
use subtrack::RecoveryScaling;
use subtrack::testing::kernels::{self, ColumnNorms, NormsChoice};
use subtrack::testing::route::{self, RecoveryInputs, StepFlag};

use crate::reference::{Mat, Rng};
use crate::{assert_close, download, upload, wgpu_device};

use super::{orthonormal, stored, wgsl_within};

/// f64 recovery scales: (ψ, Λ_prev') from the explicit residual G − k·S·G̃.
pub(super) fn recovery_f64(
    s: &Mat,
    g: &Mat,
    n: &Mat,
    k: f64,
    zeta: f64,
    previous: Option<f64>,
) -> (Mat, f64) {
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
    let mut rng = Rng::new(43);
    let (zeta, scale) = (1.01, 0.25);
    // (a, r, b, binding limit): the last splits G into chunks of 128, 128 and 44 rows;
    // 150×70×130 takes three 64-row blocks of G and two of G̃ and N in one launch of the
    // tiled kernel. Both column-norm kernels, each pinned (these sizes are under the tuning
    // threshold, where the default is the per-column one).
    for (tiled, (a, r, b, limit)) in [false, true].into_iter().flat_map(|t| {
        [
            (37, 5, 53, 128 << 20),
            (16, 4, 300, 128 << 20),
            (150, 70, 130, 128 << 20),
            (300, 20, 90, 46_080),
        ]
        .map(|size| (t, size))
    }) {
        kernels::set_recovery_norms(if tiled {
            ColumnNorms::Tiled
        } else {
            ColumnNorms::PerColumn
        });
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
                    let out = route::recovery(
                        inputs,
                        variant,
                        scale,
                        zeta,
                        flag.as_ref().map(StepFlag::from),
                        route,
                    );
                    assert_eq!(out.kept_weight, k);
                    let norm: f64 = out.norm.into_scalar::<f32>() as f64;
                    (download(out.scaled_phi), norm)
                };
                let before = kernels::launches("recovery", [a, r, b]);
                let in_place = kernels::launches("recovery: Gᵀ in place", [a, r, b]);
                let tiled_before = kernels::launches("recovery: tiled", [a, r, b]);
                let limiter = kernels::launches("recovery_limit", [a, r, b]);
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
                assert_eq!(
                    kernels::launches("recovery_limit", [a, r, b]),
                    limiter + 1,
                    "one limiter launch after the column norms, whatever their chunks"
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
    kernels::set_recovery_norms(NormsChoice::Tuned);
}
