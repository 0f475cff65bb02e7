//! The mirror's errors, each mapped to one HTTP answer at the edge.

use crate::storage::StorageError;

/// Mirror failures, each mapped to one HTTP answer at the edge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorError {
    /// Nothing to serve and nothing may be fetched (404).
    #[error("{0}")]
    NotFound(String),
    /// The request itself is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The range cannot be satisfied (416).
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
    /// The upstream failed (502), or timed out (504 when `timeout`).
    #[error("{message}")]
    Upstream {
        /// What happened.
        message: String,
        /// Whether it was a timeout.
        timeout: bool,
    },
    /// The upstream's bytes do not match the integrity that is known for the URL (502).
    #[error(
        "{url}: upstream bytes do not match the known integrity: expected {expected}, got {actual}"
    )]
    IntegrityMismatch {
        /// The URL.
        url: String,
        /// The known integrity.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The URL is pinned to another blob, and first-seen pins never change (409).
    #[error("{url} is already pinned to sha256 {pinned}; a pin never changes")]
    PinConflict {
        /// The URL.
        url: String,
        /// The hex sha256 it is pinned to.
        pinned: String,
    },
    /// The storage backend failed (503).
    #[error("storage: {0}")]
    Storage(String),
    /// Too much work in flight (503, retried by Bazel).
    #[error("{0}")]
    Overloaded(String),
}

impl From<StorageError> for MirrorError {
    fn from(e: StorageError) -> Self {
        Self::Storage(e.to_string())
    }
}
