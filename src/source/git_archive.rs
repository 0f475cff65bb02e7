//! A module's release read out of its git repository, for `gf-registry publish`: files at a
//! tag, a deterministic `.tar.gz` of the tagged tree, and the `.bcr/`-style extras (patches,
//! overlay files, metadata template) a release may carry.
//!
//! `repo_dir` is always the repository's work tree (what [`locate`] returns); paths inside the
//! repository are `/`-separated and relative to its root. Every call blocks.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use git2::{Commit, ErrorCode, ObjectType, Oid, Repository, Tree};
use tar::{EntryType, Header};

use super::SourceError;

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

/// One entry of a tree being archived.
enum Item {
    Dir,
    File { oid: Oid, executable: bool },
    Symlink { oid: Oid },
}

/// Every entry below `tree` (submodules skipped), with paths relative to it.
fn collect(
    repo: &Repository,
    repo_dir: &Path,
    tree: &Tree<'_>,
    parent: &str,
    out: &mut Vec<(String, Item)>,
) -> Result<(), SourceError> {
    for entry in tree.iter() {
        let name = utf8_name(repo_dir, parent, entry.name_bytes())?;
        let path = join(parent, name);
        let mode = entry.filemode();
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let sub = repo
                    .find_tree(entry.id())
                    .map_err(|e| git_err(repo_dir, e.message()))?;
                collect(repo, repo_dir, &sub, &path, out)?;
                out.push((path, Item::Dir));
            }
            Some(ObjectType::Blob) if mode & MODE_TYPE == MODE_SYMLINK => {
                out.push((path, Item::Symlink { oid: entry.id() }));
            }
            Some(ObjectType::Blob) => out.push((
                path,
                Item::File {
                    oid: entry.id(),
                    executable: mode & 0o111 != 0,
                },
            )),
            // Submodules (commits) and anything else have no content here.
            _ => {}
        }
    }
    Ok(())
}

/// A tar header with every field fixed but the ones given.
fn header(kind: EntryType, mode: u32, size: u64, mtime: u64) -> io::Result<Header> {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("")?;
    h.set_groupname("")?;
    Ok(h)
}

/// Builds a `.tar.gz` of the tree of the commit `rev` names, restricted to `subdir` (`""` for
/// the whole tree), with every entry under `prefix/` (`""` for none).
///
/// The bytes depend only on the tree, the commit time and `prefix`: entries sorted by path
/// (byte order, each folder before its contents, the `prefix/` folder first), folders included
/// (mode 0755), regular files 0644 or 0755 from git's executable bit, symlinks as symlink
/// entries with their git target (mode 0777), submodules skipped; GNU headers (long names as
/// GNU long-name entries), uid/gid 0, empty user/group names, every mtime the commit time;
/// gzip at level 9 with mtime 0 and no file name.
///
/// # Errors
/// [`SourceError::Git`] when `rev` names no commit, `subdir` is not a folder at `rev`, a path
/// is not UTF-8 or cannot be stored in a tar archive.
pub fn deterministic_tar_gz(
    repo_dir: &Path,
    rev: &str,
    subdir: &str,
    prefix: &str,
) -> Result<Vec<u8>, SourceError> {
    let repo = open(repo_dir)?;
    let commit = commit_at(&repo, repo_dir, rev)?;
    let mtime = u64::try_from(commit.time().seconds()).unwrap_or(0);
    let tree = commit.tree().map_err(|e| git_err(repo_dir, e.message()))?;
    let root = subtree(&repo, repo_dir, &tree, subdir)?
        .ok_or_else(|| git_err(repo_dir, format!("`{subdir}` is not a folder at `{rev}`")))?;
    let mut items = Vec::new();
    collect(&repo, repo_dir, &root, "", &mut items)?;
    // `str` order is byte order; a folder's path is a prefix of its contents' paths.
    items.sort_by(|a, b| a.0.cmp(&b.0));

    let prefix = prefix.trim_matches('/');
    let tar_err = |path: &str, e: io::Error| git_err(repo_dir, format!("archiving `{path}`: {e}"));
    let gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::new(9));
    let mut builder = tar::Builder::new(gz);
    if !prefix.is_empty() {
        let mut h =
            header(EntryType::Directory, 0o755, 0, mtime).map_err(|e| tar_err(prefix, e))?;
        builder
            .append_data(&mut h, format!("{prefix}/"), io::empty())
            .map_err(|e| tar_err(prefix, e))?;
    }
    for (rel, item) in &items {
        let path = join(prefix, rel);
        let result = match item {
            Item::Dir => header(EntryType::Directory, 0o755, 0, mtime)
                .and_then(|mut h| builder.append_data(&mut h, format!("{path}/"), io::empty())),
            Item::File { oid, executable } => {
                let blob = repo
                    .find_blob(*oid)
                    .map_err(|e| git_err(repo_dir, e.message()))?;
                let mode = if *executable { 0o755 } else { 0o644 };
                let content = blob.content();
                header(EntryType::Regular, mode, content.len() as u64, mtime)
                    .and_then(|mut h| builder.append_data(&mut h, &path, content))
            }
            Item::Symlink { oid } => {
                let blob = repo
                    .find_blob(*oid)
                    .map_err(|e| git_err(repo_dir, e.message()))?;
                let target = std::str::from_utf8(blob.content()).map_err(|_| {
                    git_err(repo_dir, format!("symlink `{rel}` has a non-UTF-8 target"))
                })?;
                header(EntryType::Symlink, 0o777, 0, mtime)
                    .and_then(|mut h| builder.append_link(&mut h, &path, target))
            }
        };
        result.map_err(|e| tar_err(rel, e))?;
    }
    let gz = builder.into_inner().map_err(|e| tar_err("", e))?;
    gz.finish().map_err(|e| tar_err("", e))
}

