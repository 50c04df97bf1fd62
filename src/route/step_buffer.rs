//! The parameter buffer of the WGSL kernels: one small f32 tensor per projected step that
//! holds every kernel's host values and the device-side flags. The optimizer has it made by
//! the projection ([`project_packed`](crate::testing::route::project_packed)), whose kernel writes the step flag into it, so
//! a step uploads one buffer and concatenates nothing; a kernel called on its own builds
//! one.
//!
//! Layout (f32 slots; `adam.wgsl`, `recovery_limit.wgsl` and `update.wgsl` read the same):
//!
//! | slots | values | read by |
//! |---|---|---|
//! | 0–5 | β1, 1 − β1, β2, 1 − β2, ε, v_scale | adam |
//! | 6–7 | 2k − k², ζ | recovery limiter |
//! | 8–11 | α, d, s, k | weight update |
//! | 12 | moved: 1 = the basis changed (rotate the moments), 0 = it did not | adam |
//! | 13 | the step flag: 1 = step, 0 = skip (G held NaN or ±∞) | all three |

use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::config::{ProjectionAware, RecoveryScaling};

use crate::moments::AdamParams;
use crate::recovery::kept_weight;
use crate::route::UpdateCoefficients;

/// First slot of low-rank Adam's values.
pub(crate) const ADAM: usize = 0;
/// First slot of the recovery limiter's values.
pub(crate) const RECOVERY: usize = 6;
/// First slot of the weight update's values.
pub(crate) const UPDATE: usize = 8;
/// Slot of the "moved" flag.
pub(crate) const MOVED: usize = 12;
/// Slot of the step flag, the last.
pub(crate) const FLAG: usize = 13;

/// The host values of a parameter buffer: the kernels' slots 0–11 of the layout above. Unset
/// slots are 0. Moved is 1 (the basis moved) unless a kernel's own device flag replaces it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ParamValues([f32; MOVED]);

impl ParamValues {
    /// No kernel's values set.
    pub fn new() -> Self {
        Self::default()
    }

    /// With low-rank Adam's values (slots 0–5), `rotation` the projection-aware variant of a
    /// step that rotates the moments (it sets v_scale).
    pub fn with_adam(self, adam: &AdamParams, rotation: Option<ProjectionAware>) -> Self {
        self.with(ADAM, &adam_values(adam, rotation))
    }

    /// With the recovery limiter's values (slots 6–7).
    pub fn with_recovery(self, variant: RecoveryScaling, scale: f64, growth_limit: f64) -> Self {
        self.with(RECOVERY, &recovery_values(variant, scale, growth_limit))
    }

    /// With the weight update's values (slots 8–11); `recovery` is the recovery variant
    /// and scale s of a step with recovery scaling (it sets k, else 0).
    pub fn with_update(
        self,
        coefficients: UpdateCoefficients,
        recovery: Option<(RecoveryScaling, f64)>,
    ) -> Self {
        let kept = recovery.map_or(0.0, |(variant, scale)| kept_weight(variant, scale));
        self.with(UPDATE, &update_values(coefficients, kept))
    }

    /// With `values` from slot `first` on.
    pub(crate) fn with(mut self, first: usize, values: &[f64]) -> Self {
        for (slot, &x) in self.0[first..first + values.len()].iter_mut().zip(values) {
            *slot = x as f32;
        }
        self
    }

    /// Whether slots `first` … hold `values` (as f32).
    #[cfg(feature = "wgpu")]
    pub(crate) fn holds(&self, first: usize, values: &[f64]) -> bool {
        self.0[first..first + values.len()]
            .iter()
            .zip(values)
            .all(|(&slot, &x)| slot == x as f32)
    }

    /// Slots 0–12, the part before the step flag (moved = 1).
    pub(crate) fn head(&self) -> Vec<f32> {
        self.0.iter().copied().chain([1.0]).collect()
    }

    /// The buffer on `device`: these values, `moved` (a device flag \[1\]; 1 where `None`)
    /// and the step flag `flag` (\[1\]; 1 where `None`), by [`with_flags`]: one
    /// upload where both are `None`, else an upload and a concatenation.
    pub(crate) fn upload(
        &self,
        moved: Option<&Tensor<1>>,
        flag: Option<&Tensor<1>>,
        device: &Device,
    ) -> Tensor<1> {
        let values: Vec<f64> = self.0.iter().map(|&x| f64::from(x)).collect();
        with_flags(&values, &[moved, flag], device)
    }
}

