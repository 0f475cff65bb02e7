//! Parsing request paths into the registry files they name, before anything is read.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use super::name::{ModuleName, RelativePath};
use super::version::ModuleVersion;

/// A file at the top of a version folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionFile {
    /// `MODULE.bazel`.
    ModuleBazel,
    /// `source.json`.
    SourceJson,
    /// `attestations.json` (BCR provenance; Bazel never asks).
    AttestationsJson,
    /// `presubmit.yml` (BCR CI; Bazel never asks).
    PresubmitYml,
}

impl VersionFile {
    /// Every well-known file, in the order `registry check` reports them.
    pub const ALL: [Self; 4] = [
        Self::ModuleBazel,
        Self::SourceJson,
        Self::AttestationsJson,
        Self::PresubmitYml,
    ];

    /// The file name.
    #[must_use]
    pub fn file_name(self) -> &'static str {
        match self {
            Self::ModuleBazel => "MODULE.bazel",
            Self::SourceJson => "source.json",
            Self::AttestationsJson => "attestations.json",
            Self::PresubmitYml => "presubmit.yml",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.file_name() == s)
    }
}

/// A registry file a client may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryPath {
    /// `bazel_registry.json`.
    BazelRegistryJson,
    /// `modules/{name}/metadata.json`.
    Metadata(ModuleName),
    /// `modules/{name}/{version}/{file}`.
    Version(ModuleName, ModuleVersion, VersionFile),
    /// `modules/{name}/{version}/patches/{path}`.
    Patch(ModuleName, ModuleVersion, RelativePath),
    /// `modules/{name}/{version}/overlay/{path}`.
    Overlay(ModuleName, ModuleVersion, RelativePath),
    /// `modules/{name}/{version}/{path}`: where Bazel 7.2.0 looked for overlay files. Served
    /// from `overlay/{path}` when `source.json` lists `path` in its `overlay`.
    LegacyOverlay(ModuleName, ModuleVersion, RelativePath),
}

/// Why a request path names no registry file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A segment is malformed (bad name, version, traversal, encoding): answered with 400.
    #[error("{0}")]
    Invalid(String),
    /// Well-formed, but not a registry path: answered with 404.
    #[error("no registry file at this path")]
    NotRegistryPath,
    /// A name or version outside the grammar: no registry can hold it, so it is answered
    /// with 404 (never 400, which Bazel treats as fatal instead of trying the next registry).
    #[error("{0}")]
    NoSuchName(String),
}

/// The kind of a registry file, for content type and caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// JSON that may change in place (`metadata.json`, `bazel_registry.json`).
    MutableJson,
    /// JSON pinned by hash (`source.json`, `attestations.json`).
    Json,
    /// `MODULE.bazel` (Starlark).
    Starlark,
    /// `presubmit.yml`.
    Yaml,
    /// A patch file.
    Patch,
    /// Any other file (overlay files).
    Other,
}

impl FileKind {
    /// Whether the bytes at this path never change once served.
    #[must_use]
    pub fn is_immutable(self) -> bool {
        !matches!(self, Self::MutableJson)
    }
}

