//! Read-through of upstream registries (the named door): a registry file of a module the
//! internal registry does not hold is answered from the configured upstreams, tried in their
//! configured order (never raced), with the upstream's exact bytes.
//!
//! - Every immutable file (everything but `metadata.json`) is pinned on first sight: its bytes
//!   go to the `cas` role (through a [`BlobStash`]) and a record binds `upstream URL + path ->
//!   sha256` ([`pins`]). The pin is served from then on, whatever the upstream does; after the
//!   TTL a background check compares the upstream's bytes, and other bytes are stored and
//!   recorded as a drift event.
//! - `metadata.json` is revalidated after the TTL; when the upstream is down, the last seen
//!   variant is served (and logged with its age).
//! - An upstream failure for a file never pinned is [`UpstreamReadError::Unavailable`] (a 503),
//!   never "not found": only an upstream's own 404/410 is, cached for the negative TTL.
//!
//! No HTTP types here: upstream traffic goes through [`crate::upstream::Fetch`].

mod pins;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde::Serialize;
use sha2::Digest as _;
use url::Url;

use super::path::{FileKind, RegistryPath};
use super::service::RegistryFile;
use crate::storage::Storage;
use crate::upstream::{Allowed, Fetch, UpstreamError};
use pins::{PinLog, UpstreamRecord};

/// Largest upstream registry file accepted.
const MAX_FILE_BYTES: usize = 16 << 20;
/// Decoded files kept in memory, in bytes.
const MEMORY_BYTES: u64 = 64 << 20;
/// Drift events kept per upstream for the status API.
const MAX_DRIFT_SHOWN: usize = 100;

/// Settings of the read-through.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The upstream registries' base URLs, in order.
    pub urls: Vec<Url>,
    /// How long a `metadata.json` (and an immutable pin's last check) stays fresh.
    pub ttl: Duration,
    /// How long an upstream's 404 is believed.
    pub negative_ttl: Duration,
}

/// Where the bytes of pinned files live: content-addressed blobs (the mirror's `cas`).
pub trait BlobStash: Send + Sync + std::fmt::Debug {
    /// Stores `bytes`; returns their hex sha256.
    fn put(&self, bytes: Bytes, label: String) -> BoxFuture<'_, Result<String, String>>;
    /// The verified bytes of blob `sha256`, `None` when it is not available.
    fn get(&self, sha256: String) -> BoxFuture<'_, Result<Option<Bytes>, String>>;
}

/// Why an upstream read gave no file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamReadError {
    /// Every upstream positively answered 404/410 (or the path is not one upstreams serve).
    #[error("not found")]
    NotFound,
    /// An upstream failed (timeout, refused, 5xx, storage) for a file never pinned.
    #[error("{0}")]
    Unavailable(String),
}

/// A drift event, for the status API.
#[derive(Debug, Clone, Serialize)]
pub struct DriftEvent {
    /// The path below the upstream.
    pub path: String,
    /// What is pinned and served.
    pub pinned: String,
    /// What the upstream served.
    pub seen: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One upstream's figures, for `GET /api/v1/upstreams`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamStatus {
    /// The base URL.
    pub url: String,
    /// Immutable files pinned.
    pub files_pinned: usize,
    /// `metadata.json` files known.
    pub metadata_files: usize,
    /// Last successful answer (200 or 404).
    pub last_contact: Option<DateTime<Utc>>,
    /// Last failure, with its time.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Requests answered from a pin or a fresh `metadata.json`.
    pub hits: u64,
    /// Requests that asked the upstream.
    pub misses: u64,
    /// Upstream failures.
    pub errors: u64,
    /// Drift events recorded (newest last, at most 100 listed).
    pub drift_count: u64,
    /// The drift events.
    pub drift_events: Vec<DriftEvent>,
}

