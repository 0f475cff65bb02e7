//! Building the publish request: `MODULE.bazel` at a tag or on disk, the tag's version, the
//! archive, and the `.bcr/` extras (patches, overlay, metadata template).

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::registry::module_file;
use crate::release::{self, BcrExtras, ExtraFile};

use super::*;

/// Checks that `tag` (`X` or `refs/tags/X`) names `version`: it is `VERSION` or `vVERSION`.
pub(super) fn check_tag_version(tag: &str, version: &str) -> Result<(), String> {
    let short = tag.strip_prefix("refs/tags/").unwrap_or(tag);
    if short == version || short.strip_prefix('v') == Some(version) {
        return Ok(());
    }
    let named = match short.strip_prefix('v') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest,
        _ => short,
    };
    if named.starts_with(|c: char| c.is_ascii_digit()) {
        Err(format!(
            "tag {short} names version {named} but MODULE.bazel at that tag says {version}"
        ))
    } else {
        Err(format!(
            "tag {short} does not name a version; MODULE.bazel at that tag says {version}, so \
             the tag must be {version} or v{version}"
        ))
    }
}

/// The module name and version of a MODULE.bazel; `at` says where it was read, for errors.
pub(super) fn module_identity(text: &str, at: &str) -> anyhow::Result<(String, String)> {
    let parsed = module_file::parse(text).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
    let name = parsed
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{at}: module(name = ...) is required to publish"))?;
    let version = parsed
        .version
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{at}: module(version = ...) is required to publish"))?;
    Ok((name, version))
}

pub(super) fn utf8(bytes: Vec<u8>, what: &str) -> anyhow::Result<String> {
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{what} is not UTF-8 text"))
}

/// Builds the publish request for the module at `module_root` (the repository root or a folder
/// inside it) from `source`.
///
/// `patch_strip` overrides the default `patch_strip` (1 when `.bcr/patches` has patches;
/// otherwise the field is only sent when given). Nothing is sent over the network.
///
/// # Errors
/// Every local problem: no repository or tag, no readable `MODULE.bazel` or no name/version in
/// it, a tag that names another version, an invalid `.bcr/` folder or metadata template, an
/// archive URL that is not http(s).
pub(crate) fn build_request(
    module_root: &Path,
    source: &SourceSpec,
    patch_strip: Option<u32>,
) -> anyhow::Result<PublishRequest> {
    let mut body = Map::new();
    let (name, version, extras, mut summary) = match source {
        SourceSpec::Tag(tag) => {
            let loc = release::locate(module_root)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "--tag: {} is not inside a git repository",
                    module_root.display()
                )
            })?;
            let commit = release::resolve_tag(&loc.repo_dir, tag)?;
            let path = join(&loc.subdir, "MODULE.bazel");
            let at = format!("{path} at tag {tag}");
            let text = release::read_file_at(&loc.repo_dir, &commit, &path)?
                .ok_or_else(|| anyhow::anyhow!("no MODULE.bazel file at tag {tag} ({path})"))?;
            let text = utf8(text, &at)?;
            let (name, version) = module_identity(&text, &at)?;
            check_tag_version(tag, &version).map_err(anyhow::Error::msg)?;
            let prefix = format!("{name}-{version}");
            let archive =
                release::deterministic_tar_gz(&loc.repo_dir, &commit, &loc.subdir, &prefix)?;
            let file_name = format!("{prefix}.tar.gz");
            let summary = format!(
                "publishing {name}@{version} from tag {tag} (commit {commit}): upload {file_name}, \
                 {} bytes, sha256 {}",
                archive.len(),
                hex::encode(Sha256::digest(&archive)),
            );
            body.insert("module_bazel".into(), text.into());
            body.insert(
                "source".into(),
                json!({
                    "type": "upload",
                    "file_name": file_name,
                    "content_base64": base64::engine::general_purpose::STANDARD.encode(&archive),
                }),
            );
            body.insert("strip_prefix".into(), prefix.into());
            body.insert("archive_type".into(), "tar.gz".into());
            let extras = release::bcr_extras_at(&loc.repo_dir, &commit, &loc.subdir)?;
            (name, version, extras, summary)
        }
        SourceSpec::ArchiveUrl {
            url,
            integrity,
            strip_prefix,
            archive_type,
        } => {
            let path = module_root.join("MODULE.bazel");
            let at = path.display().to_string();
            let text = std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {at}: {e}"))?;
            let text = utf8(text, &at)?;
            let (name, version) = module_identity(&text, &at)?;
            match Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(_) => anyhow::bail!("--archive-url `{url}`: must be an http(s) URL"),
                Err(e) => anyhow::bail!("--archive-url `{url}`: {e}"),
            }
            let mut src = Map::new();
            src.insert("type".into(), "archive".into());
            src.insert("url".into(), url.clone().into());
            if let Some(i) = integrity {
                src.insert("integrity".into(), i.clone().into());
            }
            body.insert("module_bazel".into(), text.into());
            body.insert("source".into(), src.into());
            if let Some(p) = strip_prefix {
                body.insert("strip_prefix".into(), p.clone().into());
            }
            if let Some(t) = archive_type {
                body.insert("archive_type".into(), t.clone().into());
            }
            let summary = format!("publishing {name}@{version} from {url}");
            let extras = release::bcr_extras_on_disk(module_root)?;
            (name, version, extras, summary)
        }
    };
    add_extras(&mut body, &mut summary, extras, patch_strip)?;
    Ok(PublishRequest {
        name,
        version,
        body: Value::Object(body),
        summary,
    })
}

