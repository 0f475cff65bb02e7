//! Append-only records in the `records` role, and the state folded from them.
//!
//! Every fact is one new object whose key starts with its time, so records are never read,
//! modified and written back, and correctness never depends on conditional puts (Garage
//! ignores them). The current state (which URL is pinned to which digest, which blobs are
//! quarantined) is a fold over all records, kept in memory and rebuilt at start.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

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

/// A record read from the store, not yet applied (`record` is `None` when unreadable).
#[derive(Debug)]
pub struct NewRecord {
    time: DateTime<Utc>,
    key: String,
    record: Option<Record>,
}

/// What is known of one blob.
#[derive(Debug, Clone)]
pub struct BlobState {
    /// The latest provenance record.
    pub record: Arc<BlobRecord>,
    /// Every URL it was served or pinned for.
    pub urls: BTreeSet<String>,
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
}

/// The fold of all records.
#[derive(Debug, Default, Clone)]
pub struct MirrorState {
    /// Blobs by hex sha256.
    pub blobs: HashMap<String, BlobState>,
    /// URL pins.
    pub pins: HashMap<String, PinRecord>,
    /// `sha384-...` / `sha512-...` SRI -> hex sha256.
    pub aliases: HashMap<String, String>,
    /// Drift events, oldest first.
    pub drift: Vec<EventRecord>,
    /// Record keys already applied (this replica's own and those read from the store).
    pub seen: std::collections::HashSet<String>,
    /// The newest record time listed per stream: the next incremental listing starts a few
    /// minutes before it, so records another replica wrote late are still found.
    pub newest: HashMap<String, DateTime<Utc>>,
}

impl MirrorState {
    /// Applies one record (records must be applied in time order).
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Blob(b) => {
                // sha256 values are the address itself: only the others need an alias.
                for sri in b.integrity.iter().filter(|i| !i.starts_with("sha256-")) {
                    self.aliases.insert(sri.clone(), b.sha256.clone());
                }
                if b.supplement {
                    if let Some(entry) = self.blobs.get_mut(&b.sha256) {
                        let mut merged = (*entry.record).clone();
                        for sri in &b.integrity {
                            if !merged.integrity.contains(sri) {
                                merged.integrity.push(sri.clone());
                            }
                        }
                        entry.record = Arc::new(merged);
                    }
                    return;
                }
                let entry = self
                    .blobs
                    .entry(b.sha256.clone())
                    .or_insert_with(|| BlobState {
                        record: Arc::new(b.clone()),
                        urls: BTreeSet::new(),
                        quarantined: false,
                        evicted: false,
                        last_access: b.fetched_at,
                    });
                // A re-ingest replaces the bytes: it clears quarantine and eviction.
                entry.record = Arc::new(b.clone());
                entry.quarantined = false;
                entry.evicted = false;
                entry.last_access = entry.last_access.max(b.fetched_at);
                if let Some(u) = &b.url {
                    entry.urls.insert(u.clone());
                }
            }
            Record::Pin(p) => {
                // The earliest pin wins, whatever order replicas' records arrive in.
                let keep_existing = self
                    .pins
                    .get(&p.url)
                    .is_some_and(|e| (e.at, &e.sha256) <= (p.at, &p.sha256));
                if !keep_existing {
                    self.pins.insert(p.url.clone(), p.clone());
                }
                if let Some(b) = self.blobs.get_mut(&p.sha256) {
                    b.urls.insert(p.url.clone());
                }
            }
            Record::Event(e) => {
                let blob = self.blobs.get_mut(&e.sha256);
                match (e.event, blob) {
                    (EventKind::Quarantine, Some(b)) => b.quarantined = true,
                    (EventKind::Evict, Some(b)) => b.evicted = true,
                    (EventKind::Access, Some(b)) => b.last_access = b.last_access.max(e.at),
                    (EventKind::Drift, _) => self.drift.push(e.clone()),
                    _ => {}
                }
            }
        }
    }

    /// Applies records read by [`Records::fetch_new`], skipping any applied meanwhile.
    pub fn apply_new(&mut self, records: Vec<NewRecord>) {
        for r in records {
            if !self.seen.insert(r.key.clone()) {
                continue;
            }
            let Some(record) = r.record else { continue };
            self.apply(&record);
            let stream = r.key.split_once('/').map_or("", |(s, _)| s).to_owned();
            let newest = self.newest.entry(stream).or_insert(r.time);
            *newest = (*newest).max(r.time);
        }
        // Keys at or before where the next listing starts are never listed again: forget
        // them, so this set holds minutes of keys rather than every record ever read.
        for (stream, t) in &self.newest {
            let prefix = format!("{stream}/");
            let floor = format!("{prefix}{}", key_time(*t - RELIST_WINDOW));
            self.seen.retain(|k| !k.starts_with(&prefix) || *k > floor);
        }
    }

    /// The available blob for an SRI value or a hex sha256.
    #[must_use]
    pub fn resolve_alias(&self, algorithm: &str, hex_digest: &str) -> Option<String> {
        if algorithm == "sha256" {
            return Some(hex_digest.to_ascii_lowercase());
        }
        let raw = hex::decode(hex_digest).ok()?;
        let sri = format!(
            "{algorithm}-{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw)
        );
        self.aliases.get(&sri).cloned()
    }
}

