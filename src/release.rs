//! A module's release read out of its git repository, for `gf-registry publish`: files at a
//! tag, a deterministic `.tar.gz` of the tagged tree, and the `.bcr/`-style extras (patches,
//! overlay files, metadata template) a release may carry.
//!
//! `repo_dir` is always the repository's work tree (what [`locate`] returns); paths inside the
//! repository are `/`-separated and relative to its root. Every call blocks.
//!
//! This is not a registry source (those are in `crate::source`): it reads the module's own
//! repository, for the `publish` command and for `git_repository` publishes. It sits on the
//! same floor as `source`, the only other place that uses git2.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use git2::{Commit, ErrorCode, ObjectType, Repository, Tree};

use crate::source::SourceError;

mod extras;
mod fetch;
mod tarball;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use extras::{bcr_extras_at, bcr_extras_on_disk};
pub use fetch::{FetchError, fetch_commit_tar_gz};
pub use tarball::deterministic_tar_gz;

/// git's file mode bits for the kind of a tree entry.
const MODE_TYPE: i32 = 0o170000;
const MODE_REGULAR: i32 = 0o100000;
const MODE_SYMLINK: i32 = 0o120000;

/// The `.bcr/` folder of a release.
const BCR_DIR: &str = ".bcr";
const PATCHES_DIR: &str = "patches";
const OVERLAY_DIR: &str = "overlay";
const METADATA_TEMPLATE: &str = "metadata.template.json";

/// Where a module root sits in its git repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoLocation {
    /// The repository's work tree: the `repo_dir` the other functions take.
    pub repo_dir: PathBuf,
    /// The module root relative to the work tree, `/`-separated; `""` when it is the work tree.
    pub subdir: String,
}

/// One file of the `.bcr/` extras.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// For a patch its file name; for an overlay file its `/`-separated path below `overlay/`.
    pub path: String,
    /// The file's bytes.
    pub content: Vec<u8>,
}

/// What a release's `.bcr/` folder holds for publishing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BcrExtras {
    /// The `.bcr` folder the extras came from (a repository path, or a path on disk); `None`
    /// when there is none.
    pub dir: Option<String>,
    /// `.bcr/patches/*.patch`, sorted by file name (byte order).
    pub patches: Vec<ExtraFile>,
    /// Every file below `.bcr/overlay/`, sorted by path (byte order).
    pub overlay: Vec<ExtraFile>,
    /// `.bcr/metadata.template.json`, when present.
    pub metadata_template: Option<Vec<u8>>,
}

fn git_err(repo: &Path, e: impl std::fmt::Display) -> SourceError {
    SourceError::Git {
        repo: repo.to_path_buf(),
        message: e.to_string(),
    }
}

fn io_err(path: &Path, source: io::Error) -> SourceError {
    SourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn open(repo_dir: &Path) -> Result<Repository, SourceError> {
    Repository::open(repo_dir).map_err(|e| git_err(repo_dir, e.message()))
}

fn commit_at<'r>(
    repo: &'r Repository,
    repo_dir: &Path,
    rev: &str,
) -> Result<Commit<'r>, SourceError> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| {
            git_err(
                repo_dir,
                format!("`{rev}` does not name a commit: {}", e.message()),
            )
        })
}

/// Joins `/`-separated relative paths, either of which may be empty.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}/{b}"),
    }
}

/// The tree at `path` below `root` (`""` is `root` itself); `None` when absent or not a tree.
fn subtree<'r>(
    repo: &'r Repository,
    repo_dir: &Path,
    root: &Tree<'r>,
    path: &str,
) -> Result<Option<Tree<'r>>, SourceError> {
    if path.is_empty() {
        return Ok(Some(root.clone()));
    }
    let entry = match root.get_path(Path::new(path)) {
        Ok(e) => e,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(git_err(repo_dir, e.message())),
    };
    if entry.kind() != Some(ObjectType::Tree) {
        return Ok(None);
    }
    repo.find_tree(entry.id())
        .map(Some)
        .map_err(|e| git_err(repo_dir, e.message()))
}

