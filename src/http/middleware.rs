//! Request metrics, labelled by the matched route pattern (never the raw URI).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;
use crate::metrics::RequestLabels;

/// Records count and latency of every request.
pub(super) async fn record_metrics(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    app.metrics.observe(
        RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        },
        start.elapsed().as_secs_f64(),
    );
    response
}

/// With `auth.require_token_for_reads`, every read (registry files, mirror, API) needs a
/// valid token; health and readiness probes stay open.
pub(super) async fn require_read_token(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let auth = &app.config.auth;
    let is_read = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if auth.require_token_for_reads
        && is_read
        && !matches!(req.uri().path(), "/healthz" | "/readyz")
        && let Err(rejection) =
            super::auth::authorize(auth, req.headers(), &crate::auth::Action::Read)
    {
        return axum::response::IntoResponse::into_response(rejection);
    }
    next.run(req).await
}

/// Longest request target accepted (path and query).
pub(super) const MAX_URI_BYTES: usize = 8192;

/// Refuses request targets over [`MAX_URI_BYTES`] with a `414`, and bodies announced larger
/// than any route accepts with a `413`, before any routing work or body read.
pub(super) async fn limit_uri(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max = app.config.max_publish_bytes as u64;
    if let Some(n) = announced
        && n > max
    {
        return axum::response::IntoResponse::into_response(super::error::ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body of {n} bytes; at most {max} are accepted (publish.max_body_bytes)"
            ),
        ));
    }
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return axum::response::IntoResponse::into_response(super::error::ApiError::new(
            axum::http::StatusCode::URI_TOO_LONG,
            format!("request target is {len} bytes; at most {MAX_URI_BYTES} are accepted"),
        ));
    }
    next.run(req).await
}

/// The answer when `server.max_concurrent_requests` are in progress: a `503` Bazel retries.
pub(super) async fn overloaded(_: tower::BoxError) -> Response {
    let mut r = axum::response::IntoResponse::into_response(super::error::ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in progress; retry shortly",
    ));
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}
