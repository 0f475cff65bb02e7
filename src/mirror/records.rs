//! Append-only records in the `records` role, and the state folded from them.
//!
//! Every fact is one new object whose key starts with its time, so records are never read,
//! modified and written back, and correctness never depends on conditional puts (Garage
//! ignores them). The current state (which URL is pinned to which digest, which blobs are
//! quarantined) is a fold over all records, kept in memory and rebuilt at start.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use super::state::{BlobState, MirrorState, NewRecord, Pin, RecordKey, Sha256Digest};
use super::state::{Folded, RELIST_WINDOW, Strings};
use crate::storage::{Role, Storage, StorageError, StorageKey};

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
    fn stream(&self) -> &'static str {
        match self {
            Self::Blob(_) => "blobs",
            Self::Pin(_) => "pins",
            Self::Event(_) => "events",
        }
    }

    fn time(&self) -> DateTime<Utc> {
        match self {
            Self::Blob(b) => b.fetched_at,
            Self::Pin(p) => p.at,
            Self::Event(e) => e.at,
        }
    }
}

/// Blocking tasks that read the records of a local folder.
const LOCAL_READERS: usize = 4;

/// A record's bytes (`None` when it is gone).
type Fetched = Result<Option<Bytes>, StorageError>;

/// Records being read from a local folder by blocking tasks.
struct LocalRead {
    keys: Arc<[RecordKey]>,
    rx: tokio::sync::mpsc::Receiver<(usize, Option<Fetched>)>,
    /// Which keys were answered.
    received: Vec<bool>,
    /// Once every reader is done: no key before this one is unanswered.
    next_unanswered: usize,
    storage: Storage,
}

/// Where the record under `key` is stored.
fn storage_key(key: &RecordKey) -> StorageKey {
    let path = key.to_string();
    let (stream, id) = path.split_once('/').unwrap_or(("", ""));
    let stream = match stream {
        "blobs" => "blobs",
        "pins" => "pins",
        _ => "events",
    };
    StorageKey::Record {
        stream,
        id: id.to_owned(),
    }
}

/// The time part of a record key: sorts like the time.
pub(super) fn key_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S%.9fZ").to_string()
}

/// Writes and reads records.
#[derive(Debug, Clone)]
pub struct Records {
    storage: Storage,
    salt: u64,
    counter: Arc<AtomicU64>,
}

