//! Operator work on the mirror, one file per operation: retention (GC), the durable-authority
//! gate and materializing candidates, re-probing upstreams for drift, exports for Bazel's
//! repository cache and distdir, repair of quarantined blobs, the storage scrub, and the
//! provenance the API shows. Everything here also runs without a server, from the CLI.
//!
//! Each operation is a function over the mirror's borrowed parts; the facade calls them.

pub(super) mod candidates;
pub(super) mod drift;
pub(super) mod export;
pub(super) mod gc;
pub(super) mod provenance;
pub(super) mod repair;
pub(super) mod scrub;

pub use candidates::CandidateStatus;
pub use drift::Probe;
pub use export::{ExportFormat, ExportReport, Selection};
pub use gc::GcReport;
pub use provenance::BlobInfo;
pub use repair::Repair;
pub use scrub::ScrubReport;
