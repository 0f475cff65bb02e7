//! The patch's contact with the disk: reading targets without following symlinks, and
//! writing the result (temporary file + rename) once everything applied.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use super::apply::{Slot, Tree};
use super::{ApplyReport, DEFAULT_MODE, MAX_FILE_BYTES, PatchError};

impl Tree<'_> {
    /// Refuses to make `path` a file when the patch already made one of its parents a file or
    /// put files under it.
    pub(super) fn check_shape(&self, path: &str, line: usize) -> Result<(), PatchError> {
        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            if self
                .files
                .get(parent)
                .is_some_and(|slot| slot.content.is_some())
            {
                return Err(self.not_a_file(line, path, format!("`{parent}` is a file")));
            }
        }
        let below = format!("{path}/");
        if let Some((child, _)) = self
            .files
            .range(below.clone()..)
            .take_while(|(key, _)| key.starts_with(&below))
            .find(|(_, slot)| slot.content.is_some())
        {
            return Err(self.not_a_file(
                line,
                path,
                format!("it is a directory holding `{child}`"),
            ));
        }
        Ok(())
    }

    /// Reads `path` from disk, refusing symlinks anywhere on the way.
    pub(super) fn load(&self, path: &str, line: usize) -> Result<Slot, PatchError> {
        let absent = Slot {
            content: None,
            mode: DEFAULT_MODE,
            on_disk: false,
            dirty: false,
            line,
        };
        let Some(metadata) = self.probe(path, line)? else {
            return Ok(absent);
        };
        let full = self.root.join(path);
        let too_large = || PatchError::FileTooLarge {
            patch: self.patch.to_owned(),
            file: path.to_owned(),
            max: MAX_FILE_BYTES,
        };
        if metadata.len() > MAX_FILE_BYTES {
            return Err(too_large());
        }
        let file = fs::File::open(&full).map_err(|e| self.io(&full, e))?;
        let mut content = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut content)
            .map_err(|e| self.io(&full, e))?;
        if content.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large());
        }
        Ok(Slot {
            content: Some(content),
            mode: disk_mode(&metadata),
            on_disk: true,
            dirty: false,
            line,
        })
    }

    /// Walks `path` under the root component by component without following symlinks;
    /// returns the file's metadata, or `None` if some component does not exist.
    pub(super) fn probe(
        &self,
        path: &str,
        line: usize,
    ) -> Result<Option<fs::Metadata>, PatchError> {
        let components: Vec<&str> = path.split('/').collect();
        let mut current = self.root.to_path_buf();
        for (i, component) in components.iter().enumerate() {
            current.push(component);
            let shown = components[..=i].join("/");
            let metadata = match fs::symlink_metadata(&current) {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.io(&current, e)),
            };
            let last = i + 1 == components.len();
            if metadata.file_type().is_symlink() {
                return Err(PatchError::UnsafePath {
                    patch: self.patch.to_owned(),
                    line,
                    path: path.to_owned(),
                    reason: if last {
                        "it is a symlink".to_owned()
                    } else {
                        format!("`{shown}` is a symlink")
                    },
                });
            }
            if last {
                return if metadata.is_file() {
                    Ok(Some(metadata))
                } else if metadata.is_dir() {
                    Err(self.not_a_file(line, path, "it is a directory".to_owned()))
                } else {
                    Err(self.not_a_file(line, path, "it is not a regular file".to_owned()))
                };
            }
            if !metadata.is_dir() {
                return Err(self.not_a_file(line, path, format!("`{shown}` is not a directory")));
            }
        }
        Ok(None)
    }

    /// Writes every changed file (temporary file + rename), then removes deleted ones.
    pub(super) fn commit(self) -> Result<ApplyReport, PatchError> {
        for path in &self.order {
            if let Some(Slot {
                content: Some(content),
                mode,
                line,
                ..
            }) = self.files.get(path)
            {
                self.write(path, *line, content, *mode)?;
            }
        }
        for path in &self.order {
            if let Some(Slot {
                content: None,
                on_disk: true,
                ..
            }) = self.files.get(path)
            {
                let full = self.root.join(path);
                fs::remove_file(&full).map_err(|e| self.io(&full, e))?;
            }
        }
        Ok(ApplyReport {
            files_changed: self.order,
        })
    }

    pub(super) fn write(
        &self,
        path: &str,
        line: usize,
        content: &[u8],
        mode: u32,
    ) -> Result<(), PatchError> {
        let components: Vec<&str> = path.split('/').collect();
        let mut dir = self.root.to_path_buf();
        let parents = components.len().saturating_sub(1);
        for (i, component) in components.iter().take(parents).enumerate() {
            dir.push(component);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(PatchError::UnsafePath {
                        patch: self.patch.to_owned(),
                        line,
                        path: path.to_owned(),
                        reason: format!("`{}` is a symlink", components[..=i].join("/")),
                    });
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    let reason = format!("`{}` is not a directory", components[..=i].join("/"));
                    return Err(self.not_a_file(line, path, reason));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&dir).map_err(|e| self.io(&dir, e))?;
                    set_dir_mode(&dir).map_err(|e| self.io(&dir, e))?;
                }
                Err(e) => return Err(self.io(&dir, e)),
            }
        }
        let full = self.root.join(path);
        let mut tmp = tempfile::Builder::new()
            .prefix(".patch-")
            .tempfile_in(&dir)
            .map_err(|e| self.io(&dir, e))?;
        tmp.write_all(content).map_err(|e| self.io(tmp.path(), e))?;
        set_mode(tmp.as_file(), mode).map_err(|e| self.io(tmp.path(), e))?;
        // `rename` replaces the directory entry itself: it never writes through a symlink.
        tmp.persist(&full).map_err(|e| self.io(&full, e.error))?;
        Ok(())
    }
}

#[cfg(unix)]
pub(super) fn disk_mode(metadata: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
pub(super) fn disk_mode(_metadata: &fs::Metadata) -> u32 {
    DEFAULT_MODE
}

#[cfg(unix)]
pub(super) fn set_mode(file: &fs::File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
pub(super) fn set_mode(_file: &fs::File, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Directories a patch creates get `0o755`, like the extracted ones.
#[cfg(unix)]
pub(super) fn set_dir_mode(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
pub(super) fn set_dir_mode(_dir: &Path) -> io::Result<()> {
    Ok(())
}
