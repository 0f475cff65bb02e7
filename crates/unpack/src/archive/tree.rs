//! The extracted tree as it is built: what each path is, symlink resolution inside the root,
//! and the file-system calls that write it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::budget::Budget;
use super::error::io_error;
use super::names::{components, entry_components, is_absolute, too_long};
use super::{ArchiveError, Limits, MAX_SYMLINK_HOPS};

/// What an entry is, once its type is known.
pub(super) enum Kind {
    Dir,
    File { exec: bool },
    Symlink { target: String },
    Hardlink { target: String },
}

/// What has been written at a path (relative to the root, `/`-joined).
pub(super) enum Node {
    Dir { explicit: bool },
    File { exec: bool },
    Symlink { entry: String, target: String },
}

/// The extracted tree and its bookkeeping; the map is authoritative, the disk is never asked
/// what a path is (so nothing is ever followed through a symlink the archive planted).
pub(super) struct Tree<'a> {
    pub(super) dest: &'a Path,
    pub(super) prefix: Vec<String>,
    pub(super) prefix_raw: &'a str,
    pub(super) limits: &'a Limits,
    pub(super) nodes: HashMap<String, Node>,
    pub(super) entries: u64,
    pub(super) files: u64,
    pub(super) bytes: u64,
    pub(super) matched: bool,
}

