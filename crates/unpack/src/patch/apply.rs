//! Applying file diffs in memory: the patched state of every file the patch touches, kept
//! until the whole patch applies.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::locate::{Pos, locate};
use super::parse::{Action, FileDiff, Hunk};
use super::{DEFAULT_MODE, MAX_FILE_BYTES, MAX_SEARCH_BYTES, PatchError};

/// The patched state of one file, kept in memory until the whole patch applies.
#[derive(Debug)]
pub(super) struct Slot {
    /// `None`: absent (deleted, or never existed).
    pub(super) content: Option<Vec<u8>>,
    /// Permission bits to write it with.
    pub(super) mode: u32,
    /// Whether it existed on disk before the patch.
    pub(super) on_disk: bool,
    /// Whether the patch changed it.
    pub(super) dirty: bool,
    /// 1-based line of the diff that last changed it (for write errors).
    pub(super) line: usize,
}

pub(super) struct Tree<'p> {
    pub(super) root: &'p Path,
    pub(super) patch: &'p str,
    pub(super) files: BTreeMap<String, Slot>,
    pub(super) order: Vec<String>,
    pub(super) search_left: u64,
}

/// Why a hunk did not apply.
pub(super) enum Failure {
    Mismatch(String),
    Ambiguous(usize, usize),
    SearchLimit,
}

impl<'p> Tree<'p> {
    pub(super) fn new(root: &'p Path, patch: &'p str) -> Self {
        Tree {
            root,
            patch,
            files: BTreeMap::new(),
            order: Vec::new(),
            search_left: MAX_SEARCH_BYTES,
        }
    }

    pub(super) fn io(&self, path: &Path, source: io::Error) -> PatchError {
        PatchError::Io {
            patch: self.patch.to_owned(),
            path: path.to_owned(),
            source,
        }
    }

    pub(super) fn not_a_file(&self, line: usize, file: &str, reason: String) -> PatchError {
        PatchError::NotAFile {
            patch: self.patch.to_owned(),
            line,
            file: file.to_owned(),
            reason,
        }
    }

    pub(super) fn apply_diff(&mut self, diff: &FileDiff<'_>) -> Result<(), PatchError> {
        let line = diff.line;
        match &diff.action {
            Action::Create { path } => {
                if self.current(path, line)?.is_some() {
                    return Err(PatchError::AlreadyExists {
                        patch: self.patch.to_owned(),
                        line,
                        file: path.clone(),
                    });
                }
                self.check_shape(path, line)?;
                let content = self.apply_hunks(path, &[], &diff.hunks)?;
                let mode = with_exec(DEFAULT_MODE, diff.exec.unwrap_or(false));
                self.set(path, line, Some(content), mode);
            }
            Action::Delete { path } => {
                let (content, mode) = self.take(path, line)?;
                let rest = self.apply_hunks(path, &content, &diff.hunks)?;
                if !rest.is_empty() {
                    return Err(PatchError::DeleteMismatch {
                        patch: self.patch.to_owned(),
                        line,
                        file: path.clone(),
                        remaining: rest.len(),
                    });
                }
                self.set(path, line, None, mode);
            }
            Action::Modify { path } => {
                let (content, mode) = self.take(path, line)?;
                let content = self.apply_hunks(path, &content, &diff.hunks)?;
                let mode = diff.exec.map_or(mode, |exec| with_exec(mode, exec));
                self.set(path, line, Some(content), mode);
            }
            Action::Rename { from, to } | Action::Copy { from, to } => {
                let (content, mode) = self.take(from, line)?;
                if self.current(to, line)?.is_some() {
                    return Err(PatchError::AlreadyExists {
                        patch: self.patch.to_owned(),
                        line,
                        file: to.clone(),
                    });
                }
                let new_content = self.apply_hunks(to, &content, &diff.hunks)?;
                let new_mode = diff.exec.map_or(mode, |exec| with_exec(mode, exec));
                if matches!(diff.action, Action::Rename { .. }) {
                    self.set(from, line, None, mode);
                } else if let Some(slot) = self.files.get_mut(from.as_str()) {
                    // A copy leaves its source as it was.
                    slot.content = Some(content);
                }
                self.check_shape(to, line)?;
                self.set(to, line, Some(new_content), new_mode);
            }
        }
        Ok(())
    }

