//! The WGSL route: the kernels of `kernels/` (`shaders/`) on a wgpu device that compiles
//! WGSL, launched through the [`SubTrackKernels`] backend extension. Each operation checks
//! that its kernel can run these tensors (f32, and sizes within the kernel's plan under the
//! route's [`Limits`]); where it cannot, that operation runs on the portable route, and the
//! first such fallback in a process is logged.

mod track;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Tensor};

use super::portable::Portable;
use super::{Fused, LimitedInputs, Ops, Sizes, Tracking};
use crate::config::RecoveryScaling;
use crate::kernels::{
    self, Limits, ProjectionTile, SubTrackKernels, TileChoice, Tuned, TunedTile, UpdateLaunch,
    projection_splits, projection_tile, recovery_norms,
};
use crate::moments::AdamParams;
use crate::recovery::{RecoveryScales, kept_weight};
use crate::route::step_buffer::{self as buffer, StepFlag, StepParams};
use crate::route::{
    LowRankAdam, RecoveryInputs, Rotation, TrackedStep, UpdateCoefficients, UpdateInputs,
};

use track::launch_tracking;
pub use track::track;

/// The WGSL kernels, planned for `limits`.
#[derive(Clone, Copy, Debug)]
pub struct Wgsl {
    limits: Limits,
}

impl Wgsl {
    /// The kernels with their launches planned for `limits`.
    pub(super) fn within(limits: Limits) -> Self {
        Wgsl { limits }
    }
}

/// Whether the WGSL kernels run on `device`: a wgpu device whose runtime compiles WGSL.
pub(super) fn runs_on(device: &Device) -> bool {
    kernels::wgsl_available(device)
}

static FALLBACK_REPORTED: AtomicBool = AtomicBool::new(false);

/// Log, once per process, that an operation runs on the portable route on `device`.
fn report_fallback(device: &Device) {
    if !FALLBACK_REPORTED.swap(true, Ordering::Relaxed) {
        log::info!(
            "subtrack: a WGSL kernel cannot run on {device:?} (not f32, or sizes past the \
             kernel's limits); that operation takes the portable path"
        );
    }
}

/// Whether every tensor is f32.
fn all_f32<'a>(tensors: impl IntoIterator<Item = &'a Tensor<2>>) -> bool {
    tensors.into_iter().all(|t| t.dtype() == DType::F32)
}

