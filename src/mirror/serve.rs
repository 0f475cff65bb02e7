//! Serving stored blobs: verified reads, the count of responses reading each blob (retention
//! never removes those), access records for retention by age, and the quarantine of blobs
//! whose bytes fail verification.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;

use super::clock::Clock;
use super::error::MirrorError;
use super::ledger::Ledger;
use super::record::{BlobRecord, EventKind, EventRecord, Record};
use super::response::{BlobResponse, ByteRange};
use super::stats::MirrorStats;
use super::verify::{ReadFault, open_verified};
use crate::storage::{BlobStore, StorageError};

/// How often a read of the same blob is recorded (feeds retention by age).
const ACCESS_RECORD_EVERY: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The read side of the mirror.
#[derive(Debug)]
pub(super) struct Serve {
    ledger: Arc<Ledger>,
    blobs: BlobStore,
    stats: Arc<MirrorStats>,
    clock: Arc<dyn Clock>,
    /// Responses streaming each blob right now: retention never removes these.
    readers: Mutex<HashMap<String, usize>>,
    /// When a read of each blob was last recorded.
    access_written: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Where record writes run (see [`super::pull::Pulls`]).
    background: tokio::runtime::Handle,
}

impl Serve {
    pub(super) fn new(
        ledger: Arc<Ledger>,
        blobs: BlobStore,
        stats: Arc<MirrorStats>,
        clock: Arc<dyn Clock>,
        background: tokio::runtime::Handle,
    ) -> Self {
        Self {
            ledger,
            blobs,
            stats,
            clock,
            readers: Mutex::new(HashMap::new()),
            access_written: Mutex::new(HashMap::new()),
            background,
        }
    }

