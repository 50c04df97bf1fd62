//! Per-parameter optimizer state and its record format.
//!
//! Record leaves, under the parameter id `{id}`:
//! - projected: tensors `basis` (a×r), `moment_1`, `moment_2` (r×b), optional
//!   `limiter_norm` (\[1\]); scalars `step`, `transposed`;
//! - dense: tensors `moment_1`, `moment_2` (the parameter's shape); scalar `step`.
//!
//! a ≤ b are the parameter's sides in the canonical (left-projected) layout of docs/algorithm.md
//! §1: a right-projected m×n weight (m ≥ n) is stored as its transpose, `transposed = true`.

use burn::optim::{RecordState, StateSink, StateSource};
use burn::tensor::{DType, Device, Tensor};
use burn_pack::Scalar;

/// State of one parameter: low-rank for projected matrices, AdamW's moments otherwise.
// Moved once per parameter step; boxing the larger variant would add an allocation there.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum SubTrackState<const D: usize> {
    /// AdamW state of a parameter that is not projected.
    Dense(DenseState<D>),
    /// SubTrack/GaLore state of a projected 2-D parameter.
    Projected(ProjectedState),
}

/// AdamW moments of a parameter that is not projected.
#[derive(Clone, Debug)]
pub struct DenseState<const D: usize> {
    /// First moment M, the parameter's shape.
    pub moment_1: Tensor<D>,
    /// Second moment V, the parameter's shape.
    pub moment_2: Tensor<D>,
    /// Completed steps k.
    pub step: usize,
}

/// State of a projected matrix, in the canonical left layout (docs/algorithm.md §1–§2).
#[derive(Clone, Debug)]
pub struct ProjectedState {
    /// Orthonormal basis S, a×r.
    pub basis: Tensor<2>,
    /// First moment M in the subspace, r×b.
    pub moment_1: Tensor<2>,
    /// Second moment V in the subspace, r×b.
    pub moment_2: Tensor<2>,
    /// Completed steps k of this parameter.
    pub step: usize,
    /// ‖Λ‖ after limiting at the previous step (shape `[1]`); `None` before the first recovery step.
    pub limiter_norm: Option<Tensor<1>>,
    /// Whether the parameter is m×n with m ≥ n, stored transposed (right projection).
    pub transposed: bool,
}

impl ProjectedState {
    /// The rank r of the basis.
    pub fn rank(&self) -> usize {
        self.basis.dims()[1]
    }

    /// Move every tensor to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        Self {
            basis: self.basis.to_device(device),
            moment_1: self.moment_1.to_device(device),
            moment_2: self.moment_2.to_device(device),
            limiter_norm: self.limiter_norm.map(|t| t.to_device(device)),
            ..self
        }
    }
}

impl<const D: usize> SubTrackState<D> {
    /// Completed steps of this parameter.
    pub fn step(&self) -> usize {
        match self {
            Self::Dense(s) => s.step,
            Self::Projected(s) => s.step,
        }
    }

    /// Move every tensor to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        match self {
            Self::Dense(s) => Self::Dense(DenseState {
                moment_1: s.moment_1.to_device(device),
                moment_2: s.moment_2.to_device(device),
                step: s.step,
            }),
            Self::Projected(s) => Self::Projected(s.to_device(device)),
        }
    }
}

/// The canonical layout of an m×n projected matrix (docs/algorithm.md §1): sides (a, b) with
/// a = min(m, n), b = max(m, n), and whether it is stored transposed (m ≥ n, right side).
pub(crate) fn canonical_layout(m: usize, n: usize) -> (usize, usize, bool) {
    (m.min(n), m.max(n), m >= n)
}

/// An m×n gradient as G in the canonical layout (a×b, a ≤ b): itself, or its transposed
/// view in the right case; with whether it was transposed.
pub(crate) fn canonical_gradient(grad: Tensor<2>) -> (Tensor<2>, bool) {
    let [m, n] = grad.dims();
    let (_, _, transposed) = canonical_layout(m, n);
    (if transposed { grad.transpose() } else { grad }, transposed)
}

/// Leaf names of the record format.
pub(crate) mod leaf {
    pub const BASIS: &str = "basis";
    pub const MOMENT_1: &str = "moment_1";
    pub const MOMENT_2: &str = "moment_2";
    pub const LIMITER_NORM: &str = "limiter_norm";
    pub const STEP: &str = "step";
    pub const TRANSPOSED: &str = "transposed";
}

