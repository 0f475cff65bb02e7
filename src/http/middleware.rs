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
