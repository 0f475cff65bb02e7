//! The files of a registry entry, built from a validated request, and the `metadata.json`
//! edits of publishing, yanking and deprecation. Pure functions over bytes.

use serde::Serialize as _;
use serde_json::{Map, Value, json};

use crate::FieldError;
use crate::integrity::Integrity;
use crate::publish_request::MetadataSpec;
use crate::registry_json::parse_object;
use crate::version::ModuleVersion;

/// Why an entry edit was refused. The server maps each variant to its own publish error (and
/// so to an HTTP status); the messages are shown to the publisher as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A request field is wrong (`metadata`, `reason`).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The stored `metadata.json` is unreadable: the registry is inconsistent.
    #[error("metadata.json: {message}")]
    Stored {
        /// What is wrong with the stored file.
        message: String,
    },
    /// The module does not list the version.
    #[error("{0}")]
    NotFound(String),
    /// The edit is not allowed now.
    #[error("{0}")]
    Conflict(String),
}

/// JSON the way BCR writes registry files: four-space indent, trailing newline.
#[must_use]
pub fn to_registry_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing a `Value` into a Vec cannot fail.
    let _ = value.serialize(&mut ser);
    out.push(b'\n');
    out
}

/// What `source.json` describes.
#[derive(Debug, Clone)]
pub enum SourceFacts<'a> {
    /// An archive.
    Archive {
        /// Its URL.
        url: &'a str,
        /// This server's copies.
        mirror_urls: &'a [String],
        /// sha256 SRI.
        integrity: &'a Integrity,
        /// `archive_type`, when the request gave one.
        archive_type: Option<&'a str>,
    },
    /// A git repository.
    Git {
        /// The remote.
        remote: &'a str,
        /// The commit.
        commit: &'a str,
    },
}

/// Builds `source.json`.
#[must_use]
pub fn source_json(
    facts: &SourceFacts<'_>,
    strip_prefix: &str,
    patches: &[(String, Integrity)],
    patch_strip: u32,
    overlay: &[(String, Integrity)],
) -> Vec<u8> {
    let mut m = Map::new();
    match facts {
        SourceFacts::Archive {
            url,
            mirror_urls,
            integrity,
            archive_type,
        } => {
            m.insert("url".into(), json!(url));
            if !mirror_urls.is_empty() {
                m.insert("mirror_urls".into(), json!(mirror_urls));
            }
            m.insert("integrity".into(), json!(integrity.to_string()));
            if !strip_prefix.is_empty() {
                m.insert("strip_prefix".into(), json!(strip_prefix));
            }
            if let Some(t) = archive_type {
                m.insert("archive_type".into(), json!(t));
            }
        }
        SourceFacts::Git { remote, commit } => {
            m.insert("type".into(), json!("git_repository"));
            m.insert("remote".into(), json!(remote));
            m.insert("commit".into(), json!(commit));
            if !strip_prefix.is_empty() {
                m.insert("strip_prefix".into(), json!(strip_prefix));
            }
        }
    }
    if !patches.is_empty() {
        let p: Map<String, Value> = patches
            .iter()
            .map(|(n, i)| (n.clone(), json!(i.to_string())))
            .collect();
        m.insert("patches".into(), Value::Object(p));
        m.insert("patch_strip".into(), json!(patch_strip));
    }
    if !overlay.is_empty() {
        let o: Map<String, Value> = overlay
            .iter()
            .map(|(n, i)| (n.clone(), json!(i.to_string())))
            .collect();
        m.insert("overlay".into(), Value::Object(o));
    }
    to_registry_json(&Value::Object(m))
}

fn meta_err(message: impl Into<String>) -> EntryError {
    FieldError::new("metadata", message).into()
}

fn stored_err(message: impl Into<String>) -> EntryError {
    EntryError::Stored {
        message: message.into(),
    }
}

/// Sorts version strings in Bazel's order (strings that do not parse go last, by text).
fn sort_versions(versions: &mut [Value]) {
    versions.sort_by(|a, b| {
        let pa = a.as_str().and_then(|s| ModuleVersion::parse(s).ok());
        let pb = b.as_str().and_then(|s| ModuleVersion::parse(s).ok());
        match (pa, pb) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.as_str().cmp(&b.as_str()),
        }
    });
}