pub(super) fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}/{b}")
    }
}

/// Adds `patches`, `patch_strip`, `overlay` and `metadata` from the `.bcr/` extras.
pub(super) fn add_extras(
    body: &mut Map<String, Value>,
    summary: &mut String,
    extras: BcrExtras,
    patch_strip: Option<u32>,
) -> anyhow::Result<()> {
    let dir = extras.dir.unwrap_or_else(|| ".bcr".to_owned());
    let files = |list: Vec<ExtraFile>, sub: &str, key: &str| -> anyhow::Result<Vec<Value>> {
        list.into_iter()
            .map(|f| {
                let what = format!("{dir}/{sub}/{}", f.path);
                Ok(json!({ key: f.path, "content": utf8(f.content, &what)? }))
            })
            .collect()
    };
    let patches = files(extras.patches, "patches", "name")?;
    let overlay = files(extras.overlay, "overlay", "path")?;
    if !patches.is_empty() {
        let strip = patch_strip.unwrap_or(DEFAULT_PATCH_STRIP);
        let _ = write!(
            summary,
            "; {} patch(es) from {dir}/patches (patch_strip {strip})",
            patches.len()
        );
        body.insert("patches".into(), patches.into());
        body.insert("patch_strip".into(), strip.into());
    } else if let Some(strip) = patch_strip {
        body.insert("patch_strip".into(), strip.into());
    }
    if !overlay.is_empty() {
        let _ = write!(
            summary,
            "; {} overlay file(s) from {dir}/overlay",
            overlay.len()
        );
        body.insert("overlay".into(), overlay.into());
    }
    if let Some(template) = extras.metadata_template {
        let what = format!("{dir}/metadata.template.json");
        body.insert("metadata".into(), metadata_from_template(&template, &what)?);
        let _ = write!(summary, "; metadata from {what}");
    }
    Ok(())
}

/// The `metadata` of a publish request from a BCR `metadata.template.json`: its `homepage`,
/// `maintainers` and `repository` (`versions` and `yanked_versions` are the registry's).
pub(super) fn metadata_from_template(bytes: &[u8], what: &str) -> anyhow::Result<Value> {
    let parsed: Value =
        serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let Value::Object(template) = parsed else {
        anyhow::bail!("{what}: must be a JSON object");
    };
    let mut out = Map::new();
    for (key, ok) in [
        ("homepage", Value::is_string as fn(&Value) -> bool),
        ("maintainers", Value::is_array),
        ("repository", Value::is_array),
    ] {
        match template.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if ok(v) => {
                out.insert(key.to_owned(), v.clone());
            }
            Some(_) => anyhow::bail!(
                "{what}: `{key}` must be {}",
                if key == "homepage" {
                    "a string"
                } else {
                    "a list"
                }
            ),
        }
    }
    Ok(Value::Object(out))
}
