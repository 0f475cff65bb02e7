//! Where the registry's files come from: a plain directory, or a git repository at a ref.
//!
//! This layer owns filesystem and git2 access for the registry role. It hands out immutable
//! [`Tree`] snapshots; the domain layer (`registry`) reads through them and never sees git2.
//! Every call here blocks: run it through [`crate::tasks::spawn_blocking`].

mod dir;
mod git;
pub mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use dir::DirTree;
pub use git::GitSource;

/// What an entry of a listed folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or a git blob).
    File,
    /// A folder (or a git tree).
    Dir,
    /// A symbolic link; never followed.
    Symlink,
    /// Anything else (device, socket, git submodule).
    Other,
}

/// One entry of a listed folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's file name.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
}

/// A failure to read the registry source (not an absent file: that is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Filesystem error on a path.
    #[error("reading {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// git error.
    #[error("git registry {repo}: {message}")]
    Git {
        /// The repository.
        repo: PathBuf,
        /// What failed.
        message: String,
    },
    /// The registry path does not exist or is not a folder.
    #[error("registry {0} is not a directory or git repository")]
    NotARegistry(PathBuf),
}

/// An immutable view of the registry tree: one git commit, or a directory as it is on disk.
///
/// Paths are `/`-separated and relative to the registry root; callers validate them first.
pub trait Tree: Send + Sync + fmt::Debug {
    /// Identifies the content: a commit id, or `directory` for a live directory.
    fn revision(&self) -> &str;

    /// Whether files may change under this tree without a new revision (a plain directory).
    fn is_live(&self) -> bool;

    /// Reads a regular file. `Ok(None)` when it is absent, a folder, or a symlink.
    ///
    /// # Errors
    /// [`SourceError`] when the source cannot be read.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, SourceError>;

    /// Lists a folder (`""` is the root). `Ok(None)` when it is absent or not a folder.
    ///
    /// # Errors
    /// [`SourceError`] when the source cannot be read.
    fn list(&self, path: &str) -> Result<Option<Vec<DirEntry>>, SourceError>;

    /// The modification time of a file or folder, where the source has one (directories).
    ///
    /// # Errors
    /// [`SourceError`] when the source cannot be read.
    fn modified(&self, path: &str) -> Result<Option<std::time::SystemTime>, SourceError> {
        let _ = path;
        Ok(None)
    }
}

/// The configured registry source: a directory or a git repository at a ref.
#[derive(Debug, Clone)]
pub enum RegistrySource {
    /// A plain directory, served as it is on disk.
    Dir(Arc<DirTree>),
    /// A git repository, served at the commit its ref points to.
    Git(GitSource),
}

impl RegistrySource {
    /// Opens `path` as a git repository when it is one (the folder itself, not a parent),
    /// otherwise as a directory. `git_ref` only applies to git (default: the current branch).
    ///
    /// # Errors
    /// [`SourceError::NotARegistry`] when the path is neither; git errors for a bad ref.
    pub fn open(path: &Path, git_ref: Option<&str>) -> Result<Self, SourceError> {
        if !path.is_dir() {
            return Err(SourceError::NotARegistry(path.to_path_buf()));
        }
        if let Some(git) = GitSource::open_if_repository(path, git_ref)? {
            return Ok(Self::Git(git));
        }
        Ok(Self::Dir(Arc::new(DirTree::new(path))))
    }

    /// The tree as it is now: for git, the commit the ref points to at this moment.
    ///
    /// # Errors
    /// [`SourceError`] when the ref cannot be resolved.
    pub fn current(&self) -> Result<Arc<dyn Tree>, SourceError> {
        match self {
            Self::Dir(d) => Ok(d.clone()),
            Self::Git(g) => Ok(Arc::new(g.snapshot()?)),
        }
    }

    /// A short description for logs: `directory /x` or `git /x @ main`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Dir(d) => format!("directory {}", d.root().display()),
            Self::Git(g) => format!("git {} @ {}", g.path().display(), g.ref_name()),
        }
    }
}