impl<const D: usize> RecordState for SubTrackState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        match self {
            Self::Dense(s) => {
                out.push_tensor(prefix, leaf::MOMENT_1, s.moment_1.to_data());
                out.push_tensor(prefix, leaf::MOMENT_2, s.moment_2.to_data());
                out.push_scalar(prefix, leaf::STEP, Scalar::from(s.step as u64));
            }
            Self::Projected(s) => {
                out.push_tensor(prefix, leaf::BASIS, s.basis.to_data());
                out.push_tensor(prefix, leaf::MOMENT_1, s.moment_1.to_data());
                out.push_tensor(prefix, leaf::MOMENT_2, s.moment_2.to_data());
                if let Some(norm) = &s.limiter_norm {
                    out.push_tensor(prefix, leaf::LIMITER_NORM, norm.to_data());
                }
                out.push_scalar(prefix, leaf::STEP, Scalar::from(s.step as u64));
                out.push_scalar(prefix, leaf::TRANSPOSED, Scalar::from(s.transposed));
            }
        }
    }

    /// Rebuilds the state, or panics with the reason when the record is not a whole,
    /// self-consistent SubTrack state: Burn's `ModuleOptimizer::load_record` would otherwise
    /// silently re-initialise the parameter. Use [`crate::checkpoint::load_checked`] to get a
    /// `Result` instead.
    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        match decode::<D>(prefix, src, device) {
            Ok(state) => Some(state),
            Err(reason) => {
                panic!("corrupt SubTrack optimizer record for parameter {prefix}: {reason}")
            }
        }
    }
}

/// The kind of state a record entry describes, once its leaves are known to fit together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// AdamW moments of the parameter's shape.
    Dense,
    /// Basis a×r and moments r×b, stored transposed or not.
    Projected {
        a: usize,
        r: usize,
        b: usize,
        transposed: bool,
    },
}

/// The leaves of one parameter's record entry: tensor shapes and scalars.
#[derive(Default)]
pub(crate) struct Leaves<'a> {
    pub basis: Option<&'a [usize]>,
    pub moment_1: Option<&'a [usize]>,
    pub moment_2: Option<&'a [usize]>,
    pub limiter_norm: Option<&'a [usize]>,
    pub step: Option<Scalar>,
    pub transposed: Option<Scalar>,
}

/// Check that the leaves form a whole, self-consistent state of a `rank`-D parameter.
pub(crate) fn check_layout(leaves: &Leaves, rank: usize) -> Result<Layout, String> {
    leaves
        .step
        .and_then(|s| u64::try_from(s).ok())
        .ok_or("missing or invalid scalar `step`")?;
    let m1 = leaves.moment_1.ok_or("missing tensor `moment_1`")?;
    let m2 = leaves.moment_2.ok_or("missing tensor `moment_2`")?;
    if m1 != m2 {
        return Err(format!(
            "`moment_1` {m1:?} and `moment_2` {m2:?} differ in shape"
        ));
    }
    let Some(basis) = leaves.basis else {
        if m1.len() != rank {
            return Err(format!("dense moments {m1:?} are not {rank}-D"));
        }
        return Ok(Layout::Dense);
    };
    if rank != 2 || basis.len() != 2 || m1.len() != 2 {
        return Err(format!(
            "a projected state must be 2-D: basis {basis:?}, moments {m1:?}, parameter {rank}-D"
        ));
    }
    let (a, r, b) = (basis[0], basis[1], m1[1]);
    if m1[0] != r || a > b || r >= a {
        return Err(format!("basis {basis:?} does not fit moments {m1:?}"));
    }
    let transposed = leaves
        .transposed
        .and_then(|s| bool::try_from(s).ok())
        .ok_or("missing or invalid scalar `transposed`")?;
    if let Some(shape) = leaves.limiter_norm
        && shape != [1]
    {
        return Err(format!("`limiter_norm` has shape {shape:?}, not [1]"));
    }
    Ok(Layout::Projected {
        a,
        r,
        b,
        transposed,
    })
}

fn decode<const D: usize>(
    prefix: &str,
    src: &mut StateSource,
    device: &Device,
) -> Result<SubTrackState<D>, String> {
    let basis = src.take_tensor(prefix, leaf::BASIS);
    let moment_1 = src.take_tensor(prefix, leaf::MOMENT_1);
    let moment_2 = src.take_tensor(prefix, leaf::MOMENT_2);
    let limiter_norm = src.take_tensor(prefix, leaf::LIMITER_NORM);
    let step = src.take_scalar(prefix, leaf::STEP);
    let leaves = Leaves {
        basis: basis.as_ref().map(|d| &d.shape()[..]),
        moment_1: moment_1.as_ref().map(|d| &d.shape()[..]),
        moment_2: moment_2.as_ref().map(|d| &d.shape()[..]),
        limiter_norm: limiter_norm.as_ref().map(|d| &d.shape()[..]),
        step,
        transposed: src.take_scalar(prefix, leaf::TRANSPOSED),
    };
    let layout = check_layout(&leaves, D)?;
    let step = step.and_then(|s| u64::try_from(s).ok()).unwrap_or(0) as usize;
    let (moment_1, moment_2) = (moment_1.unwrap(), moment_2.unwrap());
    Ok(match layout {
        Layout::Dense => SubTrackState::Dense(DenseState {
            moment_1: Tensor::from_data(moment_1, (device, DType::F32)),
            moment_2: Tensor::from_data(moment_2, (device, DType::F32)),
            step,
        }),
        Layout::Projected { transposed, .. } => SubTrackState::Projected(ProjectedState {
            basis: Tensor::from_data(basis.unwrap(), (device, DType::F32)),
            moment_1: Tensor::from_data(moment_1, (device, DType::F32)),
            moment_2: Tensor::from_data(moment_2, (device, DType::F32)),
            step,
            limiter_norm: limiter_norm.map(|d| Tensor::from_data(d, (device, DType::F32))),
            transposed,
        }),
    })
}
