//! The HTTP edge: routes, typed request parsing, error mapping, metrics middleware.
//! Handlers parse, call one domain method and map the result; nothing more.

mod access;
mod admin;
mod auth;
mod error;
mod extract;
mod middleware;
mod mirror;
mod publish;
mod registry;
pub mod service;

use axum::Router;
use axum::routing::{get, post};

use crate::app::AppState;

pub use error::ApiError;

/// Builds the router with every route of the public URL layout served so far. The server does
/// not call it directly: it serves [`service::Front`], which puts [`service::PreRouting`] in
/// front of it.
pub fn router(state: AppState) -> Router {
    // The routes that read a body: it may pause at most `server.body_timeout_seconds`.
    let writes = Router::new()
        .route(
            "/api/v1/modules/{name}/{version}",
            post(publish::publish_version).layer(axum::extract::DefaultBodyLimit::max(
                state.config.max_publish_bytes,
            )),
        )
        .route(
            "/api/v1/modules/{name}/{version}/yank",
            post(publish::yank_version),
        )
        .route(
            "/api/v1/modules/{name}/{version}/unyank",
            post(publish::unyank_version),
        )
        .route(
            "/api/v1/modules/{name}/deprecate",
            post(publish::deprecate_module),
        )
        .route("/admin/registry/refresh", post(admin::refresh_registry))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.config.body_timeout,
        ));
    Router::new()
        // The registry files. `service::PreRouting` answers these three routes before routing
        // when the cache holds the file or the module surely does not exist; the router sees
        // the rest (queries, misses, token-gated reads).
        .route(
            registry::ROUTE_REGISTRY_JSON,
            get(registry::get_registry_file),
        )
        .route(registry::ROUTE_METADATA, get(registry::get_registry_file))
        .route(
            registry::ROUTE_VERSION_FILE,
            get(registry::get_registry_file),
        )
        .route("/mirror/{*path}", get(mirror::get_mirror_url))
        .route("/cas/{algorithm}/{hex}", get(mirror::get_cas_blob))
        .route(
            "/cas/{algorithm}/{hex}/{basename}",
            get(mirror::get_cas_blob),
        )
        .route("/bazel/downloader.cfg", get(mirror::get_downloader_cfg))
        .route("/bazel/bazelrc", get(mirror::get_bazelrc))
        .route("/api/v1/blobs/{sha256}", get(mirror::get_blob_provenance))
        .route("/api/v1/mirror/status", get(mirror::get_mirror_status))
        .route("/api/v1/upstreams", get(registry::get_upstreams))
        .route("/healthz", get(admin::get_healthz))
        .route("/readyz", get(admin::get_readyz))
        .route("/metrics", get(admin::get_metrics))
        .merge(writes)
        .fallback(error::fallback)
        // One middleware for every request: size checks, the in-flight cap, the read-token
        // check and metrics (one layer instead of four: measured on the registry hot path).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::edge,
        ))
        .with_state(state)
}
