//! [`SubTrackConfig`]: hyper-parameters, presets and validation.

use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamW, AdamWConfig};
use serde::{Deserialize, Serialize};

use crate::SubTrackError;

/// How the basis S of a projected matrix is refreshed every `update_interval` steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubspaceUpdate {
    /// SubTrack: one rank-1 step along a Grassmannian geodesic (docs/algorithm.md §4), O(m·n·r).
    #[default]
    Geodesic,
    /// GaLore: the top-r singular vectors of the current gradient (§6), O(m·n·min(m, n)).
    Svd,
}

/// Projection-aware moments (§5): rotating M and V into the new basis when it changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectionAware {
    /// Keep M and V as they are across a basis change (SubTrack-Grad v1, GaLore).
    Off,
    /// The paper's rotation: M = C·M, V = |(C⊙C)·(V − M⊙M) + (C·M)⊙(C·M)|.
    #[default]
    Paper,
    /// The authors' released code: the paper's V multiplied by (1 − β2).
    Code,
}

/// Recovery scaling with a norm-growth limiter (§7, from Fira).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecoveryScaling {
    /// Discard the part of the gradient outside the subspace.
    Off,
    /// The paper's residual G − S·G̃.
    #[default]
    Paper,
    /// The authors' released code: residual G − s·S·G̃ (the scale s leaks into it).
    Code,
}

/// Configuration of the [`SubTrack`](crate::SubTrack) optimizer: SubTrack-Grad, SubTrack++ or GaLore.
///
/// `SubTrackConfig::new()` is SubTrack++ with the paper's hyper-parameters for a 60M LLaMA.
/// The presets [`subtrack_grad`](Self::subtrack_grad), [`subtrack_plus_plus`](Self::subtrack_plus_plus)
/// and [`galore`](Self::galore) set the three method switches of docs/algorithm.md §8 and leave
/// the rest at these defaults.
#[derive(Config, Debug)]
pub struct SubTrackConfig {
    /// Rank r of the subspace. A 2-D parameter is projected only when min(m, n) > r.
    #[config(default = 128)]
    pub rank: usize,
    /// Steps T between subspace updates (the first basis comes from the first gradient).
    #[config(default = 200)]
    pub update_interval: usize,
    /// Geodesic step size η: the rotation angle is θ = η·σ (radians, σ in gradient units²).
    #[config(default = 10.0)]
    pub step_size: f64,
    /// Optional clamp θ ≤ θ_max (radians) on the geodesic angle. `None` follows the paper.
    #[config(default = "None")]
    pub max_theta: Option<f64>,
    /// Scale s applied to the projected update (GaLore's α).
    #[config(default = 0.25)]
    pub scale: f64,
    /// Exponential decay of the first moment, in [0, 1).
    #[config(default = 0.9)]
    pub beta_1: f64,
    /// Exponential decay of the second moment, in [0, 1).
    #[config(default = 0.999)]
    pub beta_2: f64,
    /// Added to sqrt(V) before division; > 0.
    #[config(default = 1e-6)]
    pub epsilon: f64,
    /// Decoupled weight decay per unit of learning rate; ≥ 0.
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// How the basis is refreshed.
    #[config(default = "SubspaceUpdate::Geodesic")]
    pub subspace_update: SubspaceUpdate,
    /// Whether and how M and V follow a basis change.
    #[config(default = "ProjectionAware::Paper")]
    pub projection_aware: ProjectionAware,
    /// Whether and how the discarded gradient is added back.
    #[config(default = "RecoveryScaling::Paper")]
    pub recovery_scaling: RecoveryScaling,
    /// Norm-growth limit ζ of the recovery term: ‖Λ‖ may grow by at most this factor a step.
    #[config(default = 1.01)]
    pub norm_growth_limit: f64,
    /// Re-orthonormalise S when max |SᵀS − I| exceeds this after a geodesic step.
    #[config(default = 1e-5)]
    pub orthonormality_tolerance: f64,
    /// Optional per-tensor gradient clipping, applied by [`init`](Self::init).
    #[config(default = "None")]
    pub grad_clipping: Option<GradientClippingConfig>,
    /// Run the optimizer's steps as WGSL kernels (`shaders/`: projection, low-rank Adam,
    /// recovery scaling, fused weight update, geodesic tracking) on wgpu devices whose runtime
    /// compiles WGSL, with the non-finite check on the device and no read-back between
    /// steps; elsewhere the portable path runs. Each parameter's route is logged once (info
    /// level; `docs/routes.md`). Needs the crate's `wgpu` feature (on by default); without it
    /// this has no effect. Turn it off to use Burn's tensor ops on wgpu too.
    #[config(default = true)]
    pub wgsl_kernels: bool,
    /// On Burn's `flex` CPU backend, run the projected step's memory-bound a×b passes as
    /// fused loops: G's column sums of squares (recovery scaling) in one read, and the weight
    /// update W' = d·(W − S·L − G⊙ψ) in one pass, where Burn's tensor ops take several. Off:
    /// the portable tensor ops there too. No effect on other backends.
    #[config(default = true)]
    pub cpu_kernels: bool,
}

