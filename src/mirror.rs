//! The content-addressed mirror: pull-through with first-seen pinning, verification on the
//! way in and on the way out, append-only provenance, retention, and client configuration.
//!
//! No HTTP framework, object-store or git types here: blobs and records go through
//! [`crate::storage::Storage`], upstream traffic through [`crate::upstream::UpstreamClient`].

pub mod client_config;
mod fill;
mod ingest;
pub mod ops;
pub mod policy;
mod record;
pub mod records;
pub mod scrub;
mod service;
mod state;
mod verify;

pub use service::{BlobResponse, ByteRange, Mirror, MirrorError, MirrorStats};
pub use verify::CHUNK_SIZE;