impl Ops for Wgsl {
    fn name(&self) -> &'static str {
        "WGSL kernels"
    }

    /// The kernel finds G's step flag while it reads G (S and G over the binding limit in
    /// row chunks, columns past the workgroup limit in several launches), by the tile and
    /// split-K this thread pins ([`kernels::set_projection_tile`],
    /// [`kernels::set_projection_splits`]) or the autotuner picks.
    fn project(
        &self,
        basis: &Tensor<2>,
        g: &Tensor<2>,
        head: &[f32],
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        let splits = projection_splits();
        if splits > 1 {
            // Splits pinned: a tuned tile takes its default there.
            let [a, r, b] = [basis.dims()[0], basis.dims()[1], g.dims()[1]];
            let tile = projection_tile().fixed(a * r * b).unwrap_or_default();
            return project_split_with(basis, g, splits, tile, head);
        }
        self.project_by(basis, g, projection_tile(), head)
    }

    fn column_sq(&self, g: &Tensor<2>, transposed: bool) -> Tensor<2> {
        Portable.column_sq(g, transposed)
    }

    /// One kernel, the rotation included (columns past the workgroup limit in several
    /// launches).
    fn adam(
        &self,
        moment_1: Tensor<2>,
        moment_2: Tensor<2>,
        g_low: &Tensor<2>,
        adam: &AdamParams,
        rotation: Option<Rotation>,
        flag: Option<StepFlag>,
    ) -> LowRankAdam {
        let device = g_low.device();
        let [r, b] = moment_1.dims();
        let runs = all_f32(
            [&moment_1, &moment_2, g_low]
                .into_iter()
                .chain(rotation.map(|rot| rot.change_of_basis)),
        ) && self.adam_runs(r, b, rotation.is_some());
        if !runs {
            report_fallback(&device);
            return Portable.adam(moment_1, moment_2, g_low, adam, rotation, flag);
        }
        let values = buffer::adam_values(adam, rotation.map(|rot| rot.variant));
        let moved = rotation.and_then(|rot| rot.moved);
        let params = buffer::params_for(buffer::ADAM, &values, moved, flag, [r, b], &device);
        let params = params.into_dispatch();
        let (m, v, g) = (
            moment_1.into_dispatch(),
            moment_2.into_dispatch(),
            g_low.clone().into_dispatch(),
        );
        let (m, v, n) = match rotation {
            None => Dispatch::wgsl_adam(m, v, g, params, self.limits),
            Some(rot) => {
                let c = rot.change_of_basis.clone().into_dispatch();
                Dispatch::wgsl_adam_rotate(m, v, g, params, c, self.limits)
            }
        };
        LowRankAdam {
            moment_1: Tensor::from_dispatch(m),
            moment_2: Tensor::from_dispatch(v),
            normalized: Tensor::from_dispatch(n),
        }
    }

    /// Two kernels: the column norms (G over the binding limit in row chunks), then the
    /// limiter.
    fn recovery(
        &self,
        inputs: RecoveryInputs,
        variant: RecoveryScaling,
        scale: f64,
        growth_limit: f64,
        flag: Option<StepFlag>,
    ) -> RecoveryScales {
        let RecoveryInputs {
            grad: g,
            g_low,
            normalized,
            previous,
            ..
        } = inputs;
        let device = g.device();
        let ([a, b], r) = (g.dims(), g_low.dims()[0]);
        let runs = all_f32([g, g_low, normalized])
            && previous.is_none_or(|p| p.dtype() == DType::F32)
            && self.recovery_runs(a, r, b);
        if !runs {
            report_fallback(&device);
            return Portable.recovery(inputs, variant, scale, growth_limit, flag);
        }
        let limits = self.limits;
        let values = buffer::recovery_values(variant, scale, growth_limit);
        let params = buffer::params_for(buffer::RECOVERY, &values, None, flag, [r, b], &device);
        let params = params.into_dispatch();
        let (gd, ld, nd) = (
            g.clone().into_dispatch(),
            g_low.clone().into_dispatch(),
            normalized.clone().into_dispatch(),
        );
        let norms = recovery_norms();
        let (psi, norm) = match previous {
            None => Dispatch::wgsl_recovery(gd, ld, nd, params, limits, norms),
            Some(p) => Dispatch::wgsl_recovery_limited(
                gd,
                ld,
                nd,
                params,
                p.clone().into_dispatch(),
                limits,
                norms,
            ),
        };
        RecoveryScales {
            scaled_phi: Tensor::from_dispatch(psi),
            kept_weight: kept_weight(variant, scale),
            norm: Tensor::from_dispatch(norm),
        }
    }

    /// One fused kernel; S·L is never stored (S, W and G over the binding limit in row
    /// chunks, the left layout only: a transposed W over it takes the portable route;
    /// columns past the workgroup limit in several launches). Where no tile fits the
    /// adapter, Burn's ops (the autotuner's other candidate) run it, reading nothing back.
    fn update(
        &self,
        inputs: UpdateInputs,
        coefficients: UpdateCoefficients,
        flag: Option<StepFlag>,
    ) -> Tensor<2> {
        let device = inputs.weight.device();
        let ([a, r], b) = (inputs.basis.dims(), inputs.normalized.dims()[1]);
        let f32s = all_f32(
            [inputs.basis, &inputs.normalized, &inputs.weight]
                .into_iter()
                .chain(
                    inputs
                        .recovery
                        .iter()
                        .flat_map(|t| [&t.grad, &t.psi, &t.g_low]),
                ),
        );
        let recovering = inputs.recovery.is_some();
        let tile = f32s
            .then(|| self.update_tile([a, r, b], inputs.transposed, recovering))
            .flatten();
        let Some(tile) = tile else {
            report_fallback(&device);
            return Portable.update(inputs, coefficients, flag);
        };
        let UpdateInputs {
            basis,
            normalized,
            weight,
            transposed,
            recovery,
        } = inputs;
        let kept = recovery.as_ref().map_or(0.0, |t| t.kept_weight);
        let values = buffer::update_values(coefficients, kept);
        let scalars = buffer::params_for(buffer::UPDATE, &values, None, flag, [r, b], &device);
        let scalars = scalars.into_dispatch();
        let (basis, normalized, weight) = (
            basis.clone().into_dispatch(),
            normalized.into_dispatch(),
            weight.into_dispatch(),
        );
        let how = UpdateLaunch {
            transposed,
            tile,
            limits: self.limits,
        };
        Tensor::from_dispatch(match recovery {
            None => Dispatch::wgsl_update(basis, normalized, weight, scalars, how),
            Some(t) => Dispatch::wgsl_update_recovery(
                basis,
                normalized,
                weight,
                scalars,
                t.grad.into_dispatch(),
                t.psi.into_dispatch(),
                t.g_low.into_dispatch(),
                how,
            ),
        })
    }

    fn tracking(&self, Sizes { a, r, b, .. }: Sizes) -> Option<Tracking> {
        kernels::tracking_plan(a, r, b, self.limits).then_some(Tracking(()))
    }

    fn track(
        &self,
        basis: &Tensor<2>,
        g: &Tensor<2>,
        step_size: f64,
        max_theta: Option<f64>,
        tolerance: f64,
        _tracking: Tracking,
    ) -> TrackedStep {
        launch_tracking(basis, g, step_size, max_theta, tolerance, self.limits)
    }

    fn checks_on_device(&self) -> bool {
        true
    }

    /// Where the adapter offers the 9 and 10 storage buffers of `adam_recovery.wgsl` and
    /// the limited update, the sizes take one launch each, and the update runs a WGSL tile
    /// ([`Wgsl::fused_tile`]).
    fn fused_recovery(&self, sizes: Sizes, previous: bool) -> Option<Fused> {
        let Sizes {
            a,
            r,
            b,
            transposed,
        } = sizes;
        let tile = self.fused_tile([a, r, b])?;
        kernels::fused_recovery_plan(tile, [a, r, b], transposed, previous, self.limits)
            .then_some(Fused { tile })
    }

    fn adam_recovery(
        &self,
        moment_1: Tensor<2>,
        moment_2: Tensor<2>,
        g_low: &Tensor<2>,
        grad: &Tensor<2>,
        params: &StepParams,
    ) -> (LowRankAdam, Tensor<1>) {
        // One kernel binds the step's buffer for Adam's values (slot 0 on) and the
        // limiter's (slot 6 on).
        let [r, b] = g_low.dims();
        for first in [buffer::ADAM, buffer::RECOVERY] {
            crate::launches::count_launch("params: packed", [first, r, b]);
        }
        let (m, v, n, scratch) = Dispatch::wgsl_adam_recovery(
            grad.clone().into_dispatch(),
            moment_1.into_dispatch(),
            moment_2.into_dispatch(),
            g_low.clone().into_dispatch(),
            params.buffer.clone().into_dispatch(),
            self.limits,
        );
        let adam = LowRankAdam {
            moment_1: Tensor::from_dispatch(m),
            moment_2: Tensor::from_dispatch(v),
            normalized: Tensor::from_dispatch(n),
        };
        (adam, Tensor::from_dispatch(scratch))
    }

    fn update_limited(
        &self,
        inputs: UpdateInputs,
        limited: LimitedInputs,
        params: &StepParams,
        Fused { tile }: Fused,
    ) -> (Tensor<2>, Tensor<1>) {
        let UpdateInputs {
            basis,
            normalized,
            weight,
            transposed,
            ..
        } = inputs;
        let LimitedInputs {
            grad,
            g_low,
            scratch,
            previous,
        } = limited;
        let [r, b] = g_low.dims();
        let how = UpdateLaunch {
            transposed,
            tile: TileChoice::Fixed(tile),
            limits: self.limits,
        };
        crate::launches::count_launch("params: packed", [buffer::UPDATE, r, b]);
        let d = |t: &Tensor<2>| t.clone().into_dispatch();
        let (basis, scalars) = (d(basis), params.buffer.clone().into_dispatch());
        let (normalized, weight) = (normalized.into_dispatch(), weight.into_dispatch());
        let (grad, g_low, scratch) = (d(grad), d(g_low), scratch.into_dispatch());
        let (w, norm) = match previous {
            None => Dispatch::wgsl_update_limited(
                basis, normalized, weight, scalars, grad, scratch, g_low, how,
            ),
            Some(p) => Dispatch::wgsl_update_limited_previous(
                basis,
                normalized,
                weight,
                scalars,
                grad,
                scratch,
                g_low,
                p.clone().into_dispatch(),
                how,
            ),
        };
        (Tensor::from_dispatch(w), Tensor::from_dispatch(norm))
    }

    fn takes_grad_sq(&self) -> bool {
        false
    }

    fn fallbacks(&self, sizes: Sizes) -> Vec<&'static str> {
        let Sizes {
            a,
            r,
            b,
            transposed,
        } = sizes;
        [
            ("project", self.projection([a, r, b]).is_some()),
            ("adam", self.adam_runs(r, b, false)),
            ("adam with rotation", self.adam_runs(r, b, true)),
            ("recovery", self.recovery_runs(a, r, b)),
            (
                "update",
                self.update_tile([a, r, b], transposed, false).is_some(),
            ),
            (
                "update with recovery",
                self.update_tile([a, r, b], transposed, true).is_some(),
            ),
            ("tracking step", self.tracking(sizes).is_some()),
        ]
        .into_iter()
        .filter(|(_, runs)| !runs)
        .map(|(op, _)| op)
        .collect()
    }
}

