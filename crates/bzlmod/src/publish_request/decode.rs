//! Decoding a publish request body, with errors that name the field at fault.

use serde_json::{Map, Value};

use super::{MetadataSpec, NamedText, PathText, PublishRequest, SourceSpec, field};
use crate::FieldError;

impl PublishRequest {
    /// Parses a JSON body. Duplicate keys are refused at every level ([`super::parse_body`]).
    ///
    /// # Errors
    /// A [`FieldError`] naming the field that is wrong.
    pub fn from_json(body: &[u8]) -> Result<Self, FieldError> {
        deserialize_naming_fields(super::parse_body(body)?)
    }
}

/// Deserializes, turning serde's error into one that names the field.
fn deserialize_naming_fields(value: Value) -> Result<PublishRequest, FieldError> {
    let Value::Object(obj) = &value else {
        return Err(field("body", "must be a JSON object"));
    };
    for key in ["module_bazel", "source"] {
        if !obj.contains_key(key) {
            return Err(field(key, "is missing"));
        }
    }
    if let Some(Value::Object(src)) = obj.get("source") {
        match src.get("type").and_then(Value::as_str) {
            Some("archive" | "upload" | "git_repository") => {}
            Some(other) => {
                return Err(field(
                    "source.type",
                    format!("unknown source type `{other}` (archive, upload or git_repository)"),
                ));
            }
            None => {
                return Err(field(
                    "source.type",
                    "is missing (archive, upload or git_repository)",
                ));
            }
        }
    }
    let located = locate(obj);
    serde_json::from_value(value).map_err(|e| match located {
        Some((at, msg)) => field(&at, msg),
        None => field("body", e.to_string()),
    })
}

/// Finds the field a deserialization error comes from, by deserializing each part alone.
fn locate(obj: &Map<String, Value>) -> Option<(String, String)> {
    fn check<T: serde::de::DeserializeOwned>(at: &str, v: &Value) -> Option<(String, String)> {
        let e = serde_json::from_value::<T>(v.clone()).err()?;
        let msg = e.to_string();
        let inner = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| msg.split_once(p))
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        Some((
            inner.map_or_else(|| at.to_owned(), |n| format!("{at}.{n}")),
            msg,
        ))
    }
    for (k, v) in obj {
        let found = match k.as_str() {
            "module_bazel" => check::<String>(k, v),
            "source" => check::<SourceSpec>(k, v),
            "strip_prefix" | "archive_type" => check::<Option<String>>(k, v),
            "patch_strip" => check::<Option<u32>>(k, v),
            "metadata" => check::<Option<MetadataSpec>>(k, v),
            "patches" | "overlay" => match v.as_array() {
                None => Some((k.clone(), "must be a list".to_owned())),
                Some(items) => items.iter().enumerate().find_map(|(i, item)| {
                    let at = format!("{k}[{i}]");
                    if k == "patches" {
                        check::<NamedText>(&at, item)
                    } else {
                        check::<PathText>(&at, item)
                    }
                }),
            },
            _ => Some((
                k.clone(),
                "unknown field (expected module_bazel, source, strip_prefix, archive_type, patches, patch_strip, overlay, metadata)".to_owned(),
            )),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}
