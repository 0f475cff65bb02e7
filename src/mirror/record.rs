//! The record types: one fact each, serialized as one JSON object in the `records` role.
//!
//! Types only, apart from their I/O ([`super::records::Records`]), so that the folded state
//! and the record store both depend on them and not on each other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the upstream said when a blob was fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamMeta {
    /// The status (200).
    pub status: u16,
    /// The URL that answered, after redirects.
    pub final_url: String,
    /// `ETag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Last-Modified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// Provenance of one stored blob (one record per ingest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// Lowercase hex sha256: the CAS address.
    pub sha256: String,
    /// SRI values computed at ingest (sha256 always; sha384/sha512 when an integrity asked).
    pub integrity: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// The URL it was fetched for, if it came from an upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When the transfer completed.
    pub fetched_at: DateTime<Utc>,
    /// Upstream response facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamMeta>,
    /// The policy rule that allowed the fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Who asked (client address or identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Size of the verification chunks.
    pub chunk_size: u64,
    /// BLAKE3 of each chunk, hex: the read path verifies every chunk before serving it.
    pub chunks: Vec<String>,
    /// A supplement to an earlier record of the same ingest (more digests computed after the
    /// transfer): it adds facts and never changes the blob's quarantine or eviction state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub supplement: bool,
}

/// A URL pinned to a digest: first seen wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// The upstream URL.
    pub url: String,
    /// Hex sha256 it is pinned to.
    pub sha256: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Stored bytes did not match their digest; the blob is no longer served.
    Quarantine,
    /// The upstream now serves other bytes for a pinned URL.
    Drift,
    /// The blob was removed by retention.
    Evict,
    /// The blob was read (coalesced; feeds retention by age).
    Access,
    /// A client named the blob's download by this canonical id (`detail`), as Bazel's
    /// repository cache keys it: exports write the `id-` marker for it.
    CanonicalId,
}

/// An event about a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// What happened.
    pub event: EventKind,
    /// The blob.
    pub sha256: String,
    /// The URL concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// Details for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Any record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// Provenance of a stored blob.
    Blob(BlobRecord),
    /// A URL pin.
    Pin(PinRecord),
    /// An event.
    Event(EventRecord),
}

impl Record {
    pub(super) fn stream(&self) -> &'static str {
        match self {
            Self::Blob(_) => "blobs",
            Self::Pin(_) => "pins",
            Self::Event(_) => "events",
        }
    }

    pub(super) fn time(&self) -> DateTime<Utc> {
        match self {
            Self::Blob(b) => b.fetched_at,
            Self::Pin(p) => p.at,
            Self::Event(e) => e.at,
        }
    }
}

/// The time part of a record key: sorts like the time.
pub(crate) fn key_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S%.9fZ").to_string()
}