/// How the projection runs where it runs on this route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Projection {
    /// By a WGSL tile.
    Tiles,
    /// By Burn's matmul, for want of a tile that fits the adapter (the flag still on the
    /// device).
    Matmul,
}

/// Each operation's one decision whether it runs at these sizes (f32 tensors assumed),
/// asked by the operation itself and by [`Ops::fallbacks`].
impl Wgsl {
    /// How the projection of S a×r and G a×b runs, or `None` where it takes the portable
    /// path.
    fn projection(&self, [a, r, b]: [usize; 3]) -> Option<Projection> {
        if kernels::projection_plan(a, r, b, self.limits) {
            Some(Projection::Tiles)
        } else {
            self.matmul_projects().then_some(Projection::Matmul)
        }
    }

    /// Whether low-rank Adam's kernel runs r×b moments, with the rotation where `rotate`.
    fn adam_runs(&self, r: usize, b: usize, rotate: bool) -> bool {
        kernels::adam_plan(r, b, rotate, self.limits)
    }

    /// Whether recovery scaling's kernels run G a×b at rank r.
    fn recovery_runs(&self, a: usize, r: usize, b: usize) -> bool {
        kernels::recovery_plan(a, r, b, self.limits)
    }

    /// The tile the weight update of W a×b (b×a where `transposed`) at rank r runs, with
    /// the recovery term where `recovering`: the pinned or tuned tile where a tile's plan
    /// fits, Burn's ops (reading nothing back) where no tile fits the adapter, or `None`
    /// where it takes the portable path.
    fn update_tile(
        &self,
        [a, r, b]: [usize; 3],
        transposed: bool,
        recovering: bool,
    ) -> Option<TileChoice> {
        if kernels::update_plan(a, r, b, transposed, recovering, self.limits) {
            Some(projection_tile())
        } else {
            (!kernels::update_tiles_fit(recovering, self.limits)).then_some(TileChoice::Matmul)
        }
    }