impl Tree<'_> {
    /// Counts one more entry against [`Limits::max_entries`].
    pub(super) fn count_entry(&mut self, entry: &str) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                entry: entry.to_owned(),
                max: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// The path of `entry` relative to the root, or `None` when it lies outside the prefix.
    /// An empty result is the prefix directory itself.
    pub(super) fn relative(&self, entry: &str) -> Result<Option<Vec<String>>, ArchiveError> {
        let parts = entry_components(entry, self.limits)?;
        if parts.len() < self.prefix.len() || parts[..self.prefix.len()] != self.prefix[..] {
            return Ok(None);
        }
        Ok(Some(parts[self.prefix.len()..].to_vec()))
    }

    pub(super) fn path_of(&self, rel: &[String]) -> PathBuf {
        let mut path = self.dest.to_path_buf();
        path.extend(rel);
        path
    }

    /// Places one entry. `rel` is its path under the root (empty: the prefix directory);
    /// `body` its data. Returns the data bytes read from `body`.
    pub(super) fn place(
        &mut self,
        entry: &str,
        rel: Vec<String>,
        kind: Kind,
        body: &mut dyn Read,
        budget: &Budget,
        charge: bool,
    ) -> Result<u64, ArchiveError> {
        if rel.is_empty() {
            if let Kind::Dir = kind {
                return Ok(0);
            }
            if self.prefix.is_empty() {
                return Err(ArchiveError::InvalidName {
                    entry: entry.to_owned(),
                    reason: "it names the root directory but is not a directory",
                });
            }
            return Err(ArchiveError::InvalidStripPrefix {
                prefix: self.prefix_raw.to_owned(),
                reason: format!("it names the non-directory entry `{entry}`"),
            });
        }
        self.matched = true;
        self.make_parents(entry, &rel)?;
        let key = rel.join("/");
        let path = self.path_of(&rel);
        match kind {
            Kind::Dir => {
                match self.nodes.get_mut(&key) {
                    Some(Node::Dir { explicit }) if !*explicit => *explicit = true,
                    Some(_) => {
                        return Err(ArchiveError::Duplicate {
                            entry: entry.to_owned(),
                        });
                    }
                    None => {
                        make_dir(&path)?;
                        self.nodes.insert(key, Node::Dir { explicit: true });
                    }
                }
                Ok(0)
            }
            Kind::File { exec } => {
                self.check_free(entry, &key)?;
                let mut out = create_file(&path)?;
                let written = copy_counted(body, Some((&mut out, &path)), budget, charge)?;
                out.flush().map_err(|e| io_error(&path, e))?;
                drop(out);
                set_mode(&path, exec)?;
                self.nodes.insert(key, Node::File { exec });
                self.files += 1;
                self.bytes += written;
                Ok(written)
            }
            Kind::Symlink { target } => {
                self.check_free(entry, &key)?;
                if target.len() > self.limits.max_path_len {
                    return Err(too_long(entry, self.limits));
                }
                if target.is_empty() || target.contains('\0') {
                    return Err(ArchiveError::InvalidName {
                        entry: entry.to_owned(),
                        reason: "its symlink target is empty or contains a NUL byte",
                    });
                }
                self.check_symlink(entry, &key, &target)?;
                make_symlink(entry, &target, &path)?;
                self.nodes.insert(
                    key,
                    Node::Symlink {
                        entry: entry.to_owned(),
                        target,
                    },
                );
                self.files += 1;
                Ok(0)
            }
            Kind::Hardlink { target } => {
                self.check_free(entry, &key)?;
                let bad = || ArchiveError::BadHardlink {
                    entry: entry.to_owned(),
                    target: target.clone(),
                };
                let source_rel = match self.relative(&target) {
                    Ok(Some(rel)) if !rel.is_empty() => rel,
                    _ => return Err(bad()),
                };
                let exec = match self.nodes.get(&source_rel.join("/")) {
                    Some(Node::File { exec }) => *exec,
                    _ => return Err(bad()),
                };
                let source = self.path_of(&source_rel);
                let mut input = File::open(&source).map_err(|e| io_error(&source, e))?;
                let mut out = create_file(&path)?;
                // The copy is local data, but counts like any unpacked bytes (a bomb of
                // hardlinks to one big file is still a bomb).
                let written = copy_local(&mut input, &source, &mut out, &path, budget)?;
                drop(out);
                set_mode(&path, exec)?;
                self.nodes.insert(key, Node::File { exec });
                self.files += 1;
                self.bytes += written;
                Ok(0)
            }
        }
    }

    /// Refuses a second entry at `key`.
    pub(super) fn check_free(&self, entry: &str, key: &str) -> Result<(), ArchiveError> {
        match self.nodes.get(key) {
            None => Ok(()),
            Some(Node::Dir { explicit: false }) => Err(ArchiveError::PathConflict {
                entry: entry.to_owned(),
                other: format!("{key}/"),
            }),
            Some(_) => Err(ArchiveError::Duplicate {
                entry: entry.to_owned(),
            }),
        }
    }

    /// Creates the missing parent directories of `rel`, refusing to go through a symlink or
    /// a file.
    pub(super) fn make_parents(&mut self, entry: &str, rel: &[String]) -> Result<(), ArchiveError> {
        let mut key = String::new();
        for (depth, part) in rel[..rel.len() - 1].iter().enumerate() {
            if depth > 0 {
                key.push('/');
            }
            key.push_str(part);
            match self.nodes.get(&key) {
                Some(Node::Dir { .. }) => {}
                Some(Node::Symlink { .. }) => {
                    return Err(ArchiveError::ThroughSymlink {
                        entry: entry.to_owned(),
                        link: key,
                    });
                }
                Some(Node::File { .. }) => {
                    return Err(ArchiveError::PathConflict {
                        entry: entry.to_owned(),
                        other: key,
                    });
                }
                None => {
                    make_dir(&self.path_of(&rel[..=depth]))?;
                    self.nodes
                        .insert(key.clone(), Node::Dir { explicit: false });
                }
            }
        }
        Ok(())
    }

    /// Resolves the target of the symlink at `key` inside the tree as it stands, following
    /// the tree's symlinks; refuses it if it leaves the root or loops.
    pub(super) fn check_symlink(
        &self,
        entry: &str,
        key: &str,
        target: &str,
    ) -> Result<(), ArchiveError> {
        let escape = || ArchiveError::SymlinkEscape {
            entry: entry.to_owned(),
            target: target.to_owned(),
        };
        if is_absolute(target) {
            return Err(escape());
        }
        let mut at: Vec<String> = key.split('/').map(str::to_owned).collect();
        at.pop();
        // Components still to walk, last one first.
        let mut pending: Vec<String> = components(target).rev().map(str::to_owned).collect();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                if at.pop().is_none() {
                    return Err(escape());
                }
                continue;
            }
            at.push(part);
            if let Some(Node::Symlink { target: next, .. }) = self.nodes.get(&at.join("/")) {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ArchiveError::SymlinkLoop {
                        entry: entry.to_owned(),
                        target: target.to_owned(),
                    });
                }
                if is_absolute(next) {
                    return Err(escape());
                }
                at.pop();
                pending.extend(components(next).rev().map(str::to_owned));
            }
        }
        Ok(())
    }

    /// Checks what can only be checked once every entry is in: the prefix matched something,
    /// and no symlink escapes through a symlink extracted after it.
    pub(super) fn finish(&self) -> Result<(), ArchiveError> {
        if !self.prefix.is_empty() && !self.matched {
            return Err(ArchiveError::StripPrefixNotFound {
                prefix: self.prefix_raw.to_owned(),
            });
        }
        let mut links: Vec<(&String, &String, &String)> = self
            .nodes
            .iter()
            .filter_map(|(key, node)| match node {
                Node::Symlink { entry, target } => Some((key, entry, target)),
                _ => None,
            })
            .collect();
        links.sort();
        for (key, entry, target) in links {
            self.check_symlink(entry, key, target)?;
        }
        Ok(())
    }
}