    /// The current content of `path` (loading it from disk the first time); `None` if absent.
    pub(super) fn current(&mut self, path: &str, line: usize) -> Result<Option<&Slot>, PatchError> {
        if !self.files.contains_key(path) {
            let slot = self.load(path, line)?;
            self.files.insert(path.to_owned(), slot);
        }
        Ok(self.files.get(path).filter(|s| s.content.is_some()))
    }

    /// Takes the content (and mode) of `path`, which must exist, out of its slot (without a
    /// copy: the caller puts a content back, and on error the whole tree is dropped).
    pub(super) fn take(&mut self, path: &str, line: usize) -> Result<(Vec<u8>, u32), PatchError> {
        self.current(path, line)?;
        match self.files.get_mut(path) {
            Some(Slot {
                content: content @ Some(_),
                mode,
                ..
            }) => Ok((content.take().unwrap_or_default(), *mode)),
            _ => Err(PatchError::Missing {
                patch: self.patch.to_owned(),
                line,
                file: path.to_owned(),
            }),
        }
    }

    pub(super) fn set(&mut self, path: &str, line: usize, content: Option<Vec<u8>>, mode: u32) {
        if let Some(slot) = self.files.get_mut(path) {
            slot.content = content;
            slot.mode = mode;
            slot.line = line;
            if !slot.dirty {
                slot.dirty = true;
                self.order.push(path.to_owned());
            }
        }
    }

    /// Applies `hunks` (in order) to `content`.
    pub(super) fn apply_hunks(
        &mut self,
        file: &str,
        content: &[u8],
        hunks: &[Hunk<'_>],
    ) -> Result<Vec<u8>, PatchError> {
        let mut out = Vec::with_capacity(content.len());
        let mut cursor = Pos::START;
        for (index, hunk) in hunks.iter().enumerate() {
            let number = index + 1;
            let hunk_error = |failure: Failure| {
                let (patch, file) = (self.patch.to_owned(), file.to_owned());
                let line = hunk.old_start;
                match failure {
                    Failure::Mismatch(detail) => PatchError::HunkFailed {
                        patch,
                        file,
                        hunk: number,
                        line,
                        detail,
                    },
                    Failure::Ambiguous(first, second) => PatchError::Ambiguous {
                        patch,
                        file,
                        hunk: number,
                        line,
                        first: first + 1,
                        second: second + 1,
                    },
                    Failure::SearchLimit => PatchError::SearchLimit {
                        patch,
                        file,
                        hunk: number,
                        line,
                        max: MAX_SEARCH_BYTES,
                    },
                }
            };
            let (at, end) =
                locate(content, cursor, hunk, &mut self.search_left).map_err(hunk_error)?;
            // A new last line without newline must end the file.
            if hunk.new_eof && end.byte != content.len() {
                return Err(hunk_error(Failure::Mismatch(
                    "its last line has no newline at end of file, but the file goes on".to_owned(),
                )));
            }
            // Nothing can be added after a last line that has no newline.
            if hunk.old_count == 0
                && hunk.new_count > 0
                && at.byte == content.len()
                && content.last().is_some_and(|&b| b != b'\n')
            {
                return Err(hunk_error(Failure::Mismatch(
                    "it adds lines after the last line, which has no newline at end of file"
                        .to_owned(),
                )));
            }
            out.extend_from_slice(&content[cursor.byte..at.byte]);
            for line in hunk.new_lines() {
                out.extend_from_slice(line);
            }
            cursor = end;
            self.check_size(file, out.len())?;
        }
        out.extend_from_slice(&content[cursor.byte..]);
        self.check_size(file, out.len())?;
        Ok(out)
    }

    pub(super) fn check_size(&self, file: &str, len: usize) -> Result<(), PatchError> {
        if len as u64 > MAX_FILE_BYTES {
            return Err(PatchError::FileTooLarge {
                patch: self.patch.to_owned(),
                file: file.to_owned(),
                max: MAX_FILE_BYTES,
            });
        }
        Ok(())
    }
}

/// `mode` with the executable bits set (where readable) or cleared.
pub(super) fn with_exec(mode: u32, exec: bool) -> u32 {
    if exec {
        mode | ((mode & 0o444) >> 2)
    } else {
        mode & !0o111
    }
}
