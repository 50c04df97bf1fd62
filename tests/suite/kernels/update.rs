//! The weight update fused with the back-projection (`update.wgsl`, and `update_wide.wgsl`
//! for the 128×128 tile).

use burn::tensor::{Device, Tensor};
use subtrack::testing::kernels::{self, Limits, ProjectionTile, TileChoice};
use subtrack::testing::route::{
    self, RecoveryTerm, RouteRequest, StepFlag, UpdateCoefficients, UpdateInputs,
};

use crate::reference::{Mat, Rng};
use crate::{assert_close, download, upload, wgpu_device};

use super::{orthonormal, stored, wgsl_within};

/// Inputs of one weight update and its f64 reference.
pub(super) struct UpdateCase {
    pub(super) basis: Mat,
    pub(super) normalized: Mat,
    pub(super) weight: Mat,
    pub(super) grad: Mat,
    pub(super) psi: Mat,
    pub(super) g_low: Mat,
    pub(super) kept_weight: f64,
    pub(super) transposed: bool,
    /// With `transposed`: G as the transposed view of ∇W (else stored a×b).
    pub(super) grad_view: bool,
}

impl UpdateCase {
    pub(super) fn new(a: usize, r: usize, b: usize, transposed: bool, rng: &mut Rng) -> Self {
        let basis = orthonormal(a, r, rng);
        let grad = rng.mat(a, b);
        let g_low = basis.t().mul(&grad);
        Self {
            normalized: rng.mat(r, b),
            weight: if transposed {
                rng.mat(b, a)
            } else {
                rng.mat(a, b)
            },
            psi: rng.mat(1, b),
            basis,
            grad,
            g_low,
            kept_weight: 0.7,
            transposed,
            grad_view: true,
        }
    }

    pub(super) fn recovery(&self, device: &Device) -> RecoveryTerm {
        RecoveryTerm {
            // Transposed: G = ∇Wᵀ as the optimizer holds it, a view of the stored ∇W.
            grad: stored(&self.grad, self.transposed && self.grad_view, device),
            psi: upload(&self.psi, device),
            g_low: upload(&self.g_low, device),
            kept_weight: self.kept_weight,
        }
    }

    /// f64: d·(W − α·(S·L + G⊙ψ)), L = s·N − k·G̃⊙ψ, transposed into W's layout.
    pub(super) fn expected(&self, c: UpdateCoefficients, recovery: bool) -> Mat {
        let (r, b) = (self.normalized.rows, self.normalized.cols);
        let a = self.basis.rows;
        let low = Mat::from_fn(r, b, |i, j| {
            let mut l = c.scale * self.normalized.at(i, j);
            if recovery {
                l -= self.kept_weight * self.g_low.at(i, j) * self.psi.at(0, j);
            }
            l
        });
        let mut u = self.basis.mul(&low);
        if recovery {
            u = u.add(&Mat::from_fn(a, b, |i, j| {
                self.grad.at(i, j) * self.psi.at(0, j)
            }));
        }
        if self.transposed {
            u = u.t();
        }
        self.weight.sub(&u.scale(c.alpha)).scale(c.decay)
    }

    /// On the WGSL route (the tensor ops where the kernel cannot run).
    pub(super) fn run(
        &self,
        c: UpdateCoefficients,
        recovery: bool,
        flag: Option<f32>,
        device: &Device,
    ) -> Mat {
        self.run_on(c, recovery, flag, device, RouteRequest::WGSL)
    }

    pub(super) fn run_on(
        &self,
        c: UpdateCoefficients,
        recovery: bool,
        flag: Option<f32>,
        device: &Device,
        route: RouteRequest,
    ) -> Mat {
        let flag = flag.map(|f| Tensor::<1>::from_floats([f], device));
        let basis = upload(&self.basis, device);
        let inputs = UpdateInputs {
            basis: &basis,
            normalized: upload(&self.normalized, device),
            weight: upload(&self.weight, device),
            transposed: self.transposed,
            recovery: recovery.then(|| self.recovery(device)),
        };
        download(route::update(
            inputs,
            c,
            flag.as_ref().map(StepFlag::from),
            route,
        ))
    }
}

