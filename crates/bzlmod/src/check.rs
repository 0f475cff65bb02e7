//! `registry check`: every rule a registry tree must meet before it is served.
//!
//! The rules follow what Bazel needs (protocol doc sections 2, 3 and 6) and what BCR's
//! validation enforces (section 5) for the parts that need no network.
//!
//! The tree is read through [`Files`], which the server's source layer implements; the rules
//! per file kind are in `check/metadata.rs`, `check/module_bazel.rs` and
//! `check/source_json.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde_json::Value;

use crate::module_file::ParseFn;
use crate::name::ModuleName;
use crate::path::VersionFile;
use crate::registry_json::{is_fetchable_url, parse_object};
use crate::version::ModuleVersion;

mod attestations;
mod metadata;
mod module_bazel;
pub mod rules;
mod source_json;
#[cfg(test)]
mod tests;

pub use rules::{Rule, Severity};

/// Read access to a registry tree: what a check needs of it.
pub trait Files {
    /// Why the tree cannot be read.
    type Error;

    /// Reads a regular file. `Ok(None)` when it is absent, a folder, or a symlink.
    ///
    /// # Errors
    /// [`Self::Error`] when the tree cannot be read.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Lists a folder (`""` is the root). `Ok(None)` when it is absent or not a folder.
    ///
    /// # Errors
    /// [`Self::Error`] when the tree cannot be read.
    fn list(&self, path: &str) -> Result<Option<Vec<Entry>>, Self::Error>;
}

/// One entry of a listed folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name inside the folder.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
}

/// What a folder entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A folder.
    Dir,
    /// A symbolic link; never followed.
    Symlink,
    /// Anything else (device, socket, git submodule).
    Other,
}

/// One problem found in a registry tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file or folder at fault, relative to the registry root.
    pub path: String,
    /// The rule broken (its severity and id; see [`rules`]).
    pub rule: Rule,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// Error or warning.
    #[must_use]
    pub fn severity(&self) -> Severity {
        self.rule.severity
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.path,
            self.rule.severity.as_str(),
            self.message
        )
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

impl Report {
    /// How many problems have this severity.
    #[must_use]
    pub fn count(&self, severity: Severity) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity() == severity)
            .count()
    }

    /// Problems per rule id, for a summary.
    #[must_use]
    pub fn by_rule(&self, severity: Severity) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for p in self.problems.iter().filter(|p| p.severity() == severity) {
            *out.entry(p.rule.id).or_default() += 1;
        }
        out
    }
}

struct Checker<'a, F: Files + ?Sized> {
    files: &'a F,
    parse_module: ParseFn,
    report: Report,
}

/// Checks a whole registry tree. `parse_module` reads each `MODULE.bazel` (see
/// [`ParseFn`]).
///
/// # Errors
/// The tree's error when it cannot be read; rule violations are in the [`Report`].
pub fn check_registry<F: Files + ?Sized>(
    files: &F,
    parse_module: ParseFn,
) -> Result<Report, F::Error> {
    let mut c = Checker {
        files,
        parse_module,
        report: Report::default(),
    };
    c.check_links("")?;
    c.check_bazel_registry_json()?;
    c.check_modules()?;
    Ok(c.report)
}

