//! Release archives and patches, as a publish checks them: [`archive`] extracts a source
//! archive safely, [`patch`] applies unified diffs to the extracted tree.
//!
//! Pure `std` plus the decompressors: no async runtime, HTTP, object store or git. Everything
//! here is blocking file I/O; callers run it on a blocking thread. `fuzz/` links this crate.

pub mod archive;
pub mod patch;
