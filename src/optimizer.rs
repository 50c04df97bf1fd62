//! [`SubTrack`]: one optimizer step per parameter. A projected matrix's step
//! (`projected_step`) reads as docs/algorithm.md §2 does, over the operations of the route
//! [`route::choose`] picks for it; every other parameter gets AdamW (`dense_step`).

use burn::optim::{LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{DType, Device, Tensor};

use crate::SubTrackError;
use crate::basis::top_singular_basis;
use crate::config::{ProjectionAware, RecoveryScaling, SubTrackConfig, SubspaceUpdate};
use crate::diagnostics::{After, Before, LimiterInputs, Tangent};
use crate::geodesic::geodesic_step;
use crate::host;
use crate::moments::AdamParams;
use crate::report::SubTrackReport;
use crate::route::{
    self, Ops, ParamValues, RecoveryInputs, RecoveryTerm, Rotation, Sizes, StepFlag,
    UpdateCoefficients, UpdateInputs, keep_on_skip,
};
use crate::state::{
    DenseState, ProjectedState, SubTrackState, canonical_gradient, canonical_layout,
};

// The config's constructors live with the optimizer they build, so that the config
// module depends on nothing of the optimizer's.
impl SubTrackConfig {
    /// Build the bare optimizer, for routing parameter groups with
    /// [`ModuleOptimizer::with_group`]. Gradient clipping is not applied here: pass it to
    /// `with_group` or use [`init`](Self::init).
    pub fn build(&self) -> Result<SubTrack, SubTrackError> {
        self.validate()?;
        Ok(SubTrack::new(self.clone()))
    }

    /// Build the whole-module optimizer: the drop-in replacement for `AdamWConfig::init`.
    ///
    /// Every 2-D parameter whose smaller side exceeds `rank` is projected; every other
    /// parameter gets AdamW with the same β, ε and weight decay.
    pub fn init(&self) -> Result<ModuleOptimizer, SubTrackError> {
        let mut optim = ModuleOptimizer::from(self.build()?);
        if let Some(clipping) = &self.grad_clipping {
            optim = optim.with_grad_clipping(clipping.init());
        }
        Ok(optim)
    }
}

/// The SubTrack optimizer: SubTrack-Grad, SubTrack++ or GaLore for projected matrices, and
/// AdamW for every other parameter. Built by [`SubTrackConfig::build`].
#[derive(Clone)]
pub struct SubTrack {
    config: SubTrackConfig,
    adam: AdamParams,
    report: SubTrackReport,
}

impl SubTrack {
    pub(crate) fn new(config: SubTrackConfig) -> Self {
        let adam = AdamParams {
            beta_1: config.beta_1,
            beta_2: config.beta_2,
            epsilon: config.epsilon,
        };
        Self {
            config,
            adam,
            report: SubTrackReport::default(),
        }
    }

    /// The configuration this optimizer was built from.
    pub fn config(&self) -> &SubTrackConfig {
        &self.config
    }

    /// A handle on this optimizer's counters (shared with its clones).
    pub fn report(&self) -> SubTrackReport {
        self.report.clone()
    }

    /// Whether a parameter of this shape is projected: 2-D with min(m, n) > rank.
    pub fn is_projected(&self, dims: &[usize]) -> bool {
        dims.len() == 2 && dims[0].min(dims[1]) > self.config.rank
    }

    /// [`Optimizer::step`] for a parameter stored as f16, bf16, Flex32 or f64: the state
    /// is f32 and the step runs on the parameter and gradient cast to f32 (the basis,
    /// orthonormal to 1e-5, and the kernels need it). The new weight is the f32 result
    /// rounded to the parameter's type; an f64 weight instead gets the f32 change added,
    /// so that it keeps its own precision. A skipped step leaves the weight as it was.
    fn widened_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<SubTrackState<D>>,
    ) -> (Tensor<D>, Option<SubTrackState<D>>) {
        let dtype = tensor.dtype();
        let wide = tensor.clone().cast(DType::F32);
        let grad = grad.cast(DType::F32);
        if dtype == DType::F64 {
            let (new, state) = self.step(lr, wide.clone(), grad, state);
            (tensor + (new - wide).cast(dtype), state)
        } else {
            let (new, state) = self.step(lr, wide, grad, state);
            (new.cast(dtype), state)
        }
    }

    /// AdamW of the same form as the projected step; `decay` = 1 − lr·wd. `flag` is the
    /// device-side step flag when the finite check was left to the device.
    fn dense_step<const D: usize>(
        &self,
        lr: LearningRate,
        decay: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<DenseState<D>>,
        flag: Option<&Tensor<1>>,
    ) -> (Tensor<D>, DenseState<D>) {
        let (moment_1, moment_2, step) = match state {
            Some(s) => (s.moment_1, s.moment_2, s.step),
            None => (grad.zeros_like(), grad.zeros_like(), 0),
        };
        let old = flag.map(|_| (tensor.clone(), moment_1.clone(), moment_2.clone()));
        let step = step + 1;
        let (moment_1, moment_2) = self.adam.update_moments(moment_1, moment_2, &grad);
        let update = self.adam.normalize(&moment_1, &moment_2);
        let c = self.adam.bias_correction(step);
        let tensor = tensor - update.mul_scalar(lr * c);
        let tensor = if decay == 1.0 {
            tensor
        } else {
            tensor.mul_scalar(decay)
        };
        let (tensor, moment_1, moment_2) = match (flag, old) {
            (Some(flag), Some((w0, m0, v0))) => (
                keep_on_skip(tensor, w0, flag),
                keep_on_skip(moment_1, m0, flag),
                keep_on_skip(moment_2, v0, flag),
            ),
            _ => (tensor, moment_1, moment_2),
        };
        (
            tensor,
            DenseState {
                moment_1,
                moment_2,
                step,
            },
        )
    }

    /// Whether this step's finite check is left to the device: the route finds the step
    /// flag as it projects (the WGSL kernels), and the step reads nothing back anyway. Steps
    /// that find the first basis, a GaLore refresh (host eigensolver) and a tracking step the
    /// route cannot run on the device read back and check on the host; so does a projected
    /// step that would start the limiter's norm. (The portable route checks on the host:
    /// on a GPU its device-side selects would cost more than the read-back they save.)
    fn checks_on_device<const D: usize>(
        &self,
        ops: &dyn Ops,
        sizes: Option<Sizes>,
        state: Option<&SubTrackState<D>>,
    ) -> bool {
        let cfg = &self.config;
        if !ops.checks_on_device() {
            return false;
        }
        match (sizes, state) {
            (None, _) => true,
            (Some(sizes), Some(SubTrackState::Projected(s))) => {
                let refreshes_on_device =
                    || cfg.subspace_update == SubspaceUpdate::Geodesic && ops.tracks(sizes);
                s.step > 0
                    && (!s.step.is_multiple_of(cfg.update_interval) || refreshes_on_device())
                    && (cfg.recovery_scaling == RecoveryScaling::Off || s.limiter_norm.is_some())
            }
            _ => false,
        }
    }

    /// One projected step (docs/algorithm.md §2) on the route `ops`: subspace update,
    /// projection, moment rotation and low-rank Adam, recovery scaling, weight update.
    /// `decay` = 1 − lr·wd is applied with the update. With [`FiniteCheck::Device`] the
    /// projection finds the step flag while it reads G, and the flag is returned for the
    /// skip count.
    #[allow(clippy::too_many_arguments)]
    fn projected_step(
        &self,
        ops: &dyn Ops,
        lr: LearningRate,
        decay: f64,
        tensor: Tensor<2>,
        grad: Tensor<2>,
        state: Option<ProjectedState>,
        check: FiniteCheck,
    ) -> (Tensor<2>, ProjectedState, Option<Tensor<1>>) {
        let cfg = &self.config;
        let (on_device, g_sq) = match check {
            FiniteCheck::Device => (true, None),
            FiniteCheck::Host { grad_sq } => (false, grad_sq),
        };
        let [m, n] = tensor.dims();
        // §1: G is the gradient with the smaller side first (a transposed view where W is
        // wide), so that the basis spans the smaller side.
        let (g, transposed) = canonical_gradient(grad);
        let [a, b] = g.dims();
        let mut state = match state {
            Some(s) => {
                check_fits(&s, [m, n], cfg.rank);
                s
            }
            // §3: the initial basis.
            None => ProjectedState {
                basis: top_singular_basis(&g, cfg.rank),
                moment_1: Tensor::zeros([cfg.rank, b], (&g.device(), g.dtype())),
                moment_2: Tensor::zeros([cfg.rank, b], (&g.device(), g.dtype())),
                step: 0,
                limiter_norm: None,
                transposed,
            },
        };
        debug_assert_eq!(state.basis.dims(), [a, cfg.rank]);

        // §4 / §6: every T steps, the subspace update S → S' with C = S'ᵀS; with the
        // diagnostics on, a probe of what it did (device tensors, read when asked).
        let mut change = None;
        let mut probe = None;
        if state.step > 0 && state.step.is_multiple_of(cfg.update_interval) {
            let diagnose = self.report.subspace_diagnostics();
            let before = diagnose.then(|| Before::new([m, n], state.step, &state.basis, &g));
            let (moved, tangent) =
                self.update_subspace(ops, &mut state.basis, &g, on_device, diagnose);
            change = moved;
            probe = before.map(|b| b.after(&state.basis, tangent));
        }

        // §2: the projection G̃ = SᵀG. With the check on the device, it also makes the
        // step's parameter buffer (every later kernel's values, and the flag it finds while
        // reading G), which the later operations bind as it is.
        let recovers = cfg.recovery_scaling != RecoveryScaling::Off;
        let rotation = change
            .as_ref()
            .filter(|_| cfg.projection_aware != ProjectionAware::Off)
            .map(|(c, moved)| Rotation {
                change_of_basis: c,
                variant: cfg.projection_aware,
                moved: moved.as_ref(),
            });
        let coefficients = UpdateCoefficients {
            alpha: lr * self.adam.bias_correction(state.step + 1),
            decay,
            scale: cfg.scale,
        };
        let (g_low, params) = if on_device {
            let mut values = ParamValues::new()
                .with_adam(&self.adam, rotation.map(|rot| rot.variant))
                .with_update(
                    coefficients,
                    recovers.then_some((cfg.recovery_scaling, cfg.scale)),
                );
            if recovers {
                values =
                    values.with_recovery(cfg.recovery_scaling, cfg.scale, cfg.norm_growth_limit);
            }
            let (g_low, params) = route::project_packed_on(ops, &state.basis, &g, values);
            (g_low, Some(params))
        } else {
            (ops.project(&state.basis, &g, &[]).0, None)
        };
        let flag = params.as_ref().map(StepFlag::Packed);
        state.step += 1;

        // §2 and §7 fused, where the route offers it and the basis did not move: Adam with
        // recovery scaling's norms and scales, then the update with the limiter, in place of
        // Adam, recovery scaling and the update (three launches a step instead of five).
        let sizes = Sizes {
            a,
            r: cfg.rank,
            b,
            transposed,
        };
        let previous = state.limiter_norm.is_some();
        let previous_norm = probe.as_ref().and(state.limiter_norm.clone());
        if let Some(params) = params
            .as_ref()
            .filter(|_| recovers && rotation.is_none() && ops.fuses_recovery(sizes, previous))
        {
            let (adam, scratch) =
                ops.adam_recovery(state.moment_1, state.moment_2, &g_low, &g, params);
            state.moment_1 = adam.moment_1;
            state.moment_2 = adam.moment_2;
            self.finish_probe(
                probe,
                (&g, transposed),
                &g_low,
                &adam.normalized,
                previous_norm.as_ref(),
            );
            let inputs = UpdateInputs {
                basis: &state.basis,
                normalized: adam.normalized,
                weight: tensor,
                transposed,
                recovery: None,
            };
            let (tensor, norm) = ops.update_limited(
                inputs,
                &g,
                &g_low,
                scratch,
                state.limiter_norm.as_ref(),
                params,
            );
            state.limiter_norm = Some(norm);
            return (tensor, state, Some(params.flag()));
        }

        // §5 and §2: the moments rotated into the new basis, then low-rank Adam:
        // N = M' ⊘ (sqrt(V') + ε).
        let adam = ops.adam(
            state.moment_1,
            state.moment_2,
            &g_low,
            &self.adam,
            rotation,
            flag,
        );
        state.moment_1 = adam.moment_1;
        state.moment_2 = adam.moment_2;
        self.finish_probe(
            probe,
            (&g, transposed),
            &g_low,
            &adam.normalized,
            previous_norm.as_ref(),
        );

        // §7: recovery scaling, W' = d·(W − lr·c·(s·S·N + Λ)), with Λ folded into the
        // back-projection: S·L + G⊙ψ where L = s·N − k·G̃⊙ψ.
        let recovery = recovers.then(|| {
            let inputs = RecoveryInputs {
                grad: &g,
                transposed,
                grad_sq: g_sq,
                g_low: &g_low,
                normalized: &adam.normalized,
                previous: state.limiter_norm.as_ref(),
            };
            let scales = ops.recovery(
                inputs,
                cfg.recovery_scaling,
                cfg.scale,
                cfg.norm_growth_limit,
                flag,
            );
            state.limiter_norm = Some(scales.norm);
            RecoveryTerm {
                grad: g,
                psi: scales.scaled_phi,
                g_low,
                kept_weight: scales.kept_weight,
            }
        });

        // §2: the back-projection and the weight update, in W's own layout.
        let inputs = UpdateInputs {
            basis: &state.basis,
            normalized: adam.normalized,
            weight: tensor,
            transposed,
            recovery,
        };
        let tensor = ops.update(inputs, coefficients, flag);
        (tensor, state, params.map(|p| p.flag()))
    }

    /// Close an update's diagnostics probe (if any) with the limiter's scale, formed from
    /// this step's G, G̃ and N and Λ_prev from before it, and keep it in the report.
    fn finish_probe(
        &self,
        probe: Option<After>,
        (g, transposed): (&Tensor<2>, bool),
        g_low: &Tensor<2>,
        normalized: &Tensor<2>,
        previous: Option<&Tensor<1>>,
    ) {
        let Some(probe) = probe else { return };
        let cfg = &self.config;
        let limiter = (cfg.recovery_scaling != RecoveryScaling::Off).then_some(LimiterInputs {
            grad: g,
            transposed,
            g_low,
            normalized,
            previous,
            variant: cfg.recovery_scaling,
            scale: cfg.scale,
            growth_limit: cfg.norm_growth_limit,
        });
        self.report.push_probe(probe.finish(limiter));
    }

    /// The subspace update (§4 geodesic, §6 SVD refresh), in place; returns C = S_newᵀ·S_old
    /// on the device when it moved, with a device flag saying whether it moved where only
    /// the device knows (`on_device`: the route's tracking step, no read-back; it also keeps
    /// the basis where G is not finite); and, with `diagnose`, σ and θ of a geodesic step.
    fn update_subspace(
        &self,
        ops: &dyn Ops,
        basis: &mut Tensor<2>,
        g: &Tensor<2>,
        on_device: bool,
        diagnose: bool,
    ) -> (Option<(Tensor<2>, Option<Tensor<1>>)>, Option<Tangent>) {
        let cfg = &self.config;
        let r = cfg.rank;
        self.report.count_subspace_update();
        match cfg.subspace_update {
            SubspaceUpdate::Geodesic if on_device => {
                let step = ops
                    .track(
                        basis,
                        g,
                        cfg.step_size,
                        cfg.max_theta,
                        cfg.orthonormality_tolerance,
                    )
                    .expect("checks_on_device chose the device route for this update");
                self.report
                    .count_device_reorthonormalizations(&step.reorthonormalized);
                *basis = step.basis;
                let tangent = diagnose.then_some(Tangent {
                    sigma: step.sigma,
                    theta: step.theta,
                });
                (Some((step.change_of_basis, Some(step.moved))), tangent)
            }
            SubspaceUpdate::Geodesic => {
                let step = geodesic_step(
                    basis,
                    g,
                    cfg.step_size,
                    cfg.max_theta,
                    cfg.orthonormality_tolerance,
                );
                if step.reorthonormalized {
                    self.report.count_reorthonormalization();
                }
                *basis = step.basis;
                let (dtype, device) = (basis.dtype(), basis.device());
                let tangent = diagnose.then(|| {
                    let scalar = |x: f64| host::upload(vec![x], 1, 1, dtype, &device).reshape([1]);
                    Tangent {
                        sigma: scalar(step.sigma),
                        theta: scalar(step.theta),
                    }
                });
                let change = step
                    .change_of_basis
                    .map(|c| (host::upload(c, r, r, dtype, &device), None));
                (change, tangent)
            }
            SubspaceUpdate::Svd => {
                let new = top_singular_basis(g, r);
                let change = new.clone().transpose().matmul(basis.clone());
                *basis = new;
                (Some((change, None)), None)
            }
        }
    }
}