/// A mutable file as last seen.
#[derive(Debug, Clone)]
struct Seen {
    sha256: String,
    at: DateTime<Utc>,
    /// When this process last had it from the upstream (`None`: only from the records).
    fetched: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    /// Full upstream URL -> pinned sha256.
    pins: HashMap<String, String>,
    /// Full upstream URL -> last seen `metadata.json`.
    metadata: HashMap<String, Seen>,
    /// Full upstream URL -> when its 404 was seen.
    negative: HashMap<String, Instant>,
    /// Full upstream URL -> when its pin was last compared with the upstream.
    checked: HashMap<String, Instant>,
    /// Checks in flight.
    checking: HashSet<String>,
    /// Per upstream base URL.
    status: HashMap<String, UpstreamStatus>,
}

impl State {
    fn status(&mut self, base: &str) -> &mut UpstreamStatus {
        self.status
            .entry(base.to_owned())
            .or_insert_with(|| UpstreamStatus {
                url: base.to_owned(),
                ..UpstreamStatus::default()
            })
    }

    fn apply(&mut self, r: UpstreamRecord) {
        match r {
            UpstreamRecord::Pin {
                upstream,
                path,
                sha256,
                ..
            } => {
                let url = format!("{upstream}{path}");
                if let std::collections::hash_map::Entry::Vacant(e) = self.pins.entry(url) {
                    e.insert(sha256);
                    self.status(&upstream).files_pinned += 1;
                }
            }
            UpstreamRecord::Drift {
                upstream,
                path,
                pinned,
                seen,
                at,
            } => {
                let s = self.status(&upstream);
                s.drift_count += 1;
                s.drift_events.push(DriftEvent {
                    path,
                    pinned,
                    seen,
                    at,
                });
                if s.drift_events.len() > MAX_DRIFT_SHOWN {
                    s.drift_events.remove(0);
                }
            }
            UpstreamRecord::Metadata {
                upstream,
                path,
                sha256,
                at,
                ..
            } => {
                let url = format!("{upstream}{path}");
                let newer = self.metadata.get(&url).is_none_or(|m| m.at <= at);
                if !self.metadata.contains_key(&url) {
                    self.status(&upstream).metadata_files += 1;
                }
                if newer {
                    self.metadata.insert(
                        url,
                        Seen {
                            sha256,
                            at,
                            fetched: None,
                        },
                    );
                }
            }
        }
    }
}

/// The read-through over the configured upstreams.
#[derive(Debug)]
pub struct Upstreams {
    bases: Vec<String>,
    settings: UpstreamSettings,
    fetch: Arc<dyn Fetch>,
    stash: Arc<dyn BlobStash>,
    log: PinLog,
    state: Mutex<State>,
    /// sha256 -> bytes, for hot files.
    memory: quick_cache::sync::Cache<String, Bytes, BytesWeighter>,
}

#[derive(Debug, Clone)]
struct BytesWeighter;

