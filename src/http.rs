//! The HTTP edge: routes, typed request parsing, error mapping, metrics middleware.
//! Handlers parse, call one domain method and map the result; nothing more.

mod admin;
mod error;
mod middleware;
mod registry;

use axum::Router;
use axum::routing::{get, post};

use crate::app::AppState;

pub use error::ApiError;

/// Builds the router with every route of the public URL layout served so far.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/bazel_registry.json", get(registry::get_registry_file))
        .route(
            "/modules/{name}/metadata.json",
            get(registry::get_registry_file),
        )
        .route(
            "/modules/{name}/{version}/{*file}",
            get(registry::get_registry_file),
        )
        .route("/healthz", get(admin::get_healthz))
        .route("/readyz", get(admin::get_readyz))
        .route("/metrics", get(admin::get_metrics))
        .route("/admin/registry/refresh", post(admin::refresh_registry))
        .fallback(error::fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::record_metrics,
        ))
        .with_state(state)
}
