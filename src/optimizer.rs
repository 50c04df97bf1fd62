//! [`SubTrack`]: one optimizer step per parameter (algorithm.md §2), orchestrating the
//! basis, geodesic, moment and recovery modules.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::optim::{LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

use crate::basis::top_singular_basis;
use crate::config::{ProjectionAware, RecoveryScaling, SubTrackConfig, SubspaceUpdate};
use crate::geodesic::geodesic_step;
use crate::host;
use crate::kernels;
use crate::moments::{AdamParams, rotate_moments};
use crate::recovery::recovery_scales;
use crate::state::{DenseState, ProjectedState, SubTrackState, canonical_layout};

/// The SubTrack optimizer: SubTrack-Grad, SubTrack++ or GaLore for projected matrices, and
/// AdamW for every other parameter. Built by [`SubTrackConfig::build`].
#[derive(Clone)]
pub struct SubTrack {
    config: SubTrackConfig,
    adam: AdamParams,
    report: SubTrackReport,
}

/// Counters shared by every clone of one [`SubTrack`]; cheap to clone and read at any time.
#[derive(Clone, Debug, Default)]
pub struct SubTrackReport {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    nonfinite_skips: AtomicU64,
    subspace_updates: AtomicU64,
    reorthonormalizations: AtomicU64,
}

impl SubTrackReport {
    /// Parameter steps skipped because the gradient held NaN or ±∞.
    pub fn nonfinite_skips(&self) -> u64 {
        self.inner.nonfinite_skips.load(Ordering::Relaxed)
    }

    /// Subspace updates (geodesic steps or SVD refreshes) performed, initial bases excluded.
    pub fn subspace_updates(&self) -> u64 {
        self.inner.subspace_updates.load(Ordering::Relaxed)
    }

    /// Geodesic steps whose basis drifted past the tolerance and was re-orthonormalised.
    pub fn reorthonormalizations(&self) -> u64 {
        self.inner.reorthonormalizations.load(Ordering::Relaxed)
    }
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