    /// The tile the limited update runs for W a×b at rank r: the one pinned, the untuned
    /// 64×64 (products under [`kernels::TUNED_MIN_MACS`]) or the autotuner's choice for the
    /// shape, so that fusing trades no tuned speed away. `None` where Burn's ops are pinned
    /// or chosen, and until the autotuner has chosen (the unfused, tuned path runs then).
    fn fused_tile(&self, [a, r, b]: [usize; 3]) -> Option<ProjectionTile> {
        match projection_tile() {
            TileChoice::Matmul => None,
            choice => choice.fixed(a * r * b).or_else(|| {
                match kernels::tuned_choice("update", [a, r, b])? {
                    Tuned::Tile(TunedTile { tile, .. }) => Some(tile),
                    Tuned::Matmul | Tuned::Norms(_) => None,
                }
            }),
        }
    }

    /// Whether the projection takes Burn's matmul for want of a tile that fits the adapter.
    fn matmul_projects(&self) -> bool {
        !kernels::projection_tiles_fit(self.limits) && kernels::matmul_fits(self.limits)
    }

    /// The projection by blocks of `tile` (Burn's matmul where no tile fits the adapter),
    /// the flag after `head`.
    fn project_by(
        &self,
        basis: &Tensor<2>,
        g: &Tensor<2>,
        tile: TileChoice,
        head: &[f32],
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        let ([a, r], b) = (basis.dims(), g.dims()[1]);
        let tile = match all_f32([basis, g])
            .then(|| self.projection([a, r, b]))
            .flatten()
        {
            Some(Projection::Tiles) => Some(tile),
            Some(Projection::Matmul) => Some(TileChoice::Matmul),
            None => None,
        };
        let Some(tile) = tile else {
            report_fallback(&g.device());
            return Portable.project(basis, g, head);
        };
        let (g_low, flag) = Dispatch::wgsl_project(
            basis.clone().into_dispatch(),
            g.clone().into_dispatch(),
            tile,
            self.limits,
            head.to_vec(),
        );
        (
            Tensor::from_dispatch(g_low),
            Some(Tensor::from_dispatch(flag)),
        )
    }
}

