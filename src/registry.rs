//! The registry domain: module names, Bazel versions, integrity values, request paths, the
//! read path over a source snapshot, and `registry check`.
//!
//! No HTTP, object store or git types here: the source layer hands out [`crate::source::Tree`]s.
//! The formats themselves live in the pure `bzlmod` crate (shared with the CLI and `fuzz/`);
//! they are re-exported under their old paths.

pub mod check;
pub mod module_file;
pub mod service;
pub mod upstream;

pub use bzlmod::registry_json as files;
pub use bzlmod::{integrity, name, path, version};

pub use integrity::{Algorithm, Integrity};
pub use name::{ModuleName, RelativePath};
pub use path::{FileKind, RegistryPath};
pub use service::{CacheSettings, CacheStats, Registry, RegistryError, RegistryFile};
pub use upstream::{
    BlobStash, ModuleFilter, SyncOutcome, UpstreamReadError, UpstreamSettings, UpstreamStatus,
    Upstreams,
};
pub use version::ModuleVersion;