impl quick_cache::Weighter<String, Bytes> for BytesWeighter {
    fn weight(&self, key: &String, value: &Bytes) -> u64 {
        (key.len() + value.len() + 64) as u64
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Upstreams {
    /// Loads the records of `storage` and sets up the read-through.
    ///
    /// # Errors
    /// When the records cannot be listed or read.
    pub async fn load(
        settings: UpstreamSettings,
        storage: Storage,
        fetch: Arc<dyn Fetch>,
        stash: Arc<dyn BlobStash>,
    ) -> Result<Self, crate::storage::StorageError> {
        let bases: Vec<String> = settings
            .urls
            .iter()
            .map(|u| {
                let s = u.to_string();
                if s.ends_with('/') { s } else { format!("{s}/") }
            })
            .collect();
        let log = PinLog::new(storage);
        let mut state = State::default();
        for b in &bases {
            state.status(b);
        }
        let records = log.fetch_new().await?;
        let count = records.len();
        for r in records {
            state.apply(r);
        }
        tracing::info!(
            upstreams = ?bases,
            records = count,
            pins = state.pins.len(),
            "upstream registries loaded"
        );
        Ok(Self {
            bases,
            settings,
            fetch,
            stash,
            log,
            state: Mutex::new(state),
            memory: quick_cache::sync::Cache::with_weighter(16_384, MEMORY_BYTES, BytesWeighter),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Each configured upstream's figures, in order.
    #[must_use]
    pub fn status(&self) -> Vec<UpstreamStatus> {
        let mut state = self.state();
        self.bases.iter().map(|b| state.status(b).clone()).collect()
    }

    /// Reads the records other replicas wrote since the last look.
    async fn reload(&self) {
        match self.log.fetch_new().await {
            Ok(records) => {
                let mut state = self.state();
                for r in records {
                    state.apply(r);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read upstream records"),
        }
    }

    /// The file at `path` from the upstreams (the caller has checked that the internal
    /// registry does not own it).
    ///
    /// # Errors
    /// [`UpstreamReadError`].
    pub async fn get(
        self: &Arc<Self>,
        path: &RegistryPath,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        if matches!(path, RegistryPath::LegacyOverlay(..)) {
            return Err(UpstreamReadError::NotFound);
        }
        let rel = path.tree_path();
        let kind = path.kind();
        if matches!(path, RegistryPath::Metadata(_)) {
            self.get_mutable(&rel, kind).await
        } else {
            self.get_pinned(&rel, kind).await
        }
    }

    fn pinned(&self, rel: &str) -> Option<(usize, String, String)> {
        let state = self.state();
        self.bases.iter().enumerate().find_map(|(i, b)| {
            let url = format!("{b}{rel}");
            state.pins.get(&url).map(|sha| (i, url, sha.clone()))
        })
    }

    fn all_negative(&self, rel: &str) -> bool {
        let state = self.state();
        self.bases.iter().all(|b| {
            state
                .negative
                .get(&format!("{b}{rel}"))
                .is_some_and(|t| t.elapsed() < self.settings.negative_ttl)
        })
    }

    async fn get_pinned(
        self: &Arc<Self>,
        rel: &str,
        kind: FileKind,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        let mut pinned = self.pinned(rel);
        if pinned.is_none() && !self.all_negative(rel) {
            // Another replica may have pinned it.
            self.reload().await;
            pinned = self.pinned(rel);
        }
        if let Some((i, url, sha)) = pinned {
            self.state().status(&self.bases[i]).hits += 1;
            let file = self.serve_blob(i, &url, &sha, kind).await?;
            self.maybe_check(i, url, sha);
            return Ok(file);
        }
        for (i, base) in self.bases.iter().enumerate() {
            let url = format!("{base}{rel}");
            if self.is_negative(&url) {
                continue;
            }
            match self.fetch_bytes(i, &url).await {
                Ok(bytes) => return self.pin_new(i, rel, bytes, kind).await,
                Err(UpstreamError::NotFound { .. }) => {
                    self.state().negative.insert(url, Instant::now());
                }
                Err(e) => {
                    return Err(UpstreamReadError::Unavailable(format!(
                        "upstream registry {base} failed for {rel}, which was never pinned: {e}"
                    )));
                }
            }
        }
        Err(UpstreamReadError::NotFound)
    }

    fn is_negative(&self, url: &str) -> bool {
        self.state()
            .negative
            .get(url)
            .is_some_and(|t| t.elapsed() < self.settings.negative_ttl)
    }

    async fn get_mutable(
        self: &Arc<Self>,
        rel: &str,
        kind: FileKind,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        let known_anywhere = {
            let state = self.state();
            self.bases
                .iter()
                .any(|b| state.metadata.contains_key(&format!("{b}{rel}")))
        };
        if !known_anywhere && !self.all_negative(rel) {
            self.reload().await;
        }
        for (i, base) in self.bases.iter().enumerate() {
            let url = format!("{base}{rel}");
            let known = self.state().metadata.get(&url).cloned();
            if let Some(seen) = &known
                && seen
                    .fetched
                    .is_some_and(|f| f.elapsed() < self.settings.ttl)
            {
                self.state().status(base).hits += 1;
                return self.serve_blob(i, &url, &seen.sha256, kind).await;
            }
            if known.is_none() && self.is_negative(&url) {
                continue;
            }
            match self.fetch_bytes(i, &url).await {
                Ok(bytes) => {
                    let sha = sha256_hex(&bytes);
                    if known.as_ref().is_none_or(|k| k.sha256 != sha) {
                        self.stash_put(&bytes, &url).await?;
                        let record = UpstreamRecord::Metadata {
                            upstream: base.clone(),
                            path: rel.to_owned(),
                            sha256: sha.clone(),
                            size: bytes.len() as u64,
                            at: Utc::now(),
                        };
                        self.write_record(&record).await?;
                        self.state().apply(record);
                    }
                    if let Some(m) = self.state().metadata.get_mut(&url) {
                        m.fetched = Some(Instant::now());
                    }
                    self.memory.insert(sha.clone(), bytes.clone());
                    return Ok(Arc::new(RegistryFile {
                        bytes,
                        sha256_hex: sha,
                        kind,
                    }));
                }
                Err(UpstreamError::NotFound { .. }) => {
                    self.state().negative.insert(url, Instant::now());
                }
                Err(e) => match known {
                    Some(seen) => {
                        let age = Utc::now() - seen.at;
                        tracing::warn!(
                            upstream = %base,
                            path = %rel,
                            age_seconds = age.num_seconds(),
                            error = %e,
                            "upstream registry unreachable: serving metadata.json as last seen"
                        );
                        return self.serve_blob(i, &url, &seen.sha256, kind).await;
                    }
                    None => {
                        return Err(UpstreamReadError::Unavailable(format!(
                            "upstream registry {base} failed for {rel}, never seen before: {e}"
                        )));
                    }
                },
            }
        }
        Err(UpstreamReadError::NotFound)
    }

    /// GETs one upstream file, whole; counts the contact or the error.
    async fn fetch_bytes(&self, i: usize, url: &str) -> Result<Bytes, UpstreamError> {
        let base = &self.bases[i];
        self.state().status(base).misses += 1;
        let got = self.fetch_once(base, url).await;
        let mut state = self.state();
        let s = state.status(base);
        match &got {
            Ok(_) | Err(UpstreamError::NotFound { .. }) => s.last_contact = Some(Utc::now()),
            Err(e) => {
                s.errors += 1;
                s.last_error = Some(e.to_string());
                s.last_error_at = Some(Utc::now());
            }
        }
        got
    }

    async fn fetch_once(&self, base: &str, url: &str) -> Result<Bytes, UpstreamError> {
        let parsed = Url::parse(url).map_err(|e| UpstreamError::Transport {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        // Operator configuration: the upstream's own URLs (and redirects below it) are
        // allowed, loopback and private addresses included.
        let base_owned = base.to_owned();
        let allow = move |u: &Url| {
            u.as_str().starts_with(&base_owned).then(|| Allowed {
                rule: format!("registry.upstreams {base_owned}"),
                allow_private: true,
            })
        };
        let resp = self.fetch.fetch(&parsed, &allow).await?;
        let mut body = resp.body;
        let mut out = Vec::with_capacity(resp.content_length.unwrap_or(0).min(1 << 20) as usize);
        while let Some(piece) = body.next().await {
            let piece = piece?;
            if out.len() + piece.len() > MAX_FILE_BYTES {
                return Err(UpstreamError::Transport {
                    url: url.to_owned(),
                    message: format!("larger than {MAX_FILE_BYTES} bytes"),
                });
            }
            out.extend_from_slice(&piece);
        }
        Ok(Bytes::from(out))
    }

    async fn stash_put(&self, bytes: &Bytes, url: &str) -> Result<String, UpstreamReadError> {
        self.stash
            .put(bytes.clone(), url.to_owned())
            .await
            .map_err(|e| UpstreamReadError::Unavailable(format!("storing {url}: {e}")))
    }

    async fn write_record(&self, record: &UpstreamRecord) -> Result<(), UpstreamReadError> {
        self.log
            .append(record)
            .await
            .map_err(|e| UpstreamReadError::Unavailable(format!("recording an upstream pin: {e}")))
    }

    /// Pins bytes seen for the first time (unless a pin appeared meanwhile: then that wins).
    async fn pin_new(
        self: &Arc<Self>,
        i: usize,
        rel: &str,
        bytes: Bytes,
        kind: FileKind,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        let base = &self.bases[i];
        let url = format!("{base}{rel}");
        let sha = sha256_hex(&bytes);
        self.stash_put(&bytes, &url).await?;
        let existing = self.state().pins.get(&url).cloned();
        if let Some(pinned) = existing {
            if pinned != sha {
                self.record_drift(i, rel, &pinned, &sha).await;
            }
            return self.serve_blob(i, &url, &pinned, kind).await;
        }
        let record = UpstreamRecord::Pin {
            upstream: base.clone(),
            path: rel.to_owned(),
            sha256: sha.clone(),
            size: bytes.len() as u64,
            at: Utc::now(),
        };
        self.write_record(&record).await?;
        {
            let mut state = self.state();
            state.apply(record);
            state.checked.insert(url, Instant::now());
        }
        self.memory.insert(sha.clone(), bytes.clone());
        Ok(Arc::new(RegistryFile {
            bytes,
            sha256_hex: sha,
            kind,
        }))
    }

    async fn record_drift(&self, i: usize, rel: &str, pinned: &str, seen: &str) {
        let base = &self.bases[i];
        let known = self
            .state()
            .status(base)
            .drift_events
            .iter()
            .any(|d| d.path == rel && d.pinned == pinned && d.seen == seen);
        if known {
            return;
        }
        tracing::warn!(
            upstream = %base,
            path = %rel,
            pinned = %pinned,
            seen = %seen,
            "upstream registry drift: the upstream now serves other bytes for a pinned file; serving the pin"
        );
        let record = UpstreamRecord::Drift {
            upstream: base.clone(),
            path: rel.to_owned(),
            pinned: pinned.to_owned(),
            seen: seen.to_owned(),
            at: Utc::now(),
        };
        if let Err(e) = self.log.append(&record).await {
            tracing::error!(error = %e, "could not record an upstream drift event");
        }
        self.state().apply(record);
    }

    /// The pinned bytes `sha` of `url`, from memory or the stash; a blob gone from the stash
    /// is fetched again and accepted only with the pinned digest.
    async fn serve_blob(
        &self,
        i: usize,
        url: &str,
        sha: &str,
        kind: FileKind,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        let file = |bytes: Bytes| {
            Arc::new(RegistryFile {
                bytes,
                sha256_hex: sha.to_owned(),
                kind,
            })
        };
        if let Some(bytes) = self.memory.get(sha) {
            return Ok(file(bytes));
        }
        let stored = self.stash.get(sha.to_owned()).await.map_err(|e| {
            UpstreamReadError::Unavailable(format!("reading the pin of {url}: {e}"))
        })?;
        let bytes = match stored {
            Some(b) => b,
            None => {
                let b = self.fetch_bytes(i, url).await.map_err(|e| {
                    UpstreamReadError::Unavailable(format!(
                        "the pinned blob {sha} of {url} is not available and the upstream failed: {e}"
                    ))
                })?;
                if sha256_hex(&b) != sha {
                    return Err(UpstreamReadError::Unavailable(format!(
                        "the pinned blob {sha} of {url} is not available and the upstream now serves other bytes"
                    )));
                }
                self.stash_put(&b, url).await?;
                b
            }
        };
        self.memory.insert(sha.to_owned(), bytes.clone());
        Ok(file(bytes))
    }

    /// After the TTL, compares a pin with the upstream in the background (drift detection).
    fn maybe_check(self: &Arc<Self>, i: usize, url: String, sha: String) {
        {
            let mut state = self.state();
            let due = match state.checked.get(&url) {
                Some(t) => t.elapsed() >= self.settings.ttl,
                None => {
                    // Pinned before this process started: check one TTL from now.
                    state.checked.insert(url.clone(), Instant::now());
                    false
                }
            };
            if !due || !state.checking.insert(url.clone()) {
                return;
            }
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let rel = url
                .strip_prefix(this.bases[i].as_str())
                .unwrap_or_default()
                .to_owned();
            match this.fetch_bytes(i, &url).await {
                Ok(bytes) => {
                    let seen = sha256_hex(&bytes);
                    if seen != sha {
                        match this.stash_put(&bytes, &url).await {
                            Ok(_) => this.record_drift(i, &rel, &sha, &seen).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "could not store a drifted variant")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, url = %url, "could not re-check an upstream pin");
                }
            }
            let mut state = this.state();
            state.checking.remove(&url);
            state.checked.insert(url, Instant::now());
        });
    }
}
