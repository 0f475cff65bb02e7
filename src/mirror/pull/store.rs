//! The end of a fill: the blob stored and the pin written, then, for a first fill, the settle
//! step that decides whether this replica's pin is the one the URL keeps.
//!
//! Two replicas that fill one URL at the same time from an upstream that answers each other
//! bytes both store and pin; the records' fold keeps the earliest pin. The loser's clients
//! must not complete a transfer of bytes the URL never serves again, so every client is kept
//! one byte short until the fill settles: its pin written, it waits the settle window, reloads
//! the pins, and only then releases the last byte (its pin won) or fails the fill with
//! [`FillError::Superseded`] (another pin won), which cuts every transfer short.

use super::{FillError, FillTask, Progress};
use crate::mirror::record::{BlobRecord, EventKind, EventRecord, PinRecord, Record, UpstreamMeta};
use crate::mirror::records::BlobState;
use crate::mirror::verify::{CHUNK_SIZE, Digests};
use crate::storage::StorageKey;
use tokio::sync::watch;

impl FillTask {
    /// Write, verify, then expose: upload to a temporary key, move to the CAS key, check the
    /// size the backend reports, then append provenance and the pin. A pin of the URL to
    /// other bytes that is already known means another replica won: [`FillError::Superseded`].
    pub(super) async fn store(
        &self,
        d: &Digests,
        meta: UpstreamMeta,
    ) -> Result<BlobRecord, FillError> {
        let storage = self.pulls.blobs.storage();
        let st = |e: crate::storage::StorageError| FillError::Storage(e.to_string());
        let blob_key = StorageKey::blob("sha256", &d.sha256_hex);
        let available = self
            .pulls
            .ledger
            .read()
            .blob(&d.sha256_hex)
            .is_some_and(BlobState::is_available);
        let present = available && storage.size(&blob_key).await.map_err(st)? == Some(d.size);
        let now = self.pulls.clock.now();
        let record = BlobRecord {
            sha256: d.sha256_hex.clone(),
            integrity: d.integrity.iter().map(ToString::to_string).collect(),
            size: d.size,
            url: Some(self.url.to_string()),
            fetched_at: now,
            upstream: Some(meta),
            rule: Some(self.allowed.rule.clone()),
            requested_by: Some(self.requested_by.clone()),
            chunk_size: CHUNK_SIZE,
            chunks: d.chunks.clone(),
            supplement: false,
        };
        // Placement and retention's deletes exclude each other: a blob is never deleted
        // between being placed and its record being written.
        let _placing = self.pulls.ledger.placement().await;
        let mut new_records = Vec::new();
        if !present {
            let spool = self
                .fill
                .spool()
                .ok_or_else(|| FillError::Other("no spool file".to_owned()))?;
            self.pulls
                .blobs
                .place(spool, &d.sha256_hex, d.size)
                .await
                .map_err(|e| {
                    if e.is_storage() {
                        FillError::Storage(e.to_string())
                    } else {
                        FillError::Other(e.to_string())
                    }
                })?;
            new_records.push(Record::Blob(record.clone()));
        }
        let existing = self.pulls.ledger.pin(self.url.as_str());
        if existing.is_none() {
            // The pin's time is taken after the upload, just before it is written: the fold
            // keeps the earliest pin, and a pin dated long before it becomes visible could
            // win after another replica's settle window has passed.
            new_records.push(Record::Pin(PinRecord {
                url: self.url.to_string(),
                sha256: d.sha256_hex.clone(),
                at: self.pulls.clock.now(),
            }));
        }
        for r in &new_records {
            self.pulls.ledger.record(r).await.map_err(st)?;
        }
        if let Some(winner) = existing.filter(|w| *w != d.sha256_hex) {
            // Another replica's pin arrived (by a reload) while this fill ran.
            return Err(FillError::Superseded {
                ours: d.sha256_hex.clone(),
                winner,
            });
        }
        let stored_new_blob = new_records.iter().any(|r| matches!(r, Record::Blob(_)));
        let result = {
            let state = self.pulls.ledger.write();
            state
                .blob(&d.sha256_hex)
                .map_or_else(|| record.clone(), BlobState::record)
        };
        if stored_new_blob && record.integrity.len() < 3 {
            super::supplement::complete_integrity(
                self.pulls.ledger.clone(),
                &self.pulls.background,
                self.fill.clone(),
                record,
            );
        }
        Ok(result)
    }

    /// The settle step of a first fill (no expected digest): the pin is written and every
    /// client is one byte short; wait the settle window, reload the pins, and keep the fill
    /// only when the URL's pin is still ours.
    pub(super) async fn settle(
        &self,
        ours: BlobRecord,
        tx: &watch::Sender<Progress>,
    ) -> Result<BlobRecord, FillError> {
        tx.send_modify(|p| p.settling = true);
        tokio::time::sleep(self.pulls.settle).await;
        self.pulls
            .ledger
            .reload()
            .await
            .map_err(|e| FillError::Storage(format!("settling the pin: {e}")))?;
        match self.pulls.ledger.pin(self.url.as_str()) {
            Some(winner) if winner != ours.sha256 => Err(FillError::Superseded {
                ours: ours.sha256,
                winner,
            }),
            _ => Ok(ours),
        }
    }

    /// Records that the upstream served other bytes than the URL's pin: it changed since
    /// (`Mismatch`), or another replica's first fill won (`Superseded`).
    pub(super) async fn record_drift(&self, e: &FillError) {
        let (pin, detail) = match e {
            FillError::Mismatch { actual, .. } => {
                let Some(pin) = self.pulls.ledger.pin(self.url.as_str()) else {
                    return;
                };
                (pin, format!("upstream now serves {actual}"))
            }
            FillError::Superseded { ours, winner } => (
                winner.clone(),
                format!(
                    "superseded: another replica pinned the URL first; this replica's fill got sha256 {ours} and was withdrawn before its last byte"
                ),
            ),
            _ => return,
        };
        let event = Record::Event(EventRecord {
            event: EventKind::Drift,
            sha256: pin,
            url: Some(self.url.to_string()),
            at: self.pulls.clock.now(),
            detail,
        });
        if let Err(e) = self.pulls.ledger.record(&event).await {
            tracing::error!(error = %e, "could not record drift");
        }
    }
}