    /// The blobs some response is reading right now.
    pub(super) fn being_read(&self) -> Vec<String> {
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Whether some response is reading `sha256` right now.
    pub(super) fn is_being_read(&self, sha256: &str) -> bool {
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(sha256)
    }

    /// Streams a whole stored blob, verified chunk by chunk (for exports and restore checks).
    ///
    /// # Errors
    /// [`MirrorError::NotFound`] when the blob is not available.
    pub(super) async fn read_blob(
        self: &Arc<Self>,
        sha256: &str,
    ) -> Result<BlobResponse, MirrorError> {
        let blob = self.ledger.readable(sha256).ok_or_else(|| {
            MirrorError::NotFound(format!("no blob sha256:{sha256} in the mirror"))
        })?;
        self.serve_blob(blob, None).await
    }

    /// Reads a blob back from the backend and checks its sha256 (and, on the way, every
    /// chunk).
    pub(super) async fn check_blob(self: &Arc<Self>, sha: &str) -> Result<(), String> {
        use sha2::Digest as _;
        let mut body = self.read_blob(sha).await.map_err(|e| e.to_string())?.body;
        let mut h = sha2::Sha256::new();
        while let Some(chunk) = body.next().await {
            h.update(&chunk.map_err(|e| e.to_string())?);
        }
        let got = hex::encode(h.finalize());
        if got == sha {
            Ok(())
        } else {
            Err(format!("read back as sha256 {got}"))
        }
    }

    /// Serves `range` of a stored blob, verified chunk by chunk.
    ///
    /// # Errors
    /// [`MirrorError::RangeNotSatisfiable`]; [`MirrorError::Storage`] when the backend fails;
    /// [`MirrorError::NotFound`] when the object is gone or damaged (it is then quarantined).
    pub(super) async fn serve_blob(
        self: &Arc<Self>,
        record: Arc<BlobRecord>,
        range: Option<ByteRange>,
    ) -> Result<BlobResponse, MirrorError> {
        let size = record.size;
        let (start, end, partial) = match range {
            None => (0, size, false),
            Some(r) => {
                let (s, e) = r
                    .resolve(size)
                    .ok_or(MirrorError::RangeNotSatisfiable { size })?;
                (s, e, true)
            }
        };
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_served
            .fetch_add(end - start, Ordering::Relaxed);
        self.note_access(&record.sha256);
        let serve = self.clone();
        let sha = record.sha256.clone();
        let on_fault = Arc::new(move |fault: ReadFault| match fault {
            ReadFault::Corrupt(detail) => serve.quarantine(&sha, detail),
            ReadFault::Backend(detail) => {
                tracing::error!(blob.sha256 = %sha, error = %detail, "storage failed while serving a blob");
            }
        });
        let guard = ReadGuard::new(self, &record.sha256);
        let opened = open_verified(
            self.blobs.storage(),
            record.clone(),
            start,
            end,
            on_fault.clone(),
        )
        .await;
        let body = match opened {
            Ok(b) => b,
            Err(ReadFault::Backend(detail)) => {
                return Err(MirrorError::Storage(format!(
                    "reading blob {}: {detail}",
                    record.sha256
                )));
            }
            Err(ReadFault::Corrupt(detail)) => {
                self.quarantine_now(&record.sha256, detail.clone()).await?;
                return Err(MirrorError::NotFound(format!(
                    "blob {} is not available: {detail}",
                    record.sha256
                )));
            }
        };
        let body = body.map(move |item| {
            let _reading = &guard;
            item
        });

        Ok(BlobResponse {
            sha256: Some(record.sha256.clone()),
            size: Some(size),
            range: partial.then_some((start, end)),
            body: body.boxed(),
        })
    }

    /// Records a read at most once an hour per blob (retention by age reads these).
    fn note_access(&self, sha256: &str) {
        let now = self.clock.now();
        {
            let mut written = self
                .access_written
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if written
                .get(sha256)
                .is_some_and(|t| now - *t < ACCESS_RECORD_EVERY)
            {
                return;
            }
            written.insert(sha256.to_owned(), now);
        }
        let event = Record::Event(EventRecord {
            event: EventKind::Access,
            sha256: sha256.to_owned(),
            url: None,
            at: now,
            detail: String::new(),
        });
        let ledger = self.ledger.clone();
        self.background.spawn(async move {
            if let Err(e) = ledger.record(&event).await {
                tracing::warn!(error = %e, "could not record a blob access");
            }
        });
    }

    /// Counts and reports a failed verification; the quarantine event to record.
    fn quarantine_event(&self, sha256: &str, detail: String) -> Record {
        self.stats
            .integrity_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(blob.sha256 = %sha256, detail = %detail, "stored blob failed verification; quarantined");
        Record::Event(EventRecord {
            event: EventKind::Quarantine,
            sha256: sha256.to_owned(),
            url: None,
            at: self.clock.now(),
            detail,
        })
    }

    /// Marks a blob as quarantined: never served again until it is re-ingested.
    pub(super) fn quarantine(&self, sha256: &str, detail: String) {
        let event = self.quarantine_event(sha256, detail);
        // Applied at once, so the blob stops being served now; recorded in the background.
        self.ledger.write().apply(&event);
        let ledger = self.ledger.clone();
        self.background.spawn(async move {
            if let Err(e) = ledger.record(&event).await {
                tracing::error!(error = %e, "could not record a quarantine");
            }
        });
    }

    /// Quarantines a blob and waits until the record is written (for callers that may exit
    /// right after, such as the CLI's scrub).
    ///
    /// # Errors
    /// [`StorageError`] when the record cannot be written.
    pub(super) async fn quarantine_now(
        &self,
        sha256: &str,
        detail: String,
    ) -> Result<(), StorageError> {
        let event = self.quarantine_event(sha256, detail);
        self.ledger.record(&event).await
    }
}

/// Counts one open read of a blob for as long as it lives.
struct ReadGuard {
    serve: Arc<Serve>,
    sha256: String,
}

impl ReadGuard {
    fn new(serve: &Arc<Serve>, sha256: &str) -> Self {
        *serve
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(sha256.to_owned())
            .or_default() += 1;
        Self {
            serve: serve.clone(),
            sha256: sha256.to_owned(),
        }
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let mut readers = self
            .serve
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = readers.get_mut(&self.sha256) {
            *n -= 1;
            if *n == 0 {
                readers.remove(&self.sha256);
            }
        }
    }
}