/// (G̃, flag) by split-K with `splits` fixed (for measuring; the autotuner weighs split-K
/// itself, see `kernels/tune.rs`): the WGSL kernel, by blocks of `tile`, writes `splits`
/// partial sums over row ranges of S and G, and `project_reduce.wgsl` adds them. More
/// workgroups than one launch where r×b is small next to a, at the cost of splits·r·b
/// floats. Falls back to the single launch by blocks of `tile` (or the tensor ops) where
/// `splits` is 1 or the split launch cannot run.
pub fn project_split(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    splits: usize,
    tile: ProjectionTile,
) -> (Tensor<2>, Tensor<1>) {
    super::with_step_flag(project_split_with(basis, g, splits, tile, &[]), g)
}

/// [`project_split`] with the flag after `head`.
fn project_split_with(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    splits: usize,
    tile: ProjectionTile,
    head: &[f32],
) -> (Tensor<2>, Option<Tensor<1>>) {
    let ([a, r], b) = (basis.dims(), g.dims()[1]);
    if !runs_on(&g.device()) {
        report_fallback(&g.device());
        return Portable.project(basis, g, head);
    }
    let runs =
        splits > 1 && all_f32([basis, g]) && kernels::split_plan(a, r, b, splits, Limits::WEBGPU);
    if !runs {
        return Wgsl::within(Limits::WEBGPU).project_by(basis, g, tile.into(), head);
    }
    let (g_low, flag) = Dispatch::wgsl_project_split(
        basis.clone().into_dispatch(),
        g.clone().into_dispatch(),
        splits,
        tile,
        head.to_vec(),
    );
    (
        Tensor::from_dispatch(g_low),
        Some(Tensor::from_dispatch(flag)),
    )
}
