//! A directory registry's transaction: an exclusive `flock`, a staging folder renamed into
//! place, files replaced by write-to-temp, fsync and rename.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::Path;

use super::*;
use crate::source::dir::DirTree;

pub(super) fn transact_dir<T, E>(
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
pub(super) fn lock_dir(root: &Path) -> Result<File, SourceError> {
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
