//! The ledger: the append-only records and the state folded from them, with one owner for
//! both. Every fact the mirror learns goes through [`Ledger::record`], which writes the record
//! and applies it; what other replicas wrote comes in through [`Ledger::reload`].
//!
//! It also holds the two gates on trusted writes: the placement lock (placing a blob and
//! recording it, versus retention deleting one) and the reason ingest is refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::record::{BlobRecord, Record};
use super::records::Records;
use super::state::{BlobState, MirrorState, RecordKey};
use crate::storage::{Storage, StorageError};

/// The records and their fold.
#[derive(Debug)]
pub(super) struct Ledger {
    records: Records,
    state: RwLock<MirrorState>,
    /// Serializes record reloads.
    reload: tokio::sync::Mutex<()>,
    /// Reloads finished so far (lets waiting callers share one).
    reloads_done: AtomicU64,
    /// Held while a blob is placed and recorded, and while retention deletes one.
    placement: tokio::sync::Mutex<()>,
    /// Why pull-through is refused (the storage backend failed its start-up probe), if it is.
    ingest_refused: RwLock<Option<String>>,
}

impl Ledger {
    /// Reads every record of `storage` and folds them.
    ///
    /// # Errors
    /// [`StorageError`] when the records cannot be listed.
    pub(super) async fn load(storage: Storage) -> Result<Self, StorageError> {
        let records = Records::new(storage);
        let (state, bad) = records.load().await?;
        if bad > 0 {
            tracing::warn!(records.unreadable = bad, "some records could not be read");
        }
        tracing::info!(
            mirror.blobs = state.blobs.len(),
            mirror.pins = state.pins.len(),
            "mirror state loaded"
        );
        Ok(Self {
            records,
            state: RwLock::new(state),
            reload: tokio::sync::Mutex::new(()),
            reloads_done: AtomicU64::new(0),
            placement: tokio::sync::Mutex::new(()),
            ingest_refused: RwLock::new(None),
        })
    }

    /// The folded state, for reading (never held across an await).
    pub(super) fn read(&self) -> RwLockReadGuard<'_, MirrorState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The folded state, for applying a fact at once (never held across an await).
    pub(super) fn write(&self) -> RwLockWriteGuard<'_, MirrorState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a record and applies it, remembering its key so that an incremental reload of
    /// the records does not apply it a second time.
    ///
    /// # Errors
    /// [`StorageError`] when the backend refuses the write.
    pub(super) async fn record(&self, record: &Record) -> Result<(), StorageError> {
        let key = self.records.append(record).await?;
        let mut state = self.write();
        state.remember(&key);
        state.apply(record);
        Ok(())
    }

    /// Reads the records other replicas wrote since the last reload and applies them. Reloads
    /// run one at a time; each lists only from a few minutes before the newest record seen.
    ///
    /// # Errors
    /// [`StorageError`] when the records cannot be listed.
    pub(super) async fn reload(&self) -> Result<(), StorageError> {
        let started = self.reloads_done.load(Ordering::Acquire);
        let _one_at_a_time = self.reload.lock().await;
        if self.reloads_done.load(Ordering::Acquire) > started + 1 {
            // A whole reload began and finished while this call waited: it saw everything
            // written before this call started.
            return Ok(());
        }
        let newest = self.read().newest.clone();
        let is_seen = |k: &RecordKey| self.read().has_seen(k);
        let (new, bad) = self.records.fetch_new(&newest, &is_seen).await?;
        if bad > 0 {
            tracing::warn!(records.unreadable = bad, "some records could not be read");
        }
        if !new.is_empty() {
            self.write().apply_new(new);
        }
        self.reloads_done.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Takes the placement lock: placement and retention's deletes exclude each other, so a
    /// blob is never deleted between being placed and its record being written.
    pub(super) async fn placement(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.placement.lock().await
    }

    /// The state of blob `sha256` when it is available (stored, not quarantined or evicted).
    pub(super) fn available(&self, sha256: &str) -> Option<BlobState> {
        self.read()
            .blob(sha256)
            .filter(|b| b.is_available())
            .cloned()
    }

    /// What a verified read of the blob needs, when it is available.
    pub(super) fn readable(&self, sha256: &str) -> Option<Arc<BlobRecord>> {
        self.read()
            .blob(sha256)
            .filter(|b| b.is_available())
            .map(|b| Arc::new(b.read_record()))
    }

    /// The hex sha256 `url` is pinned to, if it is.
    pub(super) fn pin(&self, url: &str) -> Option<String> {
        self.read().pin(url).map(|p| p.sha256.to_hex())
    }

    /// Refuses (with the reason) or allows trusted writes.
    pub(super) fn refuse_ingest(&self, reason: Option<String>) {
        *self
            .ingest_refused
            .write()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }

    /// Why trusted writes (pull-through, publish ingest) are refused, if they are.
    pub(super) fn ingest_refused(&self) -> Option<String> {
        self.ingest_refused
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
