//! `source.json`: its fields per source type, and the `patches` / `overlay` files it lists.

use serde_json::{Map, Value};

use super::{Checker, Files, rules};
use crate::integrity::Integrity;
use crate::name::RelativePath;
use crate::registry_json::{SourceType, is_fetchable_url, parse_object};

impl<F: Files + ?Sized> Checker<'_, F> {
    pub(super) fn check_source_json(&mut self, name: &str, version: &str) -> Result<(), F::Error> {
        let dir = format!("modules/{name}/{version}");
        let path = format!("{dir}/source.json");
        let Some(bytes) = self.read(&path)? else {
            self.problem(rules::SOURCE_JSON, &path, "missing; Bazel fails without it");
            return Ok(());
        };
        let obj = match parse_object(&bytes) {
            Ok(o) => o,
            Err(e) => return self.fail(rules::SOURCE_JSON, &path, e),
        };
        let Some(kind) = SourceType::from_field(obj.get("type")) else {
            return self.fail(
                rules::SOURCE_JSON,
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
                            self.problem(rules::SOURCE_FIELD, &path, e.to_string());
                        }
                    }
                    Some(_) => self.problem(rules::SOURCE_FIELD, &path, "`integrity` must be a string (an SRI value)"),
                    None => self.problem(rules::SOURCE_FIELD, &path, "`integrity` is missing (an SRI value; Bazel fails with \"Missing integrity\")"),
                }
                match obj.get("mirror_urls") {
                    None => {}
                    Some(Value::Array(a))
                        if a.iter().all(|u| u.as_str().is_some_and(is_fetchable_url)) => {}
                    Some(_) => self.problem(
                        rules::SOURCE_FIELD,
                        &path,
                        "`mirror_urls` must be an array of absolute URLs",
                    ),
                }
                self.optional_string(&path, &obj, "strip_prefix");
                self.optional_string(&path, &obj, "archive_type");
                self.check_file_map(&dir, &path, &obj, "overlay")?;
            }
            SourceType::GitRepository => {
                self.require_string(&path, &obj, "remote", |s| !s.is_empty(), "a git remote URL");
                if obj.get("commit").is_none() && obj.get("tag").is_none() {
                    self.problem(
                        rules::SOURCE_FIELD,
                        &path,
                        "a git_repository source needs `commit` (or `tag`)",
                    );
                }
                self.optional_string(&path, &obj, "commit");
                self.optional_string(&path, &obj, "tag");
                self.optional_string(&path, &obj, "strip_prefix");
                if obj.contains_key("overlay") {
                    self.problem(
                        rules::SOURCE_IGNORED_FIELD,
                        &path,
                        "`overlay` is ignored for git_repository sources",
                    );
                }
            }
            SourceType::LocalPath => {
                self.require_string(&path, &obj, "path", |s| !s.is_empty(), "a path");
            }
        }
        if kind != SourceType::LocalPath {
            let small = |n: u64| n <= u64::from(u32::MAX);
            match obj.get("patch_strip") {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.as_u64().is_some_and(small) => {}
                Some(Value::String(s)) if s.parse::<u64>().is_ok_and(small) => self.problem(
                    rules::PATCH_STRIP_STRING,
                    &path,
                    format!("`patch_strip` is the string {s:?}; Gson reads it as the integer"),
                ),
                Some(_) => self.problem(
                    rules::SOURCE_FIELD,
                    &path,
                    "`patch_strip` must be a non-negative integer",
                ),
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
            Some(Value::String(s)) => {
                self.problem(
                    rules::SOURCE_FIELD,
                    path,
                    format!("`{key}` {s:?} is not {what}"),
                );
            }
            Some(_) => {
                let m = format!("`{key}` must be a string ({what})");
                self.problem(rules::SOURCE_FIELD, path, m);
            }
            None => self.problem(
                rules::SOURCE_FIELD,
                path,
                format!("`{key}` is missing ({what})"),
            ),
        }
    }

    fn optional_string(&mut self, path: &str, obj: &Map<String, Value>, key: &str) {
        if obj.get(key).is_some_and(|v| !v.is_string()) {
            self.problem(
                rules::SOURCE_FIELD,
                path,
                format!("`{key}` must be a string"),
            );
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
                    rules::SOURCE_FIELD,
                    source_path,
                    format!("`{key}` must be an object of file -> integrity"),
                );
                return Ok(());
            }
        };
        for (file, integrity) in &listed {
            let Some(file_path) = self.listed_path(dir, source_path, key, file) else {
                continue;
            };
            let Some(integrity) = integrity.as_str() else {
                self.problem(
                    rules::SOURCE_FIELD,
                    source_path,
                    format!("`{key}` entry `{file}` must map to an integrity string"),
                );
                continue;
            };
            let integrity = match Integrity::parse(integrity) {
                Ok(i) => i,
                Err(e) => {
                    let m = format!("`{key}` entry `{file}`: {e}");
                    self.problem(rules::SOURCE_FIELD, source_path, m);
                    continue;
                }
            };
            match self.read(&file_path)? {
                None => self.problem(
                    rules::LISTED_FILE,
                    &file_path,
                    format!("listed in source.json `{key}` but missing (or not a regular file)"),
                ),
                Some(bytes) if !integrity.matches(&bytes) => {
                    let actual = Integrity::of(integrity.algorithm(), &bytes);
                    self.problem(rules::LISTED_FILE, &file_path, format!("integrity mismatch: source.json says {integrity}, the file hashes to {actual}"));
                }
                Some(_) => {}
            }
        }
        let mut present = Vec::new();
        self.list_files(&format!("{dir}/{key}"), "", &mut present)?;
        for file in present {
            if !listed.contains_key(&file) {
                self.problem(
                    rules::UNLISTED_FILE,
                    format!("{dir}/{key}/{file}"),
                    format!("not listed in source.json `{key}`; Bazel never fetches it"),
                );
            }
        }
        Ok(())
    }

    /// Where a `patches` / `overlay` entry is read from, or `None` (reported) when Bazel could
    /// not fetch or place it. A patch path is appended to the version's patches/ URL as is:
    /// `..` segments (grpc's `../../1.62.1/patches/x.patch`) resolve on the server.
    fn listed_path(&mut self, dir: &str, source: &str, key: &str, file: &str) -> Option<String> {
        let rel = match RelativePath::parse(file) {
            Ok(rel) => rel,
            Err(e) if key == "patches" && !file.starts_with('/') && !file.contains("//") => {
                let Some(resolved) = resolve(&format!("{dir}/patches"), file) else {
                    let m = format!("`patches` entry `{file}` leaves the registry: {e}");
                    self.problem(rules::LISTED_FILE, source, m);
                    return None;
                };
                self.problem(
                    rules::PATCH_PATH_IRREGULAR,
                    source,
                    format!("`patches` entry `{file}` has `..` segments; it is {resolved}"),
                );
                return Some(resolved);
            }
            Err(e) => {
                self.problem(rules::LISTED_FILE, source, format!("`{key}` entry: {e}"));
                return None;
            }
        };
        if key == "patches" && rel.as_str().contains('/') {
            self.problem(
                rules::PATCH_PATH_IRREGULAR,
                source,
                format!("`patches` entry `{rel}` is in a sub-folder of patches/"),
            );
        }
        Some(format!("{dir}/{key}/{rel}"))
    }
}

/// `base/rel` with `.` and `..` segments resolved, or `None` when it climbs above the root.
fn resolve(base: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').collect();
    for segment in rel.split('/') {
        match segment {
            "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}