    fn dense_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<DenseState<D>>,
    ) -> (Tensor<D>, DenseState<D>) {
        let (moment_1, moment_2, step) = match state {
            Some(s) => (s.moment_1, s.moment_2, s.step),
            None => (grad.zeros_like(), grad.zeros_like(), 0),
        };
        let step = step + 1;
        let (moment_1, moment_2) = self.adam.update_moments(moment_1, moment_2, &grad);
        let update = self.adam.normalize(&moment_1, &moment_2);
        let c = self.adam.bias_correction(step);
        let tensor = self.apply(tensor, update, lr * c);
        (
            tensor,
            DenseState {
                moment_1,
                moment_2,
                step,
            },
        )
    }

    /// W − lr·c·U; the decoupled decay W −= lr·wd·W follows in [`Optimizer::step`].
    fn apply<const D: usize>(&self, tensor: Tensor<D>, update: Tensor<D>, lr_c: f64) -> Tensor<D> {
        tensor - update.mul_scalar(lr_c)
    }

    /// One projected step; `decay` = 1 − lr·wd is applied here (fused with the update).
    fn projected_step(
        &self,
        lr: LearningRate,
        decay: f64,
        tensor: Tensor<2>,
        grad: Tensor<2>,
        state: Option<ProjectedState>,
    ) -> (Tensor<2>, ProjectedState) {
        let cfg = &self.config;
        let [m, n] = tensor.dims();
        let (_, _, transposed) = canonical_layout(m, n);
        let g = if transposed { grad.transpose() } else { grad };
        let [a, b] = g.dims();

        let mut state = match state {
            Some(s) => {
                check_fits(&s, [m, n], cfg.rank);
                s
            }
            None => ProjectedState {
                basis: top_singular_basis(&g, cfg.rank),
                moment_1: Tensor::zeros([cfg.rank, b], &g.device()),
                moment_2: Tensor::zeros([cfg.rank, b], &g.device()),
                step: 0,
                limiter_norm: None,
                transposed,
            },
        };
        debug_assert_eq!(state.basis.dims(), [a, cfg.rank]);

        if state.step > 0 && state.step.is_multiple_of(cfg.update_interval) {
            let change = self.update_subspace(&mut state.basis, &g);
            if let (Some(change), true) = (change, cfg.projection_aware != ProjectionAware::Off) {
                let (m1, m2) = rotate_moments(
                    state.moment_1,
                    state.moment_2,
                    &change,
                    cfg.projection_aware,
                    cfg.beta_2,
                );
                state.moment_1 = m1;
                state.moment_2 = m2;
            }
        }

        let g_low = kernels::project(&state.basis, &g, cfg.wgsl_kernels);
        state.step += 1;
        let (moment_1, moment_2) = self
            .adam
            .update_moments(state.moment_1, state.moment_2, &g_low);
        let normalized = self.adam.normalize(&moment_1, &moment_2);
        // W' = d·(W − lr·c·(s·S·N + Λ)), with Λ folded into the back-projection (see
        // `recovery`): S·L + G⊙ψ where L = s·N − k·G̃⊙ψ.
        let (low, recovery) = if cfg.recovery_scaling == RecoveryScaling::Off {
            (normalized.mul_scalar(cfg.scale), None)
        } else {
            let scales = recovery_scales(
                &g,
                &g_low,
                &normalized,
                cfg.recovery_scaling,
                cfg.scale,
                cfg.norm_growth_limit,
                state.limiter_norm.as_ref(),
            );
            state.limiter_norm = Some(scales.norm);
            let low = normalized.mul_scalar(cfg.scale)
                - (g_low * scales.scaled_phi.clone()).mul_scalar(scales.kept_weight);
            (low, Some((g, scales.scaled_phi)))
        };
        state.moment_1 = moment_1;
        state.moment_2 = moment_2;
        let c = self.adam.bias_correction(state.step);
        let tensor = kernels::update(
            &state.basis,
            low,
            tensor,
            recovery,
            lr * c,
            decay,
            transposed,
            cfg.wgsl_kernels,
        );
        (tensor, state)
    }

    /// Refresh the basis in place; returns C = S_newᵀ·S_old on the device when it moved.
    fn update_subspace(&self, basis: &mut Tensor<2>, g: &Tensor<2>) -> Option<Tensor<2>> {
        let cfg = &self.config;
        let r = cfg.rank;
        self.report
            .inner
            .subspace_updates
            .fetch_add(1, Ordering::Relaxed);
        match cfg.subspace_update {
            SubspaceUpdate::Geodesic => {
                let step = geodesic_step(
                    basis,
                    g,
                    cfg.step_size,
                    cfg.max_theta,
                    cfg.orthonormality_tolerance,
                );
                if step.reorthonormalized {
                    self.report
                        .inner
                        .reorthonormalizations
                        .fetch_add(1, Ordering::Relaxed);
                }
                *basis = step.basis;
                step.change_of_basis
                    .map(|c| host::upload(c, r, r, basis.dtype(), &basis.device()))
            }
            SubspaceUpdate::Svd => {
                let new = top_singular_basis(g, r);
                let change = new.clone().transpose().matmul(basis.clone());
                *basis = new;
                Some(change)
            }
        }
    }
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
    /// parameter and its state unchanged; the skip is counted in [`SubTrackReport`] and logged.
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
        let finite = grad.clone().is_finite().all().into_scalar::<bool>();
        if !finite {
            self.report
                .inner
                .nonfinite_skips
                .fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "SubTrack: non-finite gradient for a {:?} parameter at step {}; step skipped",
                tensor.dims(),
                state.as_ref().map_or(0, |s| s.step())
            );
            return (tensor, state);
        }

        let dims = tensor.dims();
        let decay = 1.0 - lr * self.config.weight_decay;
        let (tensor, state) = if self.is_projected(&dims) {
            let [m, n] = [dims[0], dims[1]];
            let state = match state {
                Some(SubTrackState::Projected(s)) => Some(s),
                Some(SubTrackState::Dense(_)) => panic!(
                    "SubTrack: a dense (AdamW) state was loaded for a {dims:?} parameter that is projected at rank {}",
                    self.config.rank
                ),
                None => None,
            };
            let (w, s) = self.projected_step(
                lr,
                decay,
                tensor.reshape([m, n]),
                grad.reshape([m, n]),
                state,
            );
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
            let (w, s) = self.dense_step(lr, tensor, grad, state);
            let w = if decay == 1.0 { w } else { w.mul_scalar(decay) };
            (w, SubTrackState::Dense(s))
        };
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.to_device(device)
    }
}
