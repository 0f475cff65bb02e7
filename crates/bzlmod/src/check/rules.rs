//! Every rule of `registry check`, with its severity and the reason for it.
//!
//! **Error**: Bazel fails, or resolves wrongly, when it reads the file (a build that selects this
//! module version breaks). **Warning**: irregular, but Bazel reads the tree without complaint
//! (Bazel only ever fetches `bazel_registry.json`, `modules/{m}/metadata.json` and the files of a
//! version it selects, by exact path; it never lists a folder). The reasons cite Bazel's
//! `IndexRegistry.java`, `ModuleFileFunction.java`, `Version.java` and Starlark's `Lexer.java`.

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Irregular, tolerated by Bazel.
    Warning,
    /// Bazel would fail or resolve wrongly.
    Error,
}

impl Severity {
    /// `error` or `warning`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One rule: a stable id (for counting) and its severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Stable identifier, e.g. `stray-file`.
    pub id: &'static str,
    /// Error or warning.
    pub severity: Severity,
}

const fn error(id: &'static str) -> Rule {
    Rule {
        id,
        severity: Severity::Error,
    }
}

const fn warning(id: &'static str) -> Rule {
    Rule {
        id,
        severity: Severity::Warning,
    }
}

// --- The tree ---------------------------------------------------------------------------------

/// Symlinks and special files: this server never serves them (its `Tree` reads none), but a file
/// Bazel needs that is one is reported missing by its own rule (an error there).
pub const LINK: Rule = warning("symlink");
/// No `modules/`: nothing is servable, every `bazel_dep` fails with "module not found".
pub const NO_MODULES: Rule = error("no-modules-folder");
/// A file in `modules/`, a module folder or a version folder that Bazel never requests (a
/// README.md, a `.keep`, scripts): Bazel fetches exact paths and never lists folders.
pub const STRAY: Rule = warning("stray-file");
/// A module folder whose name `bazel_dep` refuses: unreachable, so never fetched.
pub const BAD_MODULE_NAME: Rule = warning("bad-module-name");
/// Two module names equal but for case: distinct over HTTP; only a case-insensitive file system
/// (a `file://` registry on macOS) mixes them up.
pub const NAME_CASE: Rule = warning("module-name-case");
/// A version folder whose name is not a Bazel version, or carries `+build` (Bazel drops it before
/// it builds the URL, `Version.java`): unreachable, so never fetched.
pub const BAD_VERSION_DIR: Rule = warning("bad-version-folder");
/// A numeric version part of 2^31 or more: Bazel before 7.6.0 / 8.2.0 crashes when it parses it,
/// newer Bazel reads it (an unsigned 64-bit value).
pub const NON_PORTABLE_VERSION: Rule = warning("non-portable-version");

// --- bazel_registry.json ------------------------------------------------------------------------

/// Not a JSON object (or a repeated key): Gson fails, and with it every archive module.
pub const REGISTRY_JSON: Rule = error("bazel-registry-json");
/// A mirror that is not a URL: Bazel fails with "Malformed mirror URL".
pub const MIRRORS: Rule = error("mirrors");

// --- metadata.json: Bazel reads only `yanked_versions` (class MetadataJson) ---------------------

/// Absent or blank: Bazel treats the module as having no yanked versions.
pub const METADATA_MISSING: Rule = warning("metadata-missing");
/// Not a JSON object: Gson fails ("Unable to parse json") when Bazel checks yanked versions.
pub const METADATA_JSON: Rule = error("metadata-json");
/// `versions` and its agreement with the version folders: Bazel never reads `versions`.
pub const VERSIONS_LIST: Rule = warning("metadata-versions");
/// `yanked_versions` not an object, or a reason that is an object or array: Gson fails.
pub const YANKED_TYPE: Rule = error("yanked-versions-type");
/// A yanked key that is not a Bazel version: `Version.parse` fails and Bazel reports "Could not
/// parse module's metadata file".
pub const YANKED_KEY: Rule = error("yanked-version-key");
/// A yanked key with `+build` metadata (Bazel yanks the version without it), a yanked version
/// that `versions` does not list, a reason that is a number or boolean (Gson makes it a string).
pub const YANKED_IRREGULAR: Rule = warning("yanked-versions-irregular");
/// `homepage`, `maintainers`, `repository`, `deprecated` of the wrong type: Bazel ignores them.
pub const METADATA_FIELDS: Rule = warning("metadata-fields");

// --- MODULE.bazel (ModuleFileFunction) ----------------------------------------------------------

/// Absent: Bazel fails with "module not found in registries".
pub const MODULE_MISSING: Rule = error("module-bazel-missing");
/// Not UTF-8: Bazel decodes it (`ParserInput.fromUTF8` replaces bad bytes) and reads it.
pub const MODULE_NOT_UTF8: Rule = warning("module-bazel-not-utf8");
/// A syntax error (tabs in statement indentation included, `Lexer.java`), a second `module()`,
/// an argument of the wrong type: Bazel fails with "error parsing/executing MODULE.bazel".
pub const MODULE_INVALID: Rule = error("module-bazel-invalid");
/// Over this tool's parse limits (size, nesting): Bazel has none, so it is not checked.
pub const MODULE_TOO_COMPLEX: Rule = warning("module-bazel-not-checked");
/// No `module()`, or a name or version unlike the folder's: Bazel fails with "the MODULE.bazel
/// file of X declares a different name / version".
pub const MODULE_IDENTITY: Rule = error("module-identity");
/// `module(name/version = ...)` computed in a way this tool does not evaluate, or a version that
/// differs only by `+build` (Bazel compares versions without it): not an error for Bazel.
pub const MODULE_IDENTITY_UNCHECKED: Rule = warning("module-identity-unchecked");

// --- source.json (IndexRegistry: Gson into ArchiveSourceJson / GitRepoSourceJson / ...) ---------

/// Absent, not a JSON object, an unknown `type`: Bazel fails.
pub const SOURCE_JSON: Rule = error("source-json");
/// A required field missing or malformed (`url`, `integrity`, `remote`, `commit`/`tag`, `path`),
/// a field of a type Gson cannot read, an unparseable `integrity`: Bazel fails to fetch.
pub const SOURCE_FIELD: Rule = error("source-field");
/// `patch_strip` as a string of digits (`"1"`): Gson's int reader parses it.
pub const PATCH_STRIP_STRING: Rule = warning("patch-strip-string");
/// A field Bazel ignores for this source type (`overlay` of a `git_repository`).
pub const SOURCE_IGNORED_FIELD: Rule = warning("source-ignored-field");
/// A `patches` / `overlay` entry naming a file that is absent or hashes differently, an overlay
/// path that escapes the repository, a patch path that leaves the registry: Bazel fails.
pub const LISTED_FILE: Rule = error("listed-file");
/// A patch path with `..` segments (grpc reuses another version's patches) or sub-folders:
/// Bazel appends it to the patches/ URL as is, and the server resolves the dot segments.
pub const PATCH_PATH_IRREGULAR: Rule = warning("patch-path-irregular");
/// A file in patches/ or overlay/ that source.json does not list: Bazel never fetches it.
pub const UNLISTED_FILE: Rule = warning("unlisted-file");

// --- attestations.json: BCR tooling reads it, Bazel does not ----------------------------------

/// A malformed `attestations.json`.
pub const ATTESTATIONS: Rule = warning("attestations");
