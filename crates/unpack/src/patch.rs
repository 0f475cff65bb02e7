//! Applying a release's `patches` (unified diffs) to its extracted source tree.
//!
//! [`apply`] follows Bazel's native patcher (`PatchUtil`: `patch -p<N>` semantics without
//! fuzz). Where Bazel is lenient or loose it is stricter, and says so below, so that a patch
//! accepted here also applies when Bazel fetches the module:
//!
//! - **Parsing.** A patch holds any number of file diffs: classic `--- old` / `+++ new`
//!   headers (an optional tab and timestamp after the name are ignored; names may be C-quoted
//!   the way git writes them) followed by `@@ -l,s +l,s @@` hunks (a count defaults to 1), and
//!   git diffs (`diff --git a/x b/y` with `new file mode`, `deleted file mode`, `old mode`,
//!   `new mode`, `index`, `similarity index`, `rename from/to`, `copy from/to`). Hunk bodies are
//!   read by their header counts, so a removed line that starts with `--` is not mistaken for a
//!   header; an empty line inside a hunk is an empty context line (some editors strip the
//!   trailing space). `\ No newline at end of file` applies to the line just before it, on the
//!   side(s) that line belongs to. Text outside file diffs (mail headers, commit messages, the
//!   `-- ` signature of `git format-patch`) is ignored, but a hunk header outside a file diff
//!   is an error, and a patch without any file diff is refused. Git binary patches are refused.
//! - **Which file.** After stripping `strip` leading components (repeated slashes count once,
//!   `.` components are dropped afterwards), the new (`+++`) name is patched unless it is
//!   `/dev/null` (Bazel and `patch` would use the old name when only that one exists; the two
//!   agree for every patch `diff -u` or `git diff` writes). `/dev/null` as old name creates
//!   the file (which must not exist), as new name deletes it (the hunks must remove its whole
//!   content). `rename from/to` moves the file, `copy from/to` copies it (hunks apply to the
//!   moved or copied content). Without `---`/`+++` lines (mode changes, pure renames, empty
//!   files), the names come from the `diff --git` line, else from the `rename`/`copy` lines
//!   (which carry no `a/`/`b/` prefix, so one component less is stripped from them, as
//!   `git apply` does). `new mode` / `new file mode` set or clear the executable bits; other
//!   files keep their mode. Symlink and submodule modes are refused. Several diffs of one file
//!   in a patch apply one after the other.
//! - **Matching.** Context must match exactly, byte for byte (no fuzz, no whitespace
//!   leniency): lines end after each `\n`, a `\r` stays part of its line (so CRLF files need
//!   CRLF patches; Bazel would read both as the same lines and write `\n`), a last line
//!   without `\n` only matches a hunk line marked `\ No newline at end of file`, and contents
//!   need not be UTF-8. A hunk is first tried at the line its header states. If its old lines
//!   differ there, the rest of the file (after the previous hunk) is searched for its old
//!   lines: exactly one exact match is used (the hunk applies at an offset, as `patch` reports
//!   "Hunk #2 succeeded at 52 (offset 12 lines)"); none or several are an error (Bazel and
//!   `patch` take the nearest; guessing between two equal places could silently patch the
//!   wrong one). As in `patch`, a hunk with less context before its change than after it can
//!   only move to the start of the file, and one with less context after than before only to
//!   its end (`diff` writes such hunks only there; Bazel does not check this). Hunks never apply
//!   out of order or overlap, and a hunk without old lines (pure insertion, `diff -U0`) applies
//!   only where stated. The bytes such searches scan are capped at [`MAX_SEARCH_BYTES`] per
//!   patch.
//! - **Safety.** Names in the patch are untrusted: absolute names, names with a `..`
//!   component (anywhere, even in the stripped part), a NUL byte or other control character,
//!   or a backslash are refused, and so is any target whose path under `root` passes through a
//!   symlink or ends at one (checked component by component with `symlink_metadata`), which
//!   keeps every target inside `root`. Files are written through a temporary file in their
//!   directory renamed over the target, which replaces (never follows) whatever was there.
//! - **Atomicity.** Every hunk of every file is applied in memory first; the tree is written
//!   only when the whole patch applies (files written in patch order, deletions last). A write
//!   failure midway is returned as is (no rollback: callers patch a scratch tree).
//! - **Limits.** Patches over [`MAX_PATCH_BYTES`] and files (read or written) over
//!   [`MAX_FILE_BYTES`] are refused. Memory stays proportional to the bytes involved: hunks
//!   borrow the patch text and files are scanned forward without a per-line table, so
//!   neither a patch nor a file of empty lines inflates.
//!
//! Empty directories left by deletions or renames are not removed. The work is blocking file
//! I/O: call it from `tokio::task::spawn_blocking`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Largest patch file accepted (16 MiB).
pub const MAX_PATCH_BYTES: usize = 16 * 1024 * 1024;

/// Largest file a patch may read or produce (256 MiB).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Bytes of file content one [`apply`] call may scan while searching for hunks that do not
/// apply at their stated line (1 GiB).
pub const MAX_SEARCH_BYTES: u64 = 1024 * 1024 * 1024;

/// Mode of files a patch creates without saying otherwise.
const DEFAULT_MODE: u32 = 0o644;

/// Characters of a line quoted in an error message.
const SHOWN_CHARS: usize = 80;

/// One patch file of a release.
#[derive(Debug, Clone, Copy)]
pub struct Patch<'a> {
    /// The patch's file name, used in error messages.
    pub name: &'a str,
    /// The unified diff.
    pub content: &'a [u8],
}

/// What [`apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Every file created, modified, deleted, renamed (both names) or re-moded, relative to the
    /// root, `/`-separated, in the order the patch first touches them.
    pub files_changed: Vec<String>,
}

/// Why a patch was refused. Every message names the patch; the I/O variant is the only one
/// that is not the patch's fault.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch is larger than [`MAX_PATCH_BYTES`].
    #[error("patch {patch}: {size} bytes is more than the {max} allowed")]
    PatchTooLarge {
        /// The patch file name.
        patch: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The patch holds no file diff at all.
    #[error("patch {patch}: no file diff found (no `---`/`+++` or `diff --git` header)")]
    NoDiff {
        /// The patch file name.
        patch: String,
    },
    /// The patch text is not a valid unified diff.
    #[error("patch {patch}: line {line}: {reason}")]
    Malformed {
        /// The patch file name.
        patch: String,
        /// 1-based line of the patch.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A git binary patch (or a `Binary files ... differ` notice).
    #[error("patch {patch}: line {line}: {file}: binary patches are not supported")]
    Binary {
        /// The patch file name.
        patch: String,
        /// 1-based line of the patch.
        line: usize,
        /// The file, as named in the patch.
        file: String,
    },
    /// A file mode this patcher does not apply (symlinks, submodules).
    #[error("patch {patch}: line {line}: {file}: {what} is not supported")]
    Unsupported {
        /// The patch file name.
        patch: String,
        /// 1-based line of the patch.
        line: usize,
        /// The file, as named in the patch.
        file: String,
        /// What is not supported.
        what: String,
    },
    /// A file name that could reach outside the root (absolute, `..`, NUL, backslash, through
    /// a symlink).
    #[error("patch {patch}: line {line}: refusing path `{path}`: {reason}")]
    UnsafePath {
        /// The patch file name.
        patch: String,
        /// 1-based line of the patch naming the path.
        line: usize,
        /// The path (as in the patch, or after stripping for symlink checks).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Removing `strip` components leaves nothing of a file name.
    #[error(
        "patch {patch}: line {line}: stripping {strip} leading path components from `{path}` \
         leaves no file name"
    )]
    StripTooLong {
        /// The patch file name.
        patch: String,
        /// 1-based line of the patch naming the path.
        line: usize,
        /// The path as in the patch.
        path: String,
        /// The strip count.
        strip: u32,
    },
    /// The file to patch, delete, rename or copy does not exist.
    #[error("patch {patch}: line {line}: cannot patch {file}: no such file")]
    Missing {
        /// The patch file name.
        patch: String,
        /// 1-based line where the file's diff starts.
        line: usize,
        /// The file (relative to the root).
        file: String,
    },
    /// The file to create (or rename or copy to) already exists.
    #[error("patch {patch}: line {line}: cannot create {file}: it already exists")]
    AlreadyExists {
        /// The patch file name.
        patch: String,
        /// 1-based line where the file's diff starts.
        line: usize,
        /// The file (relative to the root).
        file: String,
    },
    /// The target is not a regular file, or a parent of it is not a directory.
    #[error("patch {patch}: line {line}: cannot patch {file}: {reason}")]
    NotAFile {
        /// The patch file name.
        patch: String,
        /// 1-based line where the file's diff starts.
        line: usize,
        /// The file (relative to the root).
        file: String,
        /// What is in the way.
        reason: String,
    },
    /// A hunk whose old lines match neither at the stated line nor anywhere else.
    #[error("patch {patch}: hunk {hunk} of {file} does not apply at line {line} ({detail})")]
    HunkFailed {
        /// The patch file name.
        patch: String,
        /// The file (relative to the root).
        file: String,
        /// 1-based hunk number within the file's diff.
        hunk: usize,
        /// The line the hunk header states.
        line: usize,
        /// What differs.
        detail: String,
    },
    /// A hunk that does not apply at its stated line and matches at several other places.
    #[error(
        "patch {patch}: hunk {hunk} of {file} does not apply at line {line} and its lines \
         match at several other places (lines {first} and {second}); refusing to guess"
    )]
    Ambiguous {
        /// The patch file name.
        patch: String,
        /// The file (relative to the root).
        file: String,
        /// 1-based hunk number within the file's diff.
        hunk: usize,
        /// The line the hunk header states.
        line: usize,
        /// The first matching line.
        first: usize,
        /// The second matching line.
        second: usize,
    },
    /// Searching for misplaced hunks scanned more than [`MAX_SEARCH_BYTES`].
    #[error(
        "patch {patch}: hunk {hunk} of {file} does not apply at line {line}, and the search \
         for it elsewhere exceeds {max} scanned bytes"
    )]
    SearchLimit {
        /// The patch file name.
        patch: String,
        /// The file (relative to the root).
        file: String,
        /// 1-based hunk number within the file's diff.
        hunk: usize,
        /// The line the hunk header states.
        line: usize,
        /// The limit.
        max: u64,
    },
    /// A deletion whose hunks do not remove the whole file.
    #[error(
        "patch {patch}: line {line}: cannot delete {file}: the patch does not remove all of \
         its content ({remaining} bytes would remain)"
    )]
    DeleteMismatch {
        /// The patch file name.
        patch: String,
        /// 1-based line where the file's diff starts.
        line: usize,
        /// The file (relative to the root).
        file: String,
        /// Bytes left after applying the hunks.
        remaining: usize,
    },
    /// A file to read or write is larger than [`MAX_FILE_BYTES`].
    #[error("patch {patch}: {file} is larger than {max} bytes")]
    FileTooLarge {
        /// The patch file name.
        patch: String,
        /// The file (relative to the root).
        file: String,
        /// The limit.
        max: u64,
    },
    /// Reading or writing the tree failed.
    #[error("patch {patch}: I/O error on {}: {source}", path.display())]
    Io {
        /// The patch file name.
        patch: String,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Applies `patch` to the tree rooted at `root` (a directory on disk), removing `strip` leading
/// path components from the names in the patch (like `patch -p<strip>`).
///
/// Nothing is written unless every hunk of every file applies; see the [module
/// documentation](self) for the exact rules.
pub fn apply(root: &Path, patch: &Patch<'_>, strip: u32) -> Result<ApplyReport, PatchError> {
    if patch.content.len() > MAX_PATCH_BYTES {
        return Err(PatchError::PatchTooLarge {
            patch: patch.name.to_owned(),
            size: patch.content.len(),
            max: MAX_PATCH_BYTES,
        });
    }
    // Every line of the text parsed ends with `\n` (a missing final newline is read as if it
    // were there, as `patch` does), so hunk lines can borrow from it.
    let owned;
    let text = if patch.content.is_empty() || patch.content.ends_with(b"\n") {
        patch.content
    } else {
        owned = [patch.content, b"\n"].concat();
        owned.as_slice()
    };
    let diffs = Parser::new(patch.name, text, strip).parse()?;
    if diffs.is_empty() {
        return Err(PatchError::NoDiff {
            patch: patch.name.to_owned(),
        });
    }
    let mut tree = Tree::new(root, patch.name);
    for diff in &diffs {
        tree.apply_diff(diff)?;
    }
    tree.commit()
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// What a file diff does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Create `path` (old name `/dev/null`).
    Create { path: String },
    /// Delete `path` (new name `/dev/null`).
    Delete { path: String },
    /// Patch `path` in place.
    Modify { path: String },
    /// Move `from` to `to`, applying the hunks on the way.
    Rename { from: String, to: String },
    /// Copy `from` to `to`, applying the hunks to the copy.
    Copy { from: String, to: String },
}

/// One file's part of a patch.
#[derive(Debug)]
struct FileDiff<'a> {
    /// 1-based patch line where it starts.
    line: usize,
    action: Action,
    /// `Some(executable)` when the diff sets the file's mode.
    exec: Option<bool>,
    hunks: Vec<Hunk<'a>>,
}