impl Records {
    /// Records in `storage`'s records role.
    #[must_use]
    pub fn new(storage: Storage) -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Self {
            storage,
            salt: h.finish(),
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Appends a record under a new, unique key that starts with its time.
    ///
    /// # Errors
    /// [`StorageError`] when the backend refuses the write.
    pub async fn append(&self, record: &Record) -> Result<String, StorageError> {
        // The key carries the time of the write, not the record's own time: other replicas list
        // from a little before the newest key they saw, so a record written late (a long
        // upload, a slow clock elsewhere) must still sort after what they have seen.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{:016x}-{n:010}.json", key_time(Utc::now()), self.salt);
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        let key = StorageKey::Record {
            stream: record.stream(),
            id,
        };
        self.storage.put(&key, Bytes::from(bytes)).await?;
        Ok(key.path().to_string())
    }

    /// Reads every record and folds them, oldest first. Unreadable records are reported and
    /// skipped (they are counted in the second value).
    ///
    /// # Errors
    /// [`StorageError`] when listing fails.
    pub async fn load(&self) -> Result<(MirrorState, usize), StorageError> {
        let mut state = MirrorState::default();
        let (new, bad) = self.fetch_new(&HashMap::new(), &|_| false).await?;
        state.apply_new(new);
        Ok((state, bad))
    }

    /// Reads the records written since `newest` (per stream; by any replica: keys start with
    /// their time, and each stream is listed from a few minutes before the newest record
    /// seen), skipping keys `is_seen` knows. Each record is folded as it arrives, so the
    /// records' text is never held all at once. Returns them sorted, with the number of
    /// unreadable records skipped.
    ///
    /// # Errors
    /// [`StorageError`] when listing or reading fails.
    pub async fn fetch_new(
        &self,
        newest: &HashMap<String, DateTime<Utc>>,
        is_seen: &(dyn Fn(&RecordKey) -> bool + Sync),
    ) -> Result<(Vec<NewRecord>, usize), StorageError> {
        let mut keys = Vec::new();
        for stream in ["blobs", "pins", "events"] {
            let listed = match newest.get(stream) {
                Some(t) => {
                    let offset = format!("{stream}/{}", key_time(*t - RELIST_WINDOW));
                    self.storage
                        .list_after(Role::Records, stream, &offset)
                        .await?
                }
                None => self.storage.list(Role::Records, stream).await?,
            };
            keys.extend(
                listed
                    .into_iter()
                    .map(|k| RecordKey::parse(&k))
                    .filter(|k| !is_seen(k)),
            );
        }
        let mut records = Vec::with_capacity(keys.len());
        let mut fetched = self.read(keys);
        let mut strings = Strings::default();
        let mut bad = 0;
        while let Some((key, got)) = fetched.next().await {
            let Some(bytes) = got? else { continue };
            let folded = match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) => Folded::new(&r, &mut strings)
                    .map(|f| (r.time(), f))
                    .ok_or_else(|| "its sha256 is not 64 lowercase hex digits".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            match folded {
                Ok((time, f)) => records.push(NewRecord {
                    time,
                    key,
                    record: Some(f),
                }),
                Err(e) => {
                    bad += 1;
                    tracing::warn!(record = %key, error = %e, "unreadable record skipped");
                    records.push(NewRecord {
                        time: DateTime::<Utc>::MIN_UTC,
                        key,
                        record: None,
                    });
                }
            }
        }
        // Keys are unique, so an unstable sort gives the one order (and needs no buffer).
        records.sort_unstable_by(|a, b| (a.time, &a.key).cmp(&(b.time, &b.key)));
        Ok((records, bad))
    }

    /// Reads the records at `keys`, in any order. From a local folder, a few blocking tasks
    /// read the files one after another: one blocking task per file (the object store's way)
    /// grows tokio's blocking pool to hundreds of threads during a start, each keeping its
    /// stack and allocator arena. Elsewhere, 16 requests at a time.
    fn read(&self, keys: Vec<RecordKey>) -> BoxStream<'static, (RecordKey, Fetched)> {
        let storage = self.storage.clone();
        let local = keys
            .first()
            .is_some_and(|k| storage.local_path_of(&storage_key(k)).is_some());
        if !local {
            return futures::stream::iter(keys)
                .map(move |key| {
                    let storage = storage.clone();
                    async move {
                        let got = storage.get(&storage_key(&key)).await;
                        (key, got)
                    }
                })
                .buffer_unordered(16)
                .boxed();
        }
        let keys: Arc<[RecordKey]> = keys.into();
        let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Option<Fetched>)>(64);
        let share = keys.len().div_ceil(LOCAL_READERS).max(1);
        for first in (0..keys.len()).step_by(share) {
            let (tx, storage, keys) = (tx.clone(), storage.clone(), keys.clone());
            tokio::spawn(crate::tasks::spawn_blocking(move || {
                for (i, key) in keys.iter().enumerate().skip(first).take(share) {
                    let path = storage.local_path_of(&storage_key(key));
                    let got = match path.map(std::fs::read) {
                        Some(Ok(bytes)) => Some(Ok(Some(Bytes::from(bytes)))),
                        Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Some(Ok(None)),
                        // Any other failure: read it through the store, for its error.
                        _ => None,
                    };
                    if tx.blocking_send((i, got)).is_err() {
                        return; // the caller stopped reading
                    }
                }
            }));
        }
        drop(tx);
        let state = LocalRead {
            received: vec![false; keys.len()],
            keys,
            rx,
            next_unanswered: 0,
            storage,
        };
        futures::stream::unfold(state, |mut st| async move {
            let (i, got) = match st.rx.recv().await {
                Some((i, got)) => (i, got),
                // Every reader is done. A key one did not answer (it failed) is read through
                // the store, like the ones it could not read.
                None => {
                    let i = (st.next_unanswered..st.keys.len()).find(|&i| !st.received[i])?;
                    st.next_unanswered = i + 1;
                    (i, None)
                }
            };
            st.received[i] = true;
            let key = st.keys[i].clone();
            let got = match got {
                Some(got) => got,
                None => st.storage.get(&storage_key(&key)).await,
            };
            Some(((key, got), st))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests;
