//! The mirror service: lookups by URL and by digest, pull-through on allowed misses,
//! quarantine, provenance, and the state folded from records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use serde::Serialize;
use url::Url;

use super::fill::{Fill, FillError};
use super::policy::Policy;
use super::records::{
    BlobRecord, BlobState, EventKind, EventRecord, MirrorState, Record, RecordKey, Records,
};
use super::verify::{ReadFault, open_verified};
use crate::registry::{Integrity, Registry};
use crate::storage::{BlobStore, Storage, StorageError};
use crate::upstream::{UpstreamClient, UpstreamError};

/// How long a response for a URL with a known integrity waits for the fill to be verified
/// before it starts streaming anyway (Bazel's read timeout is 20 s).
const KNOWN_INTEGRITY_WAIT: Duration = Duration::from_secs(10);

/// Upstream fetches running at once, at most; more answer 503 (which Bazel retries).
const MAX_CONCURRENT_FILLS: usize = 64;

/// How often a read of the same blob is recorded (feeds retention by age).
const ACCESS_RECORD_EVERY: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Mirror failures, each mapped to one HTTP answer at the edge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorError {
    /// Nothing to serve and nothing may be fetched (404).
    #[error("{0}")]
    NotFound(String),
    /// The request itself is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The range cannot be satisfied (416).
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
    /// The upstream failed (502), or timed out (504 when `timeout`).
    #[error("{message}")]
    Upstream {
        /// What happened.
        message: String,
        /// Whether it was a timeout.
        timeout: bool,
    },
    /// The upstream's bytes do not match the integrity that is known for the URL (502).
    #[error(
        "{url}: upstream bytes do not match the known integrity: expected {expected}, got {actual}"
    )]
    IntegrityMismatch {
        /// The URL.
        url: String,
        /// The known integrity.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The storage backend failed (503).
    #[error("storage: {0}")]
    Storage(String),
    /// Too much work in flight (503, retried by Bazel).
    #[error("{0}")]
    Overloaded(String),
}

impl From<StorageError> for MirrorError {
    fn from(e: StorageError) -> Self {
        Self::Storage(e.to_string())
    }
}

/// A `Range` request, before it is resolved against a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (inclusive).
    FromTo(u64, u64),
    /// `bytes=a-`.
    From(u64),
    /// `bytes=-n`.
    Suffix(u64),
}

impl ByteRange {
    /// Resolves to `[start, end)` within `size`, or `None` when unsatisfiable.
    #[must_use]
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let (s, e) = match self {
            Self::FromTo(a, b) if a <= b => (a, b.saturating_add(1).min(size)),
            Self::FromTo(..) => return None,
            Self::From(a) => (a, size),
            Self::Suffix(n) if n > 0 => (size.saturating_sub(n), size),
            Self::Suffix(_) => return None,
        };
        (s < e).then_some((s, e))
    }
}

/// What the edge needs to answer a blob request.
pub struct BlobResponse {
    /// Hex sha256 (the strong ETag), when already known.
    pub sha256: Option<String>,
    /// The blob's total size, when known.
    pub size: Option<u64>,
    /// `Some((start, end_exclusive))` for a `206` answer.
    pub range: Option<(u64, u64)>,
    /// The bytes; an error item means "cut the response off here".
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

impl std::fmt::Debug for BlobResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobResponse")
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

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

/// Known integrity of URLs: from the registry's `source.json` files and the candidates.
#[derive(Debug, Default)]
struct Known {
    generation: Option<u64>,
    by_url: HashMap<String, (Integrity, Vec<String>)>,
}

/// State shared with fill tasks and response streams.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) storage: Storage,
    pub(super) blobs: BlobStore,
    pub(super) records: Records,
    pub(super) state: RwLock<MirrorState>,
    pub(super) policy: Policy,
    pub(super) upstream: UpstreamClient,
    pub(super) inflight: Mutex<HashMap<String, Arc<Fill>>>,
    pub(super) stats: MirrorStats,
    access_written: Mutex<HashMap<String, chrono::DateTime<Utc>>>,
    /// Why pull-through is refused (the storage backend failed its start-up probe), if it is.
    pub(super) ingest_refused: RwLock<Option<String>>,
    /// Serializes record reloads.
    reload: tokio::sync::Mutex<()>,
    /// Held while a blob is placed and recorded, and while retention deletes one.
    pub(super) placement: tokio::sync::Mutex<()>,
    /// Reloads finished so far (lets waiting callers share one).
    reloads_done: AtomicU64,
    /// The runtime background work runs on (fills, record writes): the one the mirror was
    /// loaded on, which lives as long as the process, not a per-connection worker's.
    pub(super) background: tokio::runtime::Handle,
    /// Responses streaming each blob right now: retention never removes these.
    pub(super) readers: Mutex<HashMap<String, usize>>,
}

