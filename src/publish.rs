//! Publishing: package publishers cut releases into the registry.
//!
//! Domain code only (no HTTP, object store or git types). A publish request
//! ([`request::PublishRequest`]) is validated on its own, then against its sources: the archive
//! is stored and pinned in the mirror, extracted safely ([`archive`]), overlaid and patched
//! ([`patch`]), and its `MODULE.bazel` compared with the submitted one; dependencies must
//! resolve. Only then is the entry ([`entry`]) written, in one transaction of the registry
//! source, and an audit record ([`audit`]) appended.

mod acquire;
pub mod audit;
mod check;
mod deps;
mod edit;
pub mod entry;
mod error;
mod model;
mod plan;
pub mod request;
mod service;

// Archives and patches live in the pure `unpack` crate (which `fuzz/` links); these paths stay.
pub use unpack::{archive, patch};

pub use archive::{ArchiveError, ArchiveType, Extracted, Limits, extract};
pub use model::{Actor, EditKind, Published, PublisherSettings, Status};
pub use service::Publisher;

/// Why a publish, yank or deprecation was refused or failed. Every refusal names the field or
/// file at fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// A request field is malformed (400).
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as a JSON path (`source.url`, `patches[1].name`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The request is well-formed but its content does not validate (422): the archive, a
    /// patch, `MODULE.bazel` against the archive, a dependency.
    #[error("{field}: {message}")]
    Rejected {
        /// The field the failing content came from.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The module or version does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The version exists with other content, or the edit is not allowed now (409).
    #[error("{0}")]
    Conflict(String),
    /// An upstream needed for validation failed (502).
    #[error("{0}")]
    Upstream(String),
    /// Storage or the registry source is unavailable (503).
    #[error("{0}")]
    Unavailable(String),
    /// The stored registry is inconsistent, or an internal task failed (500).
    #[error("{0}")]
    Registry(String),
}