/// The folders a `.bcr` may sit in, most specific first: the module root's, then (for a module
/// in a subfolder) the repository root's.
fn bcr_candidates(subdir: &str) -> Vec<String> {
    if subdir.is_empty() {
        vec![BCR_DIR.to_owned()]
    } else {
        vec![join(subdir, BCR_DIR), BCR_DIR.to_owned()]
    }
}

/// Reads the `.bcr/` extras from the tree of the commit `rev` names: `{subdir}/.bcr` when it
/// exists, else the repository root's `.bcr` (only the first one found is used). An absent
/// `.bcr` gives empty extras.
///
/// # Errors
/// [`SourceError::Git`] when the repository cannot be read, or a patch or overlay entry is a
/// symlink, a submodule or has a non-UTF-8 name.
pub fn bcr_extras_at(repo_dir: &Path, rev: &str, subdir: &str) -> Result<BcrExtras, SourceError> {
    let repo = open(repo_dir)?;
    let tree = commit_at(&repo, repo_dir, rev)?
        .tree()
        .map_err(|e| git_err(repo_dir, e.message()))?;
    for dir in bcr_candidates(subdir) {
        let Some(bcr) = subtree(&repo, repo_dir, &tree, &dir)? else {
            continue;
        };
        let mut extras = BcrExtras {
            dir: Some(dir.clone()),
            ..BcrExtras::default()
        };
        if let Some(patches) = subtree(&repo, repo_dir, &bcr, PATCHES_DIR)? {
            let parent = join(&dir, PATCHES_DIR);
            for entry in patches.iter() {
                let name = utf8_name(repo_dir, &parent, entry.name_bytes())?;
                if !name.ends_with(".patch") || entry.kind() == Some(ObjectType::Tree) {
                    continue;
                }
                let content = regular_blob(&repo, repo_dir, &entry, &join(&parent, name))?;
                extras.patches.push(ExtraFile {
                    path: name.to_owned(),
                    content,
                });
            }
        }
        if let Some(overlay) = subtree(&repo, repo_dir, &bcr, OVERLAY_DIR)? {
            let parent = join(&dir, OVERLAY_DIR);
            overlay_files(&repo, repo_dir, &overlay, &parent, "", &mut extras.overlay)?;
        }
        if let Some(entry) = bcr.get_name(METADATA_TEMPLATE)
            && entry.kind() == Some(ObjectType::Blob)
        {
            let path = join(&dir, METADATA_TEMPLATE);
            extras.metadata_template = Some(regular_blob(&repo, repo_dir, &entry, &path)?);
        }
        extras.patches.sort_by(|a, b| a.path.cmp(&b.path));
        extras.overlay.sort_by(|a, b| a.path.cmp(&b.path));
        return Ok(extras);
    }
    Ok(BcrExtras::default())
}

