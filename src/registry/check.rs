//! `registry check`: every rule a registry tree must meet before it is served.
//!
//! The rules follow what Bazel needs (protocol doc sections 2, 3 and 6) and what BCR's
//! validation enforces (section 5) for the parts that need no network.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde_json::{Map, Value};

use super::files::{SourceType, parse_object};
use super::integrity::Integrity;
use super::module_file;
use super::name::{ModuleName, RelativePath};
use super::path::VersionFile;
use super::version::ModuleVersion;
use crate::source::{EntryKind, SourceError, Tree};

/// One problem found in a registry tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file or folder at fault, relative to the registry root.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems, in the order found (folders sorted by name).
    pub problems: Vec<Problem>,
    /// Modules checked.
    pub modules: usize,
    /// Module versions checked.
    pub versions: usize,
    /// Files read.
    pub files: usize,
}

struct Checker<'a> {
    tree: &'a dyn Tree,
    report: Report,
}

/// Checks a whole registry tree.
///
/// # Errors
/// [`SourceError`] when the tree cannot be read; rule violations are in the [`Report`].
pub fn check_registry(tree: &dyn Tree) -> Result<Report, SourceError> {
    let mut c = Checker {
        tree,
        report: Report::default(),
    };
    c.check_links("")?;
    c.check_bazel_registry_json()?;
    c.check_modules()?;
    Ok(c.report)
}

