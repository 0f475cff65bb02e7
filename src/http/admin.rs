//! Liveness, readiness, metrics and registry refresh.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::error::ApiError;
use crate::app::AppState;

/// `GET /healthz`: the process serves requests.
pub(super) async fn get_healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 only when the registry is loaded and every storage role answers.
pub(super) async fn get_readyz(State(app): State<AppState>) -> Result<&'static str, ApiError> {
    app.check_ready()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")))?;
    Ok("ready\n")
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
pub(super) async fn get_metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// `POST /admin/registry/refresh`: switch to the ref's current commit (or re-index a
/// directory) now instead of at the next poll.
pub(super) async fn refresh_registry(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    certificate: Option<axum::Extension<crate::auth::ClientCertificate>>,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    // With tokens configured, this needs the `admin` scope; a server with no tokens at all (a
    // development setup) keeps it open.
    if !app.config.auth.tokens.is_empty() || !app.config.auth.clients.is_empty() {
        super::auth::authorize(
            &app.config.auth,
            &headers,
            certificate.as_ref().map(|c| &c.0),
            &crate::auth::Action::Admin,
        )?;
    }
    if !body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "body: refresh takes no body",
        ));
    }
    refresh(&app).await
}

async fn refresh(app: &AppState) -> Result<axum::response::Response, ApiError> {
    let outcome = app.registry.refresh().await.map_err(|e| {
        tracing::error!(error = %e, "registry refresh failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("registry refresh failed: {e}"),
        )
    })?;
    Ok(Json(json!({
        "previous": outcome.previous,
        "current": outcome.current,
        "switched": outcome.switched,
        "modules": outcome.modules,
    }))
    .into_response())
}
