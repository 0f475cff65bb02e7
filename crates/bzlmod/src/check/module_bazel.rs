//! `MODULE.bazel`: it parses as Bazel parses it, and its `module()` call names the folder's
//! module and version (Bazel's `ModuleFileFunction` fails otherwise).

use super::{Checker, Files, rules};
use crate::module_file::ModuleFileError;

impl<F: Files + ?Sized> Checker<'_, F> {
    pub(super) fn check_module_bazel(&mut self, name: &str, version: &str) -> Result<(), F::Error> {
        let path = format!("modules/{name}/{version}/MODULE.bazel");
        let Some(bytes) = self.read(&path)? else {
            self.problem(
                rules::MODULE_MISSING,
                &path,
                "missing; Bazel needs it to know this version exists",
            );
            return Ok(());
        };
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                self.problem(
                    rules::MODULE_NOT_UTF8,
                    &path,
                    "is not UTF-8; Bazel replaces the bad bytes",
                );
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        };
        let m = match (self.parse_module)(&text) {
            Ok(m) => m,
            Err(e @ ModuleFileError::TooComplex(_)) => {
                return self.fail(
                    rules::MODULE_TOO_COMPLEX,
                    &path,
                    format!("{e}; not checked"),
                );
            }
            Err(e) => return self.fail(rules::MODULE_INVALID, &path, e.to_string()),
        };
        if !m.has_module_call {
            let msg = "has no module() call; Bazel fails: it declares a different name (\"\")";
            return self.fail(rules::MODULE_IDENTITY, &path, msg);
        }
        let computed = |arg: &str| m.unresolved.iter().any(|u| u == &format!("module({arg})"));
        if computed("name") {
            self.problem(
                rules::MODULE_IDENTITY_UNCHECKED,
                &path,
                "module(name = ...) is computed in a way this check does not evaluate",
            );
        } else if m.name.as_deref() != Some(name) {
            self.problem(
                rules::MODULE_IDENTITY,
                &path,
                format!(
                    "module(name = {:?}) does not match the folder name {name:?}",
                    m.name.clone().unwrap_or_default()
                ),
            );
        }
        let declared = m.version.clone().unwrap_or_default();
        if computed("version") {
            self.problem(
                rules::MODULE_IDENTITY_UNCHECKED,
                &path,
                "module(version = ...) is computed in a way this check does not evaluate",
            );
        } else if declared
            .split_once('+')
            .is_some_and(|(bare, _)| bare == version)
        {
            self.problem(
                rules::MODULE_IDENTITY_UNCHECKED,
                &path,
                format!("module(version = {declared:?}) has build metadata, which Bazel drops"),
            );
        } else if declared != version {
            self.problem(
                rules::MODULE_IDENTITY,
                &path,
                format!(
                    "module(version = {declared:?}) does not match the folder name {version:?}"
                ),
            );
        }
        Ok(())
    }
}
