//! `metadata.json`: the versions it lists against the version folders, yanks, field types.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{Checker, Files};
use crate::registry_json::parse_object;
use crate::version::ModuleVersion;

impl<F: Files + ?Sized> Checker<'_, F> {
    pub(super) fn check_metadata(
        &mut self,
        name: &str,
        version_dirs: &BTreeSet<String>,
    ) -> Result<(), F::Error> {
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
}
