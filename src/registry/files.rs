//! The JSON files of a registry (`source.json`, `metadata.json`, `bazel_registry.json`):
//! reading what the server and `registry check` need out of them.
//!
//! These readers never produce bytes to serve: registry files are served as stored.

use serde_json::{Map, Value};

/// The `type` of a `source.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    /// `archive` (the default): an `http_archive`.
    Archive,
    /// `git_repository` (Bazel 7.1+).
    GitRepository,
    /// `local_path`: only useful for `file://` registries.
    LocalPath,
}

impl SourceType {
    /// Parses the `type` field (absent means `archive`).
    #[must_use]
    pub fn from_field(v: Option<&Value>) -> Option<Self> {
        match v {
            None => Some(Self::Archive),
            Some(Value::String(s)) => match s.as_str() {
                "archive" => Some(Self::Archive),
                "git_repository" => Some(Self::GitRepository),
                "local_path" => Some(Self::LocalPath),
                _ => None,
            },
            Some(_) => None,
        }
    }
}

/// Parses a JSON file that must hold an object.
///
/// # Errors
/// A message saying why it is not a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("is not a JSON object".to_owned()),
        Err(e) => Err(format!("is not valid JSON: {e}")),
    }
}

/// Whether a `source.json` lists `path` in its `overlay` map.
#[must_use]
pub fn overlay_lists(source_json: &[u8], path: &str) -> bool {
    parse_object(source_json)
        .ok()
        .and_then(|m| {
            m.get("overlay")
                .and_then(Value::as_object)
                .map(|o| o.contains_key(path))
        })
        .unwrap_or(false)
}