/// One `@@` hunk: its header numbers and its body as found in the patch (validated while
/// parsing, read again by [`HunkLines`]), so hunks cost no allocation per line.
#[derive(Debug)]
struct Hunk<'a> {
    /// The old start line from the header.
    old_start: usize,
    old_count: usize,
    new_count: usize,
    /// Whether the last new line has no newline at the end of the file.
    new_eof: bool,
    /// Context lines before the first and after the last changed line.
    leading: usize,
    trailing: usize,
    /// The body lines (each with its `\n`), markers included.
    body: &'a [u8],
}

impl<'a> Hunk<'a> {
    /// 0-based index of the first old line as the header states it (for a pure insertion,
    /// the index the new lines go to).
    fn stated_index(&self) -> usize {
        if self.old_count == 0 {
            self.old_start
        } else {
            self.old_start.saturating_sub(1)
        }
    }

    /// The old lines, each with its `\n` unless a marker removed it.
    fn old_lines(&self) -> HunkLines<'a> {
        HunkLines {
            rest: self.body,
            old: true,
        }
    }

    /// The new lines, each with its `\n` unless a marker removed it.
    fn new_lines(&self) -> HunkLines<'a> {
        HunkLines {
            rest: self.body,
            old: false,
        }
    }
}

/// The lines of one side of a hunk body.
#[derive(Debug)]
struct HunkLines<'a> {
    rest: &'a [u8],
    old: bool,
}

impl<'a> Iterator for HunkLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let line = line_at(self.rest, 0)?;
            self.rest = &self.rest[line.len()..];
            let (content, side) = match line.first() {
                // An empty line: an empty context line whose leading space an editor removed.
                Some(b'\n') => (line, None),
                Some(b' ') => (&line[1..], None),
                Some(b'-') => (&line[1..], Some(true)),
                Some(b'+') => (&line[1..], Some(false)),
                _ => continue,
            };
            if side.is_some_and(|old| old != self.old) {
                continue;
            }
            return Some(if self.rest.first() == Some(&b'\\') {
                content.strip_suffix(b"\n").unwrap_or(content)
            } else {
                content
            });
        }
    }
}

/// A file name as found in the patch, before stripping.
#[derive(Debug, Clone)]
struct RawName {
    name: String,
    line: usize,
    /// Components to strip from it.
    strip: u32,
}

/// The git extended header lines of one `diff --git` section.
#[derive(Debug, Default)]
struct GitHeader {
    new_file: bool,
    deleted: bool,
    exec: Option<bool>,
    rename_from: Option<RawName>,
    rename_to: Option<RawName>,
    copy_from: Option<RawName>,
    copy_to: Option<RawName>,
}

struct Parser<'a> {
    patch: &'a str,
    /// The patch; every line ends with `\n`.
    text: &'a [u8],
    /// Byte offset of the current line.
    pos: usize,
    /// 1-based number of the current line.
    line: usize,
    strip: u32,
}

/// The line of `text` starting at `pos`, with its `\n` if it has one; `None` at the end.
fn line_at(text: &[u8], pos: usize) -> Option<&[u8]> {
    let rest = text.get(pos..).filter(|rest| !rest.is_empty())?;
    let end = rest
        .iter()
        .position(|&b| b == b'\n')
        .map_or(rest.len(), |i| i + 1);
    Some(&rest[..end])
}

