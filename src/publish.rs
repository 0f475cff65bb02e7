//! Publishing: package publishers cut releases into the registry.
//!
//! Domain code only (no HTTP, object store or git types). So far this holds the safe source
//! archive extractor ([`archive`]) that publish validation uses to unpack a release's archive
//! with its `strip_prefix` before overlays and patches are applied.

pub mod archive;

pub use archive::{ArchiveError, ArchiveType, Extracted, Limits, extract};
