//! The registry read path: one snapshot of the source at a time, an index of the modules and
//! versions it holds (so unknown modules are answered without touching disk or git), and a
//! bounded cache of file bytes in front of the source.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use moka::future::Cache;
use sha2::Digest as _;

use super::files::ArchiveRef;
use super::path::{FileKind, RegistryPath};
use crate::source::{EntryKind, RegistrySource, SourceError, Tree};
use crate::tasks;

/// Cache settings for registry files.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Upper bound of cached bytes; 0 disables the cache.
    pub capacity_bytes: u64,
    /// How long an entry may stay.
    pub ttl: Duration,
}

/// How long a mutable file (`metadata.json`) of a live directory may be served from cache.
const LIVE_MUTABLE_TTL: Duration = Duration::from_secs(1);

/// A registry file ready to serve: bytes exactly as stored, and their sha256.
#[derive(Debug)]
pub struct RegistryFile {
    /// The bytes, as stored.
    pub bytes: Bytes,
    /// Lowercase hex sha256 of `bytes`.
    pub sha256_hex: String,
    /// What kind of file it is.
    pub kind: FileKind,
}

/// Errors of the registry read path.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry holds no such file.
    #[error("not found")]
    NotFound,
    /// The source could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A blocking task failed.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// One snapshot of the source and its module index.
#[derive(Debug)]
struct Snapshot {
    generation: u64,
    tree: Arc<dyn Tree>,
    modules: HashMap<String, HashSet<String>>,
    /// For a live directory: modification times of `modules/` and of each module folder when
    /// the index was built. A miss whose parent folder has not changed since is a sure 404.
    mtimes: HashMap<String, SystemTime>,
}

/// The module index and the folder times it was built from.
type Index = (
    HashMap<String, HashSet<String>>,
    HashMap<String, SystemTime>,
);

/// A file cache key: the snapshot generation and the file's path in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
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
struct CacheValue {
    file: Option<Arc<RegistryFile>>,
    /// Absent files and mutable files of a live directory are re-read after a second;
    /// everything else lives until the snapshot changes or the cache TTL passes.
    expires: Instant,
}

/// Weighs a cache entry by its bytes.
#[derive(Debug, Clone)]
struct FileWeighter;

impl quick_cache::Weighter<CacheKey, CacheValue> for FileWeighter {
    fn weight(&self, key: &CacheKey, value: &CacheValue) -> u64 {
        (key.path.len() + value.file.as_ref().map_or(64, |f| f.bytes.len() + 128)) as u64
    }
}

/// The file cache: quick_cache rather than moka on this path, because a hit is the whole
/// work of most registry requests and quick_cache's look-up is a plain sharded hash probe
/// (measured in bench/RESULTS.md).
type FileCache = quick_cache::sync::Cache<CacheKey, CacheValue, FileWeighter>;

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

/// What a live-directory look-up found, cached for a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirState {
    /// The folder exists.
    Present,
    /// The folder does not exist.
    Absent,
    /// The folder's modification time, in nanoseconds since the epoch.
    Modified(u128),
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// The revision served before.
    pub previous: String,
    /// The revision served now.
    pub current: String,
    /// Whether the served snapshot was replaced.
    pub switched: bool,
    /// Modules in the index now.
    pub modules: usize,
}

/// The registry service.
#[derive(Debug)]
pub struct Registry {
    source: RegistrySource,
    snapshot: ArcSwap<Snapshot>,
    cache: Option<FileCache>,
    /// How long an entry of the file cache lives at most.
    cache_ttl: Duration,
    counters: CacheCounters,
    refresh_lock: tokio::sync::Mutex<()>,
    live_dirs: Cache<String, DirState>,
    /// `modules/`'s modification time and when it was read (see `live_dir_exists`).
    root_mtime: std::sync::Mutex<Option<(Instant, DirState)>>,
}

impl Registry {
    /// Loads the first snapshot of `source` and its index.
    ///
    /// # Errors
    /// [`RegistryError`] when the source cannot be read.
    pub async fn load(source: RegistrySource, cache: CacheSettings) -> Result<Self, RegistryError> {
        let (tree, (modules, mtimes)) = Self::read_snapshot(&source).await?;
        let cache_ttl = cache.ttl;
        let cache = (cache.capacity_bytes > 0).then(|| {
            // Sized for registry files of about 2 KiB each.
            let items = usize::try_from(cache.capacity_bytes / 2048)
                .unwrap_or(usize::MAX)
                .clamp(64, 1 << 20);
            FileCache::with_weighter(items, cache.capacity_bytes, FileWeighter)
        });
        Ok(Self {
            source,
            snapshot: ArcSwap::from_pointee(Snapshot {
                generation: 0,
                tree,
                modules,
                mtimes,
            }),
            cache,
            cache_ttl,
            counters: CacheCounters::default(),
            refresh_lock: tokio::sync::Mutex::new(()),
            root_mtime: std::sync::Mutex::new(None),
            live_dirs: Cache::builder()
                .name("registry_live_dirs")
                .max_capacity(100_000)
                .time_to_live(LIVE_MUTABLE_TTL)
                .build(),
        })
    }

