//! A registry served from a plain directory.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{DirEntry, EntryKind, SourceError, Tree};

/// A directory on disk. Symlinks are never followed: a path through one reads as absent.
#[derive(Debug)]
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    /// A tree rooted at `root`. The root itself may be reached through a symlink (it is
    /// resolved once here); nothing below it may be.
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Self {
            root: fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
        }
    }

    /// The root folder.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a relative path, checking that no component is a symlink or leaves the root.
    /// `Ok(None)` when a component is missing, is a symlink, or is not a plain name.
    fn resolve(&self, rel: &str) -> Result<Option<(PathBuf, fs::Metadata)>, SourceError> {
        let mut path = self.root.clone();
        let mut meta = None;
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." || part.contains('\\') || part.contains('\0') {
                return Ok(None);
            }
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => return Ok(None),
                Ok(m) => meta = Some(m),
                Err(e) if is_absent(&e) => return Ok(None),
                Err(source) => return Err(SourceError::Io { path, source }),
            }
        }
        let meta = match meta {
            Some(m) => m,
            None => fs::symlink_metadata(&path).map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })?,
        };
        Ok(Some((path, meta)))
    }
}

fn is_absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

impl Tree for DirTree {
    fn revision(&self) -> &str {
        "directory"
    }

    fn is_live(&self) -> bool {
        true
    }

    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let Some((path, meta)) = self.resolve(rel)? else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(source) => Err(SourceError::Io { path, source }),
        }
    }

    fn modified(&self, rel: &str) -> Result<Option<std::time::SystemTime>, SourceError> {
        Ok(self
            .resolve(rel)?
            .and_then(|(_, meta)| meta.modified().ok()))
    }

    fn list(&self, rel: &str) -> Result<Option<Vec<DirEntry>>, SourceError> {
        let Some((path, meta)) = self.resolve(rel)? else {
            return Ok(None);
        };
        if !meta.is_dir() {
            return Ok(None);
        }
        let io = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let ft = entry.file_type().map_err(io)?;
            let kind = if ft.is_symlink() {
                EntryKind::Symlink
            } else if ft.is_dir() {
                EntryKind::Dir
            } else if ft.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            };
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(out))
    }
}