impl SubTrackConfig {
    /// SubTrack-Grad as in the paper's first version: geodesic tracking only.
    pub fn subtrack_grad() -> Self {
        Self::new()
            .with_projection_aware(ProjectionAware::Off)
            .with_recovery_scaling(RecoveryScaling::Off)
    }

    /// SubTrack++: geodesic tracking, projection-aware moments and recovery scaling.
    pub fn subtrack_plus_plus() -> Self {
        Self::new()
            .with_subspace_update(SubspaceUpdate::Geodesic)
            .with_projection_aware(ProjectionAware::Paper)
            .with_recovery_scaling(RecoveryScaling::Paper)
    }

    /// GaLore: an SVD refresh every `update_interval` steps, moments kept as they are.
    pub fn galore() -> Self {
        Self::new()
            .with_subspace_update(SubspaceUpdate::Svd)
            .with_projection_aware(ProjectionAware::Off)
            .with_recovery_scaling(RecoveryScaling::Off)
    }

    /// Check every field; the error names the first field that is out of range.
    pub fn validate(&self) -> Result<(), SubTrackError> {
        fn bad(field: &'static str, reason: String) -> Result<(), SubTrackError> {
            Err(SubTrackError::InvalidConfig { field, reason })
        }
        if self.rank == 0 {
            return bad("rank", "must be at least 1, got 0".into());
        }
        if self.update_interval == 0 {
            return bad("update_interval", "must be at least 1, got 0".into());
        }
        let finite_at_least = |field, value: f64, min: f64, strict: bool| {
            let ok = value.is_finite() && if strict { value > min } else { value >= min };
            if ok {
                Ok(())
            } else {
                let cmp = if strict { ">" } else { ">=" };
                bad(
                    field,
                    format!("must be finite and {cmp} {min}, got {value}"),
                )
            }
        };
        finite_at_least("step_size", self.step_size, 0.0, false)?;
        if let Some(max_theta) = self.max_theta {
            finite_at_least("max_theta", max_theta, 0.0, true)?;
        }
        finite_at_least("scale", self.scale, 0.0, true)?;
        for (field, beta) in [("beta_1", self.beta_1), ("beta_2", self.beta_2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(field, format!("must lie in [0, 1), got {beta}"));
            }
        }
        finite_at_least("epsilon", self.epsilon, 0.0, true)?;
        finite_at_least("weight_decay", self.weight_decay, 0.0, false)?;
        finite_at_least("norm_growth_limit", self.norm_growth_limit, 0.0, true)?;
        finite_at_least(
            "orthonormality_tolerance",
            self.orthonormality_tolerance,
            0.0,
            true,
        )?;
        match self.grad_clipping {
            Some(GradientClippingConfig::Value(v)) | Some(GradientClippingConfig::Norm(v))
                if !(v.is_finite() && v > 0.0) =>
            {
                bad(
                    "grad_clipping",
                    format!("threshold must be finite and > 0, got {v}"),
                )
            }
            _ => Ok(()),
        }
    }

