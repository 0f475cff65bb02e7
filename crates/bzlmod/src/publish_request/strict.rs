//! Strict JSON for request bodies: duplicate keys are refused at every level, naming the JSON
//! path of the duplicate (`source.url`, `metadata.maintainers[0].name`).
//!
//! serde_json keeps the last of two equal keys, so a body could say one thing to a reviewing
//! proxy or audit tool that reads the first value and another to the server. Every body the
//! server takes goes through [`parse_body`] first.

use serde_json::{Map, Value};

use crate::FieldError;

/// Parses a request body into a JSON value, refusing duplicate keys anywhere in it.
///
/// # Errors
/// A [`FieldError`] naming the duplicate's path (`source.url: duplicate key`), or `body` when
/// the bytes are not one JSON value.
pub fn parse_body(body: &[u8]) -> Result<Value, FieldError> {
    crate::registry_json::parse_strict(body).map_err(|(e, duplicate)| match duplicate {
        Some(at) => FieldError::new(&at, "duplicate key"),
        None => FieldError::new("body", format!("is not valid JSON: {e}")),
    })
}

/// [`parse_body`] for a body that must be a JSON object.
///
/// # Errors
/// As [`parse_body`]; `body: is not a JSON object` for any other value.
pub fn parse_body_object(body: &[u8]) -> Result<Map<String, Value>, FieldError> {
    match parse_body(body)? {
        Value::Object(m) => Ok(m),
        _ => Err(FieldError::new("body", "is not a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_name_their_path() {
        for (body, at) in [
            (r#"{"a": 1, "a": 2}"#, "a"),
            (r#"{"source": {"url": "x", "url": "y"}}"#, "source.url"),
            (
                r#"{"metadata": {"maintainers": [{"name": "a", "name": "b"}]}}"#,
                "metadata.maintainers[0].name",
            ),
            (
                r#"{"p": [1, {"q": [{}, {"r": 1, "r": 1}]}]}"#,
                "p[1].q[1].r",
            ),
        ] {
            let e = parse_body(body.as_bytes()).expect_err(body);
            assert_eq!(e, FieldError::new(at, "duplicate key"), "{body}");
        }
    }

    #[test]
    fn other_bodies_parse_as_serde_json_does() {
        let body = br#"{"a": [1, 2.5, "x", null, true, {"b": {}}], "c": {"a": 1}}"#;
        assert_eq!(
            parse_body(body).expect("parses"),
            serde_json::from_slice::<Value>(body).expect("parses")
        );
        assert_eq!(parse_body(b"{\"a\": ").expect_err("cut").field, "body");
        assert_eq!(parse_body(b"{} x").expect_err("trailing").field, "body");
        assert_eq!(
            parse_body_object(b"[1]").expect_err("array"),
            FieldError::new("body", "is not a JSON object")
        );
    }
}
