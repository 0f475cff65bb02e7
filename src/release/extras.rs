//! The `.bcr/`-style extras a release carries: patches, overlay files, metadata template.

use std::fs;
use std::io;
use std::path::Path;

use git2::{ObjectType, Repository, Tree};

use super::*;
use crate::source::SourceError;

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
