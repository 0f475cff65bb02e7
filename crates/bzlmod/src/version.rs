//! Bazel module versions: the grammar and the total order of Bazel's `Version.java`.
//!
//! Bazel versions are not SemVer: any number of release segments, letters allowed in the
//! release, no leading-zero rule. Build metadata (`+...`) is dropped by current Bazel, so a
//! registry can never serve such a version and this type refuses it.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Largest numeric identifier that Bazel before 7.6.0 / 8.2.0 can parse without crashing.
pub const MAX_PORTABLE_NUMBER: u64 = i32::MAX as u64;

/// One dot-separated identifier of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identifier {
    /// All digits: compared by value, then by the original string (`01` < `1`).
    Numeric(u64, String),
    /// Anything else: compared as an ASCII string.
    Alpha(String),
}

impl Identifier {
    fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            // Bazel 7.6+/8.2+ uses an unsigned 64-bit value; larger numbers fail to parse.
            s.parse::<u64>()
                .ok()
                .map(|n| Self::Numeric(n, s.to_owned()))
        } else {
            Some(Self::Alpha(s.to_owned()))
        }
    }
}

impl Ord for Identifier {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Numeric(a, sa), Self::Numeric(b, sb)) => a.cmp(b).then_with(|| sa.cmp(sb)),
            (Self::Numeric(..), Self::Alpha(_)) => Ordering::Less,
            (Self::Alpha(_), Self::Numeric(..)) => Ordering::Greater,
            (Self::Alpha(a), Self::Alpha(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Identifier {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a string is not a module version a registry can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The empty version marks a non-registry override; it never names a registry directory.
    #[error("version is empty")]
    Empty,
    /// `+build` metadata is dropped by Bazel, so such a directory is unreachable.
    #[error(
        "version `{0}` has build metadata (`+...`), which Bazel drops; use a new version such as `X.Y.Z.bcr.N`"
    )]
    BuildMetadata(String),
    /// Does not match `RELEASE[-PRERELEASE]` with non-empty `[A-Za-z0-9]` identifiers.
    #[error(
        "version `{0}` does not match Bazel's grammar RELEASE[-PRERELEASE] (identifiers of [A-Za-z0-9], separated by `.`)"
    )]
    Grammar(String),
}

/// A Bazel module version with Bazel's ordering.
///
/// Equality and ordering follow Bazel: `1.0` and `1.0.0` are different versions, `01` sorts
/// before `1`, a pre-release sorts before its release.
#[derive(Debug, Clone)]
pub struct ModuleVersion {
    original: String,
    release: Vec<Identifier>,
    prerelease: Vec<Identifier>,
}

impl ModuleVersion {
    /// Parses a version as a registry directory name.
    ///
    /// # Errors
    /// [`VersionError`] when the string is empty, has `+build` metadata, or breaks the grammar.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        if s.is_empty() {
            return Err(VersionError::Empty);
        }
        if s.contains('+') {
            return Err(VersionError::BuildMetadata(s.to_owned()));
        }
        let grammar = || VersionError::Grammar(s.to_owned());
        let (release, prerelease) = match s.split_once('-') {
            Some((r, p)) => (r, Some(p)),
            None => (s, None),
        };
        let release = parse_identifiers(release).ok_or_else(grammar)?;
        let prerelease = match prerelease {
            // Hyphens after the first belong to pre-release identifiers (`1.0-rc-1`).
            Some(p) => parse_prerelease(p).ok_or_else(grammar)?,
            None => Vec::new(),
        };
        Ok(Self {
            original: s.to_owned(),
            release,
            prerelease,
        })
    }

    /// The version exactly as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// Whether every numeric identifier fits in a signed 32-bit integer, which Bazel before
    /// 7.6.0 / 8.2.0 needs (larger values crashed it).
    #[must_use]
    pub fn is_portable(&self) -> bool {
        self.release
            .iter()
            .chain(&self.prerelease)
            .all(|id| !matches!(id, Identifier::Numeric(n, _) if *n > MAX_PORTABLE_NUMBER))
    }

    /// Whether this is a pre-release (`1.0-rc1`).
    #[must_use]
    pub fn is_prerelease(&self) -> bool {
        !self.prerelease.is_empty()
    }
}

fn parse_identifiers(s: &str) -> Option<Vec<Identifier>> {
    s.split('.').map(Identifier::parse).collect()
}

