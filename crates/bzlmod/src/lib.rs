//! Bzlmod registry formats, shared by the server, the CLI and `fuzz/`: module names
//! ([`name`]), Bazel versions ([`version`]), integrity values and digests ([`integrity`]),
//! registry request paths ([`path`]), `MODULE.bazel` ([`module_file`]), the registry's JSON
//! files ([`registry_json`]), the files of a registry entry ([`entry`]), the registry file
//! hashes of `MODULE.bazel.lock` ([`lockfile`]), the publish request ([`publish_request`])
//! and `registry check` over a tree ([`check`]).
//!
//! Pure code: no async runtime, HTTP, object store or git, and no threads or I/O of its own.
//! Errors carry typed fields; the server maps them to its own errors and statuses.

pub mod check;
pub mod entry;
pub mod integrity;
pub mod lockfile;
pub mod module_file;
pub mod name;
pub mod path;
pub mod publish_request;
pub mod registry_json;
pub mod version;

pub use integrity::{Algorithm, Integrity, Sha256Digest};
pub use name::{ModuleName, RelativePath};
pub use path::{FileKind, RegistryPath};
pub use version::ModuleVersion;

/// A request field that is wrong: the field, as a JSON path (`source.url`,
/// `patches[1].name`), and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field, as a JSON path.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A refusal of `field`.
    #[must_use]
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}