/// How far back an incremental listing reaches before the newest record seen.
const RELIST_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The time part of a record key: sorts like the time.
fn key_time(t: DateTime<Utc>) -> String {
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
    /// seen), skipping keys `is_seen` knows. Returns them sorted, with the number of
    /// unreadable records skipped.
    ///
    /// # Errors
    /// [`StorageError`] when listing fails.
    pub async fn fetch_new(
        &self,
        newest: &HashMap<String, DateTime<Utc>>,
        is_seen: &(dyn Fn(&str) -> bool + Sync),
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
            keys.extend(listed.into_iter().filter(|k| !is_seen(k)));
        }
        let fetched: Vec<(String, Result<Option<Bytes>, StorageError>)> =
            futures::stream::iter(keys)
                .map(|path| {
                    let storage = self.storage.clone();
                    async move {
                        let (stream, id) = path.split_once('/').unwrap_or(("", ""));
                        let stream = match stream {
                            "blobs" => "blobs",
                            "pins" => "pins",
                            _ => "events",
                        };
                        let got = storage
                            .get(&StorageKey::Record {
                                stream,
                                id: id.to_owned(),
                            })
                            .await;
                        (path, got)
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await;
        let mut records = Vec::new();
        let mut bad = 0;
        for (path, got) in fetched {
            match got?.map(|b| serde_json::from_slice::<Record>(&b)) {
                Some(Ok(r)) => records.push(NewRecord {
                    time: r.time(),
                    key: path,
                    record: Some(r),
                }),
                Some(Err(e)) => {
                    bad += 1;
                    tracing::warn!(record = %path, error = %e, "unreadable record skipped");
                    records.push(NewRecord {
                        time: DateTime::<Utc>::MIN_UTC,
                        key: path,
                        record: None,
                    });
                }
                None => {}
            }
        }
        records.sort_by(|a, b| (a.time, &a.key).cmp(&(b.time, &b.key)));
        Ok((records, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(supplement: bool, integrity: &[&str], at: i64) -> Record {
        Record::Blob(BlobRecord {
            sha256: "ab".repeat(32),
            integrity: integrity.iter().map(|s| (*s).to_owned()).collect(),
            size: 1,
            url: Some("https://x.example/a".to_owned()),
            fetched_at: DateTime::from_timestamp(at, 0).unwrap_or_default(),
            upstream: None,
            rule: None,
            requested_by: None,
            chunk_size: 1 << 20,
            chunks: vec![],
            supplement,
        })
    }

    #[test]
    fn a_supplement_adds_digests_but_never_revives_a_quarantined_blob() {
        let mut state = MirrorState::default();
        state.apply(&blob(false, &["sha256-x"], 1));
        state.apply(&Record::Event(EventRecord {
            event: EventKind::Quarantine,
            sha256: "ab".repeat(32),
            url: None,
            at: DateTime::from_timestamp(2, 0).unwrap_or_default(),
            detail: String::new(),
        }));
        state.apply(&blob(true, &["sha256-x", "sha512-y"], 1));
        let b = &state.blobs[&"ab".repeat(32)];
        assert!(b.quarantined, "still quarantined");
        assert_eq!(b.record.integrity, ["sha256-x", "sha512-y"]);
        assert_eq!(state.aliases["sha512-y"], "ab".repeat(32));
        // A real re-ingest does clear it.
        state.apply(&blob(false, &["sha256-x"], 3));
        assert!(!state.blobs[&"ab".repeat(32)].quarantined);
    }

    #[test]
    fn applied_keys_are_forgotten_once_no_listing_can_return_them() {
        let mut state = MirrorState::default();
        let at = |secs: i64| DateTime::from_timestamp(secs, 0).unwrap_or_default();
        let pin = |secs: i64| NewRecord {
            time: at(secs),
            key: format!("pins/{}-x-0000000001.json", key_time(at(secs))),
            record: Some(Record::Pin(PinRecord {
                url: format!("https://x.example/{secs}"),
                sha256: "aa".repeat(32),
                at: at(secs),
            })),
        };
        state.apply_new(vec![pin(1_000), pin(1_000 + 3_600)]);
        assert_eq!(state.pins.len(), 2, "both applied");
        assert_eq!(
            state.seen.len(),
            1,
            "the key an hour older than the newest is forgotten"
        );
        // Re-applying the remembered one is still a no-op.
        state.apply_new(vec![pin(1_000 + 3_600)]);
        assert_eq!(state.pins.len(), 2);
    }

    #[test]
    fn first_pin_wins() {
        let mut state = MirrorState::default();
        for (sha, at) in [("aa", 1), ("bb", 2)] {
            state.apply(&Record::Pin(PinRecord {
                url: "https://x.example/a".to_owned(),
                sha256: sha.to_owned(),
                at: DateTime::from_timestamp(at, 0).unwrap_or_default(),
            }));
        }
        assert_eq!(state.pins["https://x.example/a"].sha256, "aa");
    }
}
