//! Parsing a patch into file diffs and their hunks (the module documentation's "Parsing" and
//! "Which file" rules).
//!
//! Over 400 lines on purpose: `Parser` is one line-by-line reader of git's and `diff -u`'s
//! header grammar (its `impl` alone is about 460 lines), and the name helpers below it
//! (C-quoting, `diff --git` names, `strip`) exist only for it. Cutting it in two would split
//! one grammar over two files without making either readable on its own.

use super::PatchError;

/// What a file diff does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
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
pub(super) struct FileDiff<'a> {
    /// 1-based patch line where it starts.
    pub(super) line: usize,
    pub(super) action: Action,
    /// `Some(executable)` when the diff sets the file's mode.
    pub(super) exec: Option<bool>,
    pub(super) hunks: Vec<Hunk<'a>>,
}

/// One `@@` hunk: its header numbers and its body as found in the patch (validated while
/// parsing, read again by [`HunkLines`]), so hunks cost no allocation per line.
#[derive(Debug)]
pub(super) struct Hunk<'a> {
    /// The old start line from the header.
    pub(super) old_start: usize,
    pub(super) old_count: usize,
    pub(super) new_count: usize,
    /// Whether the last new line has no newline at the end of the file.
    pub(super) new_eof: bool,
    /// Context lines before the first and after the last changed line.
    pub(super) leading: usize,
    pub(super) trailing: usize,
    /// The body lines (each with its `\n`), markers included.
    pub(super) body: &'a [u8],
}

impl<'a> Hunk<'a> {
    /// 0-based index of the first old line as the header states it (for a pure insertion,
    /// the index the new lines go to).
    pub(super) fn stated_index(&self) -> usize {
        if self.old_count == 0 {
            self.old_start
        } else {
            self.old_start.saturating_sub(1)
        }
    }

    /// The old lines, each with its `\n` unless a marker removed it.
    pub(super) fn old_lines(&self) -> HunkLines<'a> {
        HunkLines {
            rest: self.body,
            old: true,
        }
    }

    /// The new lines, each with its `\n` unless a marker removed it.
    pub(super) fn new_lines(&self) -> HunkLines<'a> {
        HunkLines {
            rest: self.body,
            old: false,
        }
    }
}

/// The lines of one side of a hunk body.
#[derive(Debug)]
pub(super) struct HunkLines<'a> {
    pub(super) rest: &'a [u8],
    pub(super) old: bool,
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
pub(super) struct RawName {
    pub(super) name: String,
    pub(super) line: usize,
    /// Components to strip from it.
    pub(super) strip: u32,
}

/// The git extended header lines of one `diff --git` section.
#[derive(Debug, Default)]
pub(super) struct GitHeader {
    pub(super) new_file: bool,
    pub(super) deleted: bool,
    pub(super) exec: Option<bool>,
    pub(super) rename_from: Option<RawName>,
    pub(super) rename_to: Option<RawName>,
    pub(super) copy_from: Option<RawName>,
    pub(super) copy_to: Option<RawName>,
}

pub(super) struct Parser<'a> {
    pub(super) patch: &'a str,
    /// The patch; every line ends with `\n`.
    pub(super) text: &'a [u8],
    /// Byte offset of the current line.
    pub(super) pos: usize,
    /// 1-based number of the current line.
    pub(super) line: usize,
    pub(super) strip: u32,
}

/// The line of `text` starting at `pos`, with its `\n` if it has one; `None` at the end.
pub(super) fn line_at(text: &[u8], pos: usize) -> Option<&[u8]> {
    let rest = text.get(pos..).filter(|rest| !rest.is_empty())?;
    let end = rest
        .iter()
        .position(|&b| b == b'\n')
        .map_or(rest.len(), |i| i + 1);
    Some(&rest[..end])
}

/// A header line without its `\n` and a `\r` before it (CRLF patches).
pub(super) fn header_text(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl<'a> Parser<'a> {
    pub(super) fn new(patch: &'a str, text: &'a [u8], strip: u32) -> Self {
        Parser {
            patch,
            text,
            pos: 0,
            line: 1,
            strip,
        }
    }

    /// The current line, with its `\n`.
    pub(super) fn peek(&self) -> Option<&'a [u8]> {
        line_at(self.text, self.pos)
    }

    /// The current line as a header.
    pub(super) fn header(&self) -> Option<&'a [u8]> {
        self.peek().map(header_text)
    }

    /// The line after the current one as a header.
    pub(super) fn next_header(&self) -> Option<&'a [u8]> {
        let current = self.peek()?;
        line_at(self.text, self.pos + current.len()).map(header_text)
    }

    /// Moves to the next line.
    pub(super) fn bump(&mut self) {
        if let Some(current) = self.peek() {
            self.pos += current.len();
            self.line += 1;
        }
    }

    pub(super) fn malformed(&self, line: usize, reason: impl Into<String>) -> PatchError {
        PatchError::Malformed {
            patch: self.patch.to_owned(),
            line,
            reason: reason.into(),
        }
    }

    pub(super) fn parse(mut self) -> Result<Vec<FileDiff<'a>>, PatchError> {
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
    pub(super) fn file_headers(
        &mut self,
    ) -> Result<(Option<RawName>, Option<RawName>), PatchError> {
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

    pub(super) fn plain_diff(&mut self) -> Result<FileDiff<'a>, PatchError> {
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

    pub(super) fn git_diff(&mut self) -> Result<FileDiff<'a>, PatchError> {
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
    pub(super) fn git_line_name(&self, line: usize, raw: &[u8]) -> Result<RawName, PatchError> {
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
    pub(super) fn mode(&self, line: usize, text: &[u8], file: &str) -> Result<bool, PatchError> {
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
    pub(super) fn action(
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

    pub(super) fn strip_name(&self, raw: &RawName) -> Result<String, PatchError> {
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
    pub(super) fn hunks(&mut self) -> Result<Vec<Hunk<'a>>, PatchError> {
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
    pub(super) fn hunk_body(
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
pub(super) enum Side {
    Both,
    Old,
    New,
}

/// `Binary files a/x and b/x differ` (diff and `git diff` without `--binary`).
pub(super) fn is_binary_notice(text: &[u8]) -> bool {
    text.starts_with(b"Binary files ") && text.ends_with(b" differ")
}

/// Parses `@@ -l[,s] +l[,s] @@...` into (old start, old count, new count).
pub(super) fn parse_hunk_header(text: &[u8]) -> Option<(usize, usize, usize)> {
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
pub(super) fn header_name(rest: &[u8]) -> Result<Option<String>, String> {
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

pub(super) fn utf8_name(raw: Vec<u8>) -> Result<String, String> {
    String::from_utf8(raw).map_err(|e| {
        format!(
            "file name `{}` is not valid UTF-8",
            String::from_utf8_lossy(e.as_bytes())
        )
    })
}

/// The two names of a `diff --git` line (after `diff --git `), if they can be told apart.
pub(super) fn git_names(rest: &[u8]) -> Result<Option<(String, String)>, String> {
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
pub(super) fn unquote(text: &[u8]) -> Result<(Vec<u8>, &[u8]), String> {
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

pub(super) enum StripFailure {
    Unsafe(&'static str),
    Empty,
}

/// Checks a name from the patch and removes `strip` leading components.
pub(super) fn strip_path(raw: &str, strip: u32) -> Result<String, StripFailure> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
