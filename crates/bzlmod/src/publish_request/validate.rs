//! The checks of a publish request that need nothing but the request.

use std::collections::BTreeSet;

use base64::Engine as _;
use unpack::archive::ArchiveType;

use super::{
    ArchiveSource, MAX_FILES, MAX_TEXT_FILE, PublishRequest, SourceSpec, ValidRequest, field,
    parse_coordinates,
};
use crate::FieldError;
use crate::integrity::Integrity;
use crate::module_file;
use crate::name::{ModuleName, RelativePath};
use crate::version::ModuleVersion;

impl PublishRequest {
    /// Checks everything that needs only the request itself.
    ///
    /// `parse_module` reads `MODULE.bazel`: [`module_file::parse`], on a thread with
    /// [`module_file::PARSE_STACK`] of stack (the caller chooses the thread).
    ///
    /// # Errors
    /// A [`FieldError`] naming the field at fault.
    pub fn validate(
        self,
        name: &str,
        version: &str,
        parse_module: module_file::ParseFn,
    ) -> Result<ValidRequest, FieldError> {
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
        let module_file =
            parse_module(&self.module_bazel).map_err(|e| field("module_bazel", e.to_string()))?;
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
#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<ValidRequest, FieldError> {
        PublishRequest::from_json(json.as_bytes())?.validate("foo", "1.2.0", module_file::parse)
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
                Err(FieldError { field, message }) => {
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