/// The content of a tree entry that must be a regular file.
fn regular_blob(
    repo: &Repository,
    repo_dir: &Path,
    entry: &git2::TreeEntry<'_>,
    path: &str,
) -> Result<Vec<u8>, SourceError> {
    if entry.kind() != Some(ObjectType::Blob) || entry.filemode() & MODE_TYPE != MODE_REGULAR {
        return Err(git_err(
            repo_dir,
            format!("`{path}` must be a regular file (not a symlink or submodule)"),
        ));
    }
    let blob = repo
        .find_blob(entry.id())
        .map_err(|e| git_err(repo_dir, e.message()))?;
    Ok(blob.content().to_vec())
}

fn overlay_files(
    repo: &Repository,
    repo_dir: &Path,
    tree: &Tree<'_>,
    base: &str,
    rel: &str,
    out: &mut Vec<ExtraFile>,
) -> Result<(), SourceError> {
    for entry in tree.iter() {
        let name = utf8_name(repo_dir, &join(base, rel), entry.name_bytes())?;
        let path = join(rel, name);
        if entry.kind() == Some(ObjectType::Tree) {
            let sub = repo
                .find_tree(entry.id())
                .map_err(|e| git_err(repo_dir, e.message()))?;
            overlay_files(repo, repo_dir, &sub, base, &path, out)?;
        } else {
            let content = regular_blob(repo, repo_dir, &entry, &join(base, &path))?;
            out.push(ExtraFile { path, content });
        }
    }
    Ok(())
}

/// Reads the `.bcr/` extras from disk: `module_root/.bcr` when it is a folder, else (for a
/// module root inside a git work tree) the work tree root's `.bcr`. An absent `.bcr` gives
/// empty extras.
///
/// # Errors
/// [`SourceError::Io`] when a file cannot be read or a patch or overlay entry is not a regular
/// file or folder (symlinks are refused); [`SourceError::Git`] for a broken repository.
pub fn bcr_extras_on_disk(module_root: &Path) -> Result<BcrExtras, SourceError> {
    let mut candidates = vec![module_root.join(BCR_DIR)];
    if !candidates[0].is_dir()
        && let Some(loc) = locate(module_root)?
        && !loc.subdir.is_empty()
    {
        candidates.push(loc.repo_dir.join(BCR_DIR));
    }
    for dir in candidates {
        if !dir.is_dir() {
            continue;
        }
        let mut extras = BcrExtras {
            dir: Some(dir.display().to_string()),
            ..BcrExtras::default()
        };
        let patches = dir.join(PATCHES_DIR);
        if patches.is_dir() {
            for entry in fs::read_dir(&patches).map_err(|e| io_err(&patches, e))? {
                let entry = entry.map_err(|e| io_err(&patches, e))?;
                let path = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    return Err(not_utf8(&path));
                };
                let kind = entry.file_type().map_err(|e| io_err(&path, e))?;
                if !name.ends_with(".patch") || kind.is_dir() {
                    continue;
                }
                let content = read_regular(&path, kind)?;
                extras.patches.push(ExtraFile {
                    path: name,
                    content,
                });
            }
        }
        let overlay = dir.join(OVERLAY_DIR);
        if overlay.is_dir() {
            overlay_files_on_disk(&overlay, "", &mut extras.overlay)?;
        }
        let template = dir.join(METADATA_TEMPLATE);
        if template.is_file() {
            extras.metadata_template = Some(fs::read(&template).map_err(|e| io_err(&template, e))?);
        }
        extras.patches.sort_by(|a, b| a.path.cmp(&b.path));
        extras.overlay.sort_by(|a, b| a.path.cmp(&b.path));
        return Ok(extras);
    }
    Ok(BcrExtras::default())
}

fn not_utf8(path: &Path) -> SourceError {
    io_err(
        path,
        io::Error::new(io::ErrorKind::InvalidData, "the name is not UTF-8"),
    )
}

fn read_regular(path: &Path, kind: fs::FileType) -> Result<Vec<u8>, SourceError> {
    if !kind.is_file() {
        return Err(io_err(
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "must be a regular file (not a symlink or special file)",
            ),
        ));
    }
    fs::read(path).map_err(|e| io_err(path, e))
}