/// A header line without its `\n` and a `\r` before it (CRLF patches).
fn header_text(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl<'a> Parser<'a> {
    fn new(patch: &'a str, text: &'a [u8], strip: u32) -> Self {
        Parser {
            patch,
            text,
            pos: 0,
            line: 1,
            strip,
        }
    }

    /// The current line, with its `\n`.
    fn peek(&self) -> Option<&'a [u8]> {
        line_at(self.text, self.pos)
    }

    /// The current line as a header.
    fn header(&self) -> Option<&'a [u8]> {
        self.peek().map(header_text)
    }

    /// The line after the current one as a header.
    fn next_header(&self) -> Option<&'a [u8]> {
        let current = self.peek()?;
        line_at(self.text, self.pos + current.len()).map(header_text)
    }

    /// Moves to the next line.
    fn bump(&mut self) {
        if let Some(current) = self.peek() {
            self.pos += current.len();
            self.line += 1;
        }
    }

    fn malformed(&self, line: usize, reason: impl Into<String>) -> PatchError {
        PatchError::Malformed {
            patch: self.patch.to_owned(),
            line,
            reason: reason.into(),
        }
    }

    fn parse(mut self) -> Result<Vec<FileDiff<'a>>, PatchError> {
        let mut diffs = Vec::new();
        while let Some(text) = self.header() {
            if text.starts_with(b"diff --git ") {
                diffs.push(self.git_diff()?);
            } else if text.starts_with(b"--- ")
                && self
                    .next_header()
                    .is_some_and(|next| next.starts_with(b"+++ "))
            {
                diffs.push(self.plain_diff()?);
            } else if text.starts_with(b"@@") && parse_hunk_header(text).is_some() {
                return Err(self.malformed(
                    self.line,
                    "hunk without a `---`/`+++` or `diff --git` file header",
                ));
            } else if is_binary_notice(text) {
                return Err(PatchError::Binary {
                    patch: self.patch.to_owned(),
                    line: self.line,
                    file: String::from_utf8_lossy(text).into_owned(),
                });
            } else {
                // Text outside a file diff: ignored, like `patch` does.
                self.bump();
            }
        }
        Ok(diffs)
    }

    /// Parses `--- old` and `+++ new` at the current line; returns the names (`None` for
    /// `/dev/null`).
    fn file_headers(&mut self) -> Result<(Option<RawName>, Option<RawName>), PatchError> {
        let mut names = [None, None];
        for name in &mut names {
            let line = self.line;
            let text = self.header().unwrap_or_default();
            let rest = text.get(4..).unwrap_or_default();
            let raw = header_name(rest).map_err(|reason| self.malformed(line, reason))?;
            *name = raw.map(|name| RawName {
                name,
                line,
                strip: self.strip,
            });
            self.bump();
        }
        let [old, new] = names;
        Ok((old, new))
    }

    fn plain_diff(&mut self) -> Result<FileDiff<'a>, PatchError> {
        let start = self.line;
        let (old, new) = self.file_headers()?;
        let hunks = self.hunks()?;
        if hunks.is_empty() {
            return Err(self.malformed(start, "file header without any hunk"));
        }
        let action = self.action(start, old, new, None)?;
        Ok(FileDiff {
            line: start,
            action,
            exec: None,
            hunks,
        })
    }

    fn git_diff(&mut self) -> Result<FileDiff<'a>, PatchError> {
        let start = self.line;
        let text = self.header().unwrap_or_default();
        let rest = text.get(b"diff --git ".len()..).unwrap_or_default();
        let git_names = git_names(rest).map_err(|reason| self.malformed(start, reason))?;
        let shown = String::from_utf8_lossy(rest).into_owned();
        self.bump();

        let mut header = GitHeader::default();
        while let Some(text) = self.header() {
            let line = self.line;
            if let Some(mode) = text.strip_prefix(b"new file mode ") {
                header.new_file = true;
                header.exec = Some(self.mode(line, mode, &shown)?);
            } else if let Some(mode) = text.strip_prefix(b"new mode ") {
                header.exec = Some(self.mode(line, mode, &shown)?);
            } else if let Some(mode) = text.strip_prefix(b"deleted file mode ") {
                header.deleted = true;
                self.mode(line, mode, &shown)?;
            } else if let Some(mode) = text.strip_prefix(b"old mode ") {
                self.mode(line, mode, &shown)?;
            } else if let Some(name) = text.strip_prefix(b"rename from ") {
                header.rename_from = Some(self.git_line_name(line, name)?);
            } else if let Some(name) = text.strip_prefix(b"rename to ") {
                header.rename_to = Some(self.git_line_name(line, name)?);
            } else if let Some(name) = text.strip_prefix(b"rename old ") {
                header.rename_from = Some(self.git_line_name(line, name)?);
            } else if let Some(name) = text.strip_prefix(b"rename new ") {
                header.rename_to = Some(self.git_line_name(line, name)?);
            } else if let Some(name) = text.strip_prefix(b"copy from ") {
                header.copy_from = Some(self.git_line_name(line, name)?);
            } else if let Some(name) = text.strip_prefix(b"copy to ") {
                header.copy_to = Some(self.git_line_name(line, name)?);
            } else if text.starts_with(b"index ")
                || text.starts_with(b"similarity index ")
                || text.starts_with(b"dissimilarity index ")
            {
            } else if text == b"GIT binary patch" || is_binary_notice(text) {
                return Err(PatchError::Binary {
                    patch: self.patch.to_owned(),
                    line,
                    file: shown,
                });
            } else {
                break;
            }
            self.bump();
        }

        let mut hunks = Vec::new();
        let names = match self.header() {
            Some(text) if text.starts_with(b"--- ") => {
                if !self
                    .next_header()
                    .is_some_and(|next| next.starts_with(b"+++ "))
                {
                    return Err(self.malformed(self.line, "`---` line without a `+++` line"));
                }
                let header_line = self.line;
                let names = self.file_headers()?;
                hunks = self.hunks()?;
                if hunks.is_empty() {
                    return Err(self.malformed(header_line, "file header without any hunk"));
                }
                names
            }
            _ => {
                let from = header.rename_from.clone().or(header.copy_from.clone());
                let to = header.rename_to.clone().or(header.copy_to.clone());
                match (git_names, from, to) {
                    (Some((old, new)), _, _) => (
                        Some(RawName {
                            name: old,
                            line: start,
                            strip: self.strip,
                        }),
                        Some(RawName {
                            name: new,
                            line: start,
                            strip: self.strip,
                        }),
                    ),
                    (None, Some(from), Some(to)) => (Some(from), Some(to)),
                    _ => {
                        return Err(self.malformed(
                            start,
                            "cannot tell the file names apart in this `diff --git` line",
                        ));
                    }
                }
            }
        };
        let (mut old, mut new) = names;
        if header.new_file {
            old = None;
        }
        if header.deleted {
            new = None;
        }
        let action = self.action(start, old, new, Some(&header))?;
        Ok(FileDiff {
            line: start,
            action,
            exec: header.exec,
            hunks,
        })
    }

    /// A name in a `rename`/`copy` line: git writes it without the `a/`/`b/` prefix, so one
    /// component less is stripped (as `git apply -p<N>` does).
    fn git_line_name(&self, line: usize, raw: &[u8]) -> Result<RawName, PatchError> {
        let name = if raw.first() == Some(&b'"') {
            unquote(raw).map(|(name, _)| name)
        } else {
            Ok(raw.to_vec())
        }
        .and_then(utf8_name)
        .map_err(|reason| self.malformed(line, reason))?;
        Ok(RawName {
            name,
            line,
            strip: self.strip.saturating_sub(1),
        })
    }

    /// Parses a git mode; returns whether it is executable.
    fn mode(&self, line: usize, text: &[u8], file: &str) -> Result<bool, PatchError> {
        let mode = std::str::from_utf8(text)
            .ok()
            .and_then(|t| u32::from_str_radix(t.trim(), 8).ok())
            .ok_or_else(|| {
                self.malformed(
                    line,
                    format!("invalid file mode `{}`", String::from_utf8_lossy(text)),
                )
            })?;
        let unsupported = |what: &str| PatchError::Unsupported {
            patch: self.patch.to_owned(),
            line,
            file: file.to_owned(),
            what: what.to_owned(),
        };
        match mode & 0o170000 {
            0o100000 => Ok(mode & 0o111 != 0),
            0o120000 => Err(unsupported("a symlink (mode 120000)")),
            0o160000 => Err(unsupported("a submodule (mode 160000)")),
            _ => Err(self.malformed(line, format!("invalid file mode `{mode:o}`"))),
        }
    }

    /// Strips and checks the names and decides what the diff does.
    fn action(
        &self,
        start: usize,
        old: Option<RawName>,
        new: Option<RawName>,
        git: Option<&GitHeader>,
    ) -> Result<Action, PatchError> {
        let old = old.map(|n| self.strip_name(&n)).transpose()?;
        let new = new.map(|n| self.strip_name(&n)).transpose()?;
        let rename = git.is_some_and(|g| g.rename_from.is_some() || g.rename_to.is_some());
        let copy = git.is_some_and(|g| g.copy_from.is_some() || g.copy_to.is_some());
        Ok(match (old, new) {
            (None, None) => {
                return Err(self.malformed(start, "both file names are /dev/null"));
            }
            (None, Some(path)) => Action::Create { path },
            (Some(path), None) => Action::Delete { path },
            (Some(from), Some(to)) if from != to && rename => Action::Rename { from, to },
            (Some(from), Some(to)) if from != to && copy => Action::Copy { from, to },
            (Some(_), Some(path)) => Action::Modify { path },
        })
    }

    fn strip_name(&self, raw: &RawName) -> Result<String, PatchError> {
        strip_path(&raw.name, raw.strip).map_err(|failure| match failure {
            StripFailure::Unsafe(reason) => PatchError::UnsafePath {
                patch: self.patch.to_owned(),
                line: raw.line,
                path: raw.name.clone(),
                reason: reason.to_owned(),
            },
            StripFailure::Empty => PatchError::StripTooLong {
                patch: self.patch.to_owned(),
                line: raw.line,
                path: raw.name.clone(),
                strip: raw.strip,
            },
        })
    }

    /// Reads the hunks at the current line (none if it is not a hunk header).
    fn hunks(&mut self) -> Result<Vec<Hunk<'a>>, PatchError> {
        let mut hunks = Vec::new();
        while let Some(text) = self.header() {
            if !text.starts_with(b"@@") {
                break;
            }
            let header_line = self.line;
            let number = hunks.len() + 1;
            let (old_start, old_count, new_count) = parse_hunk_header(text).ok_or_else(|| {
                self.malformed(
                    header_line,
                    format!("invalid hunk header `{}`", String::from_utf8_lossy(text)),
                )
            })?;
            if old_count > 0 && old_start == 0 {
                return Err(self.malformed(header_line, "hunk starts at old line 0"));
            }
            self.bump();
            let hunk = self.hunk_body(number, header_line, old_start, old_count, new_count)?;
            hunks.push(hunk);
        }
        Ok(hunks)
    }

    /// Reads a hunk body (the header counts say how many lines), checking every line.
    fn hunk_body(
        &mut self,
        number: usize,
        header_line: usize,
        old_start: usize,
        old_count: usize,
        new_count: usize,
    ) -> Result<Hunk<'a>, PatchError> {
        let start = self.pos;
        let (mut old, mut new) = (0usize, 0usize);
        // Whether a side's last line so far has lost its newline to a marker.
        let (mut old_eof, mut new_eof) = (false, false);
        let mut last: Option<Side> = None;
        let (mut leading, mut trailing, mut changed) = (0usize, 0usize, false);
        loop {
            let complete = old == old_count && new == new_count;
            let Some(raw) = self.peek() else {
                if complete {
                    break;
                }
                return Err(self.malformed(
                    self.line.saturating_sub(1).max(1),
                    format!(
                        "the patch ends inside hunk {number} (started at line {header_line}): \
                         {} old and {} new lines missing",
                        old_count - old,
                        new_count - new
                    ),
                ));
            };
            let kind = raw.first().copied().unwrap_or(b'\n');
            if complete && kind != b'\\' {
                break;
            }
            let line = self.line;
            let too_many = |what: &str| {
                self.malformed(
                    line,
                    format!(
                        "hunk {number} (line {header_line}) has more {what} lines than its \
                         header says"
                    ),
                )
            };
            let misplaced = || {
                self.malformed(
                    line,
                    format!(
                        "hunk {number} (line {header_line}) goes on after a \
                         `\\ No newline at end of file` marker"
                    ),
                )
            };
            match kind {
                b' ' | b'\n' => {
                    if old >= old_count || new >= new_count {
                        return Err(too_many("context"));
                    }
                    if old_eof || new_eof {
                        return Err(misplaced());
                    }
                    old += 1;
                    new += 1;
                    last = Some(Side::Both);
                    if !changed {
                        leading += 1;
                    }
                    trailing += 1;
                }
                b'-' => {
                    if old >= old_count {
                        return Err(too_many("removed"));
                    }
                    if old_eof {
                        return Err(misplaced());
                    }
                    old += 1;
                    last = Some(Side::Old);
                    (changed, trailing) = (true, 0);
                }
                b'+' => {
                    if new >= new_count {
                        return Err(too_many("added"));
                    }
                    if new_eof {
                        return Err(misplaced());
                    }
                    new += 1;
                    last = Some(Side::New);
                    (changed, trailing) = (true, 0);
                }
                b'\\' => {
                    let (marks_old, marks_new) = match last {
                        Some(Side::Both) => (true, true),
                        Some(Side::Old) => (true, false),
                        Some(Side::New) => (false, true),
                        None => {
                            return Err(self.malformed(
                                line,
                                "`\\ No newline at end of file` does not follow a hunk line",
                            ));
                        }
                    };
                    if (marks_old && old_eof) || (marks_new && new_eof) {
                        return Err(
                            self.malformed(line, "repeated `\\ No newline at end of file` marker")
                        );
                    }
                    old_eof |= marks_old;
                    new_eof |= marks_new;
                }
                _ => {
                    return Err(self.malformed(
                        line,
                        format!(
                            "hunk {number} (line {header_line}) has {} old and {} new lines \
                             fewer than its header says",
                            old_count - old,
                            new_count - new
                        ),
                    ));
                }
            }
            self.bump();
        }
        Ok(Hunk {
            old_start,
            old_count,
            new_count,
            new_eof,
            leading,
            trailing,
            body: &self.text[start..self.pos],
        })
    }
}

/// Which side(s) of a hunk a line belongs to.
#[derive(Debug, Clone, Copy)]
enum Side {
    Both,
    Old,
    New,
}

/// `Binary files a/x and b/x differ` (diff and `git diff` without `--binary`).
fn is_binary_notice(text: &[u8]) -> bool {
    text.starts_with(b"Binary files ") && text.ends_with(b" differ")
}

/// Parses `@@ -l[,s] +l[,s] @@...` into (old start, old count, new count).
fn parse_hunk_header(text: &[u8]) -> Option<(usize, usize, usize)> {
    fn spaces(s: &[u8]) -> Option<&[u8]> {
        let n = s.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
        (n > 0).then(|| &s[n..])
    }
    fn number(s: &[u8]) -> Option<(usize, &[u8])> {
        let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = std::str::from_utf8(&s[..n]).ok()?.parse().ok()?;
        Some((value, &s[n..]))
    }
    fn range(s: &[u8]) -> Option<(usize, usize, &[u8])> {
        let (start, rest) = number(s)?;
        match rest.strip_prefix(b",") {
            Some(rest) => {
                let (count, rest) = number(rest)?;
                Some((start, count, rest))
            }
            None => Some((start, 1, rest)),
        }
    }
    let rest = spaces(text.strip_prefix(b"@@")?)?;
    let (old_start, old_count, rest) = range(rest.strip_prefix(b"-")?)?;
    let rest = spaces(rest)?;
    let (_, new_count, rest) = range(rest.strip_prefix(b"+")?)?;
    spaces(rest)?.strip_prefix(b"@@")?;
    Some((old_start, old_count, new_count))
}