fn utf8_name<'a>(repo_dir: &Path, parent: &str, name: &'a [u8]) -> Result<&'a str, SourceError> {
    std::str::from_utf8(name).map_err(|_| {
        git_err(
            repo_dir,
            format!(
                "`{}` is not a UTF-8 path",
                join(parent, &String::from_utf8_lossy(name))
            ),
        )
    })
}

/// Finds the git repository holding `module_root` (the folder itself or a parent) and where the
/// module root sits in its work tree. `Ok(None)` when no repository holds it.
///
/// # Errors
/// [`SourceError::Io`] when `module_root` cannot be resolved; [`SourceError::Git`] for a bare
/// repository or a broken one.
pub fn locate(module_root: &Path) -> Result<Option<RepoLocation>, SourceError> {
    let root = fs::canonicalize(module_root).map_err(|e| io_err(module_root, e))?;
    let repo = match Repository::discover(&root) {
        Ok(r) => r,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(git_err(&root, e.message())),
    };
    let Some(workdir) = repo.workdir() else {
        return Err(git_err(
            repo.path(),
            "bare repository: give a folder of its work tree",
        ));
    };
    let workdir = fs::canonicalize(workdir).map_err(|e| io_err(workdir, e))?;
    let rel = root.strip_prefix(&workdir).map_err(|_| {
        git_err(
            &workdir,
            format!("{} is not inside the work tree", root.display()),
        )
    })?;
    let mut parts = Vec::new();
    for c in rel.components() {
        let part = c.as_os_str().to_str().ok_or_else(|| {
            git_err(
                &workdir,
                format!("{} is not a UTF-8 path", module_root.display()),
            )
        })?;
        parts.push(part.to_owned());
    }
    Ok(Some(RepoLocation {
        repo_dir: workdir,
        subdir: parts.join("/"),
    }))
}

/// Resolves a tag (`X` or `refs/tags/X`; annotated tags are peeled) to its commit id (hex).
///
/// # Errors
/// [`SourceError::Git`] when there is no such tag or it does not point to a commit.
pub fn resolve_tag(repo_dir: &Path, tag: &str) -> Result<String, SourceError> {
    let repo = open(repo_dir)?;
    let short = tag.strip_prefix("refs/tags/").unwrap_or(tag);
    let reference = match repo.find_reference(&format!("refs/tags/{short}")) {
        Ok(r) => r,
        Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => {
            return Err(git_err(repo_dir, format!("no tag `{short}`")));
        }
        Err(e) => return Err(git_err(repo_dir, e.message())),
    };
    let commit = reference.peel_to_commit().map_err(|e| {
        git_err(
            repo_dir,
            format!("tag `{short}` does not point to a commit: {}", e.message()),
        )
    })?;
    Ok(commit.id().to_string())
}

/// Reads the regular file at `path` (relative to the repository root) in the commit `rev`
/// names. `Ok(None)` when it is absent, a folder, a symlink or a submodule.
///
/// # Errors
/// [`SourceError::Git`] when the repository cannot be read or `rev` names no commit.
pub fn read_file_at(
    repo_dir: &Path,
    rev: &str,
    path: &str,
) -> Result<Option<Vec<u8>>, SourceError> {
    let repo = open(repo_dir)?;
    let tree = commit_at(&repo, repo_dir, rev)?
        .tree()
        .map_err(|e| git_err(repo_dir, e.message()))?;
    let entry = match tree.get_path(Path::new(path)) {
        Ok(e) => e,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(git_err(repo_dir, e.message())),
    };
    if entry.kind() != Some(ObjectType::Blob) || entry.filemode() & MODE_TYPE != MODE_REGULAR {
        return Ok(None);
    }
    let blob = repo
        .find_blob(entry.id())
        .map_err(|e| git_err(repo_dir, e.message()))?;
    Ok(Some(blob.content().to_vec()))
}
