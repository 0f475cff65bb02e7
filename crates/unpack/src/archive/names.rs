//! Entry names: what a safe name is, and `strip_prefix`.

use super::{ArchiveError, Limits, MAX_NAME_LEN};

pub(super) fn parse_strip_prefix(raw: &str) -> Result<Vec<String>, ArchiveError> {
    let invalid = |reason: &str| ArchiveError::InvalidStripPrefix {
        prefix: raw.to_owned(),
        reason: reason.to_owned(),
    };
    if raw.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    if is_absolute(raw) {
        return Err(invalid("it is an absolute path"));
    }
    let parts: Vec<String> = components(raw).map(str::to_owned).collect();
    if parts.iter().any(|c| c == "..") {
        return Err(invalid("it has a `..` component"));
    }
    Ok(parts)
}

pub(super) fn is_absolute(name: &str) -> bool {
    let bytes = name.as_bytes();
    name.starts_with('/')
        || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
}

/// The meaningful components of a `/`-separated name (empty and `.` components dropped).
pub(super) fn components(name: &str) -> impl DoubleEndedIterator<Item = &str> {
    name.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// Splits an entry name into checked components.
pub(super) fn entry_components(entry: &str, limits: &Limits) -> Result<Vec<String>, ArchiveError> {
    if entry.len() > limits.max_path_len {
        return Err(too_long(entry, limits));
    }
    if entry.contains('\0') {
        return Err(ArchiveError::InvalidName {
            entry: entry.to_owned(),
            reason: "it contains a NUL byte",
        });
    }
    if is_absolute(entry) {
        return Err(ArchiveError::AbsolutePath {
            entry: entry.to_owned(),
        });
    }
    let parts: Vec<String> = components(entry).map(str::to_owned).collect();
    if parts.iter().any(|c| c == "..") {
        return Err(ArchiveError::ParentTraversal {
            entry: entry.to_owned(),
        });
    }
    if parts.iter().any(|c| c.len() > MAX_NAME_LEN) {
        return Err(ArchiveError::InvalidName {
            entry: entry.to_owned(),
            reason: "a path component is longer than 255 bytes",
        });
    }
    Ok(parts)
}

pub(super) fn too_long(entry: &str, limits: &Limits) -> ArchiveError {
    let mut cut = entry.len().min(200);
    while !entry.is_char_boundary(cut) {
        cut -= 1;
    }
    ArchiveError::PathTooLong {
        entry: entry[..cut].to_owned(),
        len: entry.len(),
        max: limits.max_path_len,
    }
}

pub(super) fn utf8_name(entry_bytes: &[u8]) -> Result<String, ArchiveError> {
    String::from_utf8(entry_bytes.to_vec()).map_err(|_| ArchiveError::InvalidName {
        entry: String::from_utf8_lossy(entry_bytes).into_owned(),
        reason: "it is not valid UTF-8",
    })
}