impl<F: Files + ?Sized> Checker<'_, F> {
    fn problem(&mut self, rule: Rule, path: impl Into<String>, message: impl Into<String>) {
        self.report.problems.push(Problem {
            path: path.into(),
            rule,
            message: message.into(),
        });
    }

    fn fail(
        &mut self,
        rule: Rule,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<(), F::Error> {
        self.problem(rule, path, message);
        Ok(())
    }

    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, F::Error> {
        let bytes = self.files.read(path)?;
        if bytes.is_some() {
            self.report.files += 1;
        }
        Ok(bytes)
    }

    /// No symlinks and no special files anywhere (BCR: "no symlinks anywhere under modules/").
    fn check_links(&mut self, dir: &str) -> Result<(), F::Error> {
        for entry in self.files.list(dir)?.unwrap_or_default() {
            if dir.is_empty() && entry.name == ".git" {
                continue;
            }
            let path = join(dir, &entry.name);
            match entry.kind {
                EntryKind::Symlink => self.problem(
                    rules::LINK,
                    &path,
                    "is a symlink; this server does not serve symlinks",
                ),
                EntryKind::Other => self.problem(
                    rules::LINK,
                    &path,
                    "is not a regular file or folder; this server does not serve it",
                ),
                EntryKind::Dir => self.check_links(&path)?,
                EntryKind::File => {}
            }
        }
        Ok(())
    }

    fn check_bazel_registry_json(&mut self) -> Result<(), F::Error> {
        let path = "bazel_registry.json";
        let Some(bytes) = self.read(path)? else {
            return Ok(());
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(()); // Bazel treats a blank file as absent.
        }
        let obj = match parse_object(&bytes) {
            Ok(o) => o,
            Err(e) => return self.fail(rules::REGISTRY_JSON, path, e),
        };
        match obj.get("mirrors") {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match item.as_str().map(is_fetchable_url) {
                        Some(true) => {}
                        _ => self.problem(rules::MIRRORS, path, format!("`mirrors` entry {item} is not a URL (Bazel fails with \"Malformed mirror URL\")")),
                    }
                }
            }
            Some(_) => self.problem(
                rules::MIRRORS,
                path,
                "`mirrors` must be an array of URL strings",
            ),
        }
        if obj.get("module_base_path").is_some_and(|v| !v.is_string()) {
            self.problem(
                rules::REGISTRY_JSON,
                path,
                "`module_base_path` must be a string",
            );
        }
        Ok(())
    }

    fn check_modules(&mut self) -> Result<(), F::Error> {
        let Some(entries) = self.files.list("modules")? else {
            self.problem(
                rules::NO_MODULES,
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
                    self.problem(
                        rules::STRAY,
                        &path,
                        "unexpected file; modules/ holds only module folders",
                    );
                }
                continue;
            }
            if let Err(e) = ModuleName::parse(&entry.name) {
                self.problem(
                    rules::BAD_MODULE_NAME,
                    &path,
                    format!("{e}; Bazel never requests it"),
                );
                continue;
            }
            if let Some(other) =
                lowercase.insert(entry.name.to_ascii_lowercase(), entry.name.clone())
            {
                self.problem(
                    rules::NAME_CASE,
                    &path,
                    format!("module name equals `{other}` case-insensitively"),
                );
            }
            self.report.modules += 1;
            self.check_module(&entry.name)?;
        }
        Ok(())
    }

    fn check_module(&mut self, name: &str) -> Result<(), F::Error> {
        let dir = format!("modules/{name}");
        let mut version_dirs = BTreeSet::new();
        for entry in self.files.list(&dir)?.unwrap_or_default() {
            let path = join(&dir, &entry.name);
            match entry.kind {
                EntryKind::Dir if !self.has_version_files(&path)? => self.problem(
                    rules::STRAY,
                    &path,
                    "a folder with no MODULE.bazel or source.json; Bazel never requests it",
                ),
                EntryKind::Dir => match ModuleVersion::parse(&entry.name) {
                    Ok(v) => {
                        if !v.is_portable() {
                            self.problem(rules::NON_PORTABLE_VERSION, &path, "version has a numeric part of 2^31 or more, which crashes Bazel before 7.6.0 / 8.2.0");
                        }
                        version_dirs.insert(entry.name.clone());
                    }
                    Err(e) => self.problem(
                        rules::BAD_VERSION_DIR,
                        &path,
                        format!("{e}; Bazel never requests it"),
                    ),
                },
                EntryKind::File if entry.name == "metadata.json" => {}
                EntryKind::File => self.problem(
                    rules::STRAY,
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

    fn check_version(&mut self, name: &str, version: &str) -> Result<(), F::Error> {
        let dir = format!("modules/{name}/{version}");
        for entry in self.files.list(&dir)?.unwrap_or_default() {
            let known_file = VersionFile::ALL.iter().any(|f| f.file_name() == entry.name);
            let known_dir = entry.name == "patches" || entry.name == "overlay";
            let ok = match entry.kind {
                EntryKind::File => known_file,
                EntryKind::Dir => known_dir,
                _ => true, // already reported by check_links
            };
            if !ok {
                self.problem(
                    rules::STRAY,
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

    /// Whether a folder holds a `MODULE.bazel` or `source.json` (is a version, not scripts).
    fn has_version_files(&self, dir: &str) -> Result<bool, F::Error> {
        Ok(self.files.list(dir)?.unwrap_or_default().iter().any(|e| {
            e.kind != EntryKind::Dir && (e.name == "MODULE.bazel" || e.name == "source.json")
        }))
    }

    fn list_files(&self, base: &str, rel: &str, out: &mut Vec<String>) -> Result<(), F::Error> {
        for entry in self.files.list(&join(base, rel))?.unwrap_or_default() {
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
    if dir.is_empty() || name.is_empty() {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}
