//! The fused CPU route: on Burn's `flex` backend, the projected step's memory-bound passes
//! run as fused loops (`loops.rs`) instead of several tensor ops each. An operation whose
//! tensors are not all f32, or one that takes a device-side step flag (which only the WGSL
//! route makes), runs on the portable route.

mod loops;

use burn::backend::DispatchDevice;
use burn::tensor::{Device, Tensor};

use super::Ops;
use super::portable::{self, Portable};
use crate::config::RecoveryScaling;
use crate::launches::count_launch;
use crate::moments::AdamParams;
use crate::recovery::RecoveryScales;
use crate::route::step_buffer::StepFlag;
use crate::route::{LowRankAdam, RecoveryInputs, Rotation, UpdateCoefficients, UpdateInputs};

/// The fused loops on `flex`.
#[derive(Clone, Copy, Debug, Default)]
pub struct FusedLoops;

/// Whether `device` is a `flex` device.
pub(super) fn runs_on(device: &Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Flex(_))
}

impl Ops for FusedLoops {
    fn name(&self) -> &'static str {
        "fused CPU loops (flex)"
    }

    fn project(
        &self,
        basis: &Tensor<2>,
        g: &Tensor<2>,
        head: &[f32],
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        if !loops::runs(&g.device(), &[basis, g]) {
            return Portable.project(basis, g, head);
        }
        let ([a, r], b) = (basis.dims(), g.dims()[1]);
        count_launch("project: flex", [a, r, b]);
        (loops::project(basis, g), None)
    }

    /// One read of G: with `transposed` the stored b×a tensor's rows hold G's columns.
    fn column_sq(&self, g: &Tensor<2>, transposed: bool) -> Tensor<2> {
        if !loops::runs(&g.device(), &[g]) {
            return Portable.column_sq(g, transposed);
        }
        let [a, b] = g.dims();
        count_launch("column_sq: flex", [a, 0, b]);
        let stored = if transposed {
            g.clone().transpose()
        } else {
            g.clone()
        };
        loops::column_sq(stored, transposed)
    }

    /// The rotation as tensor ops, then M', V' and N in one r×b pass.
    fn adam(
        &self,
        moment_1: Tensor<2>,
        moment_2: Tensor<2>,
        g_low: &Tensor<2>,
        adam: &AdamParams,
        rotation: Option<Rotation>,
        flag: Option<StepFlag>,
    ) -> LowRankAdam {
        if flag.is_some() || !loops::runs(&g_low.device(), &[&moment_1, &moment_2, g_low]) {
            return Portable.adam(moment_1, moment_2, g_low, adam, rotation, flag);
        }
        let [r, b] = moment_1.dims();
        let (m, v) = portable::rotate(moment_1, moment_2, rotation, adam);
        count_launch("adam: flex", [r, 0, b]);
        let (moment_1, moment_2, normalized) = loops::adam(m, v, g_low, adam);
        LowRankAdam {
            moment_1,
            moment_2,
            normalized,
        }
    }

    /// The tensor ops, with G's, G̃'s and N's column sums of squares by [`FusedLoops::column_sq`].
    fn recovery(
        &self,
        inputs: RecoveryInputs,
        variant: RecoveryScaling,
        scale: f64,
        growth_limit: f64,
        flag: Option<StepFlag>,
    ) -> RecoveryScales {
        portable::recovery_with(self, inputs, variant, scale, growth_limit, flag)
    }

    /// W's own buffer takes the result: one pass over W and G for the recovery term, then
    /// one gemm into W; S·L is never stored.
    fn update(
        &self,
        inputs: UpdateInputs,
        coefficients: UpdateCoefficients,
        flag: Option<StepFlag>,
    ) -> Tensor<2> {
        let fused = flag.is_none() && {
            let terms = inputs
                .recovery
                .iter()
                .flat_map(|t| [&t.grad, &t.psi, &t.g_low]);
            let all: Vec<_> = [inputs.basis, &inputs.normalized, &inputs.weight]
                .into_iter()
                .chain(terms)
                .collect();
            loops::runs(&inputs.weight.device(), &all)
        };
        if !fused {
            return Portable.update(inputs, coefficients, flag);
        }
        let UpdateInputs {
            basis,
            normalized,
            weight,
            transposed,
            recovery,
        } = inputs;
        let UpdateCoefficients {
            alpha,
            decay,
            scale,
        } = coefficients;
        let ([a, r], b) = (basis.dims(), normalized.dims()[1]);
        // α is folded into L (r×b) and ψ (1×b), as on the portable route.
        let low = match &recovery {
            Some(t) => loops::low(
                normalized,
                t.g_low.clone(),
                t.psi.clone(),
                alpha * scale,
                alpha * t.kept_weight,
            ),
            None => normalized.mul_scalar(alpha * scale),
        };
        count_launch("update: flex", [a, r, b]);
        // G in W's own layout, so that the pass over W and G is contiguous.
        let recovery = recovery.map(|t| {
            let grad = if transposed {
                t.grad.transpose()
            } else {
                t.grad
            };
            (grad, t.psi, alpha)
        });
        loops::step(weight, basis, low, recovery, decay, transposed)
    }
}