    async fn read_snapshot(
        source: &RegistrySource,
    ) -> Result<(Arc<dyn Tree>, Index), RegistryError> {
        let source = source.clone();
        let loaded = tasks::spawn_blocking(move || {
            let tree = source.current()?;
            let modules = index_modules(tree.as_ref())?;
            Ok::<_, SourceError>((tree, modules))
        })
        .await
        .map_err(task_err)??;
        Ok(loaded)
    }

    /// The registry source (publishing writes through it).
    #[must_use]
    pub fn source(&self) -> &RegistrySource {
        &self.source
    }

    /// A description of the source, for logs.
    #[must_use]
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The revision served now.
    #[must_use]
    pub fn revision(&self) -> String {
        self.snapshot.load().tree.revision().to_owned()
    }

    /// Increases whenever the served snapshot changes.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.snapshot.load().generation
    }

    /// Every `archive` source of the served snapshot: its URLs (`url`, then `mirror_urls`) and
    /// integrity, with the module version that names them. Unreadable entries are skipped
    /// (`registry check` reports them).
    ///
    /// # Errors
    /// [`RegistryError`] when the source cannot be read.
    pub async fn archive_sources(&self) -> Result<(u64, Vec<ArchiveRef>), RegistryError> {
        let snap = self.snapshot.load_full();
        let generation = snap.generation;
        let refs = tasks::spawn_blocking(move || {
            let mut out = Vec::new();
            for (module, versions) in &snap.modules {
                for version in versions {
                    let Some(bytes) = snap
                        .tree
                        .read(&format!("modules/{module}/{version}/source.json"))?
                    else {
                        continue;
                    };
                    if let Some(r) = super::files::archive_ref(module, version, &bytes) {
                        out.push(r);
                    }
                }
            }
            out.sort_by(|a, b| (&a.module, &a.version).cmp(&(&b.module, &b.version)));
            Ok::<_, SourceError>(out)
        })
        .await
        .map_err(task_err)??;
        Ok((generation, refs))
    }

    /// Number of modules in the index.
    #[must_use]
    pub fn module_count(&self) -> usize {
        self.snapshot.load().modules.len()
    }

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

    /// Whether `path` is surely absent without looking at the source: its module is not in the
    /// current snapshot's index, and (for a live directory) `modules/` has not changed since
    /// the index was built, as last seen under a second ago. `false` means "ask
    /// [`Registry::get`]", not "present".
    #[must_use]
    pub fn surely_absent(&self, path: &RegistryPath) -> bool {
        let Some(module) = path.module() else {
            return false;
        };
        let snap = self.snapshot.load();
        if snap.modules.contains_key(module.as_str()) {
            return false;
        }
        if !snap.tree.is_live() {
            return true;
        }
        let Some(indexed) = snap.mtimes.get("modules") else {
            return false;
        };
        let indexed_nanos = indexed
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.root_mtime
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|(at, state)| {
                at.elapsed() < LIVE_MUTABLE_TTL && state == DirState::Modified(indexed_nanos)
            })
    }

    /// Whether the internal registry owns module `name` (its index holds it): an owned name
    /// is never looked up upstream, whatever version is asked for.
    #[must_use]
    pub fn holds_module(&self, name: &str) -> bool {
        self.snapshot.load().modules.contains_key(name)
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

    /// Re-reads the source: for git, switches atomically to the commit the ref points to now;
    /// for a directory, rebuilds the module index. Requests in flight finish on the snapshot
    /// they started with.
    ///
    /// # Errors
    /// [`RegistryError`] when the source cannot be read; the old snapshot stays in service.
    pub async fn refresh(&self) -> Result<RefreshOutcome, RegistryError> {
        let _guard = self.refresh_lock.lock().await;
        // A git registry shared through an origin remote: take what other replicas pushed.
        let source = self.source.clone();
        match tasks::spawn_blocking(move || source.sync()).await {
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not sync the registry with its origin; serving the local ref")
            }
            Err(e) => tracing::warn!(error = %e, "registry sync task failed"),
            Ok(Ok(_)) => {}
        }
        let old = self.snapshot.load_full();
        let previous = old.tree.revision().to_owned();
        let (tree, (modules, mtimes)) = Self::read_snapshot(&self.source).await?;
        let current = tree.revision().to_owned();
        let switched = current != previous
            || (tree.is_live() && (modules != old.modules || mtimes != old.mtimes));
        if switched {
            let count = modules.len();
            self.snapshot.store(Arc::new(Snapshot {
                generation: old.generation + 1,
                tree,
                modules,
                mtimes,
            }));
            if let Some(c) = &self.cache {
                c.clear();
            }
            tracing::info!(registry.previous = %previous, registry.current = %current, modules = count, "registry snapshot switched");
        }
        Ok(RefreshOutcome {
            previous,
            current,
            switched,
            modules: self.module_count(),
        })
    }

    /// Reads a registry file from the snapshot current at the time of the call.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when the registry holds no such file; source errors.
    pub async fn get(&self, path: &RegistryPath) -> Result<Arc<RegistryFile>, RegistryError> {
        let snap = self.snapshot.load_full();
        if let Some(module) = path.module() {
            let indexed = snap
                .modules
                .get(module.as_str())
                .map(|versions| path.version().is_none_or(|v| versions.contains(v.as_str())));
            if indexed != Some(true) {
                // A git snapshot's index is exact. A live directory may have gained the folder
                // since the last poll: look (at most once a second per folder), so a version
                // published into the directory is never answered 404 while its metadata lists it.
                let dir = match path.version() {
                    Some(v) => format!("modules/{module}/{v}"),
                    None => format!("modules/{module}"),
                };
                if !snap.tree.is_live()
                    || !self
                        .live_dir_exists(&snap, module.as_str(), path.version().is_some(), dir)
                        .await?
                {
                    return Err(RegistryError::NotFound);
                }
            }
        }
        if let RegistryPath::LegacyOverlay(name, version, rel) = path {
            // Bazel 7.2.0 asked for overlay files beside source.json; serve only listed ones.
            let source_json = RegistryPath::Version(
                name.clone(),
                version.clone(),
                super::path::VersionFile::SourceJson,
            );
            let sj = self
                .read_cached(&snap, &source_json)
                .await?
                .file
                .ok_or(RegistryError::NotFound)?;
            if !super::files::overlay_lists(&sj.bytes, rel.as_str()) {
                return Err(RegistryError::NotFound);
            }
        }
        self.read_cached(&snap, path)
            .await?
            .file
            .ok_or(RegistryError::NotFound)
    }

    async fn live_dir_exists(
        &self,
        snap: &Arc<Snapshot>,
        module: &str,
        for_version: bool,
        dir: String,
    ) -> Result<bool, RegistryError> {
        // Nothing was added under the parent folder since indexing: a sure miss, answered
        // without touching the disk (the parent's time is looked up at most once a second).
        let parent = if for_version && snap.modules.contains_key(module) {
            format!("modules/{module}")
        } else {
            "modules".to_owned()
        };
        if let Some(indexed) = snap.mtimes.get(&parent) {
            let is_root = parent == "modules";
            // Every unknown module asks about `modules/`: that answer sits in one slot, read
            // without the cache machinery while it is under a second old.
            let fresh_root = is_root
                .then(|| {
                    *self
                        .root_mtime
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                })
                .flatten()
                .filter(|(at, _)| at.elapsed() < LIVE_MUTABLE_TTL)
                .map(|(_, state)| state);
            let now = match fresh_root {
                Some(state) => state,
                None if is_root => {
                    let state = folder_time(snap.tree.clone(), parent).await?;
                    *self
                        .root_mtime
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((Instant::now(), state));
                    state
                }
                None => {
                    let tree = snap.tree.clone();
                    self.live_dirs
                        .try_get_with(format!("mtime:{parent}"), async move {
                            folder_time(tree, parent).await.map_err(|e| e.to_string())
                        })
                        .await
                        .map_err(|e: Arc<String>| RegistryError::Task(e.to_string()))?
                }
            };
            let indexed_nanos = indexed
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            if now == DirState::Modified(indexed_nanos) {
                return Ok(false);
            }
        }
        let tree = snap.tree.clone();
        let key = dir.clone();
        self.live_dirs
            .try_get_with(key, async move {
                tasks::spawn_blocking(move || {
                    tree.list(&dir).map(|l| {
                        if l.is_some() {
                            DirState::Present
                        } else {
                            DirState::Absent
                        }
                    })
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
            })
            .await
            .map(|state| state == DirState::Present)
            .map_err(|e: Arc<String>| RegistryError::Task(e.to_string()))
    }

    async fn read_cached(
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

fn task_err(e: tasks::TaskError) -> RegistryError {
    RegistryError::Task(e.to_string())
}

/// A folder's modification time, as a cache value.
async fn folder_time(tree: Arc<dyn Tree>, dir: String) -> Result<DirState, RegistryError> {
    let modified = tasks::spawn_blocking(move || tree.modified(&dir))
        .await
        .map_err(task_err)??;
    Ok(modified.map_or(DirState::Absent, |t| {
        DirState::Modified(
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        )
    }))
}

/// Lists `modules/*/*/` folders: module name -> version folder names.
fn index_modules(tree: &dyn Tree) -> Result<Index, SourceError> {
    let mut out = HashMap::new();
    let mut mtimes = HashMap::new();
    let live = tree.is_live();
    if live && let Some(t) = tree.modified("modules")? {
        mtimes.insert("modules".to_owned(), t);
    }
    for module in tree.list("modules")?.unwrap_or_default() {
        if module.kind != EntryKind::Dir {
            continue;
        }
        let versions = tree
            .list(&format!("modules/{}", module.name))?
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .map(|e| e.name)
            .collect();
        if live {
            let dir = format!("modules/{}", module.name);
            if let Some(t) = tree.modified(&dir)? {
                mtimes.insert(dir, t);
            }
        }
        out.insert(module.name, versions);
    }
    Ok((out, mtimes))
}