/// `metadata.json` with `version` added (kept in Bazel's order), or `None` when it is listed
/// already. A new module's file is made from `spec`, which it then requires.
///
/// # Errors
/// [`EntryError::Invalid`] naming `metadata` for a new module without it;
/// [`EntryError::Stored`] when the stored file is unreadable.
pub fn add_version(
    existing: Option<&[u8]>,
    spec: Option<&MetadataSpec>,
    version: &ModuleVersion,
) -> Result<Option<Vec<u8>>, EntryError> {
    let mut obj = match existing {
        Some(bytes) => parse_object(bytes).map_err(stored_err)?,
        None => {
            let spec = spec.ok_or_else(|| {
                meta_err(
                    "is required for a new module (homepage, maintainers, repository; `gf-registry publish` reads it from `.bcr/metadata.template.json`)",
                )
            })?;
            if spec.maintainers.is_empty() {
                return Err(FieldError::new(
                    "metadata.maintainers",
                    "a new module needs at least one maintainer",
                )
                .into());
            }
            let mut m = Map::new();
            m.insert(
                "homepage".into(),
                json!(spec.homepage.clone().unwrap_or_default()),
            );
            m.insert("maintainers".into(), json!(spec.maintainers));
            m.insert("repository".into(), json!(spec.repository));
            m.insert("versions".into(), json!([]));
            m.insert("yanked_versions".into(), json!({}));
            m
        }
    };
    let versions = obj
        .entry("versions")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| stored_err("`versions` is not a list"))?;
    if versions
        .iter()
        .any(|v| v.as_str() == Some(version.as_str()))
    {
        return Ok(None);
    }
    versions.push(json!(version.as_str()));
    sort_versions(versions);
    Ok(Some(to_registry_json(&Value::Object(obj))))
}

/// Whether `metadata.json` lists `version`.
#[must_use]
pub fn lists_version(metadata: &[u8], version: &str) -> bool {
    parse_object(metadata)
        .ok()
        .and_then(|o| o.get("versions").and_then(Value::as_array).cloned())
        .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(version)))
}

