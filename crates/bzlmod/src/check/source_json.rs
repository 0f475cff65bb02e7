//! `source.json`: its fields per source type, and the `patches` / `overlay` files it lists.

use serde_json::{Map, Value};

use super::{Checker, Files};
use crate::integrity::Integrity;
use crate::name::RelativePath;
use crate::registry_json::{SourceType, is_fetchable_url, parse_object};

impl<F: Files + ?Sized> Checker<'_, F> {
    pub(super) fn check_source_json(&mut self, name: &str, version: &str) -> Result<(), F::Error> {
        let dir = format!("modules/{name}/{version}");
        let path = format!("{dir}/source.json");
        let Some(bytes) = self.read(&path)? else {
            self.problem(&path, "missing; Bazel fails without it");
            return Ok(());
        };
        let obj = match parse_object(&bytes) {
            Ok(o) => o,
            Err(e) => return self.fail(&path, e),
        };
        let Some(kind) = SourceType::from_field(obj.get("type")) else {
            return self.fail(
                &path,
                format!(
                    "unknown `type` {}; use archive, git_repository or local_path",
                    obj["type"]
                ),
            );
        };
        match kind {
            SourceType::Archive => {
                self.require_string(
                    &path,
                    &obj,
                    "url",
                    is_fetchable_url,
                    "an absolute http, https or file URL",
                );
                match obj.get("integrity") {
                    Some(Value::String(i)) => {
                        if let Err(e) = Integrity::parse(i) {
                            self.problem(&path, e.to_string());
                        }
                    }
                    Some(_) => self.problem(&path, "`integrity` must be a string (an SRI value)"),
                    None => self.problem(&path, "`integrity` is missing (an SRI value; Bazel fails with \"Missing integrity\")"),
                }
                match obj.get("mirror_urls") {
                    None => {}
                    Some(Value::Array(a))
                        if a.iter().all(|u| u.as_str().is_some_and(is_fetchable_url)) => {}
                    Some(_) => {
                        self.problem(&path, "`mirror_urls` must be an array of absolute URLs")
                    }
                }
                self.optional_string(&path, &obj, "strip_prefix");
                self.optional_string(&path, &obj, "archive_type");
                self.check_file_map(&dir, &path, &obj, "overlay")?;
            }
            SourceType::GitRepository => {
                self.require_string(&path, &obj, "remote", |s| !s.is_empty(), "a git remote URL");
                if obj.get("commit").is_none() && obj.get("tag").is_none() {
                    self.problem(&path, "a git_repository source needs `commit` (or `tag`)");
                }
                self.optional_string(&path, &obj, "commit");
                self.optional_string(&path, &obj, "tag");
                self.optional_string(&path, &obj, "strip_prefix");
                if obj.contains_key("overlay") {
                    self.problem(
                        &path,
                        "`overlay` is not supported for git_repository sources",
                    );
                }
            }
            SourceType::LocalPath => {
                self.require_string(&path, &obj, "path", |s| !s.is_empty(), "a path");
            }
        }
        if kind != SourceType::LocalPath {
            if obj
                .get("patch_strip")
                .is_some_and(|v| v.as_u64().is_none_or(|n| n > u64::from(u32::MAX)))
            {
                self.problem(&path, "`patch_strip` must be a non-negative integer");
            }
            self.check_file_map(&dir, &path, &obj, "patches")?;
        }
        Ok(())
    }

    fn require_string(
        &mut self,
        path: &str,
        obj: &Map<String, Value>,
        key: &str,
        valid: impl Fn(&str) -> bool,
        what: &str,
    ) {
        match obj.get(key) {
            Some(Value::String(s)) if valid(s) => {}
            Some(Value::String(s)) => self.problem(path, format!("`{key}` {s:?} is not {what}")),
            Some(_) => self.problem(path, format!("`{key}` must be a string ({what})")),
            None => self.problem(path, format!("`{key}` is missing ({what})")),
        }
    }

    fn optional_string(&mut self, path: &str, obj: &Map<String, Value>, key: &str) {
        if obj.get(key).is_some_and(|v| !v.is_string()) {
            self.problem(path, format!("`{key}` must be a string"));
        }
    }

    /// `patches` / `overlay`: every entry names a safe path that exists in its folder and
    /// matches its integrity; every file in the folder is listed.
    fn check_file_map(
        &mut self,
        dir: &str,
        source_path: &str,
        obj: &Map<String, Value>,
        key: &str,
    ) -> Result<(), F::Error> {
        let listed = match obj.get(key) {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                self.problem(
                    source_path,
                    format!("`{key}` must be an object of file -> integrity"),
                );
                return Ok(());
            }
        };
        for (file, integrity) in &listed {
            let rel = match RelativePath::parse(file) {
                Ok(r) => r,
                Err(e) => {
                    self.problem(source_path, format!("`{key}` entry: {e}"));
                    continue;
                }
            };
            if key == "patches" && rel.as_str().contains('/') {
                self.problem(
                    source_path,
                    format!("`patches` entry `{rel}` must be a file directly inside patches/"),
                );
                continue;
            }
            let Some(integrity) = integrity.as_str() else {
                self.problem(
                    source_path,
                    format!("`{key}` entry `{rel}` must map to an integrity string"),
                );
                continue;
            };
            let integrity = match Integrity::parse(integrity) {
                Ok(i) => i,
                Err(e) => {
                    self.problem(source_path, format!("`{key}` entry `{rel}`: {e}"));
                    continue;
                }
            };
            let file_path = format!("{dir}/{key}/{rel}");
            match self.read(&file_path)? {
                None => self.problem(
                    &file_path,
                    format!("listed in source.json `{key}` but missing (or not a regular file)"),
                ),
                Some(bytes) if !integrity.matches(&bytes) => {
                    let actual = Integrity::of(integrity.algorithm(), &bytes);
                    self.problem(&file_path, format!("integrity mismatch: source.json says {integrity}, the file hashes to {actual}"));
                }
                Some(_) => {}
            }
        }
        let mut present = Vec::new();
        self.list_files(&format!("{dir}/{key}"), "", &mut present)?;
        for file in present {
            if !listed.contains_key(&file) {
                self.problem(
                    format!("{dir}/{key}/{file}"),
                    format!("not listed in source.json `{key}`"),
                );
            }
        }
        Ok(())
    }
}
