//! The publish request (docs/publishing.md) and the checks that need nothing but the request.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::PublishError;
use super::archive::ArchiveType;
use crate::registry::integrity::Integrity;
use crate::registry::module_file::{self, ModuleFile};
use crate::registry::name::{ModuleName, RelativePath};
use crate::registry::version::ModuleVersion;

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

fn field(field: &str, message: impl Into<String>) -> PublishError {
    PublishError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Parses the name and version of the URL path.
///
/// # Errors
/// [`PublishError::Invalid`] naming `name` or `version`.
pub fn parse_coordinates(
    name: &str,
    version: &str,
) -> Result<(ModuleName, ModuleVersion), PublishError> {
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

impl PublishRequest {
    /// Parses a JSON body.
    ///
    /// # Errors
    /// [`PublishError::Invalid`] naming the field that is wrong.
    pub fn from_json(body: &[u8]) -> Result<Self, PublishError> {
        deserialize_naming_fields(&mut serde_json::Deserializer::from_slice(body))
    }

    /// Checks everything that needs only the request itself.
    ///
    /// # Errors
    /// [`PublishError::Invalid`] naming the field at fault.
    pub fn validate(self, name: &str, version: &str) -> Result<ValidRequest, PublishError> {
        let (name, version) = parse_coordinates(name, version)?;
        if self.module_bazel.trim().is_empty() {
            return Err(field("module_bazel", "is empty"));
        }
        if self.module_bazel.len() > MAX_TEXT_FILE {
            return Err(field(
                "module_bazel",
                format!("is over {MAX_TEXT_FILE} bytes"),
            ));
        }
        let module_file = module_file::parse(&self.module_bazel)
            .map_err(|e| field("module_bazel", e.to_string()))?;
        match module_file.name.as_deref() {
            Some(n) if n == name.as_str() => {}
            Some(n) => {
                return Err(field(
                    "module_bazel",
                    format!("module(name = \"{n}\") does not match the module `{name}` in the URL"),
                ));
            }
            None => return Err(field("module_bazel", "module() must give name")),
        }
        match module_file.version.as_deref() {
            Some(v) if v == version.as_str() => {}
            Some(v) => {
                return Err(field(
                    "module_bazel",
                    format!(
                        "module(version = \"{v}\") does not match the version `{version}` in the URL"
                    ),
                ));
            }
            None => return Err(field("module_bazel", "module() must give version")),
        }
        if let Some(level) = module_file.compatibility_level
            && level < 0
        {
            return Err(field(
                "module_bazel",
                "compatibility_level must not be negative",
            ));
        }
        for (i, dep) in module_file.deps.iter().enumerate() {
            if ModuleName::parse(&dep.name).is_err() {
                return Err(field(
                    "module_bazel",
                    format!("bazel_dep #{}: `{}` is not a module name", i + 1, dep.name),
                ));
            }
            if !dep.dev_dependency && dep.version.is_empty() {
                return Err(field(
                    "module_bazel",
                    format!("bazel_dep(name = \"{}\") must give a version", dep.name),
                ));
            }
            if !dep.version.is_empty()
                && let Err(e) = ModuleVersion::parse(&dep.version)
            {
                return Err(field(
                    "module_bazel",
                    format!("bazel_dep(name = \"{}\"): {e}", dep.name),
                ));
            }
        }
        let strip_prefix = match self.strip_prefix.as_deref() {
            None | Some("") => String::new(),
            Some(p) => RelativePath::parse(p.trim_end_matches('/'))
                .map_err(|e| field("strip_prefix", e.to_string()))?
                .as_str()
                .to_owned(),
        };
        let declared_type = match self.archive_type.as_deref() {
            None | Some("") => None,
            Some(t) => Some(ArchiveType::from_archive_type(t).ok_or_else(|| {
                field(
                    "archive_type",
                    format!("unknown archive type `{t}` (tar.gz, tgz, tar.xz, tar.zst, tar.bz2, tar, zip)"),
                )
            })?),
        };
        let (archive, git) = match self.source {
            SourceSpec::Archive { url, integrity } => {
                let parsed = url::Url::parse(&url)
                    .map_err(|e| field("source.url", format!("`{url}` is not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(field("source.url", "must be an http:// or https:// URL"));
                }
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(field("source.url", "has no host"));
                }
                let integrity = match integrity.as_deref() {
                    None | Some("") => None,
                    Some(s) => Some(
                        Integrity::parse(s)
                            .map_err(|e| field("source.integrity", e.to_string()))?,
                    ),
                };
                let kind = match declared_type {
                    Some(t) => t,
                    None => ArchiveType::from_file_name(parsed.path()).ok_or_else(|| {
                        field(
                            "archive_type",
                            "cannot tell the format from the URL; give archive_type",
                        )
                    })?,
                };
                (
                    Some((
                        ArchiveSource::Url {
                            url: parsed,
                            integrity,
                        },
                        kind,
                    )),
                    None,
                )
            }
            SourceSpec::Upload {
                file_name,
                content_base64,
            } => {
                if file_name.is_empty()
                    || file_name.len() > 255
                    || file_name.contains(['/', '\\', '\0'])
                    || file_name.starts_with('.')
                    || !file_name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
                {
                    return Err(field(
                        "source.file_name",
                        "must be a plain file name of letters, digits, `.`, `_`, `-`, `+`",
                    ));
                }
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(content_base64.as_bytes())
                    .map_err(|e| field("source.content_base64", format!("is not base64: {e}")))?;
                if bytes.is_empty() {
                    return Err(field("source.content_base64", "is empty"));
                }
                let kind = match declared_type {
                    Some(t) => t,
                    None => ArchiveType::from_file_name(&file_name).ok_or_else(|| {
                        field(
                            "archive_type",
                            "cannot tell the format from source.file_name; give archive_type",
                        )
                    })?,
                };
                (
                    Some((ArchiveSource::Upload { file_name, bytes }, kind)),
                    None,
                )
            }
            SourceSpec::GitRepository { remote, commit } => {
                if commit.len() != 40
                    || !commit
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                {
                    return Err(field(
                        "source.commit",
                        "must be a full commit id (40 lowercase hex digits)",
                    ));
                }
                if remote.is_empty() || remote.contains(['\0', '\n', ' ']) {
                    return Err(field("source.remote", "must be a git remote URL"));
                }
                if declared_type.is_some() {
                    return Err(field(
                        "archive_type",
                        "does not apply to a git_repository source",
                    ));
                }
                (None, Some((remote, commit)))
            }
        };
        if git.is_some() && !self.overlay.is_empty() {
            return Err(field(
                "overlay",
                "a git_repository source cannot have overlay files",
            ));
        }
        if self.patches.len() > MAX_FILES {
            return Err(field("patches", format!("more than {MAX_FILES} patches")));
        }
        let mut patch_names = BTreeSet::new();
        let mut patches = Vec::new();
        for (i, p) in self.patches.into_iter().enumerate() {
            let at = format!("patches[{i}].name");
            if p.name.is_empty()
                || p.name.len() > 255
                || p.name.starts_with('.')
                || !p
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
            {
                return Err(field(
                    &at,
                    format!(
                        "`{}` must be a plain file name of letters, digits, `.`, `_`, `-`, `+`",
                        p.name
                    ),
                ));
            }
            if !patch_names.insert(p.name.clone()) {
                return Err(field(&at, format!("`{}` is given twice", p.name)));
            }
            if p.content.len() > MAX_TEXT_FILE {
                return Err(field(
                    &format!("patches[{i}].content"),
                    format!("is over {MAX_TEXT_FILE} bytes"),
                ));
            }
            if p.content.is_empty() {
                return Err(field(&format!("patches[{i}].content"), "is empty"));
            }
            patches.push((p.name, p.content.into_bytes()));
        }
        let patch_strip = self.patch_strip.unwrap_or(0);
        if patch_strip > 16 {
            return Err(field("patch_strip", "must be between 0 and 16"));
        }
        if self.overlay.len() > MAX_FILES {
            return Err(field("overlay", format!("more than {MAX_FILES} files")));
        }
        let mut overlay = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, o) in self.overlay.into_iter().enumerate() {
            let at = format!("overlay[{i}].path");
            let path = RelativePath::parse(&o.path).map_err(|e| field(&at, e.to_string()))?;
            if !seen.insert(path.as_str().to_ascii_lowercase()) {
                return Err(field(&at, format!("`{}` is given twice", o.path)));
            }
            if o.content.len() > MAX_TEXT_FILE {
                return Err(field(
                    &format!("overlay[{i}].content"),
                    format!("is over {MAX_TEXT_FILE} bytes"),
                ));
            }
            overlay.push((path, o.content.into_bytes()));
        }
        overlay.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        if !overlay.is_empty() && !declares_overlay_support(&module_file.bazel_compatibility) {
            return Err(field(
                "module_bazel",
                "an entry with overlay files must declare bazel_compatibility = [\">=7.2.1\"] (or a higher minimum): older Bazel ignores overlays",
            ));
        }
        if let Some(m) = &self.metadata {
            if let Some(h) = &m.homepage
                && !h.is_empty()
                && url::Url::parse(h).is_err()
            {
                return Err(field("metadata.homepage", format!("`{h}` is not a URL")));
            }
            for (i, r) in m.repository.iter().enumerate() {
                if r.is_empty() {
                    return Err(field(&format!("metadata.repository[{i}]"), "is empty"));
                }
            }
            for (i, maint) in m.maintainers.iter().enumerate() {
                for (k, v) in maint {
                    if !(v.is_string() || v.is_number() || v.is_boolean()) {
                        return Err(field(
                            &format!("metadata.maintainers[{i}].{k}"),
                            "must be a string or a number",
                        ));
                    }
                }
            }
        }
        Ok(ValidRequest {
            name,
            version,
            module_bazel: self.module_bazel,
            module_file,
            archive,
            git,
            declared_archive_type: declared_type,
            strip_prefix,
            patches,
            patch_strip,
            overlay,
            metadata: self.metadata,
        })
    }
}

/// Whether `bazel_compatibility` requires at least Bazel 7.2.1 (the first that reads overlays).
fn declares_overlay_support(constraints: &[String]) -> bool {
    constraints.iter().any(|c| {
        let Some(v) = c.strip_prefix(">=") else {
            return false;
        };
        let parts: Vec<u64> = v
            .trim()
            .split('.')
            .map(|p| p.parse::<u64>().unwrap_or(0))
            .collect();
        let key = (
            parts.first().copied().unwrap_or(0),
            parts.get(1).copied().unwrap_or(0),
            parts.get(2).copied().unwrap_or(0),
        );
        key >= (7, 2, 1)
    })
}

/// Deserializes, turning serde's error into one that names the field.
fn deserialize_naming_fields(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
) -> Result<PublishRequest, PublishError> {
    let value: Value = Value::deserialize(&mut *de)
        .map_err(|e| field("body", format!("is not valid JSON: {e}")))?;
    de.end()
        .map_err(|e| field("body", format!("is not valid JSON: {e}")))?;
    let Value::Object(obj) = &value else {
        return Err(field("body", "must be a JSON object"));
    };
    for key in ["module_bazel", "source"] {
        if !obj.contains_key(key) {
            return Err(field(key, "is missing"));
        }
    }
    if let Some(Value::Object(src)) = obj.get("source") {
        match src.get("type").and_then(Value::as_str) {
            Some("archive" | "upload" | "git_repository") => {}
            Some(other) => {
                return Err(field(
                    "source.type",
                    format!("unknown source type `{other}` (archive, upload or git_repository)"),
                ));
            }
            None => {
                return Err(field(
                    "source.type",
                    "is missing (archive, upload or git_repository)",
                ));
            }
        }
    }
    let located = locate(obj);
    serde_json::from_value(value).map_err(|e| match located {
        Some((at, msg)) => field(&at, msg),
        None => field("body", e.to_string()),
    })
}

/// Finds the field a deserialization error comes from, by deserializing each part alone.
fn locate(obj: &Map<String, Value>) -> Option<(String, String)> {
    fn check<T: serde::de::DeserializeOwned>(at: &str, v: &Value) -> Option<(String, String)> {
        let e = serde_json::from_value::<T>(v.clone()).err()?;
        let msg = e.to_string();
        let inner = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| msg.split_once(p))
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        Some((
            inner.map_or_else(|| at.to_owned(), |n| format!("{at}.{n}")),
            msg,
        ))
    }
    for (k, v) in obj {
        let found = match k.as_str() {
            "module_bazel" => check::<String>(k, v),
            "source" => check::<SourceSpec>(k, v),
            "strip_prefix" | "archive_type" => check::<Option<String>>(k, v),
            "patch_strip" => check::<Option<u32>>(k, v),
            "metadata" => check::<Option<MetadataSpec>>(k, v),
            "patches" | "overlay" => match v.as_array() {
                None => Some((k.clone(), "must be a list".to_owned())),
                Some(items) => items.iter().enumerate().find_map(|(i, item)| {
                    let at = format!("{k}[{i}]");
                    if k == "patches" {
                        check::<NamedText>(&at, item)
                    } else {
                        check::<PathText>(&at, item)
                    }
                }),
            },
            _ => Some((
                k.clone(),
                "unknown field (expected module_bazel, source, strip_prefix, archive_type, patches, patch_strip, overlay, metadata)".to_owned(),
            )),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<ValidRequest, PublishError> {
        PublishRequest::from_json(json.as_bytes())?.validate("foo", "1.2.0")
    }

    const MB: &str = r#""module(name = \"foo\", version = \"1.2.0\")\n""#;

    #[test]
    fn accepts_an_archive_request() {
        let r = req(&format!(
            r#"{{"module_bazel": {MB}, "source": {{"type": "archive", "url": "https://example.com/foo-1.2.0.tar.gz"}}, "strip_prefix": "foo-1.2.0/"}}"#
        ))
        .unwrap();
        assert_eq!(r.strip_prefix, "foo-1.2.0");
        assert!(matches!(r.archive, Some((_, ArchiveType::TarGz))));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"source": {"type": "archive", "url": "https://x/y.tar.gz"}}"#.to_owned(), "module_bazel"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "ftp"}}}}"#), "source.type"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "archive", "url": "ftp://x/y.tar.gz"}}}}"#), "source.url"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "archive", "url": "https://x/y.tar.gz", "integrity": "sha256-xx"}}}}"#), "source.integrity"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "archive", "url": "https://x/y"}}}}"#), "archive_type"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "archive", "url": "https://x/y.zip"}}, "strip_prefix": "../x"}}"#), "strip_prefix"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "archive", "url": "https://x/y.zip"}}, "patches": [{{"name": "../p", "content": "x"}}]}}"#), "patches[0].name"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "archive", "url": "https://x/y.zip"}}, "overlay": [{{"path": "/abs", "content": "x"}}]}}"#), "overlay[0].path"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "archive", "url": "https://x/y.zip"}}, "overlay": [{{"path": "BUILD", "content": "x"}}]}}"#), "module_bazel"),
            (r#"{"module_bazel": "module(name = \"bar\", version = \"1.2.0\")", "source": {"type": "archive", "url": "https://x/y.zip"}}"#.to_owned(), "module_bazel"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "upload", "file_name": "x.tar.gz", "content_base64": "!!"}}}}"#), "source.content_base64"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "git_repository", "remote": "https://x", "commit": "abc"}}}}"#), "source.commit"),
            (format!(r#"{{"module_bazel": {MB}, "source": {{"type": "archive", "url": "https://x/y.zip"}}, "extra": 1}}"#), "extra"),
            ("[1]".to_owned(), "body"),
            ("{".to_owned(), "body"),
        ];
        for (json, want) in cases {
            match req(&json) {
                Err(PublishError::Invalid { field, message }) => {
                    assert_eq!(field, want, "{json}: {message}");
                }
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn coordinates() {
        assert!(parse_coordinates("foo", "1.0+build").is_err());
        assert!(parse_coordinates("foo", "2147483648.0").is_err());
        assert!(parse_coordinates("Foo", "1.0").is_err());
        assert!(parse_coordinates("foo", "2147483647.0").is_ok());
    }

    #[test]
    fn overlay_support() {
        assert!(declares_overlay_support(&[">=7.2.1".to_owned()]));
        assert!(declares_overlay_support(&[">=8.0.0".to_owned()]));
        assert!(!declares_overlay_support(&[">=7.2.0".to_owned()]));
        assert!(!declares_overlay_support(&["<8.0.0".to_owned()]));
    }
}
