//! A deterministic `.tar.gz` of a tree at a commit.

use std::io;
use std::path::Path;

use flate2::{Compression, GzBuilder};
use git2::{ObjectType, Oid, Repository, Tree};
use tar::{EntryType, Header};

use super::*;
use crate::source::SourceError;

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
