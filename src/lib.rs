//! # subtrack
//!
//! SubTrack-Grad, SubTrack++ and GaLore for [Burn](https://burn.dev): each large weight
//! matrix's gradient is projected onto a rank-r subspace and Adam runs there, so the
//! optimizer state of an m×n matrix shrinks from 2·m·n to m·r + 2·n·r floats. GaLore
//! refreshes the subspace with an SVD every T steps; SubTrack tracks it with a rank-1 step
//! along a Grassmannian geodesic, O(m·n·r). The math is `docs/algorithm.md` in the repository.
//!
//! ```no_run
//! use subtrack::SubTrackConfig;
//! // In place of `AdamWConfig::new().init()`:
//! let optim = SubTrackConfig::subtrack_plus_plus().with_rank(128).init().unwrap();
//! ```
//!
//! The paper projects only attention and MLP weights; route the rest to AdamW with
//! [`burn::optim::ModuleOptimizer::with_group`]:
//!
//! ```no_run
//! use burn::module::ParamGroup;
//! use burn::optim::ModuleOptimizer;
//! use subtrack::SubTrackConfig;
//!
//! let config = SubTrackConfig::subtrack_plus_plus();
//! let projected = ParamGroup::from_regex(r"^layers\.\d+\.(attention|mlp)\..*weight$").unwrap();
//! let optim = ModuleOptimizer::from(config.adamw().unwrap())
//!     .with_group(projected, config.build().unwrap(), None);
//! ```
#![warn(missing_docs)]

pub mod checkpoint;
mod config;
mod diagnostics;
mod error;
mod host;
mod launches;
mod limits;
mod optimizer;
mod plan;
mod report;
mod simd;
mod state;

mod basis;
mod geodesic;
#[cfg(feature = "wgpu")]
mod kernels;
mod linalg;
mod moments;
mod recovery;
mod rng;
mod route;
#[doc(hidden)]
pub mod testing;

pub use checkpoint::{StateBytes, load_checked, save_atomic, sharded_state_bytes, state_bytes};
pub use config::{ProjectionAware, RecoveryScaling, SubTrackConfig, SubspaceUpdate};
pub use diagnostics::SubspaceDiagnostics;
pub use error::SubTrackError;
pub use optimizer::SubTrack;
pub use report::SubTrackReport;
pub use state::{DenseState, ProjectedState, SubTrackState};

// The README's Rust examples compile and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
