//! The registry read path: one snapshot of the source at a time, an index of the modules and
//! versions it holds (so unknown modules are answered without touching disk or git), and a
//! bounded cache of file bytes in front of the source.
//!
//! This file holds the [`Registry`] facade; `snapshot` owns the served snapshot, its index
//! and refreshing it, `cache` owns the file cache.

mod cache;
mod snapshot;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use moka::future::Cache;

use super::files::ArchiveRef;
use super::path::{FileKind, RegistryPath};
use crate::source::{RegistrySource, SourceError};
use crate::tasks;

pub use cache::{CacheCounters, CacheSettings, CacheStats};
pub use snapshot::RefreshOutcome;

use cache::FileCache;
use snapshot::{DirState, LIVE_MUTABLE_TTL, Snapshot};

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
        let cache = cache::file_cache(cache.capacity_bytes);
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

    /// Whether the internal registry owns module `name` (its index holds it): an owned name
    /// is never looked up upstream, whatever version is asked for.
    #[must_use]
    pub fn holds_module(&self, name: &str) -> bool {
        self.snapshot.load().modules.contains_key(name)
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
}

fn task_err(e: tasks::TaskError) -> RegistryError {
    RegistryError::Task(e.to_string())
}
