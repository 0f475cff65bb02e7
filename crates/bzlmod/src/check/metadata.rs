//! `metadata.json`: the versions it lists against the version folders, yanks, field types.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{Checker, Files, rules};
use crate::registry_json::parse_object;
use crate::version::ModuleVersion;

impl<F: Files + ?Sized> Checker<'_, F> {
    pub(super) fn check_metadata(
        &mut self,
        name: &str,
        version_dirs: &BTreeSet<String>,
    ) -> Result<(), F::Error> {
        let path = format!("modules/{name}/metadata.json");
        let Some(bytes) = self
            .read(&path)?
            .filter(|b| !b.iter().all(u8::is_ascii_whitespace))
        else {
            self.problem(
                rules::METADATA_MISSING,
                &path,
                "missing or blank; Bazel then knows of no yanked versions",
            );
            return Ok(());
        };
        let obj = match parse_object(&bytes) {
            Ok(o) => o,
            Err(e) => return self.fail(rules::METADATA_JSON, &path, e),
        };
        self.check_yanked(&path, &obj);
        let versions = match obj.get("versions") {
            Some(Value::Array(items)) => {
                let strings: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
                match strings {
                    Some(s) => s,
                    None => {
                        let m = "`versions` must be an array of strings";
                        return self.fail(rules::VERSIONS_LIST, &path, m);
                    }
                }
            }
            Some(_) => {
                let m = "`versions` must be an array of strings";
                return self.fail(rules::VERSIONS_LIST, &path, m);
            }
            None => return self.fail(rules::VERSIONS_LIST, &path, "`versions` is missing"),
        };
        let listed: BTreeSet<String> = versions.iter().map(|s| (*s).to_owned()).collect();
        if listed.len() != versions.len() {
            self.problem(
                rules::VERSIONS_LIST,
                &path,
                "`versions` lists a version more than once",
            );
        }
        for v in listed.difference(version_dirs) {
            self.problem(
                rules::VERSIONS_LIST,
                &path,
                format!("`versions` lists `{v}`, which has no folder modules/{name}/{v}/"),
            );
        }
        for v in version_dirs.difference(&listed) {
            self.problem(
                rules::VERSIONS_LIST,
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
                rules::VERSIONS_LIST,
                &path,
                format!("`versions` is not sorted in Bazel's order; expected {want:?}"),
            );
        }
        for (v, _) in obj
            .get("yanked_versions")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if !listed.contains(v) && !listed.contains(without_build(v)) {
                self.problem(
                    rules::YANKED_IRREGULAR,
                    &path,
                    format!("`yanked_versions` names `{v}`, which `versions` does not list"),
                );
            }
        }
        self.check_field_types(&path, &obj);
        Ok(())
    }

    /// `yanked_versions`, the one field Bazel reads: a map of Bazel version -> reason string.
    fn check_yanked(&mut self, path: &str, obj: &Map<String, Value>) {
        let yanked = match obj.get("yanked_versions") {
            None | Some(Value::Null) => return,
            Some(Value::Object(y)) => y,
            Some(_) => {
                let m = "`yanked_versions` must be an object of version -> reason (Gson fails)";
                return self.problem(rules::YANKED_TYPE, path, m);
            }
        };
        for (v, reason) in yanked {
            let bare = without_build(v);
            if !v.is_empty() && (!build_ok(v) || ModuleVersion::parse(bare).is_err()) {
                self.problem(rules::YANKED_KEY, path, format!("`yanked_versions` key `{v}` is not a Bazel version (Bazel fails: \"Could not parse module's metadata file\")"));
            } else if bare != v {
                self.problem(rules::YANKED_IRREGULAR, path, format!("`yanked_versions` key `{v}` has build metadata, which Bazel drops: it yanks `{bare}`"));
            }
            match reason {
                Value::String(_) | Value::Null => {}
                Value::Number(_) | Value::Bool(_) => self.problem(
                    rules::YANKED_IRREGULAR,
                    path,
                    format!("`yanked_versions` reason for `{v}` should be a string"),
                ),
                _ => self.problem(
                    rules::YANKED_TYPE,
                    path,
                    format!("`yanked_versions` reason for `{v}` must be a string (Gson fails)"),
                ),
            }
        }
    }

    fn check_field_types(&mut self, path: &str, obj: &Map<String, Value>) {
        if obj.get("homepage").is_some_and(|v| !v.is_string()) {
            self.problem(rules::METADATA_FIELDS, path, "`homepage` must be a string");
        }
        if obj.get("deprecated").is_some_and(|v| !v.is_string()) {
            self.problem(
                rules::METADATA_FIELDS,
                path,
                "`deprecated` must be a string",
            );
        }
        if obj
            .get("repository")
            .is_some_and(|v| !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        {
            self.problem(
                rules::METADATA_FIELDS,
                path,
                "`repository` must be an array of strings",
            );
        }
        if obj
            .get("maintainers")
            .is_some_and(|v| !v.as_array().is_some_and(|a| a.iter().all(Value::is_object)))
        {
            self.problem(
                rules::METADATA_FIELDS,
                path,
                "`maintainers` must be an array of objects",
            );
        }
    }
}

/// A version without its `+build` part (Bazel's `Version.parse` drops it).
fn without_build(v: &str) -> &str {
    v.split_once('+').map_or(v, |(bare, _)| bare)
}

/// The `+build` part, if any, matches Bazel's `[a-zA-Z0-9.-]+`.
fn build_ok(v: &str) -> bool {
    v.split_once('+').is_none_or(|(_, b)| {
        !b.is_empty()
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
    })
}
