//! Module names and the file names a registry path may carry.

use std::fmt;
use std::str::FromStr;

/// Longest module name accepted (BCR has none near this; it bounds work on hostile input).
const MAX_NAME_LEN: usize = 128;
/// Longest single path segment below a version directory.
const MAX_SEGMENT_LEN: usize = 255;
/// Longest relative path below `patches/` or `overlay/`.
const MAX_RELATIVE_PATH_LEN: usize = 1024;

/// A Bazel module name: a lowercase letter first, then `[a-z0-9._-]`, ending in a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleName(String);

/// Why a string is not a module name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "module name `{0}` is invalid: it must start with a lowercase letter, contain only [a-z0-9._-] and end with a letter or digit"
)]
pub struct InvalidModuleName(pub String);

impl ModuleName {
    /// Parses a module name.
    ///
    /// # Errors
    /// [`InvalidModuleName`] when the grammar does not match.
    pub fn parse(s: &str) -> Result<Self, InvalidModuleName> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_NAME_LEN
            && b[0].is_ascii_lowercase()
            && b.iter().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            })
            && b[b.len() - 1].is_ascii_alphanumeric();
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidModuleName(s.to_owned()))
        }
    }

    /// The name as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ModuleName {
    type Err = InvalidModuleName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A relative path below a version's `patches/` or `overlay/` folder, safe to use as a key in
/// a source tree and in a URL without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelativePath(String);

/// Why a string is not a safe relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path `{path}` is not allowed: {reason}")]
pub struct InvalidRelativePath {
    /// The offending path, as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl RelativePath {
    /// Parses a `/`-separated relative path whose segments use only `[A-Za-z0-9._+@=,~-]`.
    ///
    /// Refused: empty paths and segments, `.` and `..`, absolute paths, backslashes, NUL and
    /// every other character that would need URL escaping.
    ///
    /// # Errors
    /// [`InvalidRelativePath`] with the reason.
    pub fn parse(s: &str) -> Result<Self, InvalidRelativePath> {
        let err = |reason| InvalidRelativePath {
            path: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.len() > MAX_RELATIVE_PATH_LEN {
            return Err(err("it is longer than 1024 bytes"));
        }
        if s.starts_with('/') {
            return Err(err("it is absolute"));
        }
        for segment in s.split('/') {
            match segment {
                "" => return Err(err("it has an empty segment")),
                "." | ".." => return Err(err("it has a `.` or `..` segment")),
                _ if segment.len() > MAX_SEGMENT_LEN => {
                    return Err(err("a segment is longer than 255 bytes"));
                }
                _ if !segment.bytes().all(is_safe_path_byte) => {
                    return Err(err("only [A-Za-z0-9._+@=,~-] are allowed in a segment"));
                }
                _ => {}
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The path as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_safe_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@' | b'=' | b',' | b'~')
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        for ok in [
            "a",
            "zlib",
            "rules_cc",
            "abseil-cpp",
            "protobuf.v2",
            "a1",
            "x_9",
        ] {
            assert!(ModuleName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "1abc", "_a", "a_", "a-", "a.", "Zlib", "a b", "a/b", "..", "a%2f", "é",
        ] {
            assert!(ModuleName::parse(bad).is_err(), "{bad}");
        }
        assert!(ModuleName::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn relative_paths() {
        for ok in [
            "fix.patch",
            "src/BUILD.bazel",
            ".bazelrc",
            "a/b/c.txt",
            "x+y@1=2,~3",
        ] {
            assert!(RelativePath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            "a b",
            "a%2e",
            "a?b",
            "a#b",
            "ａ",
            "..",
        ] {
            assert!(RelativePath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RelativePath::parse(&"a".repeat(256)).is_err());
    }
}
