//! Retention: evicts unpinned blobs by age, then by the cached byte budget.

use serde::Serialize;

use crate::mirror::error::MirrorError;
use crate::mirror::parts::Parts;
use crate::mirror::record::{EventKind, EventRecord, Record};
use crate::storage::StorageKey;

/// What a GC run did (or would do, with `dry_run`).
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Blobs evicted: hex sha256, size, and why.
    pub evicted: Vec<(String, u64, String)>,
    /// Blobs kept because a registry entry or candidate references them.
    pub pinned: usize,
    /// Blobs kept because a response is reading them.
    pub in_use: usize,
    /// Bytes of unpinned blobs before and after.
    pub cached_bytes_before: u64,
    /// After.
    pub cached_bytes_after: u64,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

/// Applies retention: unpinned blobs not read for `cached_max_age` are evicted, then the
/// least recently read until the unpinned bytes fit `cached_max_bytes`. Pinned blobs and
/// blobs being read are never removed.
///
/// # Errors
/// [`MirrorError`] when the registry or storage fails.
pub(in crate::mirror) async fn gc(p: Parts<'_>, dry_run: bool) -> Result<GcReport, MirrorError> {
    let refs = p.known.references(p.ledger).await?;
    let retention = p.policy.retention;
    let now = p.clock.now();
    let max_age =
        chrono::Duration::from_std(retention.cached_max_age).unwrap_or(chrono::TimeDelta::MAX);
    let readers: Vec<String> = p.serve.being_read();
    let mut report = GcReport {
        dry_run,
        ..GcReport::default()
    };
    let mut cached: Vec<(chrono::DateTime<chrono::Utc>, String, u64)> = Vec::new();
    // Under the read lock rather than on a copy of the state: this runs in the server,
    // and a copy of every blob's state would stay as resident memory after it.
    for b in p.ledger.read().blobs.values() {
        if !b.is_available() {
            continue;
        }
        let sha = b.sha256().to_hex();
        if refs.contains_key(&sha) {
            report.pinned += 1;
        } else if readers.contains(&sha) {
            report.in_use += 1;
        } else {
            cached.push((b.last_access, sha, b.size()));
        }
    }
    report.cached_bytes_before = cached.iter().map(|c| c.2).sum();
    cached.sort();
    let mut total = report.cached_bytes_before;
    for (last, sha, size) in cached {
        let reason = if now - last > max_age {
            format!("not read since {last}")
        } else if total > retention.cached_max_bytes {
            format!(
                "over the cached byte budget ({} bytes)",
                retention.cached_max_bytes
            )
        } else {
            continue;
        };
        total -= size;
        report.evicted.push((sha, size, reason));
    }
    report.cached_bytes_after = total;
    if !dry_run {
        for (sha, _, reason) in &report.evicted {
            evict(p, sha, reason).await?;
        }
    }
    Ok(report)
}

async fn evict(p: Parts<'_>, sha: &str, reason: &str) -> Result<(), MirrorError> {
    // Never between a fill placing a blob and recording it.
    let _placement = p.ledger.placement().await;
    // Re-check under the lock: read now, or pinned meanwhile.
    let in_use = p.serve.is_being_read(sha);
    if in_use || p.known.references(p.ledger).await?.contains_key(sha) {
        return Ok(());
    }
    // Record first: a blob marked evicted whose object lingers is only wasted space, while
    // the reverse would be a blob the state calls available but cannot serve.
    let event = Record::Event(EventRecord {
        event: EventKind::Evict,
        sha256: sha.to_owned(),
        url: None,
        at: p.clock.now(),
        detail: reason.to_owned(),
    });
    p.ledger.record(&event).await?;
    p.blobs
        .storage()
        .delete(&StorageKey::blob("sha256", sha))
        .await?;
    tracing::info!(blob.sha256 = %sha, reason, "evicted");
    Ok(())
}
