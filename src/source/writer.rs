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

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use git2::{FileMode, Oid, Repository, Signature};

use super::dir::DirTree;
use super::git::GitTree;
use super::{RegistrySource, SourceError, Tree};

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

fn transact_dir<T, E>(
    tree: &DirTree,
    plan: &mut PlanFn<'_, T, E>,
) -> Result<Written<T>, TransactError<E>> {
    let root = tree.root().to_path_buf();
    let lock = lock_dir(&root)?;
    let staging = root.join(STAGING_DIR);
    // Leftovers of a crash: never visible (the folder is not part of the tree), removed here.
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| io_err(&staging, e))?;
    }
    let (change, value) = match plan(tree).map_err(TransactError::Plan)? {
        Plan::Unchanged(value) => {
            return Ok(Written {
                value,
                revision: None,
                attempts: 1,
            });
        }
        Plan::Write(change, value) => (change, value),
    };
    let result = write_dir_change(&root, &staging, &change);
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result?;
    drop(lock);
    Ok(Written {
        value,
        revision: Some("directory".to_owned()),
        attempts: 1,
    })
}

/// An exclusive lock on the registry folder itself (`flock` on its descriptor), so writers in
/// several processes exclude each other without any lock file in the tree.
fn lock_dir(root: &Path) -> Result<File, SourceError> {
    let dir = File::open(root).map_err(|e| io_err(root, e))?;
    dir.lock().map_err(|e| io_err(root, e))?;
    Ok(dir)
}

fn write_dir_change(root: &Path, staging: &Path, change: &Change) -> Result<(), SourceError> {
    for dir in &change.remove_dirs {
        let path = root.join(dir);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        fs::create_dir_all(staging).map_err(|e| io_err(staging, e))?;
        let gone = staging.join(unique_name("removed-"));
        fs::rename(&path, &gone).map_err(|e| io_err(&path, e))?;
        sync_dir(path.parent().unwrap_or(root))?;
    }
    for (dir, files) in &change.new_dirs {
        let stage = staging.join(unique_name("dir-"));
        for (rel, bytes) in files {
            let path = stage.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
            }
            write_synced(&path, bytes)?;
        }
        fs::create_dir_all(&stage).map_err(|e| io_err(&stage, e))?;
        sync_tree_dirs(&stage)?;
        let dest = root.join(dir);
        let parent = dest.parent().unwrap_or(root);
        fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(io_err(
                &dest,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
            ));
        }
        fs::rename(&stage, &dest).map_err(|e| io_err(&dest, e))?;
        sync_dir(parent)?;
    }
    for (rel, bytes) in &change.files {
        let dest = root.join(rel);
        let parent = dest.parent().unwrap_or(root).to_path_buf();
        fs::create_dir_all(&parent).map_err(|e| io_err(&parent, e))?;
        // Written in the staging folder (same file system), so a crash leaves nothing beside
        // the registry's files: the next transaction or start removes the staging folder.
        fs::create_dir_all(staging).map_err(|e| io_err(staging, e))?;
        let tmp = staging.join(unique_name("file-"));
        write_synced(&tmp, bytes)?;
        fs::rename(&tmp, &dest).map_err(|e| io_err(&dest, e))?;
        sync_dir(&parent)?;
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SourceError> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.write_all(bytes).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

fn sync_dir(dir: &Path) -> Result<(), SourceError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(dir, e))
}

fn sync_tree_dirs(dir: &Path) -> Result<(), SourceError> {
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        if entry.file_type().map_err(|e| io_err(dir, e))?.is_dir() {
            sync_tree_dirs(&entry.path())?;
        }
    }
    sync_dir(dir)
}

fn git_err(repo: &Path, e: impl std::fmt::Display) -> SourceError {
    SourceError::Git {
        repo: repo.to_path_buf(),
        message: e.to_string(),
    }
}

/// How a push ended.
enum Pushed {
    Done,
    /// The remote moved on: fetch, plan again.
    Behind,
}

