//! # subtrack-llama
//!
//! The application around the `subtrack` optimizer: pre-training a toy LLaMA with AdamW,
//! GaLore, SubTrack-Grad or SubTrack++. It is the main job (`examples/pretrain_llama.rs`)
//! and the model of the benchmark (`examples/benchmark`); only the examples and the tests
//! use it, so a Burn user who depends on `subtrack` compiles none of it.
//!
//! One module per job:
//! - [`model`]: the network; [`data`]: corpus, tokenizer, batches;
//! - [`schedule`]: learning rate; [`clip`]: global-norm clipping;
//! - [`config`]: what defines a run; [`run`]: the training loop over small steps (its
//!   files in `files.rs`, its time, tokens and memory in `meter.rs`); [`mod@compare`]: the
//!   four-way comparison; [`mod@sweep`]: the learning-rate sweep;
//! - [`ckpt`]: checkpoint files; [`report`]: CSV, plot, tables; [`subspace`]: the
//!   subspace diagnostics' CSV and plot;
//! - [`device`]: device choice and memory; [`alloc`]: heap accounting; [`panics`]: what a
//!   panic does to a run.

pub mod alloc;
pub mod ckpt;
pub mod clip;
pub mod compare;
pub mod config;
pub mod data;
pub mod device;
mod files;
pub mod generate;
mod meter;
pub mod model;
pub mod panics;
pub mod progress;
pub mod report;
pub mod run;
pub mod schedule;
pub mod subspace;
pub mod sweep;

use std::fmt;

pub use compare::compare;
pub use config::{LearningRates, OptimizerKind, TrainConfig};
pub use data::Corpus;
pub use model::{Llama, LlamaConfig, PROJECTED_PARAMS};
pub use run::{RunOptions, RunSummary, train};
pub use sweep::sweep;

/// Why a pre-training run could not start or go on. Each message names its cause; nothing
/// already written (checkpoints, logs) is overwritten on the way out.
#[derive(Debug, Clone, PartialEq)]
pub enum PretrainError {
    /// A size or hyper-parameter cannot be used.
    InvalidArgument(String),
    /// The data file is missing, empty, binary or too short.
    Data(String),
    /// The requested device cannot be used.
    Device(String),
    /// A checkpoint is unreadable, corrupt or belongs to another run.
    Checkpoint(String),
    /// The run does not fit in memory.
    OutOfMemory(String),
    /// Training diverged (non-finite loss or gradients for too many steps in a row).
    Diverged(String),
    /// Writing an output failed.
    Io(String),
}

impl PretrainError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
}

impl fmt::Display for PretrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Self::Data(m) => write!(f, "data: {m}"),
            Self::Device(m) => write!(f, "device: {m}"),
            Self::Checkpoint(m) => write!(f, "checkpoint: {m}"),
            Self::OutOfMemory(m) => write!(f, "out of memory: {m}"),
            Self::Diverged(m) => write!(f, "training diverged: {m}"),
            Self::Io(m) => write!(f, "output: {m}"),
        }
    }
}

impl std::error::Error for PretrainError {}
