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
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let response = match refuse(&app, &req) {
        Some(r) => r,
        None => match admit(&app) {
            Ok(_in_flight) => next.run(req).await,
            Err(busy) => busy.into_response(),
        },
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    observe(&app, route, &method, response.status().as_u16(), start);
    response
}

/// Records one request in the request metrics, for the router's answers and those given
/// before routing alike. `route` is a route pattern or `unmatched`, never the raw URI; the
/// method label is bounded ([`crate::metrics::method_label`]). The registry routes' usual
/// answers keep their counter and histogram in a slot made once ([`metrics_slot`]), so the hot
/// path neither builds label strings nor looks the series up.
pub(super) fn observe(app: &AppState, route: &str, method: &Method, status: u16, start: Instant) {
    app.metrics.observe_slot(
        metrics_slot(route, method == Method::HEAD, status),
        || RequestLabels {
            route: route.to_owned(),
            method: crate::metrics::method_label(method.as_str()),
            status,
        },
        start.elapsed().as_secs_f64(),
    );
}

/// The metrics slot of a registry route's answer: one per route, `GET` or `HEAD`, and usual
/// status (`usize::MAX`, no slot, for anything else).
fn metrics_slot(route: &str, head: bool, status: u16) -> usize {
    use super::registry::{ROUTE_METADATA, ROUTE_REGISTRY_JSON, ROUTE_VERSION_FILE};
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

/// Counts a request in progress while the returned guard lives, or refuses it when
/// `server.max_concurrent_requests` are already in progress.
pub(super) fn admit(app: &AppState) -> Result<crate::app::InFlight<'_>, Overloaded> {
    app.admit().ok_or(Overloaded)
}

/// A request refused by [`admit`]; its response is the `503` Bazel retries.
pub(super) struct Overloaded;

impl IntoResponse for Overloaded {
    fn into_response(self) -> Response {
        overloaded()
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
        && let Err(rejection) = super::auth::authorize(
            auth,
            req.headers(),
            req.extensions().get::<crate::auth::ClientCertificate>(),
            &crate::auth::Action::Read,
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::registry::{ROUTE_METADATA, ROUTE_REGISTRY_JSON, ROUTE_VERSION_FILE};

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