impl Inner {
    /// Why trusted writes (pull-through, publish ingest) are refused, if they are.
    pub(super) fn ingest_refused(&self) -> Option<String> {
        self.ingest_refused
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Appends a record and applies it, remembering its key so that an incremental reload of
    /// the records does not apply it a second time.
    pub(super) async fn record(&self, record: &Record) -> Result<(), StorageError> {
        let key = self.records.append(record).await?;
        let mut state = write_state(self);
        state.remember(&key);
        state.apply(record);
        Ok(())
    }
}

/// Counts one open read of a blob for as long as it lives.
struct ReadGuard {
    inner: Arc<Inner>,
    sha256: String,
}

impl ReadGuard {
    fn new(inner: &Arc<Inner>, sha256: &str) -> Self {
        *inner
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(sha256.to_owned())
            .or_default() += 1;
        Self {
            inner: inner.clone(),
            sha256: sha256.to_owned(),
        }
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let mut readers = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = readers.get_mut(&self.sha256) {
            *n -= 1;
            if *n == 0 {
                readers.remove(&self.sha256);
            }
        }
    }
}

/// The mirror.
#[derive(Debug, Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
    registry: Arc<Registry>,
    known: Arc<tokio::sync::Mutex<Known>>,
}

pub(super) fn read_state(inner: &Inner) -> std::sync::RwLockReadGuard<'_, MirrorState> {
    inner
        .state
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn write_state(inner: &Inner) -> std::sync::RwLockWriteGuard<'_, MirrorState> {
    inner
        .state
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Mirror {
    /// Loads the state from the records and sets up the mirror.
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the records cannot be listed.
    pub async fn load(
        storage: Storage,
        policy: Policy,
        registry: Arc<Registry>,
        upstream: UpstreamClient,
    ) -> Result<Self, MirrorError> {
        let records = Records::new(storage.clone());
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
            inner: Arc::new(Inner {
                blobs: BlobStore::new(storage.clone()),
                storage,
                records,
                state: RwLock::new(state),
                policy,
                upstream,
                inflight: Mutex::new(HashMap::new()),
                stats: MirrorStats::default(),
                access_written: Mutex::new(HashMap::new()),
                reload: tokio::sync::Mutex::new(()),
                placement: tokio::sync::Mutex::new(()),
                reloads_done: AtomicU64::new(0),
                background: tokio::runtime::Handle::current(),
                ingest_refused: RwLock::new(None),
                readers: Mutex::new(HashMap::new()),
            }),
            registry,
            known: Arc::new(tokio::sync::Mutex::new(Known::default())),
        })
    }

    /// Reads the records other replicas wrote since the last reload and applies them. Reloads
    /// run one at a time; each lists only from a few minutes before the newest record seen.
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the records cannot be listed.
    pub async fn reload_records(&self) -> Result<(), MirrorError> {
        let started = self.inner.reloads_done.load(Ordering::Acquire);
        let _one_at_a_time = self.inner.reload.lock().await;
        if self.inner.reloads_done.load(Ordering::Acquire) > started + 1 {
            // A whole reload began and finished while this call waited: it saw everything
            // written before this call started.
            return Ok(());
        }
        let newest = read_state(&self.inner).newest.clone();
        let inner = self.inner.clone();
        let is_seen = move |k: &RecordKey| read_state(&inner).has_seen(k);
        let (new, bad) = self.inner.records.fetch_new(&newest, &is_seen).await?;
        if bad > 0 {
            tracing::warn!(records.unreadable = bad, "some records could not be read");
        }
        if !new.is_empty() {
            write_state(&self.inner).apply_new(new);
        }
        self.inner.reloads_done.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Refuses (with the reason) or allows pinned ingest: pull-through writes new blobs and
    /// pins, which must not go to a backend that failed its probe.
    pub fn refuse_ingest(&self, reason: Option<String>) {
        *self
            .inner
            .ingest_refused
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason;
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &MirrorStats {
        &self.inner.stats
    }

    /// A copy of the folded state.
    #[must_use]
    pub fn state(&self) -> MirrorState {
        read_state(&self.inner).clone()
    }

    /// The known integrity of `url` and who names it (registry entries, candidates).
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the registry cannot be read.
    pub async fn known_integrity(
        &self,
        url: &str,
    ) -> Result<Option<(Integrity, Vec<String>)>, MirrorError> {
        let mut known = self.known.lock().await;
        if known.generation != Some(self.registry.generation()) {
            let (generation, refs) = self
                .registry
                .archive_sources()
                .await
                .map_err(|e| MirrorError::Storage(format!("reading registry sources: {e}")))?;
            let mut by_url: HashMap<String, (Integrity, Vec<String>)> = HashMap::new();
            for r in refs {
                for u in &r.urls {
                    let e = by_url
                        .entry(u.clone())
                        .or_insert_with(|| (r.integrity.clone(), Vec::new()));
                    e.1.push(format!("registry:{}@{}", r.module, r.version));
                }
            }
            for c in &self.inner.policy.candidates {
                for u in &c.urls {
                    let e = by_url
                        .entry(u.to_string())
                        .or_insert_with(|| (c.integrity.clone(), Vec::new()));
                    e.1.push(format!("candidate:{}", c.name));
                }
            }
            known.by_url = by_url;
            known.generation = Some(generation);
        }
        Ok(known.by_url.get(url).cloned())
    }

    /// Every digest that a registry entry or candidate references (hex sha256 when known, or
    /// the SRI value), with its referrers: these blobs are pinned by retention.
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the registry cannot be read.
    pub async fn references(&self) -> Result<HashMap<String, Vec<String>>, MirrorError> {
        // Refresh the URL map, then invert it by digest.
        self.known_integrity("").await?;
        let known = self.known.lock().await;
        let state = read_state(&self.inner);
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        // Also through the URL pins: a reference whose digest the mirror cannot resolve (a
        // sha512 integrity before its supplement is recorded) still pins what its URL holds.
        for (url, (_, referrers)) in &known.by_url {
            if let Some(pin) = state.pin(url) {
                out.entry(pin.sha256.to_hex())
                    .or_default()
                    .extend(referrers.iter().cloned());
            }
        }
        for (integrity, referrers) in known.by_url.values() {
            let key = match integrity.algorithm() {
                crate::registry::Algorithm::Sha256 => integrity.hex(),
                _ => state
                    .alias(integrity)
                    .unwrap_or_else(|| integrity.to_string()),
            };
            let e = out.entry(key).or_default();
            for r in referrers {
                if !e.contains(r) {
                    e.push(r.clone());
                }
            }
        }
        Ok(out)
    }

    /// Serves the archive whose upstream URL is `SCHEME://{host_and_path}`: the pinned blob
    /// when there is one, otherwise a pull-through when the policy allows it.
    ///
    /// # Errors
    /// [`MirrorError`] for misses that may not be fetched, upstream failures and the like.
    pub async fn get_url(
        &self,
        host_and_path: &str,
        range: Option<ByteRange>,
        requested_by: &str,
        fetch: bool,
    ) -> Result<BlobResponse, MirrorError> {
        let policy = &self.inner.policy;
        let candidates = ["https", "http"].map(|s| format!("{s}://{host_and_path}"));
        // A pin for either scheme is served, whatever the policy says now.
        let find_pin = |state: &MirrorState| {
            candidates
                .iter()
                .filter_map(|u| Url::parse(u).ok())
                .find_map(|u| state.pin(u.as_str()).map(|p| p.sha256.to_hex()))
        };
        let mut pinned = find_pin(&read_state(&self.inner));
        if pinned.is_none() {
            // Another replica may have pinned it: look at the records before any upstream fetch.
            self.reload_records().await?;
            pinned = find_pin(&read_state(&self.inner));
        }
        if let Some(sha) = &pinned
            && let Some(blob) = self.readable(sha)
        {
            match self.serve_blob(blob, range).await {
                Ok(r) => return Ok(r),
                // The object is gone or damaged (now quarantined): fetch it again below, and
                // accept only the pinned bytes.
                Err(MirrorError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if !fetch {
            return Err(MirrorError::NotFound(
                "not in the mirror (HEAD does not fetch from the upstream; GET does)".to_owned(),
            ));
        }
        let Some((url, allowed)) = policy.upstream_for(host_and_path) else {
            return Err(MirrorError::NotFound(format!(
                "not in the mirror, and no upstream prefix of the mirror policy allows https://{host_and_path} or http://{host_and_path}"
            )));
        };
        // What the bytes must hash to: the first-seen pin, else a registry or candidate value.
        let expected = match &pinned {
            Some(sha) => Some(Integrity::of_digest(
                crate::registry::Algorithm::Sha256,
                hex::decode(sha)
                    .map_err(|_| MirrorError::Storage(format!("corrupt pin record for {url}")))?,
            )),
            None => self.known_integrity(url.as_str()).await?.map(|(i, _)| i),
        };
        if let Some(reason) = self.inner.ingest_refused() {
            return Err(MirrorError::Storage(format!(
                "pull-through is refused: {reason} (reads of stored blobs still work; set storage.allow_no_go = true to override)"
            )));
        }
        // A fill writes to the store: fail with a 503 before any byte is promised when the
        // backend is not answering, rather than cut a transfer off at its end.
        self.inner
            .storage
            .check(Duration::from_secs(2))
            .await
            .map_err(|e| MirrorError::Storage(format!("not fetching {url}: {e}")))?;
        {
            let inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if inflight.len() >= MAX_CONCURRENT_FILLS && !inflight.contains_key(url.as_str()) {
                return Err(MirrorError::Overloaded(format!(
                    "{MAX_CONCURRENT_FILLS} upstream fetches are already running; retry shortly"
                )));
            }
        }
        let stored = || {
            let pin = find_pin(&read_state(&self.inner));
            pin.is_some_and(|sha| self.available(&sha).is_some())
        };
        let Some(fill) = Fill::join_or_start(
            &self.inner,
            url.clone(),
            allowed,
            expected.clone(),
            requested_by.to_owned(),
            &stored,
        ) else {
            // Stored by a fill that ended meanwhile: serve the pinned blob.
            return Box::pin(self.get_url(host_and_path, range, requested_by, fetch)).await;
        };
        if expected.is_some() {
            // With a known digest, answer 502 rather than stream bytes that will be refused,
            // when the verdict comes in time.
            let _ = tokio::time::timeout(KNOWN_INTEGRITY_WAIT, fill.finished()).await;
        }
        match fill.wait_for_head().await {
            Ok(size) => {
                if let Some(Ok(record)) = fill.outcome() {
                    // Already stored: serve it like a hit (ranges included).
                    if let Some(blob) = self.readable(&record.sha256) {
                        return self.serve_blob(blob, range).await;
                    }
                }
                Ok(BlobResponse {
                    sha256: None,
                    size,
                    range: None,
                    body: fill.stream(),
                })
            }
            Err(e) => Err(fill_error(&url, e)),
        }
    }

    /// Serves a blob by digest (`sha256`, `sha384` or `sha512`, lowercase hex).
    ///
    /// # Errors
    /// [`MirrorError::NotFound`] when no available blob has that digest.
    pub async fn get_digest(
        &self,
        algorithm: &str,
        hex_digest: &str,
        range: Option<ByteRange>,
    ) -> Result<BlobResponse, MirrorError> {
        let algo = crate::registry::Algorithm::from_name(algorithm).ok_or_else(|| {
            MirrorError::BadRequest(format!(
                "unknown digest algorithm `{algorithm}`; use sha256, sha384 or sha512"
            ))
        })?;
        if hex_digest.len() != algo.digest_len() * 2
            || !hex_digest.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(MirrorError::BadRequest(format!(
                "`{hex_digest}` is not a {algorithm} digest ({} hex characters)",
                algo.digest_len() * 2
            )));
        }
        let lookup = || {
            read_state(&self.inner)
                .resolve_alias(algorithm, hex_digest)
                .and_then(|s| self.readable(&s))
        };
        let mut found = lookup();
        if found.is_none() {
            // Before a 404: another replica may have stored it.
            self.reload_records().await?;
            found = lookup();
        }
        let blob = found.ok_or_else(|| {
            MirrorError::NotFound(format!("no blob {algorithm}:{hex_digest} in the mirror"))
        })?;
        self.serve_blob(blob, range).await
    }

    /// Provenance and state of a blob, for the API.
    ///
    /// # Errors
    /// [`MirrorError::NotFound`] for unknown blobs.
    pub async fn provenance(&self, sha256: &str) -> Result<BlobInfo, MirrorError> {
        let sha = sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MirrorError::BadRequest(format!(
                "`{sha256}` is not a sha256 digest (64 hex characters)"
            )));
        }
        let refs = self.references().await?;
        let state = read_state(&self.inner);
        let blob = state
            .blob(&sha)
            .ok_or_else(|| MirrorError::NotFound(format!("no blob sha256:{sha} in the mirror")))?;
        let referenced_by = refs.get(&sha).cloned().unwrap_or_default();
        Ok(BlobInfo {
            sha256: sha.clone(),
            record: blob.record(),
            urls: blob.urls().map(str::to_owned).collect(),
            retention: if referenced_by.is_empty() {
                "cached"
            } else {
                "pinned"
            },
            referenced_by,
            quarantined: blob.quarantined,
            evicted: blob.evicted,
            last_access: blob.last_access,
            drift: state
                .drift
                .iter()
                .filter(|d| d.sha256 == sha)
                .cloned()
                .collect(),
        })
    }

    /// Streams a whole stored blob, verified chunk by chunk (for exports and restore checks).
    ///
    /// # Errors
    /// [`MirrorError::NotFound`] when the blob is not available.
    pub async fn read_blob(&self, sha256: &str) -> Result<BlobResponse, MirrorError> {
        let blob = self.readable(sha256).ok_or_else(|| {
            MirrorError::NotFound(format!("no blob sha256:{sha256} in the mirror"))
        })?;
        self.serve_blob(blob, None).await
    }

    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    pub(super) fn available(&self, sha256: &str) -> Option<BlobState> {
        read_state(&self.inner)
            .blob(sha256)
            .filter(|b| b.is_available())
            .cloned()
    }

    /// What a verified read of the blob needs, when it is available.
    fn readable(&self, sha256: &str) -> Option<Arc<BlobRecord>> {
        read_state(&self.inner)
            .blob(sha256)
            .filter(|b| b.is_available())
            .map(|b| Arc::new(b.read_record()))
    }

    async fn serve_blob(
        &self,
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
        self.inner.stats.hits.fetch_add(1, Ordering::Relaxed);
        self.inner
            .stats
            .bytes_served
            .fetch_add(end - start, Ordering::Relaxed);
        self.note_access(&record.sha256);
        let inner = self.inner.clone();
        let sha = record.sha256.clone();
        let on_fault = Arc::new(move |fault: ReadFault| match fault {
            ReadFault::Corrupt(detail) => quarantine(&inner, &sha, detail),
            ReadFault::Backend(detail) => {
                tracing::error!(blob.sha256 = %sha, error = %detail, "storage failed while serving a blob");
            }
        });
        let guard = ReadGuard::new(&self.inner, &record.sha256);
        let opened = open_verified(
            &self.inner.storage,
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
                quarantine_now(&self.inner, &record.sha256, detail.clone()).await?;
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
        let now = Utc::now();
        {
            let mut written = self
                .inner
                .access_written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let inner = self.inner.clone();
        self.inner.background.spawn(async move {
            if let Err(e) = inner.record(&event).await {
                tracing::warn!(error = %e, "could not record a blob access");
            }
        });
    }
}

/// Quarantines a blob and waits until the record is written (for callers that may exit
/// right after, such as the CLI's scrub).
pub(super) async fn quarantine_now(
    inner: &Arc<Inner>,
    sha256: &str,
    detail: String,
) -> Result<(), StorageError> {
    inner
        .stats
        .integrity_failures
        .fetch_add(1, Ordering::Relaxed);
    tracing::error!(blob.sha256 = %sha256, detail = %detail, "stored blob failed verification; quarantined");
    inner
        .record(&Record::Event(EventRecord {
            event: EventKind::Quarantine,
            sha256: sha256.to_owned(),
            url: None,
            at: Utc::now(),
            detail,
        }))
        .await
}

/// Marks a blob as quarantined: never served again until it is re-ingested.
pub(super) fn quarantine(inner: &Arc<Inner>, sha256: &str, detail: String) {
    inner
        .stats
        .integrity_failures
        .fetch_add(1, Ordering::Relaxed);
    tracing::error!(blob.sha256 = %sha256, detail = %detail, "stored blob failed verification; quarantined");
    let event = Record::Event(EventRecord {
        event: EventKind::Quarantine,
        sha256: sha256.to_owned(),
        url: None,
        at: Utc::now(),
        detail,
    });
    // Applied at once, so the blob stops being served now; recorded in the background.
    write_state(inner).apply(&event);
    let background = inner.background.clone();
    let inner = inner.clone();
    background.spawn(async move {
        if let Err(e) = inner.record(&event).await {
            tracing::error!(error = %e, "could not record a quarantine");
        }
    });
}

pub(super) fn fill_error(url: &Url, e: FillError) -> MirrorError {
    match e {
        FillError::Upstream(UpstreamError::NotFound { url, status }) => {
            MirrorError::NotFound(format!("upstream {url} answered {status}"))
        }
        FillError::Upstream(e @ UpstreamError::NotAllowed(_)) => {
            MirrorError::NotFound(format!("refused: {e}"))
        }
        FillError::Upstream(e @ UpstreamError::PrivateAddress { .. }) => {
            MirrorError::NotFound(format!("refused: {e}"))
        }
        FillError::Upstream(UpstreamError::Timeout(u)) => MirrorError::Upstream {
            message: format!("upstream {u} timed out"),
            timeout: true,
        },
        FillError::Upstream(other) => MirrorError::Upstream {
            message: other.to_string(),
            timeout: false,
        },
        FillError::Mismatch { expected, actual } => MirrorError::IntegrityMismatch {
            url: url.to_string(),
            expected,
            actual,
        },
        FillError::Other(m) => MirrorError::Upstream {
            message: format!("{url}: {m}"),
            timeout: false,
        },
        FillError::Storage(m) => MirrorError::Storage(m),
    }
}

/// A blob's provenance and state, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct BlobInfo {
    /// Hex sha256.
    pub sha256: String,
    /// The latest provenance record.
    pub record: BlobRecord,
    /// Every URL it was served or pinned for.
    pub urls: Vec<String>,
    /// `pinned` (referenced by a registry entry or candidate) or `cached`.
    pub retention: &'static str,
    /// Registry entries and candidates that reference it.
    pub referenced_by: Vec<String>,
    /// Whether it failed verification.
    pub quarantined: bool,
    /// Whether retention removed it.
    pub evicted: bool,
    /// Last recorded read.
    pub last_access: chrono::DateTime<Utc>,
    /// Drift events of URLs pinned to it.
    pub drift: Vec<EventRecord>,
}
