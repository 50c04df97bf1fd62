//! The crate's error type.

use std::fmt;

/// Everything that can go wrong in `subtrack`, each with a message that names its cause.
#[derive(Debug, Clone, PartialEq)]
pub enum SubTrackError {
    /// A [`SubTrackConfig`](crate::SubTrackConfig) field holds a value the algorithm cannot use.
    InvalidConfig {
        /// The offending field, as spelled in the config (`rank`, `beta_1`, ...).
        field: &'static str,
        /// What is wrong with it, including the value received.
        reason: String,
    },
    /// An optimizer record does not fit the optimizer or the module it is loaded into.
    RecordMismatch(String),
    /// Reading or writing a checkpoint failed.
    Io(String),
}

impl fmt::Display for SubTrackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { field, reason } => {
                write!(f, "invalid SubTrack config: `{field}` {reason}")
            }
            Self::RecordMismatch(msg) => write!(f, "optimizer record does not match: {msg}"),
            Self::Io(msg) => write!(f, "checkpoint I/O failed: {msg}"),
        }
    }
}

impl std::error::Error for SubTrackError {}
