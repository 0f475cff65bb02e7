//! Typed extractors: each request part is parsed and refused once, at the edge, before a
//! handler runs; handlers receive values, never raw strings to re-parse.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::error::ApiError;
use crate::mirror::ByteRange;

/// The upstream URL of `GET /mirror/{host}/{path...}[?query]`, as `host/path[?query]`.
///
/// Refused with `400`: an empty target, `.` and `..` segments, and everything a URL parser
/// would rewrite into them or into another path: percent-encoded dots (`%2e%2e`, `.%2E`) and
/// backslashes (raw or `%5c`, which a URL parser reads as `/` for http and https). Otherwise
/// the mirror would fetch and pin a different URL than the one asked for (key confusion).
#[derive(Debug, Clone)]
pub(super) struct MirrorTarget(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for MirrorTarget {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let rest = parts
            .uri
            .path()
            .strip_prefix("/mirror/")
            .unwrap_or_default();
        check_mirror_path(rest)?;
        Ok(Self(match parts.uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        }))
    }
}

fn check_mirror_path(rest: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("mirror path must be /mirror/{{host}}/{{path}} {why}"),
        )
    };
    if rest.is_empty() {
        return Err(bad("(the path is empty)"));
    }
    if rest.contains('\\') || rest.to_ascii_lowercase().contains("%5c") {
        return Err(bad(
            "without backslashes (raw or %5c: a URL parser reads them as `/`)",
        ));
    }
    let dot_segment = |s: &str| {
        let decoded = s.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    };
    if rest.split('/').any(dot_segment) {
        return Err(bad(
            "without `.` or `..` segments (also percent-encoded, as %2e)",
        ));
    }
    Ok(())
}

/// The address of `GET /cas/{algorithm}/{hex}[/{basename}]`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct CasAddress {
    pub(super) algorithm: String,
    pub(super) hex: String,
}

impl<S: Send + Sync> FromRequestParts<S> for CasAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The optional basename is for the client's benefit (a file name to save as).
        #[derive(Deserialize)]
        struct Params {
            algorithm: String,
            hex: String,
        }
        let Path(p) = Path::<Params>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        Ok(Self {
            algorithm: p.algorithm,
            hex: p.hex,
        })
    }
}

/// A `Range` request and its `If-Range` condition (RFC 9110 §14.2, §13.1.5).
#[derive(Debug, Clone, Default)]
pub(super) struct Ranged {
    /// The one `bytes=` range asked for; several ranges are answered with the whole blob.
    pub(super) range: Option<ByteRange>,
    if_range: Option<IfRange>,
}

#[derive(Debug, Clone)]
enum IfRange {
    /// An entity tag, as sent (quotes and any `W/` included).
    Tag(String),
    /// An HTTP date. This server sends no `Last-Modified`, so no date ever matches.
    Date,
}

impl Ranged {
    /// Whether the range still applies to a representation whose strong ETag is the hex
    /// sha256 `etag` (`None`: not known yet). Without `If-Range` it always does; with one, only
    /// when the validator matches by strong comparison, else the whole representation is sent.
    pub(super) fn applies_to(&self, etag: Option<&str>) -> bool {
        match &self.if_range {
            None => true,
            Some(IfRange::Date) => false,
            Some(IfRange::Tag(tag)) => etag.is_some_and(|hex| {
                tag.strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .is_some_and(|t| t == hex)
            }),
        }
    }

    /// Whether an `If-Range` condition came with the range.
    pub(super) fn is_conditional(&self) -> bool {
        self.range.is_some() && self.if_range.is_some()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ranged {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let range = parse_range(&parts.headers)?;
        // An If-Range without a Range is ignored (RFC 9110 §13.1.5).
        let if_range = range.and(parts.headers.get(header::IF_RANGE)).map(|v| {
            let v = v.to_str().unwrap_or_default().trim();
            if v.starts_with('"') || v.starts_with("W/") {
                IfRange::Tag(v.to_owned())
            } else {
                IfRange::Date
            }
        });
        Ok(Self { range, if_range })
    }
}

/// Parses a single `bytes=` range; several ranges are answered with the whole blob.
fn parse_range(headers: &HeaderMap) -> Result<Option<ByteRange>, ApiError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "malformed Range header; use bytes=START-END",
        )
    };
    let s = value.to_str().map_err(|_| bad())?;
    let Some(spec) = s.trim().strip_prefix("bytes=") else {
        return Err(bad());
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let num = |t: &str| t.trim().parse::<u64>().map_err(|_| bad());
    Ok(Some(match (a.trim().is_empty(), b.trim().is_empty()) {
        (false, false) => ByteRange::FromTo(num(a)?, num(b)?),
        (false, true) => ByteRange::From(num(a)?),
        (true, false) => ByteRange::Suffix(num(b)?),
        (true, true) => return Err(bad()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_paths_a_url_parser_would_rewrite_are_refused() {
        for bad in [
            "",
            "h/..",
            "h/a/./b",
            "h/a/%2e%2e/b",
            "h/a/%2E%2E/b",
            "h/a/.%2e/b",
            "h/a/%2e./b",
            "h/a/%2e/b",
            "h/a\\b",
            "h/a/..\\b",
            "h/a%5cb",
            "h/a%5C..%5Cb",
        ] {
            assert!(check_mirror_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "github.com/o/r/archive/v1.0.tar.gz",
            "h/a/...tar.gz",
            "h/a/%2e%2e%2e",
            "h/a/b%2etar.gz",
        ] {
            assert!(check_mirror_path(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn if_range_matches_only_the_same_strong_etag() {
        let with = |v: &str| Ranged {
            range: Some(ByteRange::From(0)),
            if_range: Some(if v.starts_with('"') || v.starts_with("W/") {
                IfRange::Tag(v.to_owned())
            } else {
                IfRange::Date
            }),
        };
        assert!(with("\"abc\"").applies_to(Some("abc")));
        assert!(!with("\"abd\"").applies_to(Some("abc")));
        assert!(
            !with("W/\"abc\"").applies_to(Some("abc")),
            "weak never matches"
        );
        assert!(!with("\"abc\"").applies_to(None), "no current validator");
        assert!(!with("Tue, 01 Dec 2026 10:00:00 GMT").applies_to(Some("abc")));
        assert!(Ranged::default().applies_to(None));
    }
}
