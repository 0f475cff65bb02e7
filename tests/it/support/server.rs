//! The real server in this process, on `127.0.0.1:0`: for tests that need real sockets
//! (raw request lines, timeouts, connection limits) or an external client.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use gf_registry::config::{Config, Inputs};
use gf_registry::server::Running;

use serde_json::Value;

use super::client::{self, RawResponse, raw_request};
use super::publish::{PUBLISHER, REQUEST_TIMEOUT};

/// The config of a server over `registry` with its data in `data`, listening on
/// `127.0.0.1:0`, with extra flag overrides and `GF_REGISTRY_*` variables.
pub(crate) fn config_over(
    registry: &Path,
    data: &Path,
    flags: &[(&'static str, &str)],
    env: &[(&str, &str)],
) -> Config {
    let mut f: BTreeMap<&'static str, String> = BTreeMap::new();
    f.insert("listen", "127.0.0.1:0".to_owned());
    f.insert("registry", registry.display().to_string());
    f.insert("data", data.display().to_string());
    for (k, v) in flags {
        f.insert(k, (*v).to_owned());
    }
    Config::resolve(&Inputs {
        config_file: None,
        flags: f,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
    .expect("config")
}

/// A running server, and the data dir it uses when it made one.
#[derive(Debug)]
pub(crate) struct TestServer {
    pub(crate) running: Option<Running>,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    _data: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0` over `registry`, with extra flag overrides.
    pub(crate) async fn start(registry: &Path, flags: &[(&'static str, &str)]) -> Self {
        Self::start_with_env(registry, flags, &[]).await
    }

    /// Like [`TestServer::start`], with `GF_REGISTRY_*` variables too.
    pub(crate) async fn start_with_env(
        registry: &Path,
        flags: &[(&'static str, &str)],
        env: &[(&str, &str)],
    ) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let config = config_over(registry, data.path(), flags, env);
        let running = gf_registry::server::start(config)
            .await
            .expect("server starts");
        let base = format!("http://{}", running.addr);
        Self {
            running: Some(running),
            base,
            client: client::plain(),
            _data: Some(data),
        }
    }

    /// Starts on `127.0.0.1:0` with exactly these flags, this config file and no other
    /// environment (the caller keeps its folders). Its client follows no redirects and
    /// bounds each request by [`REQUEST_TIMEOUT`].
    pub(crate) async fn start_exact(
        flags: &[(&'static str, &str)],
        config_file: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Self {
        let mut f: BTreeMap<&'static str, String> = BTreeMap::new();
        f.insert("listen", "127.0.0.1:0".to_owned());
        for (k, v) in flags {
            f.insert(k, (*v).to_owned());
        }
        let config = Config::resolve(&Inputs {
            config_file: config_file.map(Path::to_path_buf),
            flags: f,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
        .expect("config");
        let running = gf_registry::server::start(config)
            .await
            .expect("server starts");
        let base = format!("http://{}", running.addr);
        Self {
            running: Some(running),
            base,
            client: client::no_redirects(REQUEST_TIMEOUT),
            _data: None,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// Status and body of a GET.
    pub(crate) async fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let resp = self.get(path).await;
        let status = resp.status().as_u16();
        (status, resp.bytes().await.expect("body").to_vec())
    }

    /// A GET that must answer `200` with JSON.
    pub(crate) async fn get_json(&self, path: &str) -> Value {
        let (status, bytes) = self.get_bytes(path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice(&bytes).expect("json")
    }

    /// `POST path` with a JSON body and a bearer token.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> (u16, String) {
        self.post_raw(
            path,
            Some("application/json"),
            serde_json::to_vec(body).expect("json"),
            token,
        )
        .await
    }

    /// `POST path` with exactly this body and Content-Type.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// `POST /api/v1/modules/{name}/{version}` with [`PUBLISHER`].
    pub(crate) async fn publish(&self, name: &str, version: &str, body: &Value) -> (u16, String) {
        self.post_json(
            &format!("/api/v1/modules/{name}/{version}"),
            body,
            Some(PUBLISHER),
        )
        .await
    }

    pub(crate) async fn head(&self, path: &str) -> reqwest::Response {
        self.client
            .head(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub(crate) async fn post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub(crate) fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").addr
    }

    /// Sends a request line exactly as given (no client-side normalization of `..` or `%`).
    pub(crate) async fn raw(&self, method: &str, target: &str) -> RawResponse {
        raw_request(self.addr(), method, target).await
    }

    pub(crate) async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown(Duration::from_secs(10))
                .await
                .expect("clean shutdown");
        }
    }
}