impl Checker<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.report.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn fail(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<(), SourceError> {
        self.problem(path, message);
        Ok(())
    }

    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let bytes = self.tree.read(path)?;
        if bytes.is_some() {
            self.report.files += 1;
        }
        Ok(bytes)
    }

    /// No symlinks and no special files anywhere (BCR: "no symlinks anywhere under modules/").
    fn check_links(&mut self, dir: &str) -> Result<(), SourceError> {
        for entry in self.tree.list(dir)?.unwrap_or_default() {
            if dir.is_empty() && entry.name == ".git" {
                continue;
            }
            let path = join(dir, &entry.name);
            match entry.kind {
                EntryKind::Symlink => {
                    self.problem(&path, "is a symlink; registries may not contain symlinks")
                }
                EntryKind::Other => self.problem(&path, "is not a regular file or folder"),
                EntryKind::Dir => self.check_links(&path)?,
                EntryKind::File => {}
            }
        }
        Ok(())
    }

    fn check_bazel_registry_json(&mut self) -> Result<(), SourceError> {
        let path = "bazel_registry.json";
        let Some(bytes) = self.read(path)? else {
            return Ok(());
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(()); // Bazel treats a blank file as absent.
        }
        let obj = match parse_object(&bytes) {
            Ok(o) => o,
            Err(e) => return self.fail(path, e),
        };
        match obj.get("mirrors") {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match item.as_str().map(super::files::is_fetchable_url) {
                        Some(true) => {}
                        _ => self.problem(path, format!("`mirrors` entry {item} is not a URL (Bazel fails with \"Malformed mirror URL\")")),
                    }
                }
            }
            Some(_) => self.problem(path, "`mirrors` must be an array of URL strings"),
        }
        if obj.get("module_base_path").is_some_and(|v| !v.is_string()) {
            self.problem(path, "`module_base_path` must be a string");
        }
        Ok(())
    }

    fn check_modules(&mut self) -> Result<(), SourceError> {
        let Some(entries) = self.tree.list("modules")? else {
            self.problem(
                "modules",
                "missing: a registry keeps its modules in modules/{name}/",
            );
            return Ok(());
        };
        let mut lowercase: HashMap<String, String> = HashMap::new();
        for entry in entries {
            let path = format!("modules/{}", entry.name);
            if entry.kind != EntryKind::Dir {
                if entry.kind == EntryKind::File {
                    self.problem(&path, "unexpected file; modules/ holds only module folders");
                }
                continue;
            }
            if let Err(e) = ModuleName::parse(&entry.name) {
                self.problem(&path, e.to_string());
                continue;
            }
            if let Some(other) =
                lowercase.insert(entry.name.to_ascii_lowercase(), entry.name.clone())
            {
                self.problem(
                    &path,
                    format!("module name equals `{other}` case-insensitively"),
                );
            }
            self.report.modules += 1;
            self.check_module(&entry.name)?;
        }
        Ok(())
    }

    fn check_module(&mut self, name: &str) -> Result<(), SourceError> {
        let dir = format!("modules/{name}");
        let mut version_dirs = BTreeSet::new();
        for entry in self.tree.list(&dir)?.unwrap_or_default() {
            let path = join(&dir, &entry.name);
            match entry.kind {
                EntryKind::Dir => match ModuleVersion::parse(&entry.name) {
                    Ok(v) => {
                        if !v.is_portable() {
                            self.problem(&path, "version has a numeric part of 2^31 or more, which crashes Bazel before 7.6.0 / 8.2.0");
                        }
                        version_dirs.insert(entry.name.clone());
                    }
                    Err(e) => self.problem(&path, e.to_string()),
                },
                EntryKind::File if entry.name == "metadata.json" => {}
                EntryKind::File => self.problem(
                    &path,
                    "unexpected file; a module folder holds metadata.json and version folders",
                ),
                _ => {}
            }
        }
        self.check_metadata(name, &version_dirs)?;
        for version in &version_dirs {
            self.report.versions += 1;
            self.check_version(name, version)?;
        }
        Ok(())
    }

    fn check_metadata(
        &mut self,
        name: &str,
        version_dirs: &BTreeSet<String>,
    ) -> Result<(), SourceError> {
        let path = format!("modules/{name}/metadata.json");
        let Some(bytes) = self.read(&path)? else {
            self.problem(&path, "missing");
            return Ok(());
        };
        let obj = match parse_object(&bytes) {
            Ok(o) => o,
            Err(e) => return self.fail(&path, e),
        };
        let versions = match obj.get("versions") {
            Some(Value::Array(items)) => {
                let strings: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
                match strings {
                    Some(s) => s,
                    None => {
                        return self.fail(&path, "`versions` must be an array of strings");
                    }
                }
            }
            Some(_) => return self.fail(&path, "`versions` must be an array of strings"),
            None => return self.fail(&path, "`versions` is missing"),
        };
        let listed: BTreeSet<String> = versions.iter().map(|s| (*s).to_owned()).collect();
        if listed.len() != versions.len() {
            self.problem(&path, "`versions` lists a version more than once");
        }
        for v in listed.difference(version_dirs) {
            self.problem(
                &path,
                format!("`versions` lists `{v}`, which has no folder modules/{name}/{v}/"),
            );
        }
        for v in version_dirs.difference(&listed) {
            self.problem(
                &path,
                format!("`versions` does not list `{v}`, which has a folder"),
            );
        }
        let parsed: Vec<_> = versions
            .iter()
            .filter_map(|v| ModuleVersion::parse(v).ok())
            .collect();
        if parsed.len() == versions.len() && parsed.windows(2).any(|w| w[0] >= w[1]) {
            let mut sorted = parsed.clone();
            sorted.sort();
            let want: Vec<_> = sorted.iter().map(ModuleVersion::as_str).collect();
            self.problem(
                &path,
                format!("`versions` is not sorted in Bazel's order; expected {want:?}"),
            );
        }
        match obj.get("yanked_versions") {
            None => {}
            Some(Value::Object(yanked)) => {
                for (v, reason) in yanked {
                    if ModuleVersion::parse(v).is_err() {
                        self.problem(&path, format!("`yanked_versions` key `{v}` is not a version (Bazel ignores the whole file)"));
                    } else if !listed.contains(v) {
                        self.problem(
                            &path,
                            format!(
                                "`yanked_versions` names `{v}`, which `versions` does not list"
                            ),
                        );
                    }
                    if !reason.is_string() {
                        self.problem(
                            &path,
                            format!("`yanked_versions` reason for `{v}` must be a string"),
                        );
                    }
                }
            }
            Some(_) => self.problem(
                &path,
                "`yanked_versions` must be an object of version -> reason",
            ),
        }
        self.check_field_types(&path, &obj);
        Ok(())
    }

    fn check_field_types(&mut self, path: &str, obj: &Map<String, Value>) {
        if obj.get("homepage").is_some_and(|v| !v.is_string()) {
            self.problem(path, "`homepage` must be a string");
        }
        if obj.get("deprecated").is_some_and(|v| !v.is_string()) {
            self.problem(path, "`deprecated` must be a string");
        }
        if obj
            .get("repository")
            .is_some_and(|v| !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        {
            self.problem(path, "`repository` must be an array of strings");
        }
        if obj
            .get("maintainers")
            .is_some_and(|v| !v.as_array().is_some_and(|a| a.iter().all(Value::is_object)))
        {
            self.problem(path, "`maintainers` must be an array of objects");
        }
    }

    fn check_version(&mut self, name: &str, version: &str) -> Result<(), SourceError> {
        let dir = format!("modules/{name}/{version}");
        for entry in self.tree.list(&dir)?.unwrap_or_default() {
            let known_file = VersionFile::ALL.iter().any(|f| f.file_name() == entry.name);
            let known_dir = entry.name == "patches" || entry.name == "overlay";
            let ok = match entry.kind {
                EntryKind::File => known_file,
                EntryKind::Dir => known_dir,
                _ => true, // already reported by check_links
            };
            if !ok {
                self.problem(
                    join(&dir, &entry.name),
                    "unexpected entry in a version folder",
                );
            }
        }
        self.check_module_bazel(name, version)?;
        self.check_source_json(name, version)?;
        if let Some(bytes) = self.read(&format!("{dir}/attestations.json"))? {
            self.check_attestations(&format!("{dir}/attestations.json"), &bytes);
        }
        Ok(())
    }

    /// Every `{url, integrity}` entry of `attestations.json` carries a well-formed SRI value.
    fn check_attestations(&mut self, path: &str, bytes: &[u8]) {
        let obj = match parse_object(bytes) {
            Ok(o) => o,
            Err(e) => return self.problem(path, e),
        };
        let Some(Value::Object(entries)) = obj.get("attestations") else {
            return self.problem(
                path,
                "`attestations` must be an object of file -> {url, integrity}",
            );
        };
        for (name, entry) in entries {
            match entry
                .get("integrity")
                .and_then(Value::as_str)
                .map(Integrity::parse)
            {
                Some(Ok(_)) => {}
                Some(Err(e)) => self.problem(path, format!("`attestations.{name}.integrity`: {e}")),
                None => self.problem(path, format!("`attestations.{name}.integrity` is missing")),
            }
        }
    }

    fn check_module_bazel(&mut self, name: &str, version: &str) -> Result<(), SourceError> {
        let path = format!("modules/{name}/{version}/MODULE.bazel");
        let Some(bytes) = self.read(&path)? else {
            self.problem(&path, "missing; Bazel needs it to know this version exists");
            return Ok(());
        };
        let Ok(text) = String::from_utf8(bytes) else {
            self.problem(&path, "is not UTF-8");
            return Ok(());
        };
        let m = match module_file::parse(&text) {
            Ok(m) => m,
            Err(e) => return self.fail(&path, e.to_string()),
        };
        if !m.has_module_call {
            return self.fail(&path, "has no module() call");
        }
        if m.name.as_deref() != Some(name) {
            self.problem(
                &path,
                format!(
                    "module(name = {:?}) does not match the folder name {name:?}",
                    m.name.unwrap_or_default()
                ),
            );
        }
        if m.version.as_deref() != Some(version) {
            self.problem(
                &path,
                format!(
                    "module(version = {:?}) does not match the folder name {version:?}",
                    m.version.unwrap_or_default()
                ),
            );
        }
        Ok(())
    }

    fn check_source_json(&mut self, name: &str, version: &str) -> Result<(), SourceError> {
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
                    super::files::is_fetchable_url,
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
                        if a.iter()
                            .all(|u| u.as_str().is_some_and(super::files::is_fetchable_url)) => {}
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
    ) -> Result<(), SourceError> {
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
                    let actual = super::integrity::Integrity::of(integrity.algorithm(), &bytes);
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

    fn list_files(&self, base: &str, rel: &str, out: &mut Vec<String>) -> Result<(), SourceError> {
        for entry in self.tree.list(&join(base, rel))?.unwrap_or_default() {
            let child = join(rel, &entry.name);
            match entry.kind {
                EntryKind::File => out.push(child),
                EntryKind::Dir => self.list_files(base, &child, out)?,
                _ => {}
            }
        }
        Ok(())
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}
