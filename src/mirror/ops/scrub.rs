//! `storage verify`: a scrub of every blob and record in the storage roles.

use serde::Serialize;

use crate::mirror::error::MirrorError;
use crate::mirror::parts::Parts;
use crate::mirror::record::Record;
use crate::storage::{Role, StorageKey};

/// Temporary uploads younger than this are left alone by `--fix` (a fill may own them).
const TEMP_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// What a scrub found.
#[derive(Debug, Default, Serialize)]
pub struct ScrubReport {
    /// Blobs read back and verified.
    pub blobs_ok: usize,
    /// Blobs that failed verification (now quarantined), with the reason.
    pub blobs_bad: Vec<(String, String)>,
    /// Records read and parsed.
    pub records_ok: usize,
    /// Records that could not be read or parsed.
    pub records_bad: Vec<(String, String)>,
    /// Objects under `sha256/` that no record describes.
    pub orphans: Vec<String>,
    /// Objects of evicted blobs still present.
    pub evicted_leftovers: Vec<String>,
    /// Temporary uploads left behind.
    pub temp_leftovers: Vec<String>,
    /// Objects deleted by `--fix`.
    pub removed: Vec<String>,
}

impl ScrubReport {
    /// Whether anything is wrong that `--fix` did not remove.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        let leftovers =
            self.orphans.len() + self.evicted_leftovers.len() + self.temp_leftovers.len();
        self.blobs_bad.is_empty() && self.records_bad.is_empty() && leftovers == self.removed.len()
    }
}

/// Reads back every available blob (sha256 and every chunk digest), parses every record,
/// and lists leftovers. With `fix`, removes temporary uploads older than an hour, objects
/// of evicted blobs, and orphans. `progress(done, total)` is called as blobs are checked.
///
/// # Errors
/// [`MirrorError::Storage`] when the backend cannot be listed.
pub(in crate::mirror) async fn scrub(
    p: Parts<'_>,
    fix: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ScrubReport, MirrorError> {
    let storage = p.blobs.storage().clone();
    let mut report = ScrubReport::default();
    for stream in ["blobs", "pins", "events"] {
        for path in storage.list(Role::Records, stream).await? {
            let id = path.split_once('/').map_or("", |(_, id)| id).to_owned();
            let key = StorageKey::Record {
                stream: match stream {
                    "blobs" => "blobs",
                    "pins" => "pins",
                    _ => "events",
                },
                id,
            };
            match storage.get(&key).await {
                Ok(Some(b)) => match serde_json::from_slice::<Record>(&b) {
                    Ok(_) => report.records_ok += 1,
                    Err(e) => report.records_bad.push((path, e.to_string())),
                },
                Ok(None) => report
                    .records_bad
                    .push((path, "listed but not readable".to_owned())),
                Err(e) => report.records_bad.push((path, e.to_string())),
            }
        }
    }
    // Records other writers (a running server) appended since this process loaded them.
    p.ledger.reload().await?;
    let available: Vec<String> = p
        .ledger
        .read()
        .blobs
        .iter()
        .filter(|(_, b)| b.is_available())
        .map(|(s, _)| s.to_hex())
        .collect();
    let total = available.len();
    for (i, sha) in available.iter().enumerate() {
        match p.serve.check_blob(sha).await {
            Ok(()) => report.blobs_ok += 1,
            Err(e) => {
                // The read path quarantines in the background; make it durable before a
                // CLI process exits.
                let quarantined = p.ledger.read().blob(sha).is_some_and(|b| b.quarantined);
                if quarantined {
                    p.serve
                        .quarantine_now(sha, format!("storage verify: {e}"))
                        .await?;
                }
                report.blobs_bad.push((sha.clone(), e));
            }
        }
        progress(i + 1, total);
    }
    let now = p.clock.now();
    // Re-read the records after the slow part, and leave objects younger than the grace
    // alone: a running server may have just placed a blob whose record is on its way.
    p.ledger.reload().await?;
    let state = p.ledger.read().clone();
    for (path, _, modified) in storage.list_meta(Role::Cas, "sha256").await? {
        if now - modified <= TEMP_GRACE {
            continue;
        }
        let hex = path.rsplit('/').next().unwrap_or_default().to_owned();
        match state.blob(&hex) {
            None => report.orphans.push(path),
            Some(b) if b.evicted => report.evicted_leftovers.push(path),
            Some(_) => {}
        }
    }
    for (path, _, modified) in storage.list_meta(Role::Cas, "tmp").await? {
        if now - modified > TEMP_GRACE {
            report.temp_leftovers.push(path);
        }
    }
    if fix {
        let doomed: Vec<String> = report
            .orphans
            .iter()
            .chain(&report.evicted_leftovers)
            .chain(&report.temp_leftovers)
            .cloned()
            .collect();
        for path in doomed {
            let key = match path.split_once('/') {
                Some(("tmp", id)) => StorageKey::Temp { id: id.to_owned() },
                Some((_, hex)) => StorageKey::blob("sha256", hex),
                None => continue,
            };
            storage.delete(&key).await?;
            report.removed.push(path);
        }
    }
    Ok(report)
}
