//! `MODULE.bazel`: it parses, and its `module()` call names the folder's module and version.

use super::{Checker, Files};

impl<F: Files + ?Sized> Checker<'_, F> {
    pub(super) fn check_module_bazel(&mut self, name: &str, version: &str) -> Result<(), F::Error> {
        let path = format!("modules/{name}/{version}/MODULE.bazel");
        let Some(bytes) = self.read(&path)? else {
            self.problem(&path, "missing; Bazel needs it to know this version exists");
            return Ok(());
        };
        let Ok(text) = String::from_utf8(bytes) else {
            self.problem(&path, "is not UTF-8");
            return Ok(());
        };
        let m = match (self.parse_module)(&text) {
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
}
