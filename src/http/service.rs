//! The one entry point of the HTTP layer: the server hands every request of a connection to
//! [`Front::connection`], and nothing else of `http`.
//!
//! In front of the router sits one tower layer, [`PreRouting`]: registry files the cache holds,
//! and modules the registry surely does not have, are answered before routing (the hot path of
//! every Bazel resolution, measured in `bench/RESULTS.md`). Everything else goes through the
//! router and its `edge` middleware. Both use the same admission ([`super::middleware::admit`])
//! and the same request metrics ([`super::middleware::observe`]), under the same route labels.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, header};
use axum::response::{IntoResponse as _, Response};
use futures::future::{BoxFuture, Either, Ready, ready};
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt as _};

use super::error::ApiError;
use super::registry::{ROUTE_METADATA, ROUTE_REGISTRY_JSON, ROUTE_VERSION_FILE, file_response};
use crate::app::AppState;
use crate::registry::{RegistryError, RegistryPath};

/// The HTTP layer as the server sees it: the router with the pre-routing layer in front.
#[derive(Debug, Clone)]
pub struct Front {
    app: AppState,
    router: Router,
}

/// Builds the HTTP layer over `app`.
#[must_use]
pub fn front(app: AppState) -> Front {
    Front {
        router: super::router(app.clone()),
        app,
    }
}

impl Front {
    /// The service for one connection from `peer` (handlers that log or audit the client read
    /// it as `ConnectInfo`).
    #[must_use]
    pub fn connection(&self, peer: SocketAddr) -> PreRouting<Router> {
        PreRoutingLayer {
            app: self.app.clone(),
            peer,
        }
        .layer(self.router.clone())
    }
}

/// Builds [`PreRouting`] in front of a service (the router).
#[derive(Debug, Clone)]
pub struct PreRoutingLayer {
    app: AppState,
    peer: SocketAddr,
}

impl<S> Layer<S> for PreRoutingLayer {
    type Service = PreRouting<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PreRouting {
            app: self.app.clone(),
            peer: self.peer,
            inner,
        }
    }
}

/// Answers what it can before routing (see [`answer`]); hands the rest to `inner`.
#[derive(Debug, Clone)]
pub struct PreRouting<S> {
    app: AppState,
    peer: SocketAddr,
    inner: S,
}

impl<S, B> Service<Request<B>> for PreRouting<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Ready<Result<Response, Infallible>>,
        Either<Oneshot<S, Request<Body>>, BoxFuture<'static, Result<Response, Infallible>>>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready; each call drives a clone of it to readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let access = self
            .app
            .config
            .access_log
            .then(|| super::access::Access::start(&req, self.peer));
        if let Some(response) = answer(&self.app, &req) {
            let response = match access {
                Some(access) => access.finish(response),
                None => response,
            };
            return Either::Left(ready(Ok(response)));
        }
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let routed = self.inner.clone().oneshot(req.map(Body::new));
        match access {
            None => Either::Right(Either::Left(routed)),
            Some(access) => Either::Right(Either::Right(Box::pin(async move {
                let Ok(response) = routed.await;
                Ok(access.finish(response))
            }))),
        }
    }
}

/// The answer to a plain `GET`/`HEAD` of a registry file the cache holds, or of a module the
/// registry surely does not have, before routing: the response the router would give, for a
/// fraction of the work (no routing; for a hit no path parsing and no allocation in the
/// look-up). `None` hands the request to the router: anything else, anything with a query, a
/// body or percent-escapes, and everything when reads need a token.
///
/// The edge's other duties still apply: the in-flight count and the request metrics, under
/// the same route labels the router would give.
fn answer<B>(app: &AppState, req: &Request<B>) -> Option<Response> {
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
    let found = match app.registry.cached_by_url(path) {
        Some(file) => Ok(file),
        // A module the registry surely does not have (Bazel asks the first registry for
        // every module of the graph): the router's 404, without the router.
        None if route != ROUTE_REGISTRY_JSON => match RegistryPath::parse(path) {
            // With upstreams configured, an absent module may be theirs: the router asks them.
            Ok(p) if app.upstreams.is_none() && app.registry.surely_absent(&p) => {
                Err(ApiError::from(RegistryError::NotFound))
            }
            _ => return None,
        },
        None => return None,
    };
    let response = match (super::middleware::admit(app), found) {
        (Err(busy), _) => busy.into_response(),
        (Ok(_in_flight), Ok(file)) => {
            file_response(&file, req.headers().get(header::IF_NONE_MATCH))
        }
        (Ok(_in_flight), Err(e)) => e.into_response(),
    };
    super::middleware::observe(app, route, method, response.status().as_u16(), start);
    Some(response)
}