fn parse_prerelease(s: &str) -> Option<Vec<Identifier>> {
    // Pre-release identifiers may contain `-` (`[A-Za-z0-9.-]+`); only `.` separates them.
    s.split('.')
        .map(|part| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                None
            } else if part.bytes().all(|b| b.is_ascii_digit()) {
                Identifier::parse(part)
            } else {
                Some(Identifier::Alpha(part.to_owned()))
            }
        })
        .collect()
}

impl Ord for ModuleVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.release.cmp(&other.release).then_with(|| {
            match (self.prerelease.is_empty(), other.prerelease.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.prerelease.cmp(&other.prerelease),
            }
        })
    }
}

impl PartialOrd for ModuleVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ModuleVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ModuleVersion {}

impl FromStr for ModuleVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ModuleVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ModuleVersion {
        ModuleVersion::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn assert_ascending(list: &[&str]) {
        for pair in list.windows(2) {
            assert!(
                v(pair[0]) < v(pair[1]),
                "{} should sort before {}",
                pair[0],
                pair[1]
            );
            assert!(
                v(pair[1]) > v(pair[0]),
                "{} should sort after {}",
                pair[1],
                pair[0]
            );
        }
    }

    #[test]
    fn worked_examples_from_the_protocol_doc() {
        assert_ascending(&["999", "v2"]);
        assert_ascending(&["1.0.99", "1.0.bcr.1"]);
        assert_ascending(&["1.0.bcr.1", "1.1"]);
        assert_ascending(&["1.3.1", "1.3.1.bcr.1", "1.3.2"]);
        assert_ascending(&["1.0.0-rc.2", "1.0.0-rc.10", "1.0.0"]);
        assert_ascending(&["1", "1.0", "1.0.0", "1.0.0.bcr.1", "1.0.1"]);
        assert_ascending(&["1.0-rc1", "1.0"]);
    }

    #[test]
    fn numeric_ties_break_on_the_string() {
        assert_ascending(&["01", "1"]);
        assert_ne!(v("01"), v("1"));
        assert_ne!(v("1.0"), v("1.0.0"));
        assert_eq!(v("1.0"), v("1.0"));
    }

    #[test]
    fn numeric_sorts_before_alphanumeric_and_by_value() {
        assert_ascending(&["2", "10", "a", "b"]);
        assert_ascending(&["1.0-1", "1.0-2", "1.0-10", "1.0-alpha"]);
        assert_ascending(&["1.0-rc", "1.0-rc.1"]);
    }

    #[test]
    fn semver_order_is_preserved() {
        assert_ascending(&[
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
        ]);
    }

    #[test]
    fn grammar_errors() {
        for bad in [
            "1..2",
            "1.",
            ".1",
            "1.0-",
            "1.0-rc..1",
            "1 0",
            "1/0",
            "1.0_1",
            "ü",
            "-rc1",
        ] {
            assert!(
                matches!(ModuleVersion::parse(bad), Err(VersionError::Grammar(_))),
                "{bad}"
            );
        }
        assert_eq!(ModuleVersion::parse(""), Err(VersionError::Empty));
        assert!(matches!(
            ModuleVersion::parse("1.1.0+abc"),
            Err(VersionError::BuildMetadata(_))
        ));
        // Over u64: Bazel cannot parse it either.
        assert!(ModuleVersion::parse("18446744073709551616").is_err());
    }

    #[test]
    fn hyphens_belong_to_the_prerelease() {
        let x = v("1.0-rc-1.2");
        assert!(x.is_prerelease());
        assert_ascending(&["1.0-rc-1.2", "1.0"]);
    }

    #[test]
    fn portability_of_large_numbers() {
        assert!(v("2147483647").is_portable());
        assert!(!v("20240101123456").is_portable());
        assert!(!v("1.0-2147483648").is_portable());
    }

    #[test]
    fn sorting_a_list() {
        let mut list: Vec<_> = ["1.2.0", "1.1.0.bcr.1", "1.0.0-rc.1", "1.1.0", "1.0.0"]
            .iter()
            .map(|s| v(s))
            .collect();
        list.sort();
        let got: Vec<_> = list.iter().map(ModuleVersion::as_str).collect();
        assert_eq!(
            got,
            ["1.0.0-rc.1", "1.0.0", "1.1.0", "1.1.0.bcr.1", "1.2.0"]
        );
    }
}