    /// Burn's AdamW with this config's β, ε and weight decay, for the parameter groups that
    /// should not be projected (embeddings, LM head, norms in the paper's setup).
    ///
    /// Its ε sits inside the bias correction, `m̂/(sqrt(v̂) + ε)`, where SubTrack's dense
    /// path uses docs/algorithm.md §2's `c·M/(sqrt(V) + ε)`; they differ only in how ε is scaled.
    pub fn adamw(&self) -> Result<AdamW, SubTrackError> {
        self.validate()?;
        Ok(AdamWConfig::new()
            .with_beta_1(self.beta_1 as f32)
            .with_beta_2(self.beta_2 as f32)
            .with_epsilon(self.epsilon as f32)
            .with_weight_decay(self.weight_decay as f32)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_set_the_three_switches() {
        let grad = SubTrackConfig::subtrack_grad();
        assert_eq!(grad.subspace_update, SubspaceUpdate::Geodesic);
        assert_eq!(grad.projection_aware, ProjectionAware::Off);
        assert_eq!(grad.recovery_scaling, RecoveryScaling::Off);
        let pp = SubTrackConfig::subtrack_plus_plus();
        assert_eq!(pp.projection_aware, ProjectionAware::Paper);
        assert_eq!(pp.recovery_scaling, RecoveryScaling::Paper);
        let galore = SubTrackConfig::galore();
        assert_eq!(galore.subspace_update, SubspaceUpdate::Svd);
        assert_eq!(galore.projection_aware, ProjectionAware::Off);
        assert_eq!(
            (galore.rank, galore.update_interval, galore.scale),
            (128, 200, 0.25)
        );
    }

    #[test]
    fn defaults_validate() {
        for c in [
            SubTrackConfig::new(),
            SubTrackConfig::subtrack_grad(),
            SubTrackConfig::galore(),
        ] {
            c.validate().unwrap();
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(SubTrackConfig, &str)> = vec![
            (SubTrackConfig::new().with_rank(0), "rank"),
            (
                SubTrackConfig::new().with_update_interval(0),
                "update_interval",
            ),
            (SubTrackConfig::new().with_step_size(-1.0), "step_size"),
            (SubTrackConfig::new().with_step_size(f64::NAN), "step_size"),
            (SubTrackConfig::new().with_max_theta(Some(0.0)), "max_theta"),
            (SubTrackConfig::new().with_scale(f64::INFINITY), "scale"),
            (SubTrackConfig::new().with_beta_1(1.0), "beta_1"),
            (SubTrackConfig::new().with_beta_1(-0.1), "beta_1"),
            (SubTrackConfig::new().with_beta_2(f64::NAN), "beta_2"),
            (SubTrackConfig::new().with_epsilon(-1e-8), "epsilon"),
            (SubTrackConfig::new().with_epsilon(f64::INFINITY), "epsilon"),
            (
                SubTrackConfig::new().with_weight_decay(-0.1),
                "weight_decay",
            ),
            (
                SubTrackConfig::new().with_norm_growth_limit(0.0),
                "norm_growth_limit",
            ),
            (
                SubTrackConfig::new().with_grad_clipping(Some(GradientClippingConfig::Norm(-1.0))),
                "grad_clipping",
            ),
        ];
        for (config, field) in cases {
            let err = config.build().err().expect(field);
            match &err {
                SubTrackError::InvalidConfig { field: f, .. } => assert_eq!(*f, field),
                other => panic!("unexpected {other:?}"),
            }
            assert!(err.to_string().contains(field), "{err}");
            assert!(config.init().is_err());
        }
    }
}
