//! A registry served from a git repository at a ref, through git2.
//!
//! The repository handle is shared behind a mutex: git2 objects are not `Sync`, and reads only
//! happen on cache misses, so contention stays low.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use git2::{ObjectType, Oid, Repository, RepositoryOpenFlags};

use super::{DirEntry, EntryKind, SourceError, Tree};

/// The shared repository handle; git2's `Repository` is `Send` but not `Sync` or `Debug`.
#[derive(Clone)]
struct SharedRepo(Arc<Mutex<Repository>>);

impl std::fmt::Debug for SharedRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Repository")
    }
}

/// A git repository and the ref whose commit is served.
#[derive(Debug, Clone)]
pub struct GitSource {
    path: PathBuf,
    ref_name: String,
    repo: SharedRepo,
    /// Serializes this process's writes (other processes are excluded by the ref's
    /// compare-and-swap and by the push).
    write_lock: Arc<Mutex<()>>,
}

/// One commit of a [`GitSource`].
#[derive(Debug)]
pub struct GitTree {
    repo_path: PathBuf,
    repo: SharedRepo,
    commit: String,
    tree: Oid,
}

fn git_err(repo: &Path, e: impl std::fmt::Display) -> SourceError {
    SourceError::Git {
        repo: repo.to_path_buf(),
        message: e.to_string(),
    }
}

fn lock(repo: &Mutex<Repository>) -> MutexGuard<'_, Repository> {
    // A panic while holding the lock leaves the repository handle intact: keep using it.
    repo.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GitSource {
    /// Opens `path` when it is itself a git repository (bare, or with `.git`); parents are not
    /// searched, so a registry folder inside some checkout stays a plain directory.
    ///
    /// # Errors
    /// [`SourceError::Git`] when it is a repository but the ref cannot be resolved.
    pub fn open_if_repository(
        path: &Path,
        git_ref: Option<&str>,
    ) -> Result<Option<Self>, SourceError> {
        let repo = match Repository::open_ext(
            path,
            RepositoryOpenFlags::NO_SEARCH,
            std::iter::empty::<&str>(),
        ) {
            Ok(r) => r,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(git_err(path, e)),
        };
        let ref_name = match git_ref {
            Some(r) => r.to_owned(),
            None => current_branch(&repo).map_err(|e| git_err(path, e))?,
        };
        let source = Self {
            path: path.to_path_buf(),
            ref_name,
            repo: SharedRepo(Arc::new(Mutex::new(repo))),
            write_lock: Arc::new(Mutex::new(())),
        };
        // Fail at start, with the ref named, rather than on the first request.
        source.snapshot()?;
        Ok(Some(source))
    }

    /// The repository folder.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ref being served.
    #[must_use]
    pub fn ref_name(&self) -> &str {
        &self.ref_name
    }

    pub(super) fn write_lock(&self) -> &Mutex<()> {
        &self.write_lock
    }

    /// The tree of the commit the ref points to now.
    ///
    /// # Errors
    /// [`SourceError::Git`] when the ref does not resolve to a commit.
    pub fn snapshot(&self) -> Result<GitTree, SourceError> {
        let repo = lock(&self.repo.0);
        let spec = format!("{}^{{commit}}", self.ref_name);
        let commit = repo
            .revparse_single(&spec)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| {
                git_err(
                    &self.path,
                    format!(
                        "ref `{}` does not name a commit: {}",
                        self.ref_name,
                        e.message()
                    ),
                )
            })?;
        Ok(GitTree {
            repo_path: self.path.clone(),
            repo: self.repo.clone(),
            commit: commit.id().to_string(),
            tree: commit.tree_id(),
        })
    }
}

fn current_branch(repo: &Repository) -> Result<String, git2::Error> {
    let head = repo.find_reference("HEAD")?;
    match head.symbolic_target()? {
        Some(target) => Ok(target.to_owned()),
        None => Ok("HEAD".to_owned()),
    }
}

impl GitTree {
    pub(super) fn new(source: &GitSource, commit: String, tree: Oid) -> Self {
        Self {
            repo_path: source.path.clone(),
            repo: source.repo.clone(),
            commit,
            tree,
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> SourceError {
        git_err(&self.repo_path, e)
    }
}

impl Tree for GitTree {
    fn revision(&self) -> &str {
        &self.commit
    }

    fn is_live(&self) -> bool {
        false
    }

    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let repo = lock(&self.repo.0);
        let tree = repo.find_tree(self.tree).map_err(|e| self.err(e))?;
        let entry = match tree.get_path(Path::new(rel)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        // Only regular blobs (0o100644, 0o100755); symlinks (0o120000) read as absent.
        if entry.kind() != Some(ObjectType::Blob) || entry.filemode() & 0o170000 != 0o100000 {
            return Ok(None);
        }
        let blob = repo.find_blob(entry.id()).map_err(|e| self.err(e))?;
        Ok(Some(blob.content().to_vec()))
    }

    fn list(&self, rel: &str) -> Result<Option<Vec<DirEntry>>, SourceError> {
        let repo = lock(&self.repo.0);
        let root = repo.find_tree(self.tree).map_err(|e| self.err(e))?;
        let tree = if rel.is_empty() {
            root
        } else {
            let entry = match root.get_path(Path::new(rel)) {
                Ok(e) => e,
                Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
                Err(e) => return Err(self.err(e)),
            };
            if entry.kind() != Some(ObjectType::Tree) {
                return Ok(None);
            }
            repo.find_tree(entry.id()).map_err(|e| self.err(e))?
        };
        let out = tree
            .iter()
            .map(|e| {
                let mode = e.filemode() & 0o170000;
                let kind = match (e.kind(), mode) {
                    (_, 0o120000) => EntryKind::Symlink,
                    (Some(ObjectType::Tree), _) => EntryKind::Dir,
                    (Some(ObjectType::Blob), 0o100000) => EntryKind::File,
                    _ => EntryKind::Other,
                };
                DirEntry {
                    name: String::from_utf8_lossy(e.name_bytes()).into_owned(),
                    kind,
                }
            })
            .collect();
        Ok(Some(out))
    }
}
