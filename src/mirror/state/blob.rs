//! What the state knows of one blob.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::digest::Sha256Digest;
use super::packed::{Chunks, Sris};
use super::strings::Strings;
use crate::mirror::record::{BlobRecord, UpstreamMeta};

/// Upstream response facts of a blob (see [`UpstreamMeta`]).
#[derive(Debug, Clone)]
pub(super) struct Upstream {
    pub(super) status: u16,
    pub(super) final_url: Arc<str>,
    pub(super) etag: Option<Box<str>>,
    pub(super) last_modified: Option<Box<str>>,
    pub(super) content_type: Option<Arc<str>>,
}

/// What only the provenance API reads.
#[derive(Debug, Clone)]
pub(super) struct Provenance {
    pub(super) url: Option<Arc<str>>,
    pub(super) fetched_at: DateTime<Utc>,
    pub(super) upstream: Option<Upstream>,
    pub(super) rule: Option<Arc<str>>,
    pub(super) requested_by: Option<Arc<str>>,
}

/// What is known of one blob: its latest provenance record, folded, and its state.
#[derive(Debug, Clone)]
pub struct BlobState {
    pub(super) sha256: Sha256Digest,
    pub(super) size: u64,
    pub(super) chunk_size: u64,
    pub(super) chunks: Chunks,
    pub(super) integrity: Sris,
    pub(super) provenance: Provenance,
    /// Every URL it was served or pinned for, sorted, without duplicates.
    pub(super) urls: Box<[Arc<str>]>,
    /// Quarantined: never served until re-ingested.
    pub quarantined: bool,
    /// Evicted by retention.
    pub evicted: bool,
    /// Last recorded read (or the ingest time).
    pub last_access: DateTime<Utc>,
}

impl BlobState {
    /// Whether it may be served.
    #[must_use]
    pub fn is_available(&self) -> bool {
        !self.quarantined && !self.evicted
    }

    /// The blob's sha256.
    #[must_use]
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }

    /// Size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of recorded chunk digests.
    #[must_use]
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Every URL it was served or pinned for, sorted.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.urls.iter().map(|u| &**u)
    }

    /// The SRI values of its latest record (with supplements), in record order.
    #[must_use]
    pub fn integrity(&self) -> Vec<String> {
        self.integrity.to_strings(&self.sha256)
    }

    /// Its latest provenance record, as stored (with the digests of its supplements).
    #[must_use]
    pub fn record(&self) -> BlobRecord {
        let p = &self.provenance;
        BlobRecord {
            integrity: self.integrity(),
            url: p.url.as_deref().map(str::to_owned),
            fetched_at: p.fetched_at,
            upstream: p.upstream.as_ref().map(|u| UpstreamMeta {
                status: u.status,
                final_url: u.final_url.to_string(),
                etag: u.etag.as_deref().map(str::to_owned),
                last_modified: u.last_modified.as_deref().map(str::to_owned),
                content_type: u.content_type.as_deref().map(str::to_owned),
            }),
            rule: p.rule.as_deref().map(str::to_owned),
            requested_by: p.requested_by.as_deref().map(str::to_owned),
            ..self.read_record()
        }
    }

    /// What a verified read needs (sha256, size, chunk size and digests); the provenance
    /// fields are left empty.
    #[must_use]
    pub fn read_record(&self) -> BlobRecord {
        BlobRecord {
            sha256: self.sha256.to_hex(),
            integrity: Vec::new(),
            size: self.size,
            url: None,
            fetched_at: self.provenance.fetched_at,
            upstream: None,
            rule: None,
            requested_by: None,
            chunk_size: self.chunk_size,
            chunks: self.chunks.to_strings(),
            supplement: false,
        }
    }

    pub(super) fn add_url(&mut self, url: &Arc<str>) {
        if let Err(at) = self.urls.binary_search_by(|u| (**u).cmp(&**url)) {
            let mut urls = std::mem::take(&mut self.urls).into_vec();
            urls.insert(at, url.clone());
            self.urls = urls.into_boxed_slice();
        }
    }

    pub(super) fn adopt_strings(&mut self, strings: &mut Strings) {
        let p = &mut self.provenance;
        strings.adopt_opt(&mut p.url);
        if let Some(u) = &mut p.upstream {
            strings.adopt(&mut u.final_url);
            strings.adopt_opt(&mut u.content_type);
        }
        strings.adopt_opt(&mut p.rule);
        strings.adopt_opt(&mut p.requested_by);
        for u in &mut self.urls {
            strings.adopt(u);
        }
    }
}
