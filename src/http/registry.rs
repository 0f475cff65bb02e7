//! Registry files: bytes exactly as stored, with their sha256 as a strong ETag.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::response::Response;

use super::error::ApiError;
use crate::app::AppState;
use crate::registry::{FileKind, RegistryError, RegistryFile, RegistryPath};

/// `GET|HEAD` of any registry path (`bazel_registry.json`, `modules/...`).
pub(super) async fn get_registry_file(
    State(app): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = RegistryPath::parse(uri.path())?;
    let file = app.registry.get(&path).await?;
    Ok(file_response(&file, headers.get(header::IF_NONE_MATCH)))
}

/// The registry's routes (also the metrics' route labels).
pub(super) const ROUTE_REGISTRY_JSON: &str = "/bazel_registry.json";
pub(super) const ROUTE_METADATA: &str = "/modules/{name}/metadata.json";
pub(super) const ROUTE_VERSION_FILE: &str = "/modules/{name}/{version}/{*file}";

/// The answer to a plain `GET`/`HEAD` of a registry file the cache holds, or of a module the
/// registry surely does not have, before routing: the response the router would give, for a
/// fraction of the work (no routing; for a hit no path parsing and no allocation in the
/// look-up). `None` hands the request to the router: anything else, anything with a query, a
/// body or percent-escapes, and everything when reads need a token.
///
/// The edge's other duties still apply: the in-flight count and the request metrics, under
/// the same route labels the router would give.
pub(crate) fn cached_file<B>(app: &AppState, req: &Request<B>) -> Option<Response> {
    let method = req.method();
    if (method != Method::GET && method != Method::HEAD)
        || app.config.auth.require_token_for_reads
        || req.uri().query().is_some()
        || req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return None;
    }
    let path = req.uri().path();
    if path.len() > super::middleware::MAX_URI_BYTES {
        return None;
    }
    let route = if path == ROUTE_REGISTRY_JSON {
        ROUTE_REGISTRY_JSON
    } else if let Some(rest) = path.strip_prefix("/modules/") {
        match rest.split_once('/') {
            Some((_, "metadata.json")) => ROUTE_METADATA,
            Some((_, tail)) if tail.contains('/') => ROUTE_VERSION_FILE,
            _ => return None,
        }
    } else {
        return None;
    };
    let start = Instant::now();
    let answer = match app.registry.cached_by_url(path) {
        Some(file) => Ok(file),
        // A module the registry surely does not have (Bazel asks the first registry for
        // every module of the graph): the router's 404, without the router.
        None if route != ROUTE_REGISTRY_JSON => match RegistryPath::parse(path) {
            Ok(p) if app.registry.surely_absent(&p) => Err(ApiError::from(RegistryError::NotFound)),
            _ => return None,
        },
        None => return None,
    };
    let response = match (super::middleware::admit(app), answer) {
        (Err(busy), _) => axum::response::IntoResponse::into_response(busy),
        (Ok(_in_flight), Ok(file)) => {
            file_response(&file, req.headers().get(header::IF_NONE_MATCH))
        }
        (Ok(_in_flight), Err(e)) => axum::response::IntoResponse::into_response(e),
    };
    let status = response.status().as_u16();
    app.metrics.observe_slot(
        metrics_slot(route, method == Method::HEAD, status),
        || crate::metrics::RequestLabels {
            route: route.to_owned(),
            method: crate::metrics::method_label(method.as_str()),
            status,
        },
        start.elapsed().as_secs_f64(),
    );
    Some(response)
}

/// The metrics slot of an answer given before routing: one per route, method and usual status
/// (`usize::MAX`, no slot, for any other status).
fn metrics_slot(route: &str, head: bool, status: u16) -> usize {
    const ROUTES: [&str; 3] = [ROUTE_REGISTRY_JSON, ROUTE_METADATA, ROUTE_VERSION_FILE];
    const STATUSES: [u16; 4] = [200, 304, 404, 503];
    let (Some(r), Some(s)) = (
        ROUTES.iter().position(|&x| x == route),
        STATUSES.iter().position(|&x| x == status),
    ) else {
        return usize::MAX;
    };
    (r * 2 + usize::from(head)) * STATUSES.len() + s
}

fn content_type(kind: FileKind) -> &'static str {
    match kind {
        FileKind::MutableJson | FileKind::Json => "application/json",
        FileKind::Starlark => "text/plain; charset=utf-8",
        FileKind::Yaml => "application/yaml",
        FileKind::Patch => "text/x-diff",
        FileKind::Other => "application/octet-stream",
    }
}

fn cache_control(kind: FileKind) -> &'static str {
    if kind.is_immutable() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

fn file_response(file: &RegistryFile, if_none_match: Option<&HeaderValue>) -> Response {
    let etag = format!("\"{}\"", file.sha256_hex);
    let not_modified = if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, cache_control(file.kind))
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    let response = if not_modified {
        builder.status(StatusCode::NOT_MODIFIED).body(Body::empty())
    } else {
        builder
            .header(header::CONTENT_TYPE, content_type(file.kind))
            .header(header::CONTENT_LENGTH, file.bytes.len())
            .body(Body::from(file.bytes.clone()))
    };
    response.unwrap_or_else(|_| Response::new(Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_method_and_usual_status_has_its_own_metrics_slot() {
        let mut seen = std::collections::BTreeSet::new();
        for route in [ROUTE_REGISTRY_JSON, ROUTE_METADATA, ROUTE_VERSION_FILE] {
            for head in [false, true] {
                for status in [200, 304, 404, 503] {
                    let slot = metrics_slot(route, head, status);
                    assert!(slot < crate::metrics::SLOTS, "{route} {head} {status}");
                    assert!(
                        seen.insert(slot),
                        "{route} {head} {status} shares slot {slot}"
                    );
                }
            }
        }
        assert_eq!(metrics_slot(ROUTE_METADATA, false, 500), usize::MAX);
        assert_eq!(metrics_slot("/elsewhere", false, 200), usize::MAX);
    }
}
