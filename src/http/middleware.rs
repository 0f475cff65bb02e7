//! The edge middleware: early refusals, the in-flight cap, token-gated reads and request
//! metrics, labelled by the matched route pattern (never the raw URI).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::metrics::RequestLabels;

/// Longest request target accepted (path and query).
pub(super) const MAX_URI_BYTES: usize = 8192;

/// Every request passes here once: refuses request targets over [`MAX_URI_BYTES`] (`414`)
/// and bodies announced larger than any route accepts (`413`) before any work; sheds load
/// beyond `server.max_concurrent_requests` (`503` with `Retry-After`); with
/// `auth.require_token_for_reads`, checks the token of every read but health probes; and
/// records count and latency by matched route (never the raw URI).
pub(super) async fn edge(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = crate::metrics::method_label(req.method().as_str());
    let response = match refuse(&app, &req) {
        Some(r) => r,
        None => match admit(&app) {
            Ok(_in_flight) => next.run(req).await,
            Err(busy) => busy.into_response(),
        },
    };
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

/// Counts a request in progress while the returned guard lives, or refuses it when
/// `server.max_concurrent_requests` are already in progress.
pub(super) fn admit(app: &AppState) -> Result<InFlight<'_>, Overloaded> {
    let in_flight = InFlight::enter(&app.in_flight);
    if in_flight.count > app.config.max_concurrent_requests {
        Err(Overloaded)
    } else {
        Ok(in_flight)
    }
}

/// A request refused by [`admit`]; its response is the `503` Bazel retries.
pub(super) struct Overloaded;

impl IntoResponse for Overloaded {
    fn into_response(self) -> Response {
        overloaded()
    }
}

/// Counts a request in progress while it lives.
pub(super) struct InFlight<'a> {
    counter: &'a std::sync::atomic::AtomicUsize,
    count: usize,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        let count = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Self { counter, count }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn error(status: StatusCode, message: String) -> Response {
    IntoResponse::into_response(super::error::ApiError::new(status, message))
}

/// The answer before any work, when the request is refused outright.
fn refuse(app: &AppState, req: &Request) -> Option<Response> {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return Some(error(
            StatusCode::URI_TOO_LONG,
            format!("request target is {len} bytes; at most {MAX_URI_BYTES} are accepted"),
        ));
    }
    if let Some(n) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        let max = app.config.max_publish_bytes as u64;
        if n > max {
            return Some(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body of {n} bytes; at most {max} are accepted (publish.max_body_bytes)"
                ),
            ));
        }
    }
    let auth = &app.config.auth;
    if auth.require_token_for_reads
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && !matches!(req.uri().path(), "/healthz" | "/readyz")
        && let Err(rejection) =
            super::auth::authorize(auth, req.headers(), &crate::auth::Action::Read)
    {
        return Some(IntoResponse::into_response(rejection));
    }
    None
}

/// The answer when `server.max_concurrent_requests` are in progress: a `503` Bazel retries.
fn overloaded() -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in progress; retry shortly".to_owned(),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
