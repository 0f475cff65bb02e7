//! Registry files: bytes exactly as stored, with their sha256 as a strong ETag.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
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
    let file = match (app.registry.get(&path).await, &app.upstreams) {
        // Not held here, and not owned here (a module name the internal registry holds is
        // never looked up upstream): the upstreams, in order.
        (Err(RegistryError::NotFound), Some(upstreams))
            if path
                .module()
                .is_none_or(|m| !app.registry.holds_module(m.as_str())) =>
        {
            upstreams.get(&path).await?
        }
        (got, _) => got?,
    };
    Ok(file_response(&file, headers.get(header::IF_NONE_MATCH)))
}

/// `GET /api/v1/upstreams`: per upstream registry, files pinned, last contact, last error and
/// drift events (an empty list when none are configured).
pub(super) async fn get_upstreams(State(app): State<AppState>) -> Response {
    let list = app
        .upstreams
        .as_ref()
        .map(|u| u.status())
        .unwrap_or_default();
    let body =
        serde_json::to_vec_pretty(&serde_json::json!({ "upstreams": list })).unwrap_or_default();
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// The registry's routes (also the metrics' route labels).
pub(super) const ROUTE_REGISTRY_JSON: &str = "/bazel_registry.json";
pub(super) const ROUTE_METADATA: &str = "/modules/{name}/metadata.json";
pub(super) const ROUTE_VERSION_FILE: &str = "/modules/{name}/{version}/{*file}";

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

pub(super) fn file_response(file: &RegistryFile, if_none_match: Option<&HeaderValue>) -> Response {
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
