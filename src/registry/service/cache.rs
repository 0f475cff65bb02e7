//! The in-memory file cache in front of the source: its keys, values and weigher, its
//! counters and settings, and the [`Registry`] methods that look files up in it, fill it and
//! report on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::Digest as _;

use super::snapshot::{LIVE_MUTABLE_TTL, Snapshot};
use super::{Registry, RegistryError, RegistryFile, task_err};
use crate::registry::path::{FileKind, RegistryPath};
use crate::source::Tree;
use crate::tasks;

/// Cache settings for registry files.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Upper bound of cached bytes; 0 disables the cache.
    pub capacity_bytes: u64,
    /// How long an entry may stay.
    pub ttl: Duration,
}

/// A file cache key: the snapshot generation and the file's path in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CacheKey {
    generation: u64,
    path: String,
}

/// A borrowed [`CacheKey`], for look-ups without allocating (hashes like it: same fields,
/// same order, `&str` hashes as `String`).
#[derive(Hash)]
struct CacheKeyRef<'a> {
    generation: u64,
    path: &'a str,
}

impl quick_cache::Equivalent<CacheKey> for CacheKeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.generation == key.generation && self.path == key.path
    }
}

/// A cached read: the file, or its absence, and until when it may be served from the cache.
#[derive(Debug, Clone)]
pub(super) struct CacheValue {
    pub(super) file: Option<Arc<RegistryFile>>,
    /// Absent files and mutable files of a live directory are re-read after a second;
    /// everything else lives until the snapshot changes or the cache TTL passes.
    expires: Instant,
}

/// Weighs a cache entry by its bytes.
#[derive(Debug, Clone)]
pub(super) struct FileWeighter;

impl quick_cache::Weighter<CacheKey, CacheValue> for FileWeighter {
    fn weight(&self, key: &CacheKey, value: &CacheValue) -> u64 {
        (key.path.len() + value.file.as_ref().map_or(64, |f| f.bytes.len() + 128)) as u64
    }
}

/// The file cache: quick_cache rather than moka on this path, because a hit is the whole
/// work of most registry requests and quick_cache's look-up is a plain sharded hash probe
/// (measured in bench/RESULTS.md).
pub(super) type FileCache = quick_cache::sync::Cache<CacheKey, CacheValue, FileWeighter>;

/// The file cache for `capacity_bytes`, or `None` when that is 0 (the cache is disabled).
pub(super) fn file_cache(capacity_bytes: u64) -> Option<FileCache> {
    (capacity_bytes > 0).then(|| {
        // Sized for registry files of about 2 KiB each.
        let items = usize::try_from(capacity_bytes / 2048)
            .unwrap_or(usize::MAX)
            .clamp(64, 1 << 20);
        FileCache::with_weighter(items, capacity_bytes, FileWeighter)
    })
}

/// Counters of the file cache, read at scrape time.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Requests answered from the cache.
    pub hits: AtomicU64,
    /// Requests not answered from the cache (concurrent misses for one key each count).
    pub misses: AtomicU64,
    /// Reads of the source: concurrent misses for one key share a single load.
    pub loads: Arc<AtomicU64>,
}

/// A snapshot of the cache figures.
#[derive(Debug, Clone, Copy)]
pub struct CacheStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests not answered from the cache.
    pub misses: u64,
    /// Reads of the source.
    pub loads: u64,
    /// Entries held.
    pub entries: u64,
    /// Bytes held (weighted).
    pub weighted_bytes: u64,
}

impl Registry {
    /// The file at `url_path` (`/modules/...`, `/bazel_registry.json`) when the file cache of
    /// the current snapshot holds it and it has not expired: no parsing and no allocation.
    ///
    /// Only a path that is its file's tree path verbatim can hit: an entry is cached under
    /// the tree path of a request that passed every check of [`Registry::get`] for the same
    /// snapshot, and every registry URL whose text is that tree path names the same file.
    /// Anything else (percent-escapes, legacy overlay URLs, misses, absent files) is `None`
    /// and goes through [`Registry::get`].
    #[must_use]
    pub fn cached_by_url(&self, url_path: &str) -> Option<Arc<RegistryFile>> {
        let cache = self.cache.as_ref()?;
        let path = url_path.strip_prefix('/')?;
        if path.contains('%') {
            return None;
        }
        let generation = self.snapshot.load().generation;
        let hit = cache.get(&CacheKeyRef { generation, path })?;
        if hit.expires <= Instant::now() {
            return None;
        }
        let file = hit.file?;
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(file)
    }

    /// Cache counters and size.
    #[must_use]
    pub fn cache_stats(&self) -> CacheStats {
        let (entries, weighted_bytes) = self
            .cache
            .as_ref()
            .map_or((0, 0), |c| (c.len() as u64, c.weight()));
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            loads: self.counters.loads.load(Ordering::Relaxed),
            entries,
            weighted_bytes,
        }
    }

    pub(super) async fn read_cached(
        &self,
        snap: &Arc<Snapshot>,
        path: &RegistryPath,
    ) -> Result<CacheValue, RegistryError> {
        let tree_path = path.tree_path();
        let kind = path.kind();
        let Some(cache) = &self.cache else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            self.counters.loads.fetch_add(1, Ordering::Relaxed);
            return load_file(snap.tree.clone(), tree_path, kind, self.cache_ttl).await;
        };
        let key = CacheKey {
            generation: snap.generation,
            path: tree_path,
        };
        let now = Instant::now();
        if let Some(hit) = cache.get(&key)
            && hit.expires > now
        {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        // One load for all concurrent misses of this key: the others wait for its value.
        let guard = match cache.get_value_or_guard_async(&key).await {
            Ok(v) if v.expires > now => return Ok(v),
            Ok(_) => {
                // Expired: drop it, then load (or wait for the one loading).
                cache.remove(&key);
                match cache.get_value_or_guard_async(&key).await {
                    Ok(v) => return Ok(v),
                    Err(g) => g,
                }
            }
            Err(g) => g,
        };
        self.counters.loads.fetch_add(1, Ordering::Relaxed);
        let value = load_file(snap.tree.clone(), key.path.clone(), kind, self.cache_ttl).await?;
        let _ = guard.insert(value.clone());
        Ok(value)
    }
}

async fn load_file(
    tree: Arc<dyn Tree>,
    rel: String,
    kind: FileKind,
    ttl: Duration,
) -> Result<CacheValue, RegistryError> {
    let live = tree.is_live();
    let bytes = tasks::spawn_blocking(move || tree.read(&rel))
        .await
        .map_err(task_err)??;
    let file = bytes.map(|b| {
        let sha256_hex = hex::encode(sha2::Sha256::digest(&b));
        Arc::new(RegistryFile {
            bytes: Bytes::from(b),
            sha256_hex,
            kind,
        })
    });
    let short_lived = live && file.as_ref().is_none_or(|f| !f.kind.is_immutable());
    let ttl = if short_lived {
        ttl.min(LIVE_MUTABLE_TTL)
    } else {
        ttl
    };
    Ok(CacheValue {
        file,
        expires: Instant::now() + ttl,
    })
}