impl super::GitSource {
    /// A fresh repository handle for a write (the shared read handle stays free).
    pub(super) fn open_for_write(&self) -> Result<Repository, SourceError> {
        Repository::open(self.path()).map_err(|e| git_err(self.path(), e))
    }

    /// The served ref as a full branch name; writes need a branch.
    fn branch_ref(&self, repo: &Repository) -> Result<String, SourceError> {
        let name = self.ref_name();
        let full = if name.starts_with("refs/") {
            name.to_owned()
        } else {
            repo.resolve_reference_from_short_name(name)
                .ok()
                .and_then(|r| r.name().ok().map(str::to_owned))
                .unwrap_or_else(|| format!("refs/heads/{name}"))
        };
        if !full.starts_with("refs/heads/") {
            return Err(git_err(
                self.path(),
                format!(
                    "the served ref `{name}` is not a branch; publishing needs registry.ref to name a branch"
                ),
            ));
        }
        Ok(full)
    }

    fn has_origin(repo: &Repository) -> bool {
        repo.find_remote(ORIGIN).is_ok()
    }

    /// Fetches the served branch from `origin` and moves the local branch to it when the local
    /// branch has nothing the remote lacks. Returns whether the branch moved.
    pub(super) fn sync_origin(&self, repo: &Repository) -> Result<bool, SourceError> {
        if !Self::has_origin(repo) {
            return Ok(false);
        }
        let branch = self.branch_ref(repo)?;
        let short = branch.trim_start_matches("refs/heads/");
        let tracking = format!("refs/remotes/{ORIGIN}/{short}");
        let err = |e: git2::Error| git_err(self.path(), format!("fetching {ORIGIN}: {e}"));
        let mut remote = repo.find_remote(ORIGIN).map_err(err)?;
        let refspec = format!("+{branch}:{tracking}");
        // libgit2's local transport lists every ref of the remote and then looks each one up:
        // another replica's temporary push ref (`refs/gf-registry/incoming/...`) deleted in
        // between fails the whole fetch with "reference not found". That is a vanished ref,
        // not a failure: try again (bounded).
        let mut attempt = 0;
        loop {
            match remote.fetch(&[refspec.as_str()], None, None) {
                Ok(()) => break,
                Err(e) if attempt < FETCH_ATTEMPTS && is_vanished_ref(&e) => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10 * attempt));
                }
                Err(e) => return Err(err(e)),
            }
        }
        let Ok(remote_tip) = repo.refname_to_id(&tracking) else {
            return Ok(false);
        };
        let local_tip = repo.refname_to_id(&branch).ok();
        if local_tip == Some(remote_tip) {
            return Ok(false);
        }
        // Local commits are only ever acknowledged once pushed, so a local branch that is not
        // an ancestor of the remote holds nothing anyone was told about: the remote wins.
        match local_tip {
            Some(local) => {
                repo.reference_matching(
                    &branch,
                    remote_tip,
                    true,
                    local,
                    "gf-registry: sync with origin",
                )
                .map_err(err)?;
            }
            None => {
                repo.reference(&branch, remote_tip, false, "gf-registry: sync with origin")
                    .map_err(err)?;
            }
        }
        Ok(true)
    }

    fn transact<T, E>(
        &self,
        author: &Author,
        plan: &mut PlanFn<'_, T, E>,
    ) -> Result<Written<T>, TransactError<E>> {
        let _guard = self
            .write_lock()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let repo = self.open_for_write()?;
        let branch = self.branch_ref(&repo)?;
        let origin = Self::has_origin(&repo);
        for attempt in 1..=MAX_ATTEMPTS {
            if origin {
                self.sync_origin(&repo)?;
            }
            let tip = repo
                .refname_to_id(&branch)
                .map_err(|e| git_err(self.path(), format!("{branch}: {e}")))?;
            let tip_commit = repo.find_commit(tip).map_err(|e| git_err(self.path(), e))?;
            let tree = GitTree::new(self, tip.to_string(), tip_commit.tree_id());
            let (change, value) = match plan(&tree).map_err(TransactError::Plan)? {
                Plan::Unchanged(value) => {
                    return Ok(Written {
                        value,
                        revision: None,
                        attempts: attempt,
                    });
                }
                Plan::Write(change, value) => (change, value),
            };
            let commit = self.commit_change(&repo, &tip_commit, &change, author)?;
            if repo
                .reference_matching(&branch, commit, true, tip, &change.message)
                .is_err()
            {
                // Another process moved the branch: plan again on its tip.
                continue;
            }
            if origin {
                let pushed = self.push(&repo, &branch, tip, commit);
                if !matches!(pushed, Ok(Pushed::Done)) {
                    // Not acknowledged: take the commit back so the branch matches origin,
                    // then plan again on origin's tip (or report the failure).
                    let _ = repo.reference_matching(
                        &branch,
                        tip,
                        true,
                        commit,
                        "gf-registry: push not accepted",
                    );
                }
                match pushed {
                    Ok(Pushed::Done) => {}
                    Ok(Pushed::Behind) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Written {
                value,
                revision: Some(commit.to_string()),
                attempts: attempt,
            });
        }
        Err(git_err(
            self.path(),
            format!(
                "gave up after {MAX_ATTEMPTS} attempts: other writers kept moving {branch} first"
            ),
        )
        .into())
    }

    fn commit_change(
        &self,
        repo: &Repository,
        parent: &git2::Commit<'_>,
        change: &Change,
        author: &Author,
    ) -> Result<Oid, SourceError> {
        let err = |e: git2::Error| git_err(self.path(), e);
        let base = parent.tree().map_err(err)?;
        let mut update = git2::build::TreeUpdateBuilder::new();
        let mut count = 0usize;
        for dir in &change.remove_dirs {
            update.remove(dir.as_str());
        }
        for (dir, files) in &change.new_dirs {
            for (rel, bytes) in files {
                let oid = repo.blob(bytes).map_err(err)?;
                update.upsert(format!("{dir}/{rel}"), oid, FileMode::Blob);
                count += 1;
            }
        }
        for (rel, bytes) in &change.files {
            let oid = repo.blob(bytes).map_err(err)?;
            update.upsert(rel.as_str(), oid, FileMode::Blob);
            count += 1;
        }
        let tree_id = update.create_updated(repo, &base).map_err(err)?;
        let tree = repo.find_tree(tree_id).map_err(err)?;
        let now = git2::Time::new(chrono::Utc::now().timestamp(), 0);
        let author_sig = Signature::new(&author.name, &author.email, &now).map_err(err)?;
        let committer =
            Signature::new("gf-registry", "gf-registry@localhost", &now).map_err(err)?;
        let id = repo
            .commit(
                None,
                &author_sig,
                &committer,
                &change.message,
                &tree,
                &[parent],
            )
            .map_err(err)?;
        tracing::debug!(commit = %id, files = count, "registry commit created");
        Ok(id)
    }

    /// Pushes `new` to origin's `branch` only if it still points at `old` (the tip the commit
    /// was made on). libgit2's local transport overwrites the remote ref without checking its
    /// old value, so the objects go over to a unique temporary ref and the branch is then moved
    /// with a compare-and-swap in the origin repository itself.
    fn push(
        &self,
        repo: &Repository,
        branch: &str,
        old: Oid,
        new: Oid,
    ) -> Result<Pushed, SourceError> {
        let mut remote = repo
            .find_remote(ORIGIN)
            .map_err(|e| git_err(self.path(), e))?;
        let Some(origin_path) = remote.url().ok().and_then(local_remote_path) else {
            return Err(git_err(
                self.path(),
                format!(
                    "{ORIGIN} is not a local repository; this build pushes only to local paths and file:// URLs (libgit2 without network transports)"
                ),
            ));
        };
        let incoming = format!("{INCOMING_PREFIX}{}", unique_name(""));
        let failed = std::cell::RefCell::new(None::<String>);
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.push_update_reference(|_, status| {
            if let Some(s) = status {
                *failed.borrow_mut() = Some(s.to_owned());
            }
            Ok(())
        });
        let mut options = git2::PushOptions::new();
        options.remote_callbacks(callbacks);
        let sent = remote.push(&[format!("{new}:{incoming}")], Some(&mut options));
        drop(options);
        let status = failed.into_inner();
        let origin = Repository::open(&origin_path)
            .map_err(|e| git_err(&origin_path, format!("opening {ORIGIN}: {e}")))?;
        let cleanup = |origin: &Repository| {
            if let Ok(mut r) = origin.find_reference(&incoming) {
                let _ = r.delete();
            }
        };
        if let Err(e) = sent {
            cleanup(&origin);
            return if is_retryable(&e.to_string()) {
                Ok(Pushed::Behind)
            } else {
                Err(git_err(self.path(), format!("pushing to {ORIGIN}: {e}")))
            };
        }
        if let Some(s) = status {
            cleanup(&origin);
            return Err(git_err(
                self.path(),
                format!("pushing to {ORIGIN}: refused: {s}"),
            ));
        }
        let moved = match origin.refname_to_id(branch) {
            Ok(_) => origin
                .reference_matching(branch, new, true, old, "gf-registry: publish")
                .map(|_| ()),
            Err(_) => origin
                .reference(branch, new, false, "gf-registry: publish")
                .map(|_| ()),
        };
        cleanup(&origin);
        match moved {
            Ok(()) => Ok(Pushed::Done),
            // Another writer moved the branch first (or holds its lock): plan again.
            Err(e)
                if matches!(
                    e.code(),
                    git2::ErrorCode::Modified | git2::ErrorCode::Locked | git2::ErrorCode::Exists
                ) || is_retryable(e.message()) =>
            {
                Ok(Pushed::Behind)
            }
            Err(e) => Err(git_err(&origin_path, format!("moving {branch}: {e}"))),
        }
    }
}