/// The name in a `---`/`+++` line (after the marker): C-quoted, or up to a tab. `None` for
/// `/dev/null`.
fn header_name(rest: &[u8]) -> Result<Option<String>, String> {
    let raw = if rest.first() == Some(&b'"') {
        unquote(rest)?.0
    } else {
        let end = rest.iter().position(|&b| b == b'\t').unwrap_or(rest.len());
        rest[..end].trim_ascii().to_vec()
    };
    if raw.is_empty() {
        return Err("missing file name".to_owned());
    }
    if raw == b"/dev/null" {
        return Ok(None);
    }
    utf8_name(raw).map(Some)
}

fn utf8_name(raw: Vec<u8>) -> Result<String, String> {
    String::from_utf8(raw).map_err(|e| {
        format!(
            "file name `{}` is not valid UTF-8",
            String::from_utf8_lossy(e.as_bytes())
        )
    })
}

/// The two names of a `diff --git` line (after `diff --git `), if they can be told apart.
fn git_names(rest: &[u8]) -> Result<Option<(String, String)>, String> {
    let (old, new) = if rest.first() == Some(&b'"') {
        let (old, after) = unquote(rest)?;
        let after = after.trim_ascii_start();
        let new = if after.first() == Some(&b'"') {
            unquote(after)?.0
        } else {
            after.to_vec()
        };
        (old, new)
    } else if let Some(i) = rest.windows(2).position(|w| w == b" \"") {
        (rest[..i].to_vec(), unquote(&rest[i + 1..])?.0)
    } else {
        // Unquoted names may hold spaces: take the split where both names agree (after their
        // `a/`/`b/` prefix), as git does; a single space is unambiguous anyway.
        let spaces: Vec<usize> = (0..rest.len()).filter(|&i| rest[i] == b' ').collect();
        let without_prefix = |s: &[u8]| -> Vec<u8> {
            s.iter()
                .position(|&b| b == b'/')
                .map_or(s.to_vec(), |i| s[i + 1..].to_vec())
        };
        let split = if spaces.len() == 1 {
            Some(spaces[0])
        } else {
            spaces.iter().copied().find(|&i| {
                let (a, b) = (&rest[..i], &rest[i + 1..]);
                a == b || without_prefix(a) == without_prefix(b)
            })
        };
        match split {
            Some(i) => (rest[..i].to_vec(), rest[i + 1..].to_vec()),
            None => return Ok(None),
        }
    };
    if old.is_empty() || new.is_empty() {
        return Ok(None);
    }
    Ok(Some((utf8_name(old)?, utf8_name(new)?)))
}

