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
//! I/O: call it from a blocking thread (the server uses `tasks::spawn_blocking`).
//!
//! The parts: `parse.rs` reads the patch into file diffs and hunks, `apply.rs` applies them to
//! an in-memory copy of the files involved, `locate.rs` finds where each hunk goes, and
//! `disk.rs` reads the targets and writes the result.

use std::io;
use std::path::{Path, PathBuf};

use apply::Tree;
use parse::Parser;

mod apply;
mod disk;
mod locate;
mod parse;
#[cfg(test)]
mod tests;

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
