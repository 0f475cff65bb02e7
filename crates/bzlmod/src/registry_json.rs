//! The JSON files of a registry (`source.json`, `metadata.json`, `bazel_registry.json`):
//! reading what the server and `registry check` need out of them.
//!
//! These readers never produce bytes to serve: registry files are served as stored.

use std::cell::RefCell;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::integrity::Integrity;

/// An `archive` source of one module version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRef {
    /// Module name.
    pub module: String,
    /// Module version.
    pub version: String,
    /// `url`, then every `mirror_urls` entry.
    pub urls: Vec<String>,
    /// The archive's integrity.
    pub integrity: Integrity,
}

/// Reads the archive source of a `source.json`, if it is a well-formed `archive` entry.
#[must_use]
pub fn archive_ref(module: &str, version: &str, source_json: &[u8]) -> Option<ArchiveRef> {
    let obj = parse_object(source_json).ok()?;
    if SourceType::from_field(obj.get("type")) != Some(SourceType::Archive) {
        return None;
    }
    let integrity = Integrity::parse(obj.get("integrity")?.as_str()?).ok()?;
    let mut urls = vec![obj.get("url")?.as_str()?.to_owned()];
    if let Some(Value::Array(mirrors)) = obj.get("mirror_urls") {
        urls.extend(mirrors.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    Some(ArchiveRef {
        module: module.to_owned(),
        version: version.to_owned(),
        urls,
        integrity,
    })
}

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

/// Parses a JSON file that must hold an object. Duplicate keys anywhere are an error: Bazel's
/// JSON reader (Gson) refuses them, so a file that has one would break resolution.
///
/// # Errors
/// A message saying why it is not a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match parse_strict(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("is not a JSON object".to_owned()),
        Err((e, _)) => Err(format!("is not valid JSON: {e}")),
    }
}

/// Parses one JSON value whose objects may not repeat a key, at any depth: the one strict
/// parser of registry files and request bodies. On error, also the JSON path of the first
/// duplicate (`source.url`, `metadata.maintainers[0].name`), when that is what failed.
///
/// # Errors
/// serde_json's error, with the duplicate's path when there was one.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, (serde_json::Error, Option<String>)> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Strict {
        at: String::new(),
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|e| (e, duplicate.into_inner()))
}

/// A value at path `at`; the first duplicate found is written to `duplicate`.
struct Strict<'a> {
    at: String,
    duplicate: &'a RefCell<Option<String>>,
}

impl Strict<'_> {
    fn child(&self, at: String) -> Self {
        Strict {
            at,
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) =
            seq.next_element_seed(self.child(format!("{}[{}]", self.at, out.len())))?
        {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let at = if self.at.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.at)
            };
            if out.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(at);
                return Err(A::Error::custom(format!("duplicate key `{key}`")));
            }
            let v = map.next_value_seed(self.child(at))?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Whether a string is a URL Bazel's `java.net.URL` accepts for downloads (http, https, file).
#[must_use]
pub fn is_fetchable_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https" | "file"))
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
