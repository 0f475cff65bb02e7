//! Publishing routes: `POST /api/v1/modules/{name}/{version}`, `.../yank`, `.../unyank`,
//! `POST /api/v1/modules/{name}/deprecate`. Each checks the token, parses, calls the
//! publisher once and maps the result.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::LoggedActor;
use super::auth::Caller;
use super::error::ApiError;
use crate::app::AppState;
use crate::auth::Action;
use crate::publish::request::ValidRequest;
use crate::publish::{Actor, EditKind, Status};

/// `{name}` of a module route. The name's grammar is checked by the publisher, which names
/// the field at fault.
#[derive(Debug, Deserialize)]
pub(super) struct ModulePath {
    name: String,
}

/// `{name}/{version}` of a version route.
#[derive(Debug, Deserialize)]
pub(super) struct ModuleVersionPath {
    name: String,
    version: String,
}

/// `?dry_run=true`.
#[derive(Debug, Deserialize)]
pub(super) struct PublishQuery {
    #[serde(default)]
    dry_run: bool,
}

/// A yank or deprecation body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonBody {
    #[serde(default)]
    reason: String,
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type: expected application/json, got {:?}",
                if ct.is_empty() { "(none)" } else { ct }
            ),
        ))
    }
}

/// The `reason` of a yank or deprecation body; `allow_empty`: an empty reason is meaningful
/// (it removes a deprecation).
fn reason_from(body: &Bytes, headers: &HeaderMap, allow_empty: bool) -> Result<String, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "body: expected a JSON object {\"reason\": \"...\"}",
        ));
    }
    require_json(headers)?;
    // Strict: an object (a JSON array would deserialize into the struct by position), no
    // duplicate keys (refused naming their path).
    let value = bzlmod::publish_request::parse_body_object(body)
        .map(serde_json::Value::Object)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let parsed: ReasonBody = serde_json::from_value(value)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body: {e}")))?;
    if !allow_empty && parsed.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "reason: must not be empty",
        ));
    }
    Ok(parsed.reason)
}

/// A body that must be absent (or an empty JSON object, for clients that always send one).
fn no_body(body: &Bytes, headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    require_json(headers)?;
    match bzlmod::publish_request::parse_body(body) {
        Ok(serde_json::Value::Object(o)) if o.is_empty() => Ok(()),
        // A duplicate key is named, as in every other body.
        Err(e) if e.field != "body" => Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string())),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body: {what} takes no body (or an empty JSON object)"),
        )),
    }
}

fn answer(published: &crate::publish::Published, actor: &Actor) -> Response {
    let status = match published.status {
        Status::Created => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Extension(LoggedActor(actor.name.clone())),
        Json(published),
    )
        .into_response()
}

/// `POST /api/v1/modules/{name}/{version}`.
pub(super) async fn publish_version(
    State(app): State<AppState>,
    caller: Caller,
    Path(ModuleVersionPath { name, version }): Path<ModuleVersionPath>,
    Query(query): Query<PublishQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = caller.may(&app.config.auth, &Action::Publish(&name))?;
    require_json(&headers)?;
    let request = ValidRequest::decode(name, version, body).await?;
    let published = app
        .publisher
        .publish(request, &actor, &app.public_url(), query.dry_run)
        .await?;
    Ok(answer(&published, &actor))
}

async fn edit(
    app: &AppState,
    actor: &Actor,
    name: &str,
    kind: EditKind,
) -> Result<Response, ApiError> {
    let done = app.publisher.edit(name, kind, actor).await?;
    Ok(answer(&done, actor))
}

/// `POST /api/v1/modules/{name}/{version}/yank` with `{"reason": ...}`.
pub(super) async fn yank_version(
    State(app): State<AppState>,
    caller: Caller,
    Path(ModuleVersionPath { name, version }): Path<ModuleVersionPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = caller.may(&app.config.auth, &Action::Yank(&name))?;
    let reason = reason_from(&body, &headers, false)?;
    edit(&app, &actor, &name, EditKind::Yank { version, reason }).await
}

/// `POST /api/v1/modules/{name}/{version}/unyank` (no body, or an empty JSON object).
pub(super) async fn unyank_version(
    State(app): State<AppState>,
    caller: Caller,
    Path(ModuleVersionPath { name, version }): Path<ModuleVersionPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = caller.may(&app.config.auth, &Action::Yank(&name))?;
    no_body(&body, &headers, "unyank")?;
    edit(&app, &actor, &name, EditKind::Unyank { version }).await
}

/// `POST /api/v1/modules/{name}/deprecate` with `{"reason": ...}` (empty: undeprecate).
pub(super) async fn deprecate_module(
    State(app): State<AppState>,
    caller: Caller,
    Path(ModulePath { name }): Path<ModulePath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = caller.may(&app.config.auth, &Action::Yank(&name))?;
    let reason = reason_from(&body, &headers, true)?;
    edit(&app, &actor, &name, EditKind::Deprecate { reason }).await
}
