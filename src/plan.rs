//! [`StepPlan`]: how one parameter's step runs on its route, decided once per step from the
//! config, the route (which the device, the dtype and the sizes chose) and the state, so
//! that the step itself (`optimizer.rs`) reads as the plan and the paper's order.

use crate::config::{ProjectionAware, RecoveryScaling, SubTrackConfig, SubspaceUpdate};
use crate::route::{Fused, Ops, Sizes, Tracking};
use crate::state::SubTrackState;

/// How one parameter's step runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepPlan {
    /// How G is found finite.
    pub check: Check,
    /// The projected step's plan; `None` for a parameter that AdamW steps.
    pub projected: Option<ProjectedPlan>,
}

/// How a step learns that its gradient is finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// On the host before the step: one read-back, and a skip leaves k unchanged.
    /// `column_sq`: the check reads G's column sums of squares (one pass over G), which the
    /// route's recovery scaling then takes (see [`Ops::takes_grad_sq`]).
    Host { column_sq: bool },
    /// On the device: the projection finds the step flag while it reads G (or, for AdamW,
    /// a reduction does), every later operation selects on it, and nothing is read back.
    Device,
}

/// How the subspace moves at a subspace update (every T steps).
#[derive(Clone, Copy, Debug)]
pub(crate) enum SubspaceMove {
    /// The geodesic step (§4) as the route's tracking kernels: no read-back, and the basis
    /// stays where G is not finite.
    Track(Tracking),
    /// The geodesic step (§4) on the host (`geodesic.rs`).
    Geodesic,
    /// GaLore's SVD refresh (§6), by the host eigensolver.
    Refresh,
}

/// How recovery scaling (§7) runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Recovery {
    /// No recovery scaling (SubTrack-Grad, GaLore).
    Off,
    /// Its own operation between low-rank Adam and the update.
    Separate,
    /// Fused into low-rank Adam and the weight update (three launches a step instead of
    /// five), as the route chose for these sizes.
    Fused(Fused),
}

/// The plan of a projected matrix's step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProjectedPlan {
    /// The subspace update that opens this step, where k is a positive multiple of T.
    pub subspace: Option<SubspaceMove>,
    /// How recovery scaling runs.
    pub recovery: Recovery,
}

impl StepPlan {
    /// The plan for a parameter of `sizes` (`None`: not projected) on the route `ops`, whose
    /// state is `state` (`None` on its first step).
    ///
    /// The check runs on the device only where the route finds the flag as it projects, and
    /// the step reads nothing back anyway: steps that find the first basis, a GaLore refresh
    /// (host eigensolver) and a geodesic step the route cannot track on the device read back
    /// and check on the host; so does a projected step that would start the limiter's norm.
    /// (The portable route checks on the host: on a GPU its device-side selects would cost
    /// more than the read-back they save.)
    pub fn new<const D: usize>(
        config: &SubTrackConfig,
        ops: &dyn Ops,
        sizes: Option<Sizes>,
        state: Option<&SubTrackState<D>>,
    ) -> Self {
        let recovers = config.recovery_scaling != RecoveryScaling::Off;
        let Some(sizes) = sizes else {
            let check = if ops.checks_on_device() {
                Check::Device
            } else {
                Check::Host { column_sq: false }
            };
            return StepPlan {
                check,
                projected: None,
            };
        };
        let (step, previous) = match state {
            Some(SubTrackState::Projected(s)) => (s.step, s.limiter_norm.is_some()),
            _ => (0, false),
        };
        let updates = step > 0 && step.is_multiple_of(config.update_interval);
        let tracking = match config.subspace_update {
            SubspaceUpdate::Geodesic if updates => ops.tracking(sizes),
            _ => None,
        };
        let on_device = ops.checks_on_device()
            && step > 0
            && (!updates || tracking.is_some())
            && (!recovers || previous);
        let check = if on_device {
            Check::Device
        } else {
            Check::Host {
                column_sq: recovers && ops.takes_grad_sq(),
            }
        };
        let subspace = updates.then_some(match (config.subspace_update, tracking) {
            (SubspaceUpdate::Svd, _) => SubspaceMove::Refresh,
            (SubspaceUpdate::Geodesic, Some(tracking)) if on_device => {
                SubspaceMove::Track(tracking)
            }
            (SubspaceUpdate::Geodesic, _) => SubspaceMove::Geodesic,
        });
        // Whether the moments may be rotated into a new basis (§5) this step. A tracking
        // step always hands on a change of basis (the device knows whether it moved).
        let rotates = updates && config.projection_aware != ProjectionAware::Off;
        let recovery = if !recovers {
            Recovery::Off
        } else {
            // Fused only where the step's parameter buffer exists (the device check) and
            // the basis does not move under the moments.
            let fused = (on_device && !rotates)
                .then(|| ops.fused_recovery(sizes, previous))
                .flatten();
            fused.map_or(Recovery::Separate, Recovery::Fused)
        };
        StepPlan {
            check,
            projected: Some(ProjectedPlan { subspace, recovery }),
        }
    }
}
