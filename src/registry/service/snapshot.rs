//! The snapshot the registry serves and how it changes: the module index built from the
//! source's tree, refreshing onto a new snapshot, and the look-ups that let a live directory
//! answer for folders added since the index was built.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Registry, RegistryError, task_err};
use crate::registry::path::RegistryPath;
use crate::source::{EntryKind, RegistrySource, SourceError, Tree};
use crate::tasks;

/// How long a mutable file (`metadata.json`) of a live directory may be served from cache.
pub(super) const LIVE_MUTABLE_TTL: Duration = Duration::from_secs(1);

/// One snapshot of the source and its module index.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub(super) generation: u64,
    pub(super) tree: Arc<dyn Tree>,
    pub(super) modules: HashMap<String, HashSet<String>>,
    /// For a live directory: modification times of `modules/` and of each module folder when
    /// the index was built. A miss whose parent folder has not changed since is a sure 404.
    pub(super) mtimes: HashMap<String, SystemTime>,
}

/// The module index and the folder times it was built from.
pub(super) type Index = (
    HashMap<String, HashSet<String>>,
    HashMap<String, SystemTime>,
);

/// What a live-directory look-up found, cached for a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirState {
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

impl Registry {
    pub(super) async fn read_snapshot(
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

    pub(super) async fn live_dir_exists(
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
