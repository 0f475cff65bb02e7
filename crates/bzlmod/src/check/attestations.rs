//! `attestations.json`: BCR tooling reads it, Bazel does not, so its findings are warnings.

use serde_json::Value;

use super::{Checker, Files, rules};
use crate::integrity::Integrity;
use crate::registry_json::parse_object;

impl<F: Files + ?Sized> Checker<'_, F> {
    /// Every `{url, integrity}` entry of `attestations.json` carries a well-formed SRI value.
    pub(super) fn check_attestations(&mut self, path: &str, bytes: &[u8]) {
        let obj = match parse_object(bytes) {
            Ok(o) => o,
            Err(e) => return self.problem(rules::ATTESTATIONS, path, e),
        };
        let Some(Value::Object(entries)) = obj.get("attestations") else {
            return self.problem(
                rules::ATTESTATIONS,
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
                Some(Err(e)) => self.problem(
                    rules::ATTESTATIONS,
                    path,
                    format!("`attestations.{name}.integrity`: {e}"),
                ),
                None => self.problem(
                    rules::ATTESTATIONS,
                    path,
                    format!("`attestations.{name}.integrity` is missing"),
                ),
            }
        }
    }
}
