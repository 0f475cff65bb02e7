//! Finding where a hunk applies: at its stated line, else at the only exact match after the
//! previous hunk, within the search budget.

use super::SHOWN_CHARS;
use super::apply::Failure;
use super::parse::{Hunk, line_at};

/// A line boundary in a file: 0-based line index and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pos {
    pub(super) line: usize,
    pub(super) byte: usize,
}

impl Pos {
    pub(super) const START: Pos = Pos { line: 0, byte: 0 };

    /// The boundary after `line`, which starts here.
    pub(super) fn after(self, line: &[u8]) -> Pos {
        Pos {
            line: self.line + 1,
            byte: self.byte + line.len(),
        }
    }
}

/// Where `hunk` applies in `content` (start and end of its old lines): at its stated line if
/// its old lines are there, else at the only exact match at or after `cursor` (the end of the
/// previous hunk). Files are only ever scanned forward, never split into a line table.
pub(super) fn locate(
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
pub(super) fn charge(budget: &mut u64, cost: usize) -> Result<(), Failure> {
    let cost = cost as u64 + 1;
    *budget = budget.checked_sub(cost).ok_or(Failure::SearchLimit)?;
    Ok(())
}

/// The boundary before line `line` (0-based; the number of lines means the end), scanning
/// forward from `from`.
pub(super) fn seek(content: &[u8], from: Pos, line: usize) -> Option<Pos> {
    let mut at = from;
    while at.line < line {
        at = at.after(line_at(content, at.byte)?);
    }
    Some(at)
}

/// If the old lines of `hunk` are at `at`, where they end. Compared bytes are charged to
/// `budget`.
pub(super) fn matches_at(
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
pub(super) fn mismatch(content: &[u8], cursor: Pos, stated: usize, hunk: &Hunk<'_>) -> String {
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
pub(super) fn too_short(content: &[u8]) -> String {
    let newlines = content.iter().filter(|&&b| b == b'\n').count();
    let lines = newlines + usize::from(content.last().is_some_and(|&b| b != b'\n'));
    format!("the file has only {lines} lines")
}

/// A line for an error message: quoted, control characters escaped, shortened.
pub(super) fn show(line: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::MAX_SEARCH_BYTES;
    use super::super::parse::Parser;
    use super::*;

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
}