fn overlay_files_on_disk(
    dir: &Path,
    rel: &str,
    out: &mut Vec<ExtraFile>,
) -> Result<(), SourceError> {
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(not_utf8(&path));
        };
        let rel_path = join(rel, &name);
        let kind = entry.file_type().map_err(|e| io_err(&path, e))?;
        if kind.is_dir() {
            overlay_files_on_disk(&path, &rel_path, out)?;
        } else {
            let content = read_regular(&path, kind)?;
            out.push(ExtraFile {
                path: rel_path,
                content,
            });
        }
    }
    Ok(())
}

/// Builds throwaway git repositories for tests (here and in the `publish` command's tests, which
/// may not use git2 themselves).
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use git2::{Index, IndexEntry, IndexTime, Oid, Repository, Signature, Time};

    /// A regular file.
    pub(crate) const FILE: u32 = 0o100644;
    /// An executable file.
    pub(crate) const EXEC: u32 = 0o100755;
    /// A symlink; the content is its target.
    pub(crate) const LINK: u32 = 0o120000;
    /// A submodule; the content is ignored.
    pub(crate) const SUBMODULE: u32 = 0o160000;

    /// Initialises a repository with a work tree at `dir`.
    pub(crate) fn init(dir: &Path) {
        Repository::init(dir).unwrap();
    }

    /// Commits a tree holding exactly `files` (`(path, mode, content)`) on `HEAD`, at `time`
    /// (seconds); returns the commit id.
    pub(crate) fn commit(dir: &Path, files: &[(&str, u32, &[u8])], time: i64) -> String {
        let repo = Repository::open(dir).unwrap();
        let mut index = Index::new().unwrap();
        let zero = IndexTime::new(0, 0);
        for (path, mode, content) in files {
            let id = if *mode == SUBMODULE {
                Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap()
            } else {
                repo.blob(content).unwrap()
            };
            index
                .add(&IndexEntry {
                    ctime: zero,
                    mtime: zero,
                    dev: 0,
                    ino: 0,
                    mode: *mode,
                    uid: 0,
                    gid: 0,
                    file_size: 0,
                    id,
                    flags: u16::try_from(path.len().min(0xfff)).unwrap(),
                    flags_extended: 0,
                    path: path.as_bytes().to_vec(),
                })
                .unwrap();
        }
        let tree = repo.find_tree(index.write_tree_to(&repo).unwrap()).unwrap();
        let sig = Signature::new("Test", "test@example.com", &Time::new(time, 0)).unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<_> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, "release", &tree, &parents)
            .unwrap()
            .to_string()
    }

    /// Tags `commit`: annotated when `annotated`, else lightweight.
    pub(crate) fn tag(dir: &Path, name: &str, commit: &str, annotated: bool) {
        let repo = Repository::open(dir).unwrap();
        let target = repo
            .find_object(Oid::from_str(commit).unwrap(), None)
            .unwrap();
        if annotated {
            let sig = Signature::new("Test", "test@example.com", &Time::new(1, 0)).unwrap();
            repo.tag(name, &target, &sig, "a release", false).unwrap();
        } else {
            repo.tag_lightweight(name, &target, false).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::testing::{EXEC, FILE, LINK, SUBMODULE, commit, init, tag};
    use super::*;
    use crate::publish::{ArchiveType, Limits, extract};

    const TIME: i64 = 1_700_000_000;

    fn sample(dir: &Path) -> String {
        init(dir);
        let long = format!("deep/{}/file.txt", "x".repeat(120));
        let files: Vec<(&str, u32, &[u8])> = vec![
            (
                "MODULE.bazel",
                FILE,
                b"module(name = \"foo\", version = \"1.2.0\")\n",
            ),
            ("BUILD.bazel", FILE, b"# build\n"),
            ("tools/run.sh", EXEC, b"#!/bin/sh\necho hi\n"),
            ("tools/link", LINK, b"run.sh"),
            ("a-b.txt", FILE, b"dash\n"),
            ("a/inner.txt", FILE, b"inner\n"),
            ("third_party/sub", SUBMODULE, b""),
            (long.as_str(), FILE, b"long\n"),
        ];
        commit(dir, &files, TIME)
    }

    /// `(path, type, mode, mtime, uid, gid, username, groupname)` of an entry.
    type Listed = (String, EntryType, u32, u64, u64, u64, String, String);

    fn entries(tgz: &[u8]) -> Vec<Listed> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.username().unwrap().unwrap_or_default().to_owned(),
                    h.groupname().unwrap().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn archive_is_deterministic_sorted_and_extracts() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let id = sample(&repo);
        let first = deterministic_tar_gz(&repo, &id, "", "foo-1.2.0").unwrap();
        let second = deterministic_tar_gz(&repo, "HEAD", "", "foo-1.2.0").unwrap();
        assert_eq!(first, second);
        // gzip header: no file name flag, mtime 0, best-compression flag.
        assert_eq!(&first[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);

        let listed = entries(&first);
        let names: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
        let long = format!("foo-1.2.0/deep/{}/file.txt", "x".repeat(120));
        let long_dir = format!("foo-1.2.0/deep/{}/", "x".repeat(120));
        assert_eq!(
            names,
            vec![
                "foo-1.2.0/",
                "foo-1.2.0/BUILD.bazel",
                "foo-1.2.0/MODULE.bazel",
                "foo-1.2.0/a/",
                "foo-1.2.0/a-b.txt",
                "foo-1.2.0/a/inner.txt",
                "foo-1.2.0/deep/",
                long_dir.as_str(),
                long.as_str(),
                "foo-1.2.0/third_party/",
                "foo-1.2.0/tools/",
                "foo-1.2.0/tools/link",
                "foo-1.2.0/tools/run.sh",
            ]
        );
        for (path, kind, mode, mtime, uid, gid, user, group) in &listed {
            assert_eq!(*mtime, TIME as u64, "{path}");
            assert_eq!((*uid, *gid), (0, 0), "{path}");
            assert_eq!((user.as_str(), group.as_str()), ("", ""), "{path}");
            let want = match path.as_str() {
                "foo-1.2.0/tools/run.sh" => (EntryType::Regular, 0o755),
                "foo-1.2.0/tools/link" => (EntryType::Symlink, 0o777),
                p if p.ends_with('/') => (EntryType::Directory, 0o755),
                _ => (EntryType::Regular, 0o644),
            };
            assert_eq!((*kind, *mode), want, "{path}");
        }

        let file = tmp.path().join("foo.tar.gz");
        fs::write(&file, &first).unwrap();
        let dest = tmp.path().join("out");
        let out = extract(
            &file,
            ArchiveType::TarGz,
            "foo-1.2.0",
            &dest,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(out.files, 7);
        assert_eq!(
            fs::read(dest.join("MODULE.bazel")).unwrap(),
            b"module(name = \"foo\", version = \"1.2.0\")\n"
        );
        assert_eq!(fs::read(dest.join(&long[10..])).unwrap(), b"long\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode("tools/run.sh"), 0o755);
            assert_eq!(mode("BUILD.bazel"), 0o644);
            assert_eq!(
                fs::read_link(dest.join("tools/link")).unwrap(),
                Path::new("run.sh")
            );
        }
        assert!(!dest.join("third_party/sub").exists());
    }

    #[test]
    fn archive_of_a_subfolder_and_without_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        init(repo);
        let id = commit(
            repo,
            &[
                ("README", FILE, b"root\n"),
                ("mods/bar/MODULE.bazel", FILE, b"module(name = \"bar\")\n"),
                ("mods/bar/src/x.c", FILE, b"int x;\n"),
                ("mods/baz/y", FILE, b"y\n"),
            ],
            TIME,
        );
        let tgz = deterministic_tar_gz(repo, &id, "mods/bar", "bar-0.1/").unwrap();
        let names: Vec<String> = entries(&tgz).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "bar-0.1/",
                "bar-0.1/MODULE.bazel",
                "bar-0.1/src/",
                "bar-0.1/src/x.c"
            ]
        );
        let tgz = deterministic_tar_gz(repo, &id, "mods/bar", "").unwrap();
        let names: Vec<String> = entries(&tgz).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["MODULE.bazel", "src/", "src/x.c"]);
        let err = deterministic_tar_gz(repo, &id, "mods/nope", "x").unwrap_err();
        assert!(
            err.to_string().contains("`mods/nope` is not a folder"),
            "{err}"
        );
    }

    #[test]
    fn locate_finds_the_repository_and_the_subfolder() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        init(&repo);
        fs::create_dir_all(repo.join("mods/bar")).unwrap();
        let top = locate(&repo).unwrap().unwrap();
        assert_eq!(top.repo_dir, fs::canonicalize(&repo).unwrap());
        assert_eq!(top.subdir, "");
        let sub = locate(&repo.join("mods/bar")).unwrap().unwrap();
        assert_eq!(sub.repo_dir, top.repo_dir);
        assert_eq!(sub.subdir, "mods/bar");
        let sub = locate(&repo.join("mods/bar/../bar/.")).unwrap().unwrap();
        assert_eq!(sub.subdir, "mods/bar");
        let plain = tmp.path().join("plain");
        fs::create_dir(&plain).unwrap();
        // A temp dir is normally outside any repository; only check when it is.
        if Repository::discover(&plain).is_err() {
            assert_eq!(locate(&plain).unwrap(), None);
        }
    }

    #[test]
    fn tags_resolve_peeled() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        init(repo);
        let c1 = commit(
            repo,
            &[("MODULE.bazel", FILE, b"module(version = \"1\")")],
            TIME,
        );
        let c2 = commit(
            repo,
            &[("MODULE.bazel", FILE, b"module(version = \"2\")")],
            TIME + 60,
        );
        tag(repo, "v1", &c1, true);
        tag(repo, "v2", &c2, false);
        assert_eq!(resolve_tag(repo, "v1").unwrap(), c1);
        assert_eq!(resolve_tag(repo, "refs/tags/v1").unwrap(), c1);
        assert_eq!(resolve_tag(repo, "v2").unwrap(), c2);
        let err = resolve_tag(repo, "v3").unwrap_err();
        assert!(err.to_string().contains("no tag `v3`"), "{err}");
        let err = resolve_tag(repo, "bad..name").unwrap_err();
        assert!(err.to_string().contains("no tag"), "{err}");

        // The annotated tag's commit is what is read and archived, at its commit time.
        let c1_tag = resolve_tag(repo, "v1").unwrap();
        assert_eq!(
            read_file_at(repo, &c1_tag, "MODULE.bazel")
                .unwrap()
                .unwrap(),
            b"module(version = \"1\")"
        );
        assert_eq!(
            read_file_at(repo, "refs/tags/v1", "MODULE.bazel")
                .unwrap()
                .unwrap(),
            b"module(version = \"1\")"
        );
        let tgz = deterministic_tar_gz(repo, "v1", "", "p").unwrap();
        assert!(entries(&tgz).iter().all(|e| e.3 == TIME as u64));
        let tgz = deterministic_tar_gz(repo, "v2", "", "p").unwrap();
        assert!(entries(&tgz).iter().all(|e| e.3 == (TIME + 60) as u64));
    }

    #[test]
    fn read_file_at_reads_regular_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        init(repo);
        let id = commit(
            repo,
            &[
                ("a/b.txt", FILE, b"b"),
                ("link", LINK, b"a/b.txt"),
                ("run", EXEC, b"x"),
            ],
            TIME,
        );
        assert_eq!(read_file_at(repo, &id, "a/b.txt").unwrap().unwrap(), b"b");
        assert_eq!(read_file_at(repo, &id, "run").unwrap().unwrap(), b"x");
        assert_eq!(read_file_at(repo, &id, "link").unwrap(), None);
        assert_eq!(read_file_at(repo, &id, "a").unwrap(), None);
        assert_eq!(read_file_at(repo, &id, "nope/x").unwrap(), None);
        assert!(read_file_at(repo, "no-such-rev", "a/b.txt").is_err());
        assert!(read_file_at(&tmp.path().join("missing"), &id, "a/b.txt").is_err());
    }

    #[test]
    fn bcr_extras_from_the_tagged_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        init(repo);
        let id = commit(
            repo,
            &[
                (".bcr/patches/b.patch", FILE, b"B"),
                (".bcr/patches/a.patch", FILE, b"A"),
                (".bcr/patches/README.md", FILE, b"not a patch"),
                (".bcr/overlay/BUILD.bazel", FILE, b"build"),
                (".bcr/overlay/src/z/BUILD", FILE, b"z"),
                (".bcr/overlay/src/a.bzl", FILE, b"a"),
                (".bcr/metadata.template.json", FILE, b"{}"),
                (".bcr/presubmit.yml", FILE, b"x"),
                ("mods/bar/.bcr/patches/only.patch", FILE, b"O"),
                ("mods/baz/MODULE.bazel", FILE, b""),
            ],
            TIME,
        );
        let root = bcr_extras_at(repo, &id, "").unwrap();
        assert_eq!(root.dir.as_deref(), Some(".bcr"));
        let names = |v: &[ExtraFile]| v.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(names(&root.patches), ["a.patch", "b.patch"]);
        assert_eq!(root.patches[0].content, b"A");
        assert_eq!(
            names(&root.overlay),
            ["BUILD.bazel", "src/a.bzl", "src/z/BUILD"]
        );
        assert_eq!(root.metadata_template.as_deref(), Some(&b"{}"[..]));

        // A module in a subfolder with its own `.bcr` uses that one only.
        let bar = bcr_extras_at(repo, &id, "mods/bar").unwrap();
        assert_eq!(bar.dir.as_deref(), Some("mods/bar/.bcr"));
        assert_eq!(names(&bar.patches), ["only.patch"]);
        assert!(bar.overlay.is_empty() && bar.metadata_template.is_none());
        // Without one, the repository root's.
        let baz = bcr_extras_at(repo, &id, "mods/baz").unwrap();
        assert_eq!(baz, root);

        // Read from the tag, not the work tree (which is empty here).
        let none = commit(repo, &[("MODULE.bazel", FILE, b"")], TIME);
        assert_eq!(
            bcr_extras_at(repo, &none, "").unwrap(),
            BcrExtras::default()
        );
    }

    #[test]
    fn bcr_overlay_symlinks_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        init(repo);
        let id = commit(
            repo,
            &[
                (".bcr/overlay/MODULE.bazel", LINK, b"../MODULE.bazel"),
                ("MODULE.bazel", FILE, b""),
            ],
            TIME,
        );
        let err = bcr_extras_at(repo, &id, "").unwrap_err();
        assert!(
            err.to_string()
                .contains("`.bcr/overlay/MODULE.bazel` must be a regular file"),
            "{err}"
        );
    }

    #[test]
    fn bcr_extras_on_disk_prefer_the_module_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        init(&root);
        let write = |p: &str, c: &str| {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, c).unwrap();
        };
        write(".bcr/patches/2.patch", "two");
        write(".bcr/patches/1.patch", "one");
        write(".bcr/patches/notes.txt", "x");
        write(".bcr/overlay/b/c.txt", "c");
        write(".bcr/overlay/a.txt", "a");
        write(".bcr/metadata.template.json", "{\"homepage\": \"h\"}");
        write("mods/bar/MODULE.bazel", "");
        write("mods/own/.bcr/overlay/BUILD", "own");

        let top = bcr_extras_on_disk(&root).unwrap();
        let names = |v: &[ExtraFile]| v.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(names(&top.patches), ["1.patch", "2.patch"]);
        assert_eq!(names(&top.overlay), ["a.txt", "b/c.txt"]);
        assert_eq!(top.overlay[1].content, b"c");
        assert!(top.metadata_template.is_some());

        let bar = bcr_extras_on_disk(&root.join("mods/bar")).unwrap();
        assert_eq!(names(&bar.patches), ["1.patch", "2.patch"]);
        let own = bcr_extras_on_disk(&root.join("mods/own")).unwrap();
        assert_eq!(names(&own.overlay), ["BUILD"]);
        assert!(own.patches.is_empty() && own.metadata_template.is_none());

        let plain = tmp.path().join("plain");
        fs::create_dir(&plain).unwrap();
        if Repository::discover(&plain).is_err() {
            assert_eq!(bcr_extras_on_disk(&plain).unwrap(), BcrExtras::default());
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("a.txt", root.join(".bcr/overlay/l")).unwrap();
            let err = bcr_extras_on_disk(&root).unwrap_err();
            assert!(err.to_string().contains("must be a regular file"), "{err}");
        }
    }

    #[test]
    fn gzip_stream_is_complete() {
        let tmp = tempfile::tempdir().unwrap();
        let id = sample(tmp.path());
        let tgz = deterministic_tar_gz(tmp.path(), &id, "", "p").unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&tgz[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len() % 512, 0);
        assert!(raw[raw.len() - 1024..].iter().all(|b| *b == 0));
    }
}

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