/// Decodes a C-quoted name as git writes it (`"a/b\tc\303\251"`); returns it and the text
/// after the closing quote.
fn unquote(text: &[u8]) -> Result<(Vec<u8>, &[u8]), String> {
    let unterminated = || "unterminated quoted file name".to_owned();
    let mut out = Vec::new();
    let mut i = 1;
    while i < text.len() {
        match text[i] {
            b'"' => return Ok((out, &text[i + 1..])),
            b'\\' => {
                let escape = *text.get(i + 1).ok_or_else(unterminated)?;
                i += 2;
                let byte = match escape {
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 0x0b,
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'0'..=b'7' => {
                        let mut value = u32::from(escape - b'0');
                        let mut digits = 1;
                        while digits < 3 && matches!(text.get(i), Some(b'0'..=b'7')) {
                            value = value * 8 + u32::from(text[i] - b'0');
                            i += 1;
                            digits += 1;
                        }
                        u8::try_from(value).map_err(|_| {
                            format!("invalid octal escape `\\{value:o}` in file name")
                        })?
                    }
                    other => {
                        return Err(format!(
                            "invalid escape `\\{}` in quoted file name",
                            char::from(other)
                        ));
                    }
                };
                out.push(byte);
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Err(unterminated())
}

enum StripFailure {
    Unsafe(&'static str),
    Empty,
}

/// Checks a name from the patch and removes `strip` leading components.
fn strip_path(raw: &str, strip: u32) -> Result<String, StripFailure> {
    if raw.contains('\0') {
        return Err(StripFailure::Unsafe("it contains a NUL byte"));
    }
    if raw.chars().any(char::is_control) {
        return Err(StripFailure::Unsafe("it contains a control character"));
    }
    if raw.contains('\\') {
        return Err(StripFailure::Unsafe("it contains a backslash"));
    }
    let bytes = raw.as_bytes();
    let drive = bytes.len() >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && (bytes.len() == 2 || bytes[2] == b'/');
    if raw.starts_with('/') || drive {
        return Err(StripFailure::Unsafe("it is absolute"));
    }
    let components: Vec<&str> = raw.split('/').filter(|c| !c.is_empty()).collect();
    if components.contains(&"..") {
        return Err(StripFailure::Unsafe("it has a `..` component"));
    }
    let kept: Vec<&str> = components
        .into_iter()
        .skip(usize::try_from(strip).unwrap_or(usize::MAX))
        .filter(|c| *c != ".")
        .collect();
    if kept.is_empty() {
        return Err(StripFailure::Empty);
    }
    Ok(kept.join("/"))
}

// ---------------------------------------------------------------------------------------------
// Applying
// ---------------------------------------------------------------------------------------------

/// The patched state of one file, kept in memory until the whole patch applies.
#[derive(Debug)]
struct Slot {
    /// `None`: absent (deleted, or never existed).
    content: Option<Vec<u8>>,
    /// Permission bits to write it with.
    mode: u32,
    /// Whether it existed on disk before the patch.
    on_disk: bool,
    /// Whether the patch changed it.
    dirty: bool,
    /// 1-based line of the diff that last changed it (for write errors).
    line: usize,
}

struct Tree<'p> {
    root: &'p Path,
    patch: &'p str,
    files: BTreeMap<String, Slot>,
    order: Vec<String>,
    search_left: u64,
}

/// Why a hunk did not apply.
enum Failure {
    Mismatch(String),
    Ambiguous(usize, usize),
    SearchLimit,
}

impl<'p> Tree<'p> {
    fn new(root: &'p Path, patch: &'p str) -> Self {
        Tree {
            root,
            patch,
            files: BTreeMap::new(),
            order: Vec::new(),
            search_left: MAX_SEARCH_BYTES,
        }
    }

    fn io(&self, path: &Path, source: io::Error) -> PatchError {
        PatchError::Io {
            patch: self.patch.to_owned(),
            path: path.to_owned(),
            source,
        }
    }

    fn not_a_file(&self, line: usize, file: &str, reason: String) -> PatchError {
        PatchError::NotAFile {
            patch: self.patch.to_owned(),
            line,
            file: file.to_owned(),
            reason,
        }
    }

    fn apply_diff(&mut self, diff: &FileDiff<'_>) -> Result<(), PatchError> {
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
    fn current(&mut self, path: &str, line: usize) -> Result<Option<&Slot>, PatchError> {
        if !self.files.contains_key(path) {
            let slot = self.load(path, line)?;
            self.files.insert(path.to_owned(), slot);
        }
        Ok(self.files.get(path).filter(|s| s.content.is_some()))
    }

    /// Takes the content (and mode) of `path`, which must exist, out of its slot (without a
    /// copy: the caller puts a content back, and on error the whole tree is dropped).
    fn take(&mut self, path: &str, line: usize) -> Result<(Vec<u8>, u32), PatchError> {
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

    fn set(&mut self, path: &str, line: usize, content: Option<Vec<u8>>, mode: u32) {
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

    /// Refuses to make `path` a file when the patch already made one of its parents a file or
    /// put files under it.
    fn check_shape(&self, path: &str, line: usize) -> Result<(), PatchError> {
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
    fn load(&self, path: &str, line: usize) -> Result<Slot, PatchError> {
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
    fn probe(&self, path: &str, line: usize) -> Result<Option<fs::Metadata>, PatchError> {
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

    /// Applies `hunks` (in order) to `content`.
    fn apply_hunks(
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

    fn check_size(&self, file: &str, len: usize) -> Result<(), PatchError> {
        if len as u64 > MAX_FILE_BYTES {
            return Err(PatchError::FileTooLarge {
                patch: self.patch.to_owned(),
                file: file.to_owned(),
                max: MAX_FILE_BYTES,
            });
        }
        Ok(())
    }

    /// Writes every changed file (temporary file + rename), then removes deleted ones.
    fn commit(self) -> Result<ApplyReport, PatchError> {
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

    fn write(&self, path: &str, line: usize, content: &[u8], mode: u32) -> Result<(), PatchError> {
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

/// A line boundary in a file: 0-based line index and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    byte: usize,
}

impl Pos {
    const START: Pos = Pos { line: 0, byte: 0 };

    /// The boundary after `line`, which starts here.
    fn after(self, line: &[u8]) -> Pos {
        Pos {
            line: self.line + 1,
            byte: self.byte + line.len(),
        }
    }
}

/// Where `hunk` applies in `content` (start and end of its old lines): at its stated line if
/// its old lines are there, else at the only exact match at or after `cursor` (the end of the
/// previous hunk). Files are only ever scanned forward, never split into a line table.
fn locate(
    content: &[u8],
    cursor: Pos,
    hunk: &Hunk<'_>,
    budget: &mut u64,
) -> Result<(Pos, Pos), Failure> {
    let stated = hunk.stated_index();
    if hunk.old_count == 0 {
        // Nothing to match: a pure insertion applies exactly where stated.
        if stated < cursor.line {
            return Err(Failure::Mismatch(
                "it overlaps the previous hunk".to_owned(),
            ));
        }
        return seek(content, cursor, stated)
            .map(|at| (at, at))
            .ok_or_else(|| Failure::Mismatch(too_short(content)));
    }
    // The stated position costs at most the hunk's own bytes: not charged.
    let mut unlimited = u64::MAX;
    if stated >= cursor.line
        && let Some(at) = seek(content, cursor, stated)
        && let Some(end) = matches_at(content, at, hunk, &mut unlimited)?
    {
        return Ok((at, end));
    }
    // Like `patch`: less context before the change than after it means the hunk is at the
    // start of the file, and less after than before means it is at the end; a search keeps
    // such a hunk there.
    let at_start = hunk.leading < hunk.trailing;
    let at_end = hunk.trailing < hunk.leading;
    let mut found = Vec::new();
    let mut at = cursor;
    loop {
        if let Some(end) = matches_at(content, at, hunk, budget)?
            && (!at_start || at.line == 0)
            && (!at_end || end.byte == content.len())
        {
            found.push((at, end));
            if found.len() == 2 {
                break;
            }
        }
        let Some(line) = line_at(content, at.byte) else {
            break;
        };
        charge(budget, line.len())?;
        at = at.after(line);
    }
    match found.as_slice() {
        [] => Err(Failure::Mismatch(format!(
            "{}; no exact match elsewhere in the file",
            mismatch(content, cursor, stated, hunk)
        ))),
        [only] => Ok(*only),
        [(first, _), (second, _), ..] => Err(Failure::Ambiguous(first.line, second.line)),
    }
}

/// Counts `cost + 1` scanned bytes against `budget`.
fn charge(budget: &mut u64, cost: usize) -> Result<(), Failure> {
    let cost = cost as u64 + 1;
    *budget = budget.checked_sub(cost).ok_or(Failure::SearchLimit)?;
    Ok(())
}

/// The boundary before line `line` (0-based; the number of lines means the end), scanning
/// forward from `from`.
fn seek(content: &[u8], from: Pos, line: usize) -> Option<Pos> {
    let mut at = from;
    while at.line < line {
        at = at.after(line_at(content, at.byte)?);
    }
    Some(at)
}

/// If the old lines of `hunk` are at `at`, where they end. Compared bytes are charged to
/// `budget`.
fn matches_at(
    content: &[u8],
    at: Pos,
    hunk: &Hunk<'_>,
    budget: &mut u64,
) -> Result<Option<Pos>, Failure> {
    let mut at = at;
    for expected in hunk.old_lines() {
        let Some(found) = line_at(content, at.byte) else {
            return Ok(None);
        };
        // Slices of different lengths compare in constant time.
        charge(
            budget,
            if found.len() == expected.len() {
                found.len()
            } else {
                0
            },
        )?;
        if found != expected {
            return Ok(None);
        }
        at = at.after(found);
    }
    Ok(Some(at))
}

/// Describes why the old lines of `hunk` are not at line `stated`.
fn mismatch(content: &[u8], cursor: Pos, stated: usize, hunk: &Hunk<'_>) -> String {
    if stated < cursor.line {
        return "it overlaps the previous hunk".to_owned();
    }
    let Some(mut at) = seek(content, cursor, stated) else {
        return too_short(content);
    };
    for expected in hunk.old_lines() {
        match line_at(content, at.byte) {
            None => {
                return format!(
                    "context differs at line {}: expected {}, found the end of the file",
                    at.line + 1,
                    show(expected)
                );
            }
            Some(found) if found != expected => {
                return format!(
                    "context differs at line {}: expected {}, found {}",
                    at.line + 1,
                    show(expected),
                    show(found)
                );
            }
            Some(found) => at = at.after(found),
        }
    }
    "context differs".to_owned()
}

/// "the file has only N lines".
fn too_short(content: &[u8]) -> String {
    let newlines = content.iter().filter(|&&b| b == b'\n').count();
    let lines = newlines + usize::from(content.last().is_some_and(|&b| b != b'\n'));
    format!("the file has only {lines} lines")
}

/// A line for an error message: quoted, control characters escaped, shortened.
fn show(line: &[u8]) -> String {
    let (text, newline) = match line.strip_suffix(b"\n") {
        Some(text) => (text, true),
        None => (line, false),
    };
    let text = String::from_utf8_lossy(text);
    let mut shown = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_CHARS {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if newline {
        format!("`{shown}`")
    } else {
        format!("`{shown}` (no newline at end of file)")
    }
}

/// `mode` with the executable bits set (where readable) or cleared.
fn with_exec(mode: u32, exec: bool) -> u32 {
    if exec {
        mode | ((mode & 0o444) >> 2)
    } else {
        mode & !0o111
    }
}

#[cfg(unix)]
fn disk_mode(metadata: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn disk_mode(_metadata: &fs::Metadata) -> u32 {
    DEFAULT_MODE
}

#[cfg(unix)]
fn set_mode(file: &fs::File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &fs::File, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Directories a patch creates get `0o755`, like the extracted ones.
#[cfg(unix)]
fn set_dir_mode(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_dir_mode(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    /// A temporary tree holding `files` (path, content).
    fn tree(files: &[(&str, &str)]) -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, content).unwrap();
        }
        dir
    }

    fn run(dir: &TempDir, text: &str, strip: u32) -> Result<ApplyReport, PatchError> {
        run_bytes(dir, text.as_bytes(), strip)
    }

    fn run_bytes(dir: &TempDir, content: &[u8], strip: u32) -> Result<ApplyReport, PatchError> {
        apply(
            dir.path(),
            &Patch {
                name: "fix.patch",
                content,
            },
            strip,
        )
    }

    fn read(dir: &TempDir, path: &str) -> String {
        fs::read_to_string(dir.path().join(path)).unwrap()
    }

    fn exists(dir: &TempDir, path: &str) -> bool {
        fs::symlink_metadata(dir.path().join(path)).is_ok()
    }

    fn changed(report: &ApplyReport) -> Vec<&str> {
        report.files_changed.iter().map(String::as_str).collect()
    }

    /// Every entry under `dir`, recursively, relative and sorted.
    fn listing(dir: &TempDir) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push(rel);
                if fs::symlink_metadata(&path).unwrap().is_dir() {
                    walk(root, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir.path(), dir.path(), &mut out);
        out.sort();
        out
    }

    #[cfg(unix)]
    fn mode_of(dir: &TempDir, path: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(dir.path().join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    const TEN: &str = "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\n";

    #[test]
    fn simple_modify() {
        let dir = tree(&[("src/a.c", "int a;\nint b;\nint c;\n")]);
        let patch =
            "--- a/src/a.c\n+++ b/src/a.c\n@@ -1,3 +1,3 @@\n int a;\n-int b;\n+long b;\n int c;\n";
        let report = run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "src/a.c"), "int a;\nlong b;\nint c;\n");
        assert_eq!(changed(&report), ["src/a.c"]);
    }

    #[test]
    fn header_timestamps_and_default_counts() {
        let dir = tree(&[("x.txt", "old\n")]);
        let patch = "--- x.txt\t2019-05-27 17:19:37.054593200 +0200\n\
                     +++ x.txt\t2019-05-27 17:20:00.000000000 +0200\n\
                     @@ -1 +1 @@\n-old\n+new\n";
        run(&dir, patch, 0).unwrap();
        assert_eq!(read(&dir, "x.txt"), "new\n");
    }

    #[test]
    fn multiple_hunks() {
        let dir = tree(&[("t.txt", TEN)]);
        let patch = "--- a/t.txt\n+++ b/t.txt\n\
                     @@ -1,3 +1,4 @@\n one\n+one and a half\n two\n three\n\
                     @@ -8,3 +9,2 @@\n eight\n-nine\n ten\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(
            read(&dir, "t.txt"),
            "one\none and a half\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nten\n"
        );
    }

    #[test]
    fn multiple_files() {
        let dir = tree(&[("a.txt", "a\n"), ("sub/b.txt", "b\n")]);
        let patch = "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+A\n\
                     --- a/sub/b.txt\n+++ b/sub/b.txt\n@@ -1 +1,2 @@\n b\n+B\n";
        let report = run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "a.txt"), "A\n");
        assert_eq!(read(&dir, "sub/b.txt"), "b\nB\n");
        assert_eq!(changed(&report), ["a.txt", "sub/b.txt"]);
    }

    #[test]
    fn create_file_in_new_directory() {
        let dir = tree(&[]);
        let patch = "--- /dev/null\n+++ b/new/dir/file.txt\n@@ -0,0 +1,2 @@\n+hello\n+world\n";
        let report = run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "new/dir/file.txt"), "hello\nworld\n");
        assert_eq!(changed(&report), ["new/dir/file.txt"]);
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&dir, "new/dir/file.txt"), 0o644);
            assert_eq!(mode_of(&dir, "new/dir"), 0o755);
        }
    }

    #[test]
    fn create_existing_file_is_refused() {
        let dir = tree(&[("f.txt", "here\n")]);
        let patch = "--- /dev/null\n+++ b/f.txt\n@@ -0,0 +1 @@\n+new\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::AlreadyExists { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "patch fix.patch: line 1: cannot create f.txt: it already exists"
        );
        assert_eq!(read(&dir, "f.txt"), "here\n");
    }

    #[test]
    fn delete_file() {
        let dir = tree(&[("d.txt", "x\ny\n"), ("keep.txt", "k\n")]);
        let patch = "diff --git a/d.txt b/d.txt\ndeleted file mode 100644\nindex 1..0\n\
                     --- a/d.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x\n-y\n";
        let report = run(&dir, patch, 1).unwrap();
        assert!(!exists(&dir, "d.txt"));
        assert_eq!(changed(&report), ["d.txt"]);
    }

    #[test]
    fn delete_must_match_whole_content() {
        let dir = tree(&[("d.txt", "x\ny\nz\n")]);
        let patch = "--- a/d.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x\n-y\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            matches!(err, PatchError::DeleteMismatch { remaining: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("cannot delete d.txt"), "{err}");
        assert_eq!(read(&dir, "d.txt"), "x\ny\nz\n");

        // Content differing from the patch's is a hunk failure.
        let dir = tree(&[("d.txt", "x\nY\n")]);
        let patch = "--- a/d.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x\n-y\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");
        assert!(exists(&dir, "d.txt"));
    }

    #[test]
    fn git_delete_of_empty_file_without_hunks() {
        let dir = tree(&[("empty", "")]);
        let patch =
            "diff --git a/empty b/empty\ndeleted file mode 100644\nindex e69de29..0000000\n";
        run(&dir, patch, 1).unwrap();
        assert!(!exists(&dir, "empty"));

        let dir = tree(&[("empty", "not empty\n")]);
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::DeleteMismatch { .. }), "{err}");
    }

    #[test]
    fn git_new_empty_file_without_hunks() {
        let dir = tree(&[]);
        let patch =
            "diff --git a/dir/empty b/dir/empty\nnew file mode 100644\nindex 0000000..e69de29\n";
        let report = run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "dir/empty"), "");
        assert_eq!(changed(&report), ["dir/empty"]);
    }

    #[test]
    fn patching_a_missing_file_names_it() {
        let dir = tree(&[]);
        let patch = "--- a/src/gone.c\n+++ b/src/gone.c\n@@ -1 +1 @@\n-a\n+b\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::Missing { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "patch fix.patch: line 1: cannot patch src/gone.c: no such file"
        );
    }

    #[test]
    fn pure_rename() {
        let dir = tree(&[("src/main.c", "int main;\n")]);
        let patch = "diff --git a/src/main.c b/src/entry.c\nsimilarity index 100%\n\
                     rename from src/main.c\nrename to src/entry.c\n";
        let report = run(&dir, patch, 1).unwrap();
        assert!(!exists(&dir, "src/main.c"));
        assert_eq!(read(&dir, "src/entry.c"), "int main;\n");
        assert_eq!(changed(&report), ["src/main.c", "src/entry.c"]);
    }

    #[cfg(unix)]
    #[test]
    fn rename_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tree(&[("run.sh", "echo\n")]);
        fs::set_permissions(dir.path().join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        let patch = "diff --git a/run.sh b/bin/run.sh\nsimilarity index 100%\n\
                     rename from run.sh\nrename to bin/run.sh\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(mode_of(&dir, "bin/run.sh"), 0o750);
    }

    #[test]
    fn rename_with_changes_and_strip_from_rename_lines() {
        let dir = tree(&[("old_name.txt", TEN)]);
        // Real `git diff -M` output.
        let patch = "diff --git a/old_name.txt b/new_name.txt\n\
                     similarity index 89%\n\
                     rename from old_name.txt\n\
                     rename to new_name.txt\n\
                     index c9e9e05..7155914 100644\n\
                     --- a/old_name.txt\n\
                     +++ b/new_name.txt\n\
                     @@ -2,7 +2,7 @@ one\n two\n three\n four\n-five\n+FIVE\n\
                     \x20six\n seven\n eight\n";
        let report = run(&dir, patch, 1).unwrap();
        assert!(!exists(&dir, "old_name.txt"));
        assert_eq!(read(&dir, "new_name.txt"), TEN.replace("five", "FIVE"));
        assert_eq!(changed(&report), ["old_name.txt", "new_name.txt"]);

        // Without a usable `diff --git` line, the rename lines name the files (one component
        // less stripped, as they carry no a/ b/ prefix).
        let dir = tree(&[("x/y", "1\n")]);
        let patch = "diff --git a/x y z b/q r s\nrename from x/y\nrename to x/z\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "x/z"), "1\n");
        assert!(!exists(&dir, "x/y"));
    }

    #[test]
    fn rename_onto_existing_file_is_refused() {
        let dir = tree(&[("a", "a\n"), ("b", "b\n")]);
        let patch = "diff --git a/a b/b\nsimilarity index 100%\nrename from a\nrename to b\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            matches!(err, PatchError::AlreadyExists { ref file, .. } if file == "b"),
            "{err}"
        );
        assert_eq!(read(&dir, "a"), "a\n");
    }

    #[test]
    fn copy() {
        let dir = tree(&[("a.txt", "1\n2\n")]);
        let patch = "diff --git a/a.txt b/c.txt\nsimilarity index 50%\n\
                     copy from a.txt\ncopy to c.txt\n\
                     --- a/a.txt\n+++ b/c.txt\n@@ -1,2 +1,2 @@\n 1\n-2\n+3\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "a.txt"), "1\n2\n");
        assert_eq!(read(&dir, "c.txt"), "1\n3\n");
    }

    #[test]
    fn strip_counts() {
        let patch0 = "--- f.txt\n+++ f.txt\n@@ -1 +1 @@\n-a\n+b\n";
        let dir = tree(&[("f.txt", "a\n")]);
        run(&dir, patch0, 0).unwrap();
        assert_eq!(read(&dir, "f.txt"), "b\n");

        let patch1 = "--- a/f.txt\n+++ b/f.txt\n@@ -1 +1 @@\n-a\n+b\n";
        let dir = tree(&[("f.txt", "a\n")]);
        run(&dir, patch1, 1).unwrap();
        assert_eq!(read(&dir, "f.txt"), "b\n");

        // -p0 keeps the prefix: b/f.txt does not exist.
        let dir = tree(&[("f.txt", "a\n")]);
        let err = run(&dir, patch1, 0).unwrap_err();
        assert!(
            matches!(err, PatchError::Missing { ref file, .. } if file == "b/f.txt"),
            "{err}"
        );

        let patch2 = "--- x/proj-1.0/src/f.txt\n+++ y/proj-1.0//src/f.txt\n@@ -1 +1 @@\n-a\n+b\n";
        let dir = tree(&[("src/f.txt", "a\n")]);
        let report = run(&dir, patch2, 2).unwrap();
        assert_eq!(read(&dir, "src/f.txt"), "b\n");
        assert_eq!(changed(&report), ["src/f.txt"]);

        // `./` counts as a component when stripping; later `.` components are dropped.
        let patch_dot = "--- ./a/./f.txt\n+++ ./a/./f.txt\n@@ -1 +1 @@\n-a\n+b\n";
        let dir = tree(&[("f.txt", "a\n")]);
        run(&dir, patch_dot, 2).unwrap();
        assert_eq!(read(&dir, "f.txt"), "b\n");
    }

    #[test]
    fn strip_leaving_nothing_is_refused() {
        let dir = tree(&[("f.txt", "a\n")]);
        let patch = "garbage\n--- a/f.txt\n+++ b/f.txt\n@@ -1 +1 @@\n-a\n+b\n";
        let err = run(&dir, patch, 2).unwrap_err();
        assert!(
            matches!(err, PatchError::StripTooLong { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("`a/f.txt`"), "{err}");
    }

    #[test]
    fn no_newline_at_end_of_old_file() {
        let dir = tree(&[("nonl.txt", "last")]);
        // Real `git diff` output adding the final newline.
        let patch = "diff --git a/nonl.txt b/nonl.txt\nindex 1c1206e..b25fa3f 100644\n\
                     --- a/nonl.txt\n+++ b/nonl.txt\n@@ -1 +1 @@\n-last\n\
                     \\ No newline at end of file\n+last\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "nonl.txt"), "last\n");

        // The same patch does not apply to a file that has the newline.
        let dir = tree(&[("nonl.txt", "last\n")]);
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            err.to_string().contains("(no newline at end of file)"),
            "{err}"
        );
    }

    #[test]
    fn no_newline_at_end_of_new_file() {
        let dir = tree(&[("f", "a\nb\n")]);
        let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of file\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "f"), "a\nc");
    }

    #[test]
    fn no_newline_on_both_sides() {
        let dir = tree(&[("f", "a\nb\nc")]);
        let patch =
            "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n-a\n+A\n b\n c\n\\ No newline at end of file\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "f"), "A\nb\nc");

        // Marker in the middle of a hunk (old side), then added lines.
        let dir = tree(&[("f", "x\ny")]);
        let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,3 @@\n x\n-y\n\\ No newline at end of file\n\
                     +y\n+z\n\\ No newline at end of file\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "f"), "x\ny\nz");
    }

    #[test]
    fn new_side_without_newline_must_end_the_file() {
        let dir = tree(&[("f", "a\nb\nc\n")]);
        let patch = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+A\n\\ No newline at end of file\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");
        assert_eq!(read(&dir, "f"), "a\nb\nc\n");
    }

    #[test]
    fn context_mismatch_names_file_hunk_and_lines() {
        let mut content = String::new();
        for i in 1..=50 {
            content.push_str(&format!("line {i}\n"));
        }
        let dir = tree(&[("src/a.c", &content)]);
        let patch = "--- a/src/a.c\n+++ b/src/a.c\n\
                     @@ -2,1 +2,1 @@\n-line 2\n+LINE 2\n\
                     @@ -40,3 +40,3 @@\n line 40\n-foo\n+bar\n line 42\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            matches!(
                err,
                PatchError::HunkFailed {
                    hunk: 2,
                    line: 40,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "patch fix.patch: hunk 2 of src/a.c does not apply at line 40 (context differs at \
             line 41: expected `foo`, found `line 41`; no exact match elsewhere in the file)"
        );
        // Nothing written, not even the first hunk.
        assert_eq!(read(&dir, "src/a.c"), content);
    }

    #[test]
    fn mismatch_past_end_of_file() {
        let dir = tree(&[("f", "a\n")]);
        let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected `b`, found the end of the file"),
            "{err}"
        );
    }

    #[test]
    fn offset_hunk_found_by_search() {
        // Three lines were inserted at the top since the patch was made.
        let content = format!("new 1\nnew 2\nnew 3\n{TEN}");
        let dir = tree(&[("t.txt", &content)]);
        let patch = "--- a/t.txt\n+++ b/t.txt\n\
                     @@ -4,3 +4,3 @@\n four\n-five\n+FIVE\n six\n\
                     @@ -8,3 +8,3 @@\n eight\n-nine\n+NINE\n ten\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(
            read(&dir, "t.txt"),
            format!(
                "new 1\nnew 2\nnew 3\n{}",
                TEN.replace("five", "FIVE").replace("nine", "NINE")
            )
        );

        // Negative offset too.
        let dir = tree(&[("t.txt", "four\nfive\nsix\n")]);
        let patch = "--- a/t.txt\n+++ b/t.txt\n@@ -4,3 +4,3 @@\n four\n-five\n+FIVE\n six\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "t.txt"), "four\nFIVE\nsix\n");
    }

    #[test]
    fn search_keeps_hunks_at_file_start_or_end() {
        // Less context after the change than before: the hunk is at the end of the file.
        let patch = "--- a/f\n+++ b/f\n@@ -2,3 +2,3 @@\n b\n c\n-d\n+D\n";
        let dir = tree(&[("f", "x\na\nb\nc\nd\n")]);
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "f"), "x\na\nb\nc\nD\n");
        let dir = tree(&[("f", "x\na\nb\nc\nd\nmore\n")]);
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");

        // Less context before: at the start.
        let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n-a\n+A\n b\n c\n";
        let dir = tree(&[("f", "new\na\nb\nc\n")]);
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");
        let dir = tree(&[("f", "a\nb\nc\n")]);
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "f"), "A\nb\nc\n");
    }

    #[test]
    fn ambiguous_search_is_refused() {
        let dir = tree(&[("f", "x\na\nb\nx\na\nb\nx\n")]);
        let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n x\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            matches!(
                err,
                PatchError::Ambiguous {
                    hunk: 1,
                    first: 2,
                    second: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("refusing to guess"), "{err}");
        assert_eq!(read(&dir, "f"), "x\na\nb\nx\na\nb\nx\n");

        // At the stated position, a repeated pre-image is fine.
        let patch = "--- a/f\n+++ b/f\n@@ -5,3 +5,3 @@\n a\n-b\n+B\n x\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "f"), "x\na\nb\nx\na\nB\nx\n");
    }

    #[test]
    fn search_does_not_go_back_before_previous_hunk() {
        let dir = tree(&[("f", "a\nb\nc\nd\n")]);
        // Hunk 2 claims line 1 again: its lines only exist before hunk 1's end.
        let patch = "--- a/f\n+++ b/f\n@@ -3,1 +3,1 @@\n-c\n+C\n@@ -1,1 +1,1 @@\n-a\n+A\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            matches!(err, PatchError::HunkFailed { hunk: 2, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("overlaps the previous hunk"),
            "{err}"
        );
    }

    #[test]
    fn search_cost_is_capped() {
        let content = "a\n".repeat(1000) + "b\n";
        let text = b"@@ -1,2 +1,2 @@\n a\n-b\n+c\n";
        let hunk = Parser::new("p", text, 0).hunks().unwrap().pop().unwrap();
        let mut budget = MAX_SEARCH_BYTES;
        let (at, end) = locate(content.as_bytes(), Pos::START, &hunk, &mut budget)
            .ok()
            .unwrap();
        assert_eq!((at.line, end.line), (999, 1001));
        assert!(budget < MAX_SEARCH_BYTES);
        let mut tiny = 100;
        assert!(matches!(
            locate(content.as_bytes(), Pos::START, &hunk, &mut tiny),
            Err(Failure::SearchLimit)
        ));
    }

    #[test]
    fn hunk_lines_follow_markers() {
        let text = b"@@ -1,3 +1,4 @@\n a\n\n-b\n\\ No newline at end of file\n\
                     +B\n+C\n\\ No newline at end of file\n";
        let hunk = Parser::new("p", text, 0).hunks().unwrap().pop().unwrap();
        let old: Vec<&[u8]> = hunk.old_lines().collect();
        let new: Vec<&[u8]> = hunk.new_lines().collect();
        assert_eq!(old, [&b"a\n"[..], b"\n", b"b"]);
        assert_eq!(new, [&b"a\n"[..], b"\n", b"B\n", b"C"]);
        assert!(hunk.new_eof);
    }

    #[test]
    fn traversal_names_are_refused() {
        for (name, strip) in [
            ("../x", 0),
            ("a/../x", 1),
            ("a/../../x", 1),
            ("/etc/passwd", 0),
            ("/etc/passwd", 1),
            ("a\\..\\x", 0),
            ("C:/x", 0),
        ] {
            let dir = tree(&[("x", "a\n")]);
            let patch = format!("--- {name}\n+++ {name}\n@@ -1 +1 @@\n-a\n+b\n");
            let err = run(&dir, &patch, strip).unwrap_err();
            assert!(
                matches!(err, PatchError::UnsafePath { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(name), "{name}: {err}");
            assert_eq!(read(&dir, "x"), "a\n");
        }
        // NUL and other control characters through git quoting.
        let dir = tree(&[]);
        let patch = "--- /dev/null\n+++ \"b/x\\000y\"\n@@ -0,0 +1 @@\n+a\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        let patch = "--- /dev/null\n+++ \"b/x\\ny\"\n@@ -0,0 +1 @@\n+a\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::UnsafePath { .. }), "{err}");
        // Also when the unsafe name is only the old one.
        let patch = "diff --git a/../x b/x\nsimilarity index 100%\nrename from ../x\nrename to x\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::UnsafePath { .. }), "{err}");
        assert!(listing(&dir).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_on_the_way_are_refused() {
        let outside = tree(&[("target.txt", "a\n")]);
        let dir = tree(&[]);
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("target.txt"), dir.path().join("file"))
            .unwrap();

        // Through a symlinked directory.
        let patch = "--- a/link/target.txt\n+++ b/link/target.txt\n@@ -1 +1 @@\n-a\n+b\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::UnsafePath { .. }), "{err}");
        assert!(err.to_string().contains("`link` is a symlink"), "{err}");
        // Creating through it.
        let patch = "--- /dev/null\n+++ b/link/new.txt\n@@ -0,0 +1 @@\n+x\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::UnsafePath { .. }), "{err}");
        // The target itself a symlink.
        let patch = "--- a/file\n+++ b/file\n@@ -1 +1 @@\n-a\n+b\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::UnsafePath { .. }), "{err}");
        assert!(err.to_string().contains("`file`"), "{err}");

        assert_eq!(read(&outside, "target.txt"), "a\n");
        assert!(!outside.path().join("new.txt").exists());
    }

    #[test]
    fn directory_target_is_refused() {
        let dir = tree(&[("d/f", "a\n")]);
        let patch = "--- a/d\n+++ b/d\n@@ -1 +1 @@\n-a\n+b\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::NotAFile { .. }), "{err}");
        let patch = "--- /dev/null\n+++ b/d/f/g\n@@ -0,0 +1 @@\n+a\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            err.to_string().contains("`d/f` is not a directory"),
            "{err}"
        );
    }

    #[test]
    fn real_git_diff() {
        let dir = tree(&[
            ("src/main.c", "int main() {\n  return 0;\n}\n"),
            ("dead.txt", "gone\n"),
            ("run.sh", "#!/bin/sh\necho hi\n"),
            ("sp ace.txt", "x\n"),
        ]);
        // `git diff --cached` output (tabs after names with spaces, quoted names with octal
        // escapes, mode changes, deletion, creation).
        let patch = "diff --git \"a/caf\\303\\251.txt\" \"b/caf\\303\\251.txt\"\n\
                     new file mode 100644\n\
                     index 0000000..c600332\n\
                     --- /dev/null\n\
                     +++ \"b/caf\\303\\251.txt\"\n\
                     @@ -0,0 +1 @@\n\
                     +\u{e9}\n\
                     diff --git a/dead.txt b/dead.txt\n\
                     deleted file mode 100644\n\
                     index 286c5f5..0000000\n\
                     --- a/dead.txt\n\
                     +++ /dev/null\n\
                     @@ -1 +0,0 @@\n\
                     -gone\n\
                     diff --git a/run.sh b/run.sh\n\
                     old mode 100644\n\
                     new mode 100755\n\
                     diff --git a/sp ace.txt b/sp ace.txt\n\
                     index 587be6b..b77b4eb 100644\n\
                     --- a/sp ace.txt\t\n\
                     +++ b/sp ace.txt\t\n\
                     @@ -1 +1,2 @@\n\
                     \x20x\n\
                     +y\n\
                     diff --git a/src/main.c b/src/main.c\n\
                     index 4cce7f6..16db28e 100644\n\
                     --- a/src/main.c\n\
                     +++ b/src/main.c\n\
                     @@ -1,3 +1,3 @@\n\
                     \x20int main() {\n\
                     -  return 0;\n\
                     +  return 1;\n\
                     \x20}\n\
                     diff --git a/tool.sh b/tool.sh\n\
                     new file mode 100755\n\
                     index 0000000..05cfd7f\n\
                     --- /dev/null\n\
                     +++ b/tool.sh\n\
                     @@ -0,0 +1,2 @@\n\
                     +#!/bin/sh\n\
                     +echo new\n";
        let report = run(&dir, patch, 1).unwrap();
        assert_eq!(
            changed(&report),
            [
                "caf\u{e9}.txt",
                "dead.txt",
                "run.sh",
                "sp ace.txt",
                "src/main.c",
                "tool.sh"
            ]
        );
        assert_eq!(read(&dir, "caf\u{e9}.txt"), "\u{e9}\n");
        assert!(!exists(&dir, "dead.txt"));
        assert_eq!(read(&dir, "run.sh"), "#!/bin/sh\necho hi\n");
        assert_eq!(read(&dir, "sp ace.txt"), "x\ny\n");
        assert_eq!(read(&dir, "src/main.c"), "int main() {\n  return 1;\n}\n");
        assert_eq!(read(&dir, "tool.sh"), "#!/bin/sh\necho new\n");
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&dir, "run.sh"), 0o755);
            assert_eq!(mode_of(&dir, "tool.sh"), 0o755);
            assert_eq!(mode_of(&dir, "src/main.c"), 0o644);
        }
    }

    #[cfg(unix)]
    #[test]
    fn mode_change_clears_exec_and_keeps_other_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tree(&[("x y", "a\n")]);
        fs::set_permissions(dir.path().join("x y"), fs::Permissions::from_mode(0o755)).unwrap();
        // Unquoted names with a space, no `---`/`+++`: split where both names agree.
        let patch = "diff --git a/x y b/x y\nold mode 100755\nnew mode 100644\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(mode_of(&dir, "x y"), 0o644);
        assert_eq!(read(&dir, "x y"), "a\n");
    }

    #[test]
    fn symlink_and_submodule_modes_are_unsupported() {
        let dir = tree(&[]);
        let patch = "diff --git a/l b/l\nnew file mode 120000\nindex 0..1\n--- /dev/null\n+++ b/l\n\
                     @@ -0,0 +1 @@\n+target\n\\ No newline at end of file\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            matches!(err, PatchError::Unsupported { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("symlink"), "{err}");
        let patch = "diff --git a/m b/m\nnew file mode 160000\nindex 0..1\n--- /dev/null\n+++ b/m\n\
                     @@ -0,0 +1 @@\n+Subproject commit 1234\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(err.to_string().contains("submodule"), "{err}");
    }

    #[test]
    fn format_patch_mail_around_the_diff_is_ignored() {
        let dir = tree(&[("f.txt", "a\n")]);
        let patch = "From 87503407e399baf93f46ec45913e72d52ebd6cf9 Mon Sep 17 00:00:00 2001\n\
                     From: t <a@b>\n\
                     Date: Fri, 27 Nov 2026 13:00:32 +0000\n\
                     Subject: [PATCH] fix things\n\
                     \n\
                     --- this line in the message is not a header\n\
                     ---\n\
                     \x20f.txt | 2 +-\n\
                     \x201 file changed, 1 insertion(+), 1 deletion(-)\n\
                     \x20create mode 100644 other\n\
                     \n\
                     diff --git a/f.txt b/f.txt\n\
                     index 1..2 100644\n\
                     --- a/f.txt\n\
                     +++ b/f.txt\n\
                     @@ -1 +1 @@\n\
                     -a\n\
                     +b\n\
                     -- \n\
                     2.47.3\n\
                     \n";
        let report = run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "f.txt"), "b\n");
        assert_eq!(changed(&report), ["f.txt"]);
    }

    #[test]
    fn removed_lines_looking_like_headers() {
        let dir = tree(&[("f", "-- x\n++ y\nz\n")]);
        let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,1 @@\n--- x\n-++ y\n z\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "f"), "z\n");

        let dir = tree(&[("f", "z\n")]);
        let patch = "--- a/f\n+++ b/f\n@@ -1 +1,3 @@\n z\n+++ x\n+-- y\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "f"), "z\n++ x\n-- y\n");
    }

    #[test]
    fn crlf_files_and_patches() {
        let dir = tree(&[("w.txt", "one\r\ntwo\r\nthree\r\n")]);
        let patch =
            "--- a/w.txt\r\n+++ b/w.txt\r\n@@ -1,3 +1,3 @@\r\n one\r\n-two\r\n+TWO\r\n three\r\n";
        let report = run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "w.txt"), "one\r\nTWO\r\nthree\r\n");
        assert_eq!(changed(&report), ["w.txt"]);

        // LF hunk lines do not match CRLF content (no whitespace leniency).
        let dir = tree(&[("w.txt", "one\r\ntwo\r\n")]);
        let patch = "--- a/w.txt\n+++ b/w.txt\n@@ -1,2 +1,2 @@\n one\n-two\n+TWO\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(err.to_string().contains("found `one\\r`"), "{err}");

        // Mixed: only one line ends in CRLF.
        let dir = tree(&[("m.txt", "a\nb\r\nc\n")]);
        let patch = "--- a/m.txt\n+++ b/m.txt\n@@ -1,3 +1,3 @@\n a\n-b\r\n+B\r\n c\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "m.txt"), "a\nB\r\nc\n");
    }

    #[test]
    fn binary_content_is_patched_as_bytes() {
        let dir = tree(&[]);
        fs::write(dir.path().join("bin"), b"\xff\xfe\n\x00zero\n").unwrap();
        let patch = b"--- a/bin\n+++ b/bin\n@@ -1,2 +1,2 @@\n \xff\xfe\n-\x00zero\n+\x01one\n";
        run_bytes(&dir, patch, 1).unwrap();
        assert_eq!(
            fs::read(dir.path().join("bin")).unwrap(),
            b"\xff\xfe\n\x01one\n"
        );
    }

    #[test]
    fn empty_context_hunks() {
        // `diff -U0`: pure insertion, pure deletion, change.
        let dir = tree(&[("t.txt", TEN)]);
        let patch = "--- a/t.txt\n+++ b/t.txt\n\
                     @@ -0,0 +1 @@\n+zero\n\
                     @@ -2,0 +4,2 @@\n+two.a\n+two.b\n\
                     @@ -5 +6,0 @@\n-five\n\
                     @@ -7,2 +8 @@\n-seven\n-eight\n+7-8\n\
                     @@ -10,0 +11 @@\n+eleven\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(
            read(&dir, "t.txt"),
            "zero\none\ntwo\ntwo.a\ntwo.b\nthree\nfour\nsix\n7-8\nnine\nten\neleven\n"
        );

        // An insertion is never moved: past the end is an error.
        let dir = tree(&[("s.txt", "a\n")]);
        let patch = "--- a/s.txt\n+++ b/s.txt\n@@ -5,0 +6 @@\n+x\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            err.to_string().contains("the file has only 1 lines"),
            "{err}"
        );

        // Nor appended after a last line without newline.
        let dir = tree(&[("s.txt", "a")]);
        let patch = "--- a/s.txt\n+++ b/s.txt\n@@ -1,0 +2 @@\n+x\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");
    }

    #[test]
    fn failure_in_second_file_leaves_first_unchanged() {
        let dir = tree(&[("a.txt", "a\n"), ("b.txt", "b\n")]);
        let patch = "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+A\n\
                     --- /dev/null\n+++ b/c.txt\n@@ -0,0 +1 @@\n+c\n\
                     --- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-not b\n+B\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            matches!(err, PatchError::HunkFailed { ref file, hunk: 1, .. } if file == "b.txt"),
            "{err}"
        );
        assert_eq!(read(&dir, "a.txt"), "a\n");
        assert!(!exists(&dir, "c.txt"));
        assert_eq!(listing(&dir), ["a.txt", "b.txt"]);
    }

    #[test]
    fn no_temporary_files_are_left() {
        let dir = tree(&[("d/a.txt", "a\n")]);
        let patch = "--- a/d/a.txt\n+++ b/d/a.txt\n@@ -1 +1 @@\n-a\n+A\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(listing(&dir), ["d", "d/a.txt"]);
    }

    #[test]
    fn sequential_diffs_of_one_file() {
        let dir = tree(&[("f", "1\n2\n3\n")]);
        let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n-1\n+one\n 2\n 3\n\
                     --- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n one\n 2\n-3\n+three\n";
        let report = run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "f"), "one\n2\nthree\n");
        assert_eq!(changed(&report), ["f"]);

        // Create then patch in the same patch.
        let dir = tree(&[]);
        let patch =
            "--- /dev/null\n+++ b/n\n@@ -0,0 +1 @@\n+x\n--- a/n\n+++ b/n\n@@ -1 +1 @@\n-x\n+y\n";
        run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "n"), "y\n");
    }

    #[test]
    fn file_and_directory_conflicts_within_a_patch() {
        let dir = tree(&[]);
        let patch = "--- /dev/null\n+++ b/a\n@@ -0,0 +1 @@\n+x\n\
                     --- /dev/null\n+++ b/a/b\n@@ -0,0 +1 @@\n+y\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(err.to_string().contains("`a` is a file"), "{err}");
        let patch = "--- /dev/null\n+++ b/a/b\n@@ -0,0 +1 @@\n+y\n\
                     --- /dev/null\n+++ b/a\n@@ -0,0 +1 @@\n+x\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(err.to_string().contains("directory holding `a/b`"), "{err}");
        assert!(listing(&dir).is_empty());
    }

    #[test]
    fn binary_patches_are_refused() {
        let dir = tree(&[("img.png", "x")]);
        let patch = "diff --git a/img.png b/img.png\nindex 1..2 100644\nGIT binary patch\n\
                     literal 3\nKcmZ?wbN>K\n\nliteral 1\nIcmZ?w00031\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(matches!(err, PatchError::Binary { line: 3, .. }), "{err}");
        assert!(
            err.to_string().contains("binary patches are not supported"),
            "{err}"
        );
        let patch = "diff --git a/img.png b/img.png\nindex 1..2 100644\n\
                     Binary files a/img.png and b/img.png differ\n";
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            err.to_string().contains("binary patches are not supported"),
            "{err}"
        );
    }

    #[test]
    fn quoted_names() {
        let dir = tree(&[("a b/c\"d.txt", "1\n")]);
        let patch = "diff --git \"a/a b/c\\\"d.txt\" \"b/a b/c\\\"d.txt\"\nindex 1..2 100644\n\
                     --- \"a/a b/c\\\"d.txt\"\t\n+++ \"b/a b/c\\\"d.txt\"\t\n@@ -1 +1 @@\n-1\n+2\n";
        let report = run(&dir, patch, 1).unwrap();
        assert_eq!(read(&dir, "a b/c\"d.txt"), "2\n");
        assert_eq!(changed(&report), ["a b/c\"d.txt"]);

        assert_eq!(
            unquote(b"\"a\\tb\\\\c\\303\\251\" rest").unwrap(),
            (b"a\tb\\c\xc3\xa9".to_vec(), &b" rest"[..])
        );
        assert!(unquote(b"\"abc").is_err());
        assert!(unquote(b"\"a\\qb\"").is_err());
        assert_eq!(
            git_names(b"a/x y b/x y").unwrap(),
            Some(("a/x y".to_owned(), "b/x y".to_owned()))
        );
        assert_eq!(
            git_names(b"a/x \"b/y z\"").unwrap(),
            Some(("a/x".to_owned(), "b/y z".to_owned()))
        );
        assert_eq!(git_names(b"a/x y b/z w").unwrap(), None);
    }

    #[test]
    fn malformed_patches() {
        let dir = tree(&[("f", "a\nb\n")]);
        let cases = [
            // Truncated hunk.
            (
                "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n",
                "ends inside hunk 1",
            ),
            // More lines than counted.
            (
                "--- a/f\n+++ b/f\n@@ -1,2 +1,1 @@\n a\n b\n",
                "has more context lines",
            ),
            // Bad line in a hunk body.
            (
                "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n*b\n",
                "fewer than its header says",
            ),
            // Invalid hunk header.
            ("--- a/f\n+++ b/f\n@@ -x +1 @@\n", "invalid hunk header"),
            // Hunk without a file header.
            ("junk\n@@ -1 +1 @@\n-a\n+b\n", "hunk without"),
            // File header without hunks.
            ("--- a/f\n+++ b/f\nnothing\n", "without any hunk"),
            // Marker first.
            (
                "--- a/f\n+++ b/f\n@@ -1 +1 @@\n\\ No newline at end of file\n-a\n+b\n",
                "does not follow",
            ),
            // Stray marker in the middle of one side.
            (
                "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-a\n\\ No newline at end of file\n-b\n+a\n+b\n",
                "goes on after a `\\ No newline",
            ),
            // Both names /dev/null.
            (
                "--- /dev/null\n+++ /dev/null\n@@ -0,0 +1 @@\n+a\n",
                "both file names",
            ),
            // Unterminated quote.
            ("--- \"a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n", "unterminated"),
        ];
        for (patch, expected) in cases {
            let err = run(&dir, patch, 1).unwrap_err();
            assert!(
                matches!(err, PatchError::Malformed { .. }),
                "{patch:?}: {err}"
            );
            assert!(err.to_string().contains(expected), "{patch:?}: {err}");
        }
        assert_eq!(read(&dir, "f"), "a\nb\n");
    }

    #[test]
    fn malformed_error_names_the_line() {
        let dir = tree(&[("f", "a\n")]);
        let err = run(&dir, "x\ny\n--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n*\n", 1).unwrap_err();
        assert!(
            matches!(err, PatchError::Malformed { line: 7, .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("patch fix.patch: line 7: "),
            "{err}"
        );
    }

    #[test]
    fn empty_and_oversized_patches() {
        let dir = tree(&[]);
        let err = run(&dir, "just a commit message\n", 1).unwrap_err();
        assert!(matches!(err, PatchError::NoDiff { .. }), "{err}");
        let err = run(&dir, "", 1).unwrap_err();
        assert!(matches!(err, PatchError::NoDiff { .. }), "{err}");

        let huge = vec![b'x'; MAX_PATCH_BYTES + 1];
        let err = run_bytes(&dir, &huge, 1).unwrap_err();
        assert!(matches!(err, PatchError::PatchTooLarge { .. }), "{err}");
    }

    #[test]
    fn patch_without_final_newline() {
        let dir = tree(&[("f", "a\n")]);
        run(&dir, "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b", 1).unwrap();
        assert_eq!(read(&dir, "f"), "b\n");
    }

    #[test]
    fn empty_line_in_hunk_is_empty_context() {
        let dir = tree(&[("f", "a\n\nb\n")]);
        run(&dir, "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n\n-b\n+B\n", 1).unwrap();
        assert_eq!(read(&dir, "f"), "a\n\nB\n");
    }

    #[test]
    fn hunk_header_parsing() {
        assert_eq!(parse_hunk_header(b"@@ -1,2 +3,4 @@"), Some((1, 2, 4)));
        assert_eq!(
            parse_hunk_header(b"@@ -1 +3 @@ fn main() {"),
            Some((1, 1, 1))
        );
        assert_eq!(parse_hunk_header(b"@@ -0,0 +1 @@"), Some((0, 0, 1)));
        assert_eq!(parse_hunk_header(b"@@ -1,2 +3,4"), None);
        assert_eq!(parse_hunk_header(b"@@-1 +1 @@"), None);
        assert_eq!(
            parse_hunk_header(b"@@ -99999999999999999999999 +1 @@"),
            None
        );
    }

    #[test]
    fn strip_path_rules() {
        assert_eq!(strip_path("a/b/c", 1).ok(), Some("b/c".to_owned()));
        assert_eq!(strip_path("a//b/./c", 1).ok(), Some("b/c".to_owned()));
        assert!(matches!(strip_path("a/b", 2), Err(StripFailure::Empty)));
        assert!(matches!(strip_path("a/.", 1), Err(StripFailure::Empty)));
        assert!(matches!(
            strip_path("a/../b", 2),
            Err(StripFailure::Unsafe(_))
        ));
        assert!(matches!(
            strip_path("/a/b", 1),
            Err(StripFailure::Unsafe(_))
        ));
    }
}