/// A `metadata.json` edit.
#[derive(Debug, Clone)]
pub enum MetadataEdit<'a> {
    /// Yank a version with a reason.
    Yank(&'a str, &'a str),
    /// Take a yank back.
    Unyank(&'a str),
    /// Deprecate the module (an empty reason removes the deprecation).
    Deprecate(&'a str),
}

/// Applies an edit to `metadata.json`: the new bytes, or `None` when nothing changes.
///
/// # Errors
/// [`EntryError::NotFound`] for a version the module does not list;
/// [`EntryError::Conflict`] for yanking the latest version of a module that is not
/// deprecated; [`EntryError::Invalid`] for an empty yank reason.
pub fn edit_metadata(
    metadata: &[u8],
    edit: &MetadataEdit<'_>,
) -> Result<Option<Vec<u8>>, EntryError> {
    let mut obj = parse_object(metadata).map_err(stored_err)?;
    let versions: Vec<String> = obj
        .get("versions")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let listed = |v: &str| -> Result<(), EntryError> {
        if versions.iter().any(|x| x == v) {
            Ok(())
        } else {
            Err(EntryError::NotFound(format!(
                "metadata.json lists no version `{v}`"
            )))
        }
    };
    match edit {
        MetadataEdit::Yank(version, reason) => {
            listed(version)?;
            if reason.trim().is_empty() {
                return Err(FieldError::new(
                    "reason",
                    "a yank needs a reason (it is shown to everyone who depends on the version)",
                )
                .into());
            }
            let deprecated = obj
                .get("deprecated")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            let latest = versions
                .iter()
                .filter_map(|v| ModuleVersion::parse(v).ok())
                .max();
            if !deprecated && latest.as_ref().is_some_and(|l| l.as_str() == *version) {
                return Err(EntryError::Conflict(format!(
                    "`{version}` is the latest version; yanking it would leave no version to upgrade to. Publish a fixed version first, or deprecate the module"
                )));
            }
            let yanked = obj
                .entry("yanked_versions")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| stored_err("`yanked_versions` is not an object"))?;
            if yanked.get(*version).and_then(Value::as_str) == Some(reason) {
                return Ok(None);
            }
            yanked.insert((*version).to_owned(), json!(reason));
        }
        MetadataEdit::Unyank(version) => {
            listed(version)?;
            let Some(yanked) = obj
                .get_mut("yanked_versions")
                .and_then(Value::as_object_mut)
            else {
                return Ok(None);
            };
            if yanked.shift_remove(*version).is_none() {
                return Ok(None);
            }
        }
        MetadataEdit::Deprecate(reason) => {
            let current = obj.get("deprecated").and_then(Value::as_str).unwrap_or("");
            if current == *reason {
                return Ok(None);
            }
            if reason.is_empty() {
                obj.shift_remove("deprecated");
            } else {
                obj.insert("deprecated".into(), json!(reason));
            }
        }
    }
    Ok(Some(to_registry_json(&Value::Object(obj))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ModuleVersion {
        ModuleVersion::parse(s).unwrap()
    }

    #[test]
    fn versions_stay_in_bazel_order() {
        let meta = br#"{"homepage": "", "maintainers": [], "versions": ["1.0", "1.10", "2.0"], "yanked_versions": {}}"#;
        let out = add_version(Some(meta), None, &v("1.9")).unwrap().unwrap();
        let o = parse_object(&out).unwrap();
        assert_eq!(o["versions"], json!(["1.0", "1.9", "1.10", "2.0"]));
        let out = add_version(Some(&out), None, &v("2.0-rc1"))
            .unwrap()
            .unwrap();
        let o = parse_object(&out).unwrap();
        assert_eq!(
            o["versions"],
            json!(["1.0", "1.9", "1.10", "2.0-rc1", "2.0"])
        );
        assert!(add_version(Some(&out), None, &v("1.9")).unwrap().is_none());
        assert!(out.ends_with(b"}\n"));
    }

    #[test]
    fn a_new_module_needs_metadata() {
        assert!(matches!(
            add_version(None, None, &v("1.0")),
            Err(EntryError::Invalid(FieldError { field, .. })) if field == "metadata"
        ));
    }

    #[test]
    fn yank_rules() {
        let meta = br#"{"versions": ["1.0", "1.1"], "yanked_versions": {}}"#;
        assert!(matches!(
            edit_metadata(meta, &MetadataEdit::Yank("1.1", "bad")),
            Err(EntryError::Conflict(_))
        ));
        assert!(matches!(
            edit_metadata(meta, &MetadataEdit::Yank("3.0", "bad")),
            Err(EntryError::NotFound(_))
        ));
        assert!(matches!(
            edit_metadata(meta, &MetadataEdit::Yank("1.0", " ")),
            Err(EntryError::Invalid(_))
        ));
        let y = edit_metadata(meta, &MetadataEdit::Yank("1.0", "CVE-1"))
            .unwrap()
            .unwrap();
        assert_eq!(
            parse_object(&y).unwrap()["yanked_versions"],
            json!({"1.0": "CVE-1"})
        );
        assert!(
            edit_metadata(&y, &MetadataEdit::Yank("1.0", "CVE-1"))
                .unwrap()
                .is_none()
        );
        let u = edit_metadata(&y, &MetadataEdit::Unyank("1.0"))
            .unwrap()
            .unwrap();
        assert_eq!(parse_object(&u).unwrap()["yanked_versions"], json!({}));
        let d = edit_metadata(meta, &MetadataEdit::Deprecate("use bar"))
            .unwrap()
            .unwrap();
        let latest = edit_metadata(&d, &MetadataEdit::Yank("1.1", "bad"))
            .unwrap()
            .unwrap();
        assert_eq!(
            parse_object(&latest).unwrap()["yanked_versions"],
            json!({"1.1": "bad"})
        );
        let undep = edit_metadata(&d, &MetadataEdit::Deprecate(""))
            .unwrap()
            .unwrap();
        assert!(parse_object(&undep).unwrap().get("deprecated").is_none());
    }
}
