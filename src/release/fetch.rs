//! `git_repository` sources: a commit fetched from a local remote, as a tarball.

use std::path::{Path, PathBuf};

use git2::Repository;

use super::*;
use crate::source::SourceError;

/// Why a `git_repository` source could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The remote is not a local repository (this build has no network transports for git).
    #[error(
        "`{0}` is not a local repository; this build fetches git_repository sources only from local paths and file:// URLs (libgit2 without network transports): publish an archive instead"
    )]
    NotLocal(String),
    /// The commit is not in the remote.
    #[error("commit {commit} is not in {remote}")]
    NoSuchCommit {
        /// The remote.
        remote: String,
        /// The commit.
        commit: String,
    },
    /// Fetching or archiving failed.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Fetches `commit` from the local repository `remote` into a scratch bare repository under
/// `work`, and returns a deterministic `tar.gz` of its tree with every entry under `prefix/`:
/// the same bytes an archive source would give, so the same safe extraction checks it.
///
/// # Errors
/// [`FetchError`] when the remote is not local, lacks the commit, or cannot be read.
pub fn fetch_commit_tar_gz(
    remote: &str,
    commit: &str,
    work: &Path,
    prefix: &str,
) -> Result<Vec<u8>, FetchError> {
    let local = match remote.strip_prefix("file://") {
        Some(rest) => PathBuf::from(rest),
        None if remote.starts_with('/') => PathBuf::from(remote),
        None => return Err(FetchError::NotLocal(remote.to_owned())),
    };
    if !local.is_dir() {
        return Err(FetchError::NotLocal(remote.to_owned()));
    }
    let scratch = work.join("git");
    let repo = Repository::init_bare(&scratch).map_err(|e| git_err(&scratch, e.message()))?;
    let mut anon = repo
        .remote_anonymous(&local.to_string_lossy())
        .map_err(|e| git_err(&local, e.message()))?;
    anon.fetch(&["+refs/*:refs/fetched/*"], None, None)
        .map_err(|e| git_err(&local, format!("fetching: {}", e.message())))?;
    drop(anon);
    let oid = git2::Oid::from_str(commit).map_err(|e| git_err(&local, e.message()))?;
    if repo.find_commit(oid).is_err() {
        return Err(FetchError::NoSuchCommit {
            remote: remote.to_owned(),
            commit: commit.to_owned(),
        });
    }
    drop(repo);
    Ok(deterministic_tar_gz(&scratch, commit, "", prefix)?)
}
