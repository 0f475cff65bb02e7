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

mod clone;
mod pinning;
mod pins;
mod read;
mod state;
mod sync;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use sha2::Digest as _;
use url::Url;

use super::path::RegistryPath;
use super::service::RegistryFile;
use crate::source::RegistrySource;
use crate::storage::Storage;
use crate::upstream::Fetch;
use pins::PinLog;
use state::State;
pub use state::{DriftEvent, UpstreamStatus};
pub use sync::SyncOutcome;

/// Largest upstream registry file accepted.
const MAX_FILE_BYTES: usize = 16 << 20;
/// Upstream 404s remembered at most.
const MAX_NEGATIVE: usize = 100_000;
/// Decoded files kept in memory, in bytes.
const MEMORY_BYTES: u64 = 64 << 20;

/// Settings of the read-through.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The upstream registries' base URLs, in order.
    pub urls: Vec<Url>,
    /// How long a `metadata.json` (and an immutable pin's last check) stays fresh.
    pub ttl: Duration,
    /// How long an upstream's 404 is believed.
    pub negative_ttl: Duration,
    /// Which upstream modules are served.
    pub modules: ModuleFilter,
    /// Upstreams read from a local clone of their tree instead of over HTTP, by URL.
    pub clones: Vec<(Url, RegistrySource)>,
}

/// Which upstream modules are served at all (`registry.upstream_modules`): a module matching a
/// deny glob (`!glob`) never is; with allow globs, only a module matching one is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleFilter {
    /// Globs a module must match one of (none: every module).
    pub allow: Vec<crate::auth::Glob>,
    /// Globs no served module matches.
    pub deny: Vec<crate::auth::Glob>,
}

impl ModuleFilter {
    /// Parses `glob,!glob,...`.
    ///
    /// # Errors
    /// A glob that is not one (only module-name characters, `*` and `?`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.strip_prefix('!') {
                Some(deny) => out.deny.push(deny.parse()?),
                None => out.allow.push(item.parse()?),
            }
        }
        Ok(out)
    }

    /// Whether upstream module `name` may be served.
    #[must_use]
    pub fn serves(&self, name: &str) -> bool {
        !self.deny.iter().any(|g| g.matches(name))
            && (self.allow.is_empty() || self.allow.iter().any(|g| g.matches(name)))
    }
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

/// The read-through over the configured upstreams.
#[derive(Debug)]
pub struct Upstreams {
    bases: Vec<String>,
    /// Per base: the local clone it is read from, if any.
    clones: Vec<Option<RegistrySource>>,
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
        let clones = bases
            .iter()
            .map(|b| {
                settings
                    .clones
                    .iter()
                    .find(|(u, _)| u.as_str().trim_end_matches('/') == b.trim_end_matches('/'))
                    .map(|(_, source)| source.clone())
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
            clones,
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

    /// Every blob the read-through needs kept, with who holds it: each pinned file and each
    /// `metadata.json` as last seen (the one served while the upstream is down).
    #[must_use]
    pub fn held(&self) -> Vec<(String, String)> {
        let state = self.state();
        state
            .pins
            .iter()
            .map(|(url, sha)| (sha.clone(), format!("upstream:{url}")))
            .chain(
                state
                    .metadata
                    .iter()
                    .map(|(url, seen)| (seen.sha256.clone(), format!("upstream:{url}"))),
            )
            .collect()
    }

    /// The upstreams' base URLs (each ending in `/`), in order.
    #[must_use]
    pub fn bases(&self) -> &[String] {
        &self.bases
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
        self.get_in(path, None).await
    }

    /// The transparent door: when `target` (a `/mirror/` target, `host/path` without a scheme
    /// or query) lies under a configured upstream, that upstream's index and the path inside
    /// it. The first upstream whose base matches wins.
    #[must_use]
    pub fn transparent<'a>(&self, target: &'a str) -> Option<(usize, &'a str)> {
        self.bases.iter().enumerate().find_map(|(i, base)| {
            let (_, host_path) = base.split_once("://")?;
            target.strip_prefix(host_path).map(|rel| (i, rel))
        })
    }

    /// The file at `path` from upstream `index` only (the transparent door: the request named
    /// that upstream, and Bazel keys the lockfile by its URL). `bazel_registry.json` is the
    /// upstream's own, pinned like every file Bazel records in `registryFileHashes`.
    ///
    /// # Errors
    /// [`UpstreamReadError`]; `NotFound` for an index out of range.
    pub async fn get_from(
        self: &Arc<Self>,
        index: usize,
        path: &RegistryPath,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        if index >= self.bases.len() {
            return Err(UpstreamReadError::NotFound);
        }
        self.get_in(path, Some(index)).await
    }

    async fn get_in(
        self: &Arc<Self>,
        path: &RegistryPath,
        only: Option<usize>,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        if matches!(path, RegistryPath::LegacyOverlay(..))
            || path
                .module()
                .is_some_and(|m| !self.settings.modules.serves(m.as_str()))
        {
            return Err(UpstreamReadError::NotFound);
        }
        let rel = path.tree_path();
        let kind = path.kind();
        if matches!(path, RegistryPath::Metadata(_)) {
            self.get_mutable(&rel, kind, only).await
        } else {
            self.get_pinned(&rel, kind, only).await
        }
    }

    /// The upstreams asked, in order: all of them, or only `only`.
    fn asked(&self, only: Option<usize>) -> impl Iterator<Item = (usize, &String)> {
        self.bases
            .iter()
            .enumerate()
            .filter(move |(i, _)| only.is_none_or(|o| o == *i))
    }
}

#[cfg(test)]
mod tests {
    use super::ModuleFilter;

    #[test]
    fn module_filter_deny_beats_allow() {
        let every = ModuleFilter::parse("").unwrap();
        assert!(every.serves("zlib"));
        let f = ModuleFilter::parse("rules_*, zlib, !rules_evil*").unwrap();
        assert!(f.serves("rules_cc") && f.serves("zlib"));
        assert!(!f.serves("rules_evil_twin") && !f.serves("abseil-cpp"));
        let deny_only = ModuleFilter::parse("!internal_*").unwrap();
        assert!(deny_only.serves("zlib") && !deny_only.serves("internal_x"));
        assert!(ModuleFilter::parse("a/b").is_err());
    }
}
