//! A git registry's transaction: one commit on the served branch, a compare-and-swap, and a
//! push to `origin` retried on a fresh tip.

use std::path::{Path, PathBuf};

use git2::{FileMode, Oid, Repository, Signature};

use super::*;
use crate::source::git::GitTree;

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

impl crate::source::GitSource {
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

    pub(in crate::source) fn transact<T, E>(
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