#[test]
fn update_kernel_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(23);
    let coefficients = UpdateCoefficients {
        alpha: 0.03,
        decay: 0.999,
        scale: 0.25,
    };
    let cpu = Device::flex();
    for (a, r, b) in [(37, 5, 53), (16, 16, 16), (70, 17, 150), (130, 70, 90)] {
        for (transposed, grad_view) in [(false, false), (true, true), (true, false)] {
            for recovery in [false, true] {
                let case = UpdateCase {
                    grad_view,
                    ..UpdateCase::new(a, r, b, transposed, &mut rng)
                };
                let expected = case.expected(coefficients, recovery);
                let before = kernels::launches("update", [a, r, b]);
                let in_place = kernels::launches("update: Gᵀ in place", [a, r, b]);
                let got = case.run(coefficients, recovery, None, &device);
                assert_eq!(
                    kernels::launches("update", [a, r, b]),
                    before + 1,
                    "the WGSL kernel did not run"
                );
                assert_eq!(
                    kernels::launches("update: Gᵀ in place", [a, r, b]),
                    in_place + u64::from(recovery && grad_view),
                    "only a transposed view of ∇W is read in place"
                );
                // The portable path: the same formula in tensor ops on the CPU backend.
                let portable = case.run(coefficients, recovery, None, &cpu);
                let name = format!(
                    "{a}×{r}×{b}, transposed {transposed} (G a view {grad_view}), recovery {recovery}"
                );
                assert_close(&got, &portable, 1e-5, format_args!("{name}: vs portable"));
                assert_close(&got, &expected, 1e-5, format_args!("{name}: vs f64"));
                // A skipped step (flag 0) returns W exactly, on both paths.
                for dev in [&device, &cpu] {
                    let kept = case.run(coefficients, recovery, Some(0.0), dev);
                    assert_eq!(
                        kept.data,
                        case.weight
                            .data
                            .iter()
                            .map(|&x| x as f32 as f64)
                            .collect::<Vec<_>>(),
                        "{name}: skip"
                    );
                }
            }
        }
    }
}

/// The 128×128 tile (`update_wide.wgsl`) against the tensor ops and f64: sizes that are not
/// multiples of the tile or of its 8-wide rank step, a and b over one block, both layouts of
/// W with and without recovery, row chunks past the binding limit, launches split across
/// columns past the workgroup limit, and a skipped step.
#[test]
fn wide_tile_update_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(43);
    let coefficients = UpdateCoefficients {
        alpha: 0.03,
        decay: 0.999,
        scale: 0.25,
    };
    let cpu = Device::flex();
    let narrow = RouteRequest::WGSL.within(Limits {
        max_workgroups: 2,
        ..Limits::WEBGPU
    });
    // (a, r, b, route, launches in the left layout). 300×20 and 300×90 under a 46,080-byte
    // binding take chunks of 128, 128 and 44 rows (a transposed W is not chunked: the tensor
    // ops run); b = 300 is three 128-column blocks, two and one under 2 workgroups.
    for (a, r, b, route, launches) in [
        (37, 5, 59, RouteRequest::WGSL, 1),
        (260, 70, 290, RouteRequest::WGSL, 1),
        (300, 20, 90, wgsl_within(46_080), 3),
        (70, 6, 300, narrow, 2),
    ] {
        let chunked = launches == 3;
        // The chunked and column-group cases test launch geometry: with recovery only (each
        // variant is a shader compiled anew on lavapipe, seconds each when cold).
        let recoveries: &[bool] = if route == RouteRequest::WGSL {
            &[false, true]
        } else {
            &[true]
        };
        for transposed in [false, true] {
            for &recovery in recoveries {
                let case = UpdateCase::new(a, r, b, transposed, &mut rng);
                let name = format!("{a}×{r}×{b}, transposed {transposed}, recovery {recovery}");
                let run = |flag: Option<f32>| {
                    kernels::set_projection_tile(ProjectionTile::Block128);
                    let got = case.run_on(coefficients, recovery, flag, &device, route);
                    kernels::set_projection_tile(TileChoice::Tuned);
                    got
                };
                let before = kernels::launches("update: 128×128 tiles", [a, r, b]);
                let got = run(None);
                let expected_launches = if transposed && chunked { 0 } else { launches };
                assert_eq!(
                    kernels::launches("update: 128×128 tiles", [a, r, b]),
                    before + expected_launches,
                    "{name}: launches of the 128×128 kernel"
                );
                let portable = case.run(coefficients, recovery, None, &cpu);
                assert_close(&got, &portable, 1e-5, format_args!("{name}: vs portable"));
                let expected = case.expected(coefficients, recovery);
                assert_close(&got, &expected, 1e-5, format_args!("{name}: vs f64"));
                let kept = run(Some(0.0));
                assert!(
                    kept.data == super::upload_roundtrip(&case.weight),
                    "{name}: a skipped step keeps W"
                );
            }
        }
    }
}