/// How a projected step learns that its gradient is finite.
// Made once per step and taken apart at once, so the size of `Host` costs nothing; a box
// would add an allocation.
#[allow(clippy::large_enum_variant)]
enum FiniteCheck {
    /// The host has checked it (it was finite). `grad_sq`: G's column sums of squares, where
    /// the check formed them (the portable recovery scaling takes them, see
    /// [`Ops::recovery`]).
    Host { grad_sq: Option<Tensor<2>> },
    /// Left to the device: the projection kernel finds the step flag while it reads G.
    Device,
}

/// Panic with the reason when a loaded state does not fit the parameter it is applied to.
fn check_fits(state: &ProjectedState, [m, n]: [usize; 2], rank: usize) {
    let (a, b, transposed) = canonical_layout(m, n);
    let fits = state.basis.dims() == [a, rank]
        && state.moment_1.dims() == [rank, b]
        && state.moment_2.dims() == [rank, b]
        && state.transposed == transposed;
    assert!(
        fits,
        "SubTrack state does not fit a {m}x{n} parameter at rank {rank}: basis {:?}, moments {:?}, transposed {}",
        state.basis.dims(),
        state.moment_1.dims(),
        state.transposed
    );
}

impl Optimizer for SubTrack {
    type State<const D: usize> = SubTrackState<D>;

