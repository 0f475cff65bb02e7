//! The app in process, without a listener: `App::build` and the HTTP layer's one entry point
//! (`http::service::Front`: the pre-routing layer in front of the router), requests sent with
//! `oneshot` (the crates.io `TestApp` model). For tests that need only request and response
//! against one server; tests that need real sockets, timeouts, connection limits, the
//! answers given before routing, background polling or an external client use
//! [`super::server::TestServer`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request};
use bytes::Bytes;
use gf_registry::app::App;
use tower::ServiceExt as _;

use super::publish::REQUEST_TIMEOUT;
use super::server::config_over;

/// The peer address handlers see (the server puts the real one in the request extensions).
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// The app over a registry, with its own data dir.
#[derive(Debug)]
pub(crate) struct TestApp {
    front: gf_registry::http::service::Front,
    _data: tempfile::TempDir,
}

/// A whole response: status, headers and the body read to the end.
#[derive(Debug)]
pub(crate) struct TestResponse {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl TestResponse {
    /// The body as UTF-8 text.
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is UTF-8")
    }
}

impl TestApp {
    /// The app over `registry`, with these flag overrides.
    pub(crate) async fn init(registry: &Path, flags: &[(&'static str, &str)]) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let config = config_over(registry, data.path(), flags, &[]);
        let app = Arc::new(App::build(config).await.expect("app builds"));
        // The server's one entry point: the pre-routing layer in front of the router.
        let front = gf_registry::http::service::front(app);
        Self { front, _data: data }
    }

    /// Sends one request through the router; the whole answer is bounded by
    /// [`REQUEST_TIMEOUT`].
    pub(crate) async fn request(&self, req: Request<Body>) -> TestResponse {
        let answer = async {
            let resp = self
                .front
                .connection(PEER)
                .oneshot(req)
                .await
                .expect("infallible");
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("body");
            TestResponse {
                status,
                headers,
                body,
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, answer)
            .await
            .expect("answer within REQUEST_TIMEOUT")
    }

    /// `method path` with these headers and body.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> TestResponse {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.request(req.body(body.into()).expect("request")).await
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> TestResponse {
        self.send(Method::GET, path, &[], Body::empty()).await
    }
}