/// Resolves literal `.` and `..` segments below `modules/{name}/{version}/`, keeping the
/// result inside `modules/{name}/`; anything else is returned as it is (and refused later if it
/// holds a dot segment).
///
/// Bazel builds a patch's URL by appending its name, as `source.json` writes it, to the
/// version's `patches/` URL, and sends dot segments as they are: the BCR's grpc 1.62.1.bcr.1
/// reuses another version's patches as `../../1.62.1/patches/...`, and static servers such as
/// the BCR's resolve them (RFC 3986, remove_dot_segments). Above the module's folder they are
/// traversal. Percent-encoded dots (`%2e`) are never resolved: no client sends them for a
/// registry file, so they are refused as probes.
fn resolve_in_module(raw: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    let dot = |s: &&str| *s == "." || *s == "..";
    // The common case, on every registry request: no dot segment, nothing allocated.
    if !raw.split('/').any(|s| dot(&s)) {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    let segs: Vec<&str> = raw.split('/').collect();
    let Some(first_dot) = segs.iter().position(dot) else {
        return Ok(std::borrow::Cow::Borrowed(raw));
    };
    // Only below modules/{name}/{version}/: a dot segment in the name or version is traversal.
    if first_dot < 3 || segs[0] != "modules" {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    let escapes = || {
        PathError::Invalid(
            "path traversal is not allowed: `..` leaves the module's folder".to_owned(),
        )
    };
    let mut stack: Vec<&str> = vec![segs[2]];
    for s in &segs[3..] {
        match *s {
            "." => {}
            ".." => {
                stack.pop().ok_or_else(escapes)?;
            }
            other => stack.push(other),
        }
    }
    // A path that ends on a dot segment names a folder, never a file.
    if segs.last().is_some_and(dot) || stack.len() < 2 {
        return Err(PathError::Invalid(
            "path traversal is not allowed: `..` or `.` segment".to_owned(),
        ));
    }
    Ok(std::borrow::Cow::Owned(format!(
        "modules/{}/{}",
        segs[1],
        stack.join("/")
    )))
}

impl RegistryPath {
    /// Parses a URL path (with its leading `/`, still percent-encoded) relative to the
    /// registry base. Each segment is decoded on its own, so `%2f` can never add a separator.
    ///
    /// # Errors
    /// [`PathError::Invalid`] naming the bad segment, [`PathError::NotRegistryPath`] otherwise.
    pub fn parse(url_path: &str) -> Result<Self, PathError> {
        let raw = url_path.strip_prefix('/').unwrap_or(url_path);
        let raw = resolve_in_module(raw)?;
        let segments = raw
            .split('/')
            .map(decode_segment)
            .collect::<Result<Vec<_>, _>>()?;
        let segs: Vec<&str> = segments.iter().map(AsRef::as_ref).collect();
        if segs.iter().any(|s| *s == ".." || *s == ".") {
            return Err(PathError::Invalid(
                "path traversal is not allowed: `..` or `.` segment".to_owned(),
            ));
        }
        match segs.as_slice() {
            ["bazel_registry.json"] => Ok(Self::BazelRegistryJson),
            ["modules", name, "metadata.json"] => Ok(Self::Metadata(parse_name(name)?)),
            ["modules", name, version, rest @ ..] if !rest.is_empty() => {
                let name = parse_name(name)?;
                let version = ModuleVersion::parse(version)
                    .map_err(|e| PathError::NoSuchName(format!("bad version segment: {e}")))?;
                match rest {
                    [file] if VersionFile::from_name(file).is_some() => {
                        let file =
                            VersionFile::from_name(file).ok_or(PathError::NotRegistryPath)?;
                        Ok(Self::Version(name, version, file))
                    }
                    ["patches", tail @ ..] if !tail.is_empty() => {
                        Ok(Self::Patch(name, version, parse_rel(tail)?))
                    }
                    ["overlay", tail @ ..] if !tail.is_empty() => {
                        Ok(Self::Overlay(name, version, parse_rel(tail)?))
                    }
                    _ => Ok(Self::LegacyOverlay(name, version, parse_rel(rest)?)),
                }
            }
            _ => {
                // Still refuse traversal loudly, so probes get a 400 rather than a quiet 404.
                if segs.iter().any(|s| *s == ".." || s.contains(['\\', '\0'])) {
                    Err(PathError::Invalid(
                        "path traversal is not allowed".to_owned(),
                    ))
                } else {
                    Err(PathError::NotRegistryPath)
                }
            }
        }
    }

    /// The path of the file inside the registry tree.
    #[must_use]
    pub fn tree_path(&self) -> String {
        match self {
            Self::BazelRegistryJson => "bazel_registry.json".to_owned(),
            Self::Metadata(n) => format!("modules/{n}/metadata.json"),
            Self::Version(n, v, f) => format!("modules/{n}/{v}/{}", f.file_name()),
            Self::Patch(n, v, p) => format!("modules/{n}/{v}/patches/{p}"),
            Self::Overlay(n, v, p) | Self::LegacyOverlay(n, v, p) => {
                format!("modules/{n}/{v}/overlay/{p}")
            }
        }
    }

    /// The module this path belongs to, if any.
    #[must_use]
    pub fn module(&self) -> Option<&ModuleName> {
        match self {
            Self::BazelRegistryJson => None,
            Self::Metadata(n)
            | Self::Version(n, ..)
            | Self::Patch(n, ..)
            | Self::Overlay(n, ..)
            | Self::LegacyOverlay(n, ..) => Some(n),
        }
    }

    /// The module version this path belongs to, if any.
    #[must_use]
    pub fn version(&self) -> Option<&ModuleVersion> {
        match self {
            Self::BazelRegistryJson | Self::Metadata(_) => None,
            Self::Version(_, v, _)
            | Self::Patch(_, v, _)
            | Self::Overlay(_, v, _)
            | Self::LegacyOverlay(_, v, _) => Some(v),
        }
    }

    /// The kind of file served at this path.
    #[must_use]
    pub fn kind(&self) -> FileKind {
        match self {
            Self::BazelRegistryJson | Self::Metadata(_) => FileKind::MutableJson,
            Self::Version(_, _, VersionFile::ModuleBazel) => FileKind::Starlark,
            Self::Version(_, _, VersionFile::SourceJson | VersionFile::AttestationsJson) => {
                FileKind::Json
            }
            Self::Version(_, _, VersionFile::PresubmitYml) => FileKind::Yaml,
            Self::Patch(..) => FileKind::Patch,
            Self::Overlay(..) | Self::LegacyOverlay(..) => FileKind::Other,
        }
    }
}

fn decode_segment(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| {
        PathError::Invalid(format!(
            "path segment `{raw}` is not valid UTF-8 once decoded"
        ))
    })?;
    if raw.contains('%') && decoded.contains(['/', '\\', '\0']) {
        return Err(PathError::Invalid(format!(
            "path segment `{raw}` encodes a separator or NUL"
        )));
    }
    Ok(decoded)
}

fn parse_name(s: &str) -> Result<ModuleName, PathError> {
    ModuleName::parse(s).map_err(|e| PathError::NoSuchName(format!("bad module segment: {e}")))
}

fn parse_rel(segments: &[&str]) -> Result<RelativePath, PathError> {
    RelativePath::parse(&segments.join("/"))
        .map_err(|e| PathError::NoSuchName(format!("bad file path: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> RegistryPath {
        RegistryPath::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn known_paths() {
        assert_eq!(ok("/bazel_registry.json"), RegistryPath::BazelRegistryJson);
        assert_eq!(
            ok("/modules/zlib/metadata.json").tree_path(),
            "modules/zlib/metadata.json"
        );
        assert_eq!(
            ok("/modules/zlib/1.3.1/MODULE.bazel").kind(),
            FileKind::Starlark
        );
        assert_eq!(
            ok("/modules/zlib/1.3.1/source.json").tree_path(),
            "modules/zlib/1.3.1/source.json"
        );
        assert_eq!(
            ok("/modules/zlib/1.3.1/patches/a.patch").tree_path(),
            "modules/zlib/1.3.1/patches/a.patch"
        );
        assert_eq!(
            ok("/modules/z/1/overlay/src/BUILD.bazel").tree_path(),
            "modules/z/1/overlay/src/BUILD.bazel"
        );
        assert!(matches!(
            ok("/modules/z/1/BUILD.bazel"),
            RegistryPath::LegacyOverlay(..)
        ));
        // Percent-encoding of harmless characters is decoded.
        assert_eq!(
            ok("/modules/z/1.0%2Drc1/source.json")
                .version()
                .map(ModuleVersion::as_str),
            Some("1.0-rc1")
        );
    }

    /// Dot segments below a version folder resolve as a static server resolves them, inside
    /// the module's folder (the BCR's grpc reuses another version's patches this way).
    #[test]
    fn dot_segments_inside_a_module_resolve() {
        for (p, want) in [
            (
                "/modules/grpc/1.62.1.bcr.1/patches/../../1.62.1/patches/add_module_bazel.patch",
                "/modules/grpc/1.62.1/patches/add_module_bazel.patch",
            ),
            (
                "/modules/zlib/1.0/overlay/a/./b",
                "/modules/zlib/1.0/overlay/a/b",
            ),
            (
                "/modules/zlib/1.0/patches/../MODULE.bazel",
                "/modules/zlib/1.0/MODULE.bazel",
            ),
        ] {
            assert_eq!(
                RegistryPath::parse(p).unwrap(),
                RegistryPath::parse(want).unwrap(),
                "{p}"
            );
        }
    }

    #[test]
    fn traversal_and_bad_segments_are_invalid() {
        for p in [
            "/modules/../bazel_registry.json",
            "/modules/zlib/../../etc/passwd",
            "/modules/zlib/1.0/patches/../../../x",
            "/modules/zlib/1.0/overlay/%2e%2e/x",
            "/modules/zlib/1.0/overlay/a%2fb",
            "/modules/zlib/1.0/overlay/a%5cb",
            "/modules/zlib/1.0/overlay/a%00b",
            "/modules/zlib/1.0/overlay/%ff",
            "/modules/zlib/1.0/..",
            "/modules/zlib/1.0/patches/..",
            "/modules/zlib/../1.0/MODULE.bazel",
            "/modules/./zlib/1.0/MODULE.bazel",
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
        ] {
            assert!(
                matches!(RegistryPath::parse(p), Err(PathError::Invalid(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn names_outside_the_grammar_are_not_found_with_a_reason() {
        for p in [
            "/modules/Zlib/1.0/source.json",
            "/modules/zlib/1.0+build/source.json",
            "/modules/zlib/1..0/source.json",
            "/modules/zlib/1.0/overlay//x",
            "/modules/zlib/1.0/overlay/a b",
        ] {
            assert!(
                matches!(RegistryPath::parse(p), Err(PathError::NoSuchName(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn other_paths_are_not_found() {
        for p in [
            "/",
            "/modules",
            "/modules/zlib",
            "/modules/zlib/1.0",
            "/index.html",
            "/modules/zlib/1.0/",
        ] {
            assert!(RegistryPath::parse(p).is_err(), "{p}");
        }
        assert_eq!(
            RegistryPath::parse("/index.html"),
            Err(PathError::NotRegistryPath)
        );
    }
}