    /// One step for one parameter. Panics when `lr` is negative or non-finite, or when a
    /// loaded state does not fit the parameter. A gradient holding NaN or ±∞ leaves the
    /// parameter and its state unchanged; the skip is counted in [`SubTrackReport`].
    ///
    /// With [`wgsl_kernels`](SubTrackConfig::wgsl_kernels) on a wgpu/WGSL device, steps that
    /// do not refresh the subspace (and tracking steps the kernels run) check the gradient on
    /// the device and read nothing back: the skip is a select inside the kernels, and its
    /// count is read only when the report is queried. Such a skipped step still counts toward
    /// k (bias correction and the update interval), because only a read-back would tell the
    /// host it was skipped. Everywhere else the check is one read-back per parameter step,
    /// a skip leaves k unchanged, and it is logged.
    ///
    /// A parameter stored as f16, bf16, Flex32 or f64 is stepped in f32 with f32 state, and
    /// the new weight is rounded back to its type (an f64 weight gets the f32 change added).
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        assert!(
            lr.is_finite() && lr >= 0.0,
            "SubTrack: the learning rate must be finite and >= 0, got {lr}"
        );
        if matches!(
            tensor.dtype(),
            DType::F16 | DType::BF16 | DType::Flex32 | DType::F64
        ) {
            return self.widened_step(lr, tensor, grad, state);
        }
        let reads = host::reads_on_this_thread();
        let dims = tensor.dims();
        let projected = self.is_projected(&dims);
        let sizes = projected.then(|| {
            let (a, b, transposed) = canonical_layout(dims[0], dims[1]);
            Sizes {
                a,
                r: self.config.rank,
                b,
                transposed,
            }
        });
        let ops = route::choose(&self.config, &tensor.device(), tensor.dtype(), sizes);
        let on_device = self.checks_on_device(&*ops, sizes, state.as_ref());
        let count_reads = || {
            self.report
                .count_host_reads(host::reads_on_this_thread() - reads);
        };
        // Recovery scaling on the portable and CPU routes (SubTrack++) needs G's column sums
        // of squares, and their total carries any NaN or ±∞ of G: one pass over G serves both.
        let recovers = self.config.recovery_scaling != RecoveryScaling::Off;
        let g_sq = (projected && !on_device && recovers && ops.takes_grad_sq()).then(|| {
            let (g, transposed) = canonical_gradient(grad.clone().reshape([dims[0], dims[1]]));
            ops.column_sq(&g, transposed)
        });
        let finite = on_device
            || match &g_sq {
                Some(sq) => host::all_finite_given(sq.clone().sum(), grad.clone()),
                None => host::read_all_finite(grad.clone()),
            };
        let check = if on_device {
            FiniteCheck::Device
        } else {
            FiniteCheck::Host { grad_sq: g_sq }
        };
        if !finite {
            self.report.count_host_skip();
            log::warn!(
                "SubTrack: non-finite gradient for a {:?} parameter at step {}; step skipped",
                tensor.dims(),
                state.as_ref().map_or(0, |s| s.step())
            );
            count_reads();
            return (tensor, state);
        }

