//! The registry domain: module names, Bazel versions, integrity values, request paths, the
//! read path over a source snapshot, and `registry check`.
//!
//! No HTTP, object store or git types here: the source layer hands out [`crate::source::Tree`]s.

pub mod check;
pub mod files;
pub mod integrity;
pub mod module_file;
pub mod name;
pub mod path;
pub mod service;
pub mod version;

pub use integrity::{Algorithm, Integrity};
pub use name::{ModuleName, RelativePath};
pub use path::{FileKind, RegistryPath};
pub use service::{CacheSettings, CacheStats, Registry, RegistryError, RegistryFile};
pub use version::ModuleVersion;
