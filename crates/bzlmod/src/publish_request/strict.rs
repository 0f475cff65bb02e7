//! Strict JSON for request bodies: duplicate keys are refused at every level, naming the JSON
//! path of the duplicate (`source.url`, `metadata.maintainers[0].name`).
//!
//! serde_json keeps the last of two equal keys, so a body could say one thing to a reviewing
//! proxy or audit tool that reads the first value and another to the server. Every body the
//! server takes goes through [`parse_body`] first.

use std::cell::RefCell;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::FieldError;

/// Parses a request body into a JSON value, refusing duplicate keys anywhere in it.
///
/// # Errors
/// A [`FieldError`] naming the duplicate's path (`source.url: duplicate key`), or `body` when
/// the bytes are not one JSON value.
pub fn parse_body(body: &[u8]) -> Result<Value, FieldError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Strict {
        at: String::new(),
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => Err(match duplicate.into_inner() {
            Some(at) => FieldError::new(&at, "duplicate key"),
            None => FieldError::new("body", format!("is not valid JSON: {e}")),
        }),
    }
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
