//! The publish request (docs/publishing.md): the one wire schema, shared by the server and
//! the CLI that builds it, and the checks that need nothing but the request.
//!
//! [`PublishRequest::from_json`] decodes a body (`decode.rs`), naming the field at fault;
//! [`PublishRequest::validate`] checks it on its own (`validate.rs`). Both refuse with a
//! [`FieldError`], which the server maps to its own errors.

use serde::Deserialize;
use serde_json::{Map, Value};
use unpack::archive::ArchiveType;

use crate::FieldError;
use crate::integrity::Integrity;
use crate::module_file::ModuleFile;
use crate::name::{ModuleName, RelativePath};
use crate::version::ModuleVersion;

mod decode;
mod strict;
mod validate;

pub use strict::{parse_body, parse_body_object};

/// Largest `MODULE.bazel`, patch or overlay file accepted.
pub const MAX_TEXT_FILE: usize = 4 * 1024 * 1024;

/// Most patches or overlay files in one request.
pub const MAX_FILES: usize = 1000;

/// The body of `POST /api/v1/modules/{name}/{version}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The registry's `MODULE.bazel` for this version.
    pub module_bazel: String,
    /// Where the sources come from.
    pub source: SourceSpec,
    /// Folder inside the archive that is the module root.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// The archive's format, when its name does not say.
    #[serde(default)]
    pub archive_type: Option<String>,
    /// Unified diffs applied in order.
    #[serde(default)]
    pub patches: Vec<NamedText>,
    /// Leading components removed from patch file names.
    #[serde(default)]
    pub patch_strip: Option<u32>,
    /// Files laid over the extracted sources.
    #[serde(default)]
    pub overlay: Vec<PathText>,
    /// Metadata of a new module.
    #[serde(default)]
    pub metadata: Option<MetadataSpec>,
}

/// Where a version's sources come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// An archive at a URL, fetched through the mirror.
    Archive {
        /// The URL.
        url: String,
        /// Its expected integrity.
        #[serde(default)]
        integrity: Option<String>,
    },
    /// The archive bytes, in the request.
    Upload {
        /// A file name for the archive (its suffix tells the format).
        file_name: String,
        /// The bytes, base64.
        content_base64: String,
    },
    /// A git repository at a pinned commit.
    GitRepository {
        /// The remote.
        remote: String,
        /// The commit (40 hex digits).
        commit: String,
    },
}

/// A patch: a file name and its content.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedText {
    /// The file name under `patches/`.
    pub name: String,
    /// The content.
    pub content: String,
}

/// An overlay file: a relative path and its content.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathText {
    /// The path under the module root.
    pub path: String,
    /// The content.
    pub content: String,
}

/// Metadata of a new module.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSpec {
    /// Project home page.
    #[serde(default)]
    pub homepage: Option<String>,
    /// Maintainers: objects with `name`, `email`, `github`, `github_user_id`, ...
    #[serde(default)]
    pub maintainers: Vec<Map<String, Value>>,
    /// Source repositories (`github:owner/repo`, `https://...`).
    #[serde(default)]
    pub repository: Vec<String>,
}

/// Where a validated request's archive comes from.
#[derive(Debug, Clone)]
pub enum ArchiveSource {
    /// A URL and its optional expected integrity.
    Url {
        /// The URL.
        url: url::Url,
        /// Expected integrity.
        integrity: Option<Integrity>,
    },
    /// Uploaded bytes.
    Upload {
        /// File name.
        file_name: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

/// A request that passed every check that needs nothing but the request.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// The module.
    pub name: ModuleName,
    /// The version.
    pub version: ModuleVersion,
    /// `MODULE.bazel`, as submitted.
    pub module_bazel: String,
    /// What it declares.
    pub module_file: ModuleFile,
    /// The archive, unless the source is a git repository.
    pub archive: Option<(ArchiveSource, ArchiveType)>,
    /// A git repository source: remote and commit.
    pub git: Option<(String, String)>,
    /// `archive_type` as the request gave it.
    pub declared_archive_type: Option<ArchiveType>,
    /// `strip_prefix` ("" when none).
    pub strip_prefix: String,
    /// Patches in order: file name and bytes.
    pub patches: Vec<(String, Vec<u8>)>,
    /// `patch_strip`.
    pub patch_strip: u32,
    /// Overlay files, sorted by path.
    pub overlay: Vec<(RelativePath, Vec<u8>)>,
    /// Metadata for a new module.
    pub metadata: Option<MetadataSpec>,
}

fn field(field: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

/// Parses the name and version of the URL path.
///
/// # Errors
/// A [`FieldError`] naming `name` or `version`.
pub fn parse_coordinates(
    name: &str,
    version: &str,
) -> Result<(ModuleName, ModuleVersion), FieldError> {
    let name = ModuleName::parse(name).map_err(|e| field("name", e.to_string()))?;
    let version = ModuleVersion::parse(version).map_err(|e| field("version", e.to_string()))?;
    if !version.is_portable() {
        return Err(field(
            "version",
            format!(
                "`{version}` has a numeric part of 2^31 or more, which Bazel before 7.6.0 cannot read"
            ),
        ));
    }
    Ok((name, version))
}