        let decay = 1.0 - lr * self.config.weight_decay;
        let (tensor, state) = if projected {
            let [m, n] = [dims[0], dims[1]];
            let state = match state {
                Some(SubTrackState::Projected(s)) => Some(s),
                Some(SubTrackState::Dense(_)) => panic!(
                    "SubTrack: a dense (AdamW) state was loaded for a {dims:?} parameter that is projected at rank {}",
                    self.config.rank
                ),
                None => None,
            };
            let (w, s, flag) = self.projected_step(
                &*ops,
                lr,
                decay,
                tensor.reshape([m, n]),
                grad.reshape([m, n]),
                state,
                check,
            );
            if let Some(flag) = flag {
                self.report.count_device_skips(&flag);
            }
            (w.reshape(dims), SubTrackState::Projected(s))
        } else {
            let state = match state {
                Some(SubTrackState::Dense(s)) => Some(s),
                Some(SubTrackState::Projected(s)) => panic!(
                    "SubTrack: a projected state (basis {:?}) was loaded for a {dims:?} parameter that is not projected at rank {}",
                    s.basis.dims(),
                    self.config.rank
                ),
                None => None,
            };
            let flag = on_device.then(|| route::step_flag(&grad));
            if let Some(flag) = &flag {
                self.report.count_device_skips(flag);
            }
            let (w, s) = self.dense_step(lr, decay, tensor, grad, state, flag.as_ref());
            (w, SubTrackState::Dense(s))
        };
        count_reads();
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.to_device(device)
    }
}
