//! The mirror's counters.

use std::sync::atomic::AtomicU64;

/// Counters, read at scrape time.
#[derive(Debug, Default)]
pub struct MirrorStats {
    /// Blobs served from the store.
    pub hits: AtomicU64,
    /// Upstream fetches started.
    pub upstream_fetches: AtomicU64,
    /// Fills that completed and were stored.
    pub fills_stored: AtomicU64,
    /// Fills that failed.
    pub fills_failed: AtomicU64,
    /// Read-path integrity failures (quarantines).
    pub integrity_failures: AtomicU64,
    /// Body bytes served from the store.
    pub bytes_served: AtomicU64,
}
