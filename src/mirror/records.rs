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

use super::record::key_time;
pub use super::record::{BlobRecord, EventKind, EventRecord, PinRecord, Record, UpstreamMeta};
pub use super::state::{BlobState, MirrorState, NewRecord, Pin, RecordKey, Sha256Digest};
use super::state::{Folded, RELIST_WINDOW, Strings};
use crate::storage::{Role, Storage, StorageError, StorageKey};

/// A record's bytes (`None` when it is gone).
type Fetched = Result<Option<Bytes>, StorageError>;

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

    /// Reads the records at `keys`, in any order (the storage reads a local folder with a
    /// few blocking tasks, elsewhere 16 requests at a time).
    fn read(&self, keys: Vec<RecordKey>) -> BoxStream<'static, (RecordKey, Fetched)> {
        let objects = keys.iter().map(storage_key).collect();
        let keys: Arc<[RecordKey]> = keys.into();
        self.storage
            .get_many(objects)
            .map(move |(i, got)| (keys[i].clone(), got))
            .boxed()
    }
}

#[cfg(test)]
mod tests;