/// Low-rank Adam's values: β1, 1 − β1, β2, 1 − β2, ε, v_scale (1 − β2 for the authors'
/// code's rotation, else 1).
pub(crate) fn adam_values(adam: &AdamParams, rotation: Option<ProjectionAware>) -> [f64; 6] {
    let v_scale = match rotation {
        Some(ProjectionAware::Code) => 1.0 - adam.beta_2,
        _ => 1.0,
    };
    [
        adam.beta_1,
        1.0 - adam.beta_1,
        adam.beta_2,
        1.0 - adam.beta_2,
        adam.epsilon,
        v_scale,
    ]
}

/// The recovery limiter's values: 2k − k² (k the kept weight) and ζ.
pub(crate) fn recovery_values(variant: RecoveryScaling, scale: f64, growth_limit: f64) -> [f64; 2] {
    let k = kept_weight(variant, scale);
    [2.0 * k - k * k, growth_limit]
}

/// The weight update's values: α, d, s and the kept weight k (0 without recovery).
pub(crate) fn update_values(c: UpdateCoefficients, kept: f64) -> [f64; 4] {
    [c.alpha, c.decay, c.scale, kept]
}

/// A step's parameter buffer on the device (\[14\], the layout above), with the host values
/// it holds. Made by [`project_packed`](crate::testing::route::project_packed).
#[derive(Clone, Debug)]
pub struct StepParams {
    pub(crate) buffer: Tensor<1>,
    // Read by the WGSL kernels' launches (`params_for`).
    #[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
    pub(crate) values: ParamValues,
}

impl StepParams {
    /// The step flag \[1\]: 1 where the step runs, 0 where G held NaN or ±∞.
    pub fn flag(&self) -> Tensor<1> {
        self.buffer.clone().narrow(0, FLAG, 1)
    }
}

/// The step flag as the kernels take it.
#[derive(Clone, Copy, Debug)]
pub enum StepFlag<'a> {
    /// A device flag \[1\] of its own ([`step_flag`](crate::route::step_flag), [`project_checked`](crate::testing::route::project_checked)).
    Bare(&'a Tensor<1>),
    /// The last slot of a step's parameter buffer: a kernel whose values it holds binds it as
    /// it is, with no upload.
    Packed(&'a StepParams),
}

impl StepFlag<'_> {
    /// The flag \[1\] as a tensor (for the tensor-op paths).
    pub fn tensor(&self) -> Tensor<1> {
        match self {
            StepFlag::Bare(flag) => (*flag).clone(),
            StepFlag::Packed(params) => params.flag(),
        }
    }
}

impl<'a> From<&'a Tensor<1>> for StepFlag<'a> {
    fn from(flag: &'a Tensor<1>) -> Self {
        StepFlag::Bare(flag)
    }
}

impl<'a> From<&'a StepParams> for StepFlag<'a> {
    fn from(params: &'a StepParams) -> Self {
        StepFlag::Packed(params)
    }
}

/// A kernel's parameter buffer holding `values` from slot `first` (its own), with `flag`:
/// the packed buffer itself where it holds those values and `moved` is `None`, else one
/// built from them. `[r, b]`: the step's G̃ (for the launch counts).
#[cfg(feature = "wgpu")]
pub(crate) fn params_for(
    first: usize,
    values: &[f64],
    moved: Option<&Tensor<1>>,
    flag: Option<StepFlag>,
    [r, b]: [usize; 2],
    device: &Device,
) -> Tensor<1> {
    match flag {
        Some(StepFlag::Packed(p)) if moved.is_none() && p.values.holds(first, values) => {
            crate::launches::count_launch("params: packed", [first, r, b]);
            p.buffer.clone()
        }
        _ => {
            crate::launches::count_launch("params: uploaded", [first, r, b]);
            let flag = flag.map(|f| f.tensor());
            ParamValues::new()
                .with(first, values)
                .upload(moved, flag.as_ref(), device)
        }
    }
}

/// Host `values` followed by device values (\[1\] each; [1.0] where `None`), as one f32
/// tensor: the tracking kernels' parameters, and the parameter buffer where the projection
/// did not make it (`ParamValues::upload`).
pub(crate) fn with_flags(
    values: &[f64],
    flags: &[Option<&Tensor<1>>],
    device: &Device,
) -> Tensor<1> {
    let mut host: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    if flags.iter().all(Option::is_none) {
        // Every value is known on the host: one upload, no concatenation.
        host.resize(values.len() + flags.len(), 1.0);
        let n = host.len();
        return Tensor::from_data(TensorData::new(host, [n]), (device, DType::F32));
    }
    let n = host.len();
    let mut parts = vec![Tensor::<1>::from_data(
        TensorData::new(host, [n]),
        (device, DType::F32),
    )];
    parts.extend(flags.iter().map(|f| {
        f.cloned()
            .unwrap_or_else(|| Tensor::ones([1], (device, DType::F32)))
    }));
    Tensor::cat(parts, 0)
}
