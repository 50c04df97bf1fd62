//! [`SubTrack`]: one optimizer step per parameter. A projected matrix's step
//! (`projected_step`) reads as docs/algorithm.md §2 does, over the operations of the route
//! [`route::choose`] picks for it; every other parameter gets AdamW (`dense_step`).

use burn::optim::{LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{DType, Device, Tensor};

use crate::SubTrackError;
use crate::basis::top_singular_basis;
use crate::config::{ProjectionAware, RecoveryScaling, SubTrackConfig};
use crate::diagnostics::{After, Before, LimiterInputs, Tangent};
use crate::geodesic::geodesic_step;
use crate::host;
use crate::moments::AdamParams;
use crate::plan::{Check, ProjectedPlan, Recovery, StepPlan, SubspaceMove};
use crate::report::SubTrackReport;
use crate::route::{
    self, Fused, LimitedInputs, LowRankAdam, Ops, ParamValues, RecoveryInputs, RecoveryTerm,
    Rotation, Sizes, StepFlag, StepParams, UpdateCoefficients, UpdateInputs, keep_on_skip,
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
    ///
    /// The optimizer's counters and diagnostics stay reachable through
    /// [`init_with_report`](Self::init_with_report).
    pub fn init(&self) -> Result<ModuleOptimizer, SubTrackError> {
        Ok(self.init_with_report()?.0)
    }

    /// [`init`](Self::init), with a handle on the optimizer's [`SubTrackReport`]: its skip,
    /// subspace-update and read-back counts, and the subspace diagnostics it turns on. The
    /// handle is shared with the optimizer inside the `ModuleOptimizer`, so it sees every
    /// step that optimizer takes, on any thread.
    ///
    /// ```no_run
    /// let (optim, report) = subtrack::SubTrackConfig::new().init_with_report().unwrap();
    /// report.set_subspace_diagnostics(true);
    /// // ... optim.step(lr, model, grads) ...
    /// println!("{} subspace updates", report.subspace_updates());
    /// # drop(optim);
    /// ```
    pub fn init_with_report(&self) -> Result<(ModuleOptimizer, SubTrackReport), SubTrackError> {
        let optim = self.build()?;
        let report = optim.report();
        let mut optim = ModuleOptimizer::from(optim);
        if let Some(clipping) = &self.grad_clipping {
            optim = optim.with_grad_clipping(clipping.init());
        }
        Ok((optim, report))
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

    /// AdamW of the same form as the projected step, with d = 1 − lr·wd. `flag` is the
    /// device-side step flag when the finite check was left to the device.
    fn dense_step<const D: usize>(
        &self,
        param: Param<D>,
        state: Option<DenseState<D>>,
        flag: Option<&Tensor<1>>,
    ) -> (Tensor<D>, DenseState<D>) {
        let Param {
            lr,
            decay,
            weight: tensor,
            grad,
            ..
        } = param;
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

    /// One projected step (docs/algorithm.md §2) as `plan` says, on the route `ops`:
    /// subspace update, projection, moment rotation and low-rank Adam, recovery scaling,
    /// weight update. With [`Check::Device`] the projection finds the step flag while it
    /// reads G, and the flag is returned for the skip count.
    fn projected_step(
        &self,
        ops: &dyn Ops,
        plan: &ProjectedPlan,
        check: Check,
        param: Param<2>,
        state: Option<ProjectedState>,
    ) -> (Tensor<2>, ProjectedState, Option<Tensor<1>>) {
        let cfg = &self.config;
        let Param {
            lr,
            decay,
            weight,
            grad,
            grad_sq,
        } = param;
        let shape = weight.dims();
        // §1: G is the gradient with the smaller side first (a transposed view where W is
        // wide), so that the basis spans the smaller side.
        let (g, transposed) = canonical_gradient(grad);
        let mut state = self.projected_state(state, &g, shape, transposed);

        // §4 / §6: every T steps, the subspace update S → S' with C = S'ᵀS; with the
        // diagnostics on, a probe of what it did (device tensors, read when asked).
        let (change, probe) = match plan.subspace {
            Some(how) => self.update_subspace(ops, how, &mut state, &g, shape),
            None => (None, None),
        };
        let rotation = self.rotation(change.as_ref());
        let coefficients = UpdateCoefficients {
            alpha: lr * self.adam.bias_correction(state.step + 1),
            decay,
            scale: cfg.scale,
        };

        // §2: the projection G̃ = SᵀG.
        let variant = rotation.map(|rot| rot.variant);
        let (g_low, params) = self.project(ops, check, &state.basis, &g, variant, coefficients);
        let step_flag = params.as_ref().map(StepParams::flag);
        state.step += 1;
        let projected = Projected {
            g,
            transposed,
            grad_sq,
            g_low,
            params,
        };

        // §5 and §2: the moments rotated into the new basis, then low-rank Adam.
        let moments = (state.moment_1, state.moment_2);
        let (adam, tail) = self.low_rank_adam(ops, plan, moments, &projected, rotation);
        (state.moment_1, state.moment_2) = (adam.moment_1, adam.moment_2);
        let normalized = adam.normalized;
        let previous = state.limiter_norm.clone();
        if let Some(probe) = probe {
            let g = (&projected.g, transposed);
            let limiter = self.limiter_inputs(g, &projected.g_low, &normalized, &previous);
            self.report.push_probe(probe.finish(limiter));
        }

        // §7 and §2: recovery scaling, the back-projection and the weight update.
        let inputs = UpdateInputs {
            basis: &state.basis,
            normalized,
            weight,
            transposed,
            recovery: None,
        };
        let (weight, norm) = self.weight_update(
            ops,
            inputs,
            projected,
            tail,
            previous.as_ref(),
            coefficients,
        );
        if norm.is_some() {
            state.limiter_norm = norm;
        }
        (weight, state, step_flag)
    }

    /// The projection-aware rotation (§5) of the moments by an update's change of basis C
    /// (and its device flag "moved"), where the config rotates them.
    fn rotation<'c>(
        &self,
        change: Option<&'c (Tensor<2>, Option<Tensor<1>>)>,
    ) -> Option<Rotation<'c>> {
        let variant = self.config.projection_aware;
        change
            .filter(|_| variant != ProjectionAware::Off)
            .map(|(c, moved)| Rotation {
                change_of_basis: c,
                variant,
                moved: moved.as_ref(),
            })
    }

    /// The projection G̃ = SᵀG (§2). Checked on the device, it also makes the step's
    /// parameter buffer (every later kernel's values, `rotation` the projection-aware variant
    /// of a step that rotates the moments, and the flag it finds while reading G), which the
    /// later operations bind as it is.
    fn project(
        &self,
        ops: &dyn Ops,
        check: Check,
        basis: &Tensor<2>,
        g: &Tensor<2>,
        rotation: Option<ProjectionAware>,
        coefficients: UpdateCoefficients,
    ) -> (Tensor<2>, Option<StepParams>) {
        match check {
            Check::Device => {
                let values = self.step_values(rotation, coefficients);
                let (g_low, params) = route::project_packed_on(ops, basis, g, values);
                (g_low, Some(params))
            }
            Check::Host { .. } => (ops.project(basis, g, &[]).0, None),
        }
    }

    /// Low-rank Adam (§5, §2) on the moments (M, V): rotated into the new basis where
    /// `rotation` is given, then M', V' and N = M' ⊘ (sqrt(V') + ε). Where the plan fuses
    /// recovery scaling (the projection made the step's buffer), it also forms the recovery
    /// norms and scales, for the limited update.
    fn low_rank_adam(
        &self,
        ops: &dyn Ops,
        plan: &ProjectedPlan,
        (moment_1, moment_2): (Tensor<2>, Tensor<2>),
        projected: &Projected,
        rotation: Option<Rotation>,
    ) -> (LowRankAdam, Tail) {
        let Projected { g, g_low, .. } = projected;
        match (plan.recovery, &projected.params) {
            (Recovery::Fused(fused), Some(params)) => {
                let (adam, scratch) = ops.adam_recovery(moment_1, moment_2, g_low, g, params);
                let tail = Tail::Limited {
                    fused,
                    params: params.clone(),
                    scratch,
                };
                (adam, tail)
            }
            _ => {
                let flag = projected.flag();
                let adam = ops.adam(moment_1, moment_2, g_low, &self.adam, rotation, flag);
                (adam, Tail::Plain)
            }
        }
    }

    /// Recovery scaling (§7), W' = d·(W − lr·c·(s·S·N + Λ)) with Λ folded into the
    /// back-projection, S·L + G⊙ψ where L = s·N − k·G̃⊙ψ; then the back-projection and the
    /// weight update (§2) in W's own layout. Returns W' and, with recovery scaling, the
    /// limiter's new norm Λ_prev' (`previous` is Λ_prev).
    fn weight_update(
        &self,
        ops: &dyn Ops,
        mut inputs: UpdateInputs,
        projected: Projected,
        tail: Tail,
        previous: Option<&Tensor<1>>,
        coefficients: UpdateCoefficients,
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        let cfg = &self.config;
        let Projected {
            g,
            transposed,
            grad_sq,
            g_low,
            params,
        } = projected;
        let flag = params.as_ref().map(StepFlag::Packed);
        if let Tail::Limited {
            fused,
            params,
            scratch,
        } = tail
        {
            let limited = LimitedInputs {
                grad: &g,
                g_low: &g_low,
                scratch,
                previous,
            };
            let (weight, norm) = ops.update_limited(inputs, limited, &params, fused);
            return (weight, Some(norm));
        }
        let mut norm = None;
        if cfg.recovery_scaling != RecoveryScaling::Off {
            let recovery = RecoveryInputs {
                grad: &g,
                transposed,
                grad_sq,
                g_low: &g_low,
                normalized: &inputs.normalized,
                previous,
            };
            let (variant, scale) = (cfg.recovery_scaling, cfg.scale);
            let scales = ops.recovery(recovery, variant, scale, cfg.norm_growth_limit, flag);
            norm = Some(scales.norm);
            inputs.recovery = Some(RecoveryTerm {
                grad: g,
                psi: scales.scaled_phi,
                g_low,
                kept_weight: scales.kept_weight,
            });
        }
        (ops.update(inputs, coefficients, flag), norm)
    }

    /// The loaded state, checked against the parameter (m×n, G a×b), or the first one: the
    /// initial basis (§3) and zero moments.
    fn projected_state(
        &self,
        state: Option<ProjectedState>,
        g: &Tensor<2>,
        [m, n]: [usize; 2],
        transposed: bool,
    ) -> ProjectedState {
        let rank = self.config.rank;
        let Some(state) = state else {
            let (b, options) = (g.dims()[1], (&g.device(), g.dtype()));
            return ProjectedState {
                basis: top_singular_basis(g, rank),
                moment_1: Tensor::zeros([rank, b], options),
                moment_2: Tensor::zeros([rank, b], options),
                step: 0,
                limiter_norm: None,
                transposed,
            };
        };
        let [a, b] = g.dims();
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
        state
    }

    /// The step's parameter-buffer values: low-rank Adam's (`rotation`: the projection-aware
    /// variant of a step that rotates the moments), the update's, and, with recovery scaling,
    /// the limiter's.
    fn step_values(
        &self,
        rotation: Option<ProjectionAware>,
        coefficients: UpdateCoefficients,
    ) -> ParamValues {
        let cfg = &self.config;
        let recovers = cfg.recovery_scaling != RecoveryScaling::Off;
        let values = ParamValues::new()
            .with_adam(&self.adam, rotation)
            .with_update(
                coefficients,
                recovers.then_some((cfg.recovery_scaling, cfg.scale)),
            );
        if recovers {
            values.with_recovery(cfg.recovery_scaling, cfg.scale, cfg.norm_growth_limit)
        } else {
            values
        }
    }

    /// What a diagnostics probe needs to form the limiter's scale at this step: this step's
    /// G, G̃ and N and Λ_prev from before it; `None` without recovery scaling.
    fn limiter_inputs<'a>(
        &self,
        (g, transposed): (&'a Tensor<2>, bool),
        g_low: &'a Tensor<2>,
        normalized: &'a Tensor<2>,
        previous: &'a Option<Tensor<1>>,
    ) -> Option<LimiterInputs<'a>> {
        let cfg = &self.config;
        (cfg.recovery_scaling != RecoveryScaling::Off).then_some(LimiterInputs {
            grad: g,
            transposed,
            g_low,
            normalized,
            previous: previous.as_ref(),
            variant: cfg.recovery_scaling,
            scale: cfg.scale,
            growth_limit: cfg.norm_growth_limit,
        })
    }

    /// The subspace update `how` (§4 geodesic, §6 SVD refresh) of `state`'s basis, in
    /// place, for the `shape` parameter: C = S_newᵀ·S_old on the device where it moved,
    /// with a device flag saying whether it moved where only the device knows (the route's
    /// tracking step, which also keeps the basis where G is not finite); and, with the
    /// diagnostics on, the probe of what it did.
    fn update_subspace(
        &self,
        ops: &dyn Ops,
        how: SubspaceMove,
        state: &mut ProjectedState,
        g: &Tensor<2>,
        shape: [usize; 2],
    ) -> (Option<(Tensor<2>, Option<Tensor<1>>)>, Option<After>) {
        let cfg = &self.config;
        let r = cfg.rank;
        let basis = &mut state.basis;
        let before = self
            .report
            .subspace_diagnostics()
            .then(|| Before::new(shape, state.step, basis, g));
        self.report.count_subspace_update();
        let (change, tangent) = match how {
            SubspaceMove::Track(tracking) => {
                let step = ops.track(
                    basis,
                    g,
                    cfg.step_size,
                    cfg.max_theta,
                    cfg.orthonormality_tolerance,
                    tracking,
                );
                self.report
                    .count_device_reorthonormalizations(&step.reorthonormalized);
                *basis = step.basis;
                let tangent = Tangent {
                    sigma: step.sigma,
                    theta: step.theta,
                };
                (
                    Some((step.change_of_basis, Some(step.moved))),
                    Some(tangent),
                )
            }
            SubspaceMove::Geodesic => {
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
                let tangent = before.is_some().then(|| {
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
            SubspaceMove::Refresh => {
                let new = top_singular_basis(g, r);
                let change = new.clone().transpose().matmul(basis.clone());
                *basis = new;
                (Some((change, None)), None)
            }
        };
        let probe = before.map(|b| b.after(basis, tangent));
        (change, probe)
    }
}

/// One parameter's step inputs: W and its gradient (f32), the learning rate and
/// d = 1 − lr·wd, and G's column sums of squares where the host check formed them (the
/// portable recovery scaling takes them, see [`Ops::recovery`]).
struct Param<const D: usize> {
    lr: LearningRate,
    decay: f64,
    weight: Tensor<D>,
    grad: Tensor<D>,
    grad_sq: Option<Tensor<2>>,
}

/// A projected step's gradient after the projection: G (a×b, a transposed view where
/// `transposed`), its column sums of squares where the host check formed them, G̃ = SᵀG
/// (r×b), and the step's parameter buffer where the check is left to the device.
struct Projected {
    g: Tensor<2>,
    transposed: bool,
    grad_sq: Option<Tensor<2>>,
    g_low: Tensor<2>,
    params: Option<StepParams>,
}

impl Projected {
    /// The device-side step flag the later operations select on, where there is one.
    fn flag(&self) -> Option<StepFlag<'_>> {
        self.params.as_ref().map(StepFlag::Packed)
    }
}

/// How the step ends after low-rank Adam.
// Made once per step and taken apart at once: a box would add an allocation.
#[allow(clippy::large_enum_variant)]
enum Tail {
    /// Recovery scaling (where the config has it) as its own operation, then the update.
    Plain,
    /// The limited update, recovery scaling fused in as the route chose: its parameter
    /// buffer and the scratch of φ and partial sums that Adam formed.
    Limited {
        fused: Fused,
        params: StepParams,
        scratch: Tensor<1>,
    },
}

impl SubTrack {
    /// The finite check of `plan`'s host kind: `None` where G holds NaN or ±∞ (the step is
    /// skipped), else `Some` of G's column sums of squares where the check formed them. A
    /// check left to the device passes here.
    ///
    /// Recovery scaling on the portable and CPU routes (SubTrack++) needs G's column sums
    /// of squares, and their total carries any NaN or ±∞ of G: one pass over G serves both.
    fn host_check<const D: usize>(
        &self,
        ops: &dyn Ops,
        check: Check,
        grad: &Tensor<D>,
    ) -> Option<Option<Tensor<2>>> {
        match check {
            Check::Device => Some(None),
            Check::Host { column_sq: true } => {
                let [m, n] = [grad.dims()[0], grad.dims()[1]];
                let (g, transposed) = canonical_gradient(grad.clone().reshape([m, n]));
                let sq = ops.column_sq(&g, transposed);
                host::all_finite_given(sq.clone().sum(), grad.clone()).then_some(Some(sq))
            }
            Check::Host { column_sq: false } => host::read_all_finite(grad.clone()).then_some(None),
        }
    }

    /// [`projected_step`](Self::projected_step) for a parameter of any rank D = 2, with its
    /// state checked to be a projected one, and the device skips counted.
    fn step_projected<const D: usize>(
        &self,
        ops: &dyn Ops,
        plan: &ProjectedPlan,
        check: Check,
        param: Param<D>,
        state: Option<SubTrackState<D>>,
    ) -> (Tensor<D>, SubTrackState<D>) {
        let dims = param.weight.dims();
        let state = match state {
            Some(SubTrackState::Projected(s)) => Some(s),
            Some(SubTrackState::Dense(_)) => panic!(
                "SubTrack: a dense (AdamW) state was loaded for a {dims:?} parameter that is projected at rank {}",
                self.config.rank
            ),
            None => None,
        };
        let [m, n] = [dims[0], dims[1]];
        let param = Param {
            weight: param.weight.reshape([m, n]),
            grad: param.grad.reshape([m, n]),
            lr: param.lr,
            decay: param.decay,
            grad_sq: param.grad_sq,
        };
        let (weight, state, flag) = self.projected_step(ops, plan, check, param, state);
        if let Some(flag) = flag {
            self.report.count_device_skips(&flag);
        }
        (weight.reshape(dims), SubTrackState::Projected(state))
    }

    /// [`dense_step`](Self::dense_step) with its state checked to be a dense one, the step
    /// flag found on the device where the check is left to it, and the device skips counted.
    fn step_dense<const D: usize>(
        &self,
        check: Check,
        param: Param<D>,
        state: Option<SubTrackState<D>>,
    ) -> (Tensor<D>, SubTrackState<D>) {
        let dims = param.weight.dims();
        let state = match state {
            Some(SubTrackState::Dense(s)) => Some(s),
            Some(SubTrackState::Projected(s)) => panic!(
                "SubTrack: a projected state (basis {:?}) was loaded for a {dims:?} parameter that is not projected at rank {}",
                s.basis.dims(),
                self.config.rank
            ),
            None => None,
        };
        let flag = (check == Check::Device).then(|| route::step_flag(&param.grad));
        if let Some(flag) = &flag {
            self.report.count_device_skips(flag);
        }
        let (weight, state) = self.dense_step(param, state, flag.as_ref());
        (weight, SubTrackState::Dense(state))
    }
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
        // A gradient registered by hand on the model's autodiff device steps as Burn's own
        // gradients do, on the inner device (the fused routes' custom ops take no autodiff).
        let (tensor, grad) = (tensor.inner(), grad.inner());
        if matches!(
            tensor.dtype(),
            DType::F16 | DType::BF16 | DType::Flex32 | DType::F64
        ) {
            return self.widened_step(lr, tensor, grad, state);
        }
        let reads = host::reads_on_this_thread();
        let dims = tensor.dims();
        let sizes = self.is_projected(&dims).then(|| {
            let (a, b, transposed) = canonical_layout(dims[0], dims[1]);
            Sizes {
                a,
                r: self.config.rank,
                b,
                transposed,
            }
        });
        let ops = route::choose(&self.config, &tensor.device(), tensor.dtype(), sizes);
        let plan = StepPlan::new(&self.config, &*ops, sizes, state.as_ref());
        let stepped = match self.host_check(&*ops, plan.check, &grad) {
            Some(grad_sq) => {
                let param = Param {
                    lr,
                    decay: 1.0 - lr * self.config.weight_decay,
                    weight: tensor,
                    grad,
                    grad_sq,
                };
                let (tensor, state) = match &plan.projected {
                    Some(projected) => {
                        self.step_projected(&*ops, projected, plan.check, param, state)
                    }
                    None => self.step_dense(plan.check, param, state),
                };
                (tensor, Some(state))
            }
            None => {
                self.report.count_host_skip();
                log::warn!(
                    "SubTrack: non-finite gradient for a {dims:?} parameter at step {}; step skipped",
                    state.as_ref().map_or(0, |s| s.step())
                );
                (tensor, state)
            }
        };
        self.report
            .count_host_reads(host::reads_on_this_thread() - reads);
        stepped
    }

    /// Moves the state to `device`'s inner device: the state never records autodiff, also
    /// where Burn's `ModuleOptimizer` hands the gradient's autodiff device.
    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.to_device(&device.clone().inner())
    }
}