/// The folder of a local remote URL (`/path`, `file:///path`), if it is one.
fn local_remote_path(url: &str) -> Option<PathBuf> {
    let path = match url.strip_prefix("file://") {
        Some(rest) => PathBuf::from(rest),
        None if url.starts_with('/') || url.starts_with('.') => PathBuf::from(url),
        None => return None,
    };
    path.is_dir().then_some(path)
}

/// A ref of the remote that disappeared between libgit2 listing the refs and reading one
/// (another writer's temporary push ref): `reference '...' not found`, class `Reference`, with
/// the generic error code.
fn is_vanished_ref(e: &git2::Error) -> bool {
    names_vanished_ref(&e.to_string().to_ascii_lowercase())
}

/// Whether a (lowercased) git error message is about a vanished ref: see [`is_vanished_ref`].
fn names_vanished_ref(m: &str) -> bool {
    m.contains(INCOMING_PREFIX) || (m.contains("reference") && m.contains("not found"))
}

fn is_retryable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    is_non_fast_forward(&m)
        || m.contains("failed to lock")
        || m.contains("does not match")
        // Another writer's temporary ref vanished while libgit2 listed the remote's refs.
        || names_vanished_ref(&m)
}

fn is_non_fast_forward(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("non-fast-forward") || m.contains("not fast-forward") || m.contains("fastforward")
}

#[cfg(test)]
mod tests {
    use super::{is_retryable, is_vanished_ref};

    /// The error a fetch from a local origin gave in CI when another replica's temporary push
    /// ref vanished mid-listing (class `Reference`, generic code): retried, not a failure.
    #[test]
    fn a_vanished_temporary_ref_is_retried() {
        let seen = git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Reference,
            "reference 'refs/gf-registry/incoming/12797-290-1795798742805879162' not found",
        );
        assert!(is_vanished_ref(&seen));
        assert!(is_retryable(&seen.to_string()));
        let other = git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Net,
            "could not read from remote repository",
        );
        assert!(!is_vanished_ref(&other));
        assert!(!is_retryable(&other.to_string()));
    }
}