pub(super) fn make_dir(path: &Path) -> Result<(), ArchiveError> {
    fs::create_dir(path).map_err(|e| io_error(path, e))?;
    set_permissions(path, 0o755)
}

pub(super) fn create_file(path: &Path) -> Result<File, ArchiveError> {
    // `create_new`: never opens an existing path, and never follows a symlink.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error(path, e))
}

pub(super) fn set_mode(path: &Path, exec: bool) -> Result<(), ArchiveError> {
    set_permissions(path, if exec { 0o755 } else { 0o644 })
}

#[cfg(unix)]
pub(super) fn set_permissions(path: &Path, mode: u32) -> Result<(), ArchiveError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_error(path, e))
}

#[cfg(not(unix))]
pub(super) fn set_permissions(_path: &Path, _mode: u32) -> Result<(), ArchiveError> {
    Ok(())
}

#[cfg(unix)]
pub(super) fn make_symlink(_entry: &str, target: &str, path: &Path) -> Result<(), ArchiveError> {
    std::os::unix::fs::symlink(target, path).map_err(|e| io_error(path, e))
}

#[cfg(not(unix))]
pub(super) fn make_symlink(entry: &str, _target: &str, _path: &Path) -> Result<(), ArchiveError> {
    Err(ArchiveError::Unsupported {
        entry: entry.to_owned(),
        what: "symlinks on this platform".to_owned(),
    })
}

/// Reads `body` to its end, writing to `out` if given; with `charge`, counts the bytes
/// against the budget (zip; a tar stream is counted by its [`Guard`]).
pub(super) fn copy_counted(
    body: &mut dyn Read,
    mut out: Option<(&mut File, &Path)>,
    budget: &Budget,
    charge: bool,
) -> Result<u64, ArchiveError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(budget.read_failure(e)),
        };
        if charge {
            budget.charge(n as u64)?;
        }
        if let Some((file, path)) = out.as_mut() {
            file.write_all(&buf[..n]).map_err(|e| io_error(path, e))?;
        }
        total += n as u64;
    }
}

/// Copies an extracted file for a hardlink, counting the bytes.
pub(super) fn copy_local(
    input: &mut File,
    source: &Path,
    out: &mut File,
    path: &Path,
    budget: &Budget,
) -> Result<u64, ArchiveError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(source, e)),
        };
        budget.charge(n as u64)?;
        out.write_all(&buf[..n]).map_err(|e| io_error(path, e))?;
        total += n as u64;
    }
}
