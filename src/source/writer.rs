//! Writing to the registry source: one transaction at a time, each all-or-nothing.
//!
//! The domain layer describes a transaction as a function from the current tree to a
//! [`Plan`]: nothing to write, or a [`Change`]. The writer runs it under a lock on the tip of the
//! source and applies the change atomically:
//!
//! - a **directory** registry takes an exclusive `flock` on its root folder (so several
//!   processes exclude each other), builds each new folder in a staging folder and
//!   renames it into place, and replaces each changed file by write-to-temp, fsync and rename;
//! - a **git** registry builds one commit on top of the served branch without touching any work
//!   tree, moves the branch with a compare-and-swap, and, when the repository has an `origin`
//!   remote, pushes it. A push refused as non-fast-forward (another replica published first)
//!   fetches the new tip and runs the plan again on it, up to [`MAX_ATTEMPTS`] times.
//!
//! Every call here blocks: run it through [`crate::tasks::spawn_blocking`].

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{RegistrySource, SourceError, Tree};

mod dir;
mod git;

use dir::{lock_dir, transact_dir};

/// Where a push parks its commit in `origin` before moving the branch by compare-and-swap.
const INCOMING_PREFIX: &str = "refs/gf-registry/incoming/";

/// Fetches from `origin` tried when a ref vanishes during the listing (see `sync_origin`).
const FETCH_ATTEMPTS: u64 = 8;

/// How often a git transaction is retried after losing a race to another writer.
pub const MAX_ATTEMPTS: u32 = 8;

/// Where a directory registry stages new folders before renaming them into place.
pub const STAGING_DIR: &str = ".gf-registry-staging";

/// The remote a git registry pushes to and fetches from, when the repository has it.
pub const ORIGIN: &str = "origin";

/// Files of a new folder: paths relative to it, and their bytes.
pub type DirFiles = Vec<(String, Vec<u8>)>;

/// A transaction function: shown the current tree, it decides what to write.
pub type PlanFn<'a, T, E> = dyn FnMut(&dyn Tree) -> Result<Plan<T>, E> + 'a;

/// Files to write in one transaction. Paths are `/`-separated, relative to the registry root,
/// and already validated by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Folders removed first (a directory registry moves them out in one rename).
    pub remove_dirs: Vec<String>,
    /// Folders created whole (they must not exist): the folder and its files, relative to it.
    pub new_dirs: Vec<(String, DirFiles)>,
    /// Files created or replaced, after the new folders.
    pub files: Vec<(String, Vec<u8>)>,
    /// The commit message (git registries).
    pub message: String,
}

/// Who a change is written for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// Name.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

/// What a transaction function decided on the tree it was shown.
#[derive(Debug)]
pub enum Plan<T> {
    /// Nothing to write; the transaction's answer.
    Unchanged(T),
    /// Write this change; the answer once it is written.
    Write(Change, T),
}

/// The result of a transaction.
#[derive(Debug)]
pub struct Written<T> {
    /// The plan's answer.
    pub value: T,
    /// The commit created (git), `directory` for a directory write, `None` when unchanged.
    pub revision: Option<String>,
    /// Attempts made (more than one when another writer won a race).
    pub attempts: u32,
}

/// A failure of a transaction: the plan's own error, or the source's.
#[derive(Debug, thiserror::Error)]
pub enum TransactError<E> {
    /// The plan refused.
    #[error(transparent)]
    Plan(E),
    /// Reading or writing the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

impl RegistrySource {
    /// Removes what an interrupted write left (a directory registry's staging folder), under
    /// the write lock. A no-op for git (an unfinished commit is unreachable and never served).
    ///
    /// # Errors
    /// [`SourceError::Io`] when the folder cannot be removed.
    pub fn clean_leftovers(&self) -> Result<bool, SourceError> {
        let Self::Dir(d) = self else {
            return Ok(false);
        };
        let root = d.root();
        let staging = root.join(STAGING_DIR);
        if !staging.exists() {
            return Ok(false);
        }
        let _lock = lock_dir(root)?;
        fs::remove_dir_all(&staging).map_err(|e| io_err(&staging, e))?;
        Ok(true)
    }

    /// Runs `plan` on the current tree and writes what it asks for, atomically.
    ///
    /// # Errors
    /// [`TransactError::Plan`] when the plan refuses (nothing is written);
    /// [`TransactError::Source`] when the source cannot be read or written.
    pub fn transact<T, E>(
        &self,
        author: &Author,
        plan: &mut PlanFn<'_, T, E>,
    ) -> Result<Written<T>, TransactError<E>> {
        match self {
            Self::Dir(d) => transact_dir(d, plan),
            Self::Git(g) => g.transact(author, plan),
        }
    }

    /// Brings the served ref up to date with the `origin` remote, when there is one (git
    /// registries shared by several replicas). A no-op for directories.
    ///
    /// # Errors
    /// [`SourceError::Git`] when fetching fails.
    pub fn sync(&self) -> Result<bool, SourceError> {
        match self {
            Self::Dir(_) => Ok(false),
            Self::Git(g) => {
                // Under the write lock: a sync between a transaction's local commit and its
                // push would move the branch back and lose the commit.
                let _guard = g
                    .write_lock()
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let repo = g.open_for_write()?;
                g.sync_origin(&repo)
            }
        }
    }
}

fn io_err(path: &Path, source: std::io::Error) -> SourceError {
    SourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}
