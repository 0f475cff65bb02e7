//! The real server in this process, on `127.0.0.1:0`: for tests that need real sockets
//! (raw request lines, timeouts, connection limits) or an external client.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use gf_registry::config::{Config, Inputs};
use gf_registry::server::Running;

use super::client::{RawResponse, raw_request};

/// A running server and the temp dirs it uses.
pub(crate) struct TestServer {
    pub(crate) running: Option<Running>,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    _data: tempfile::TempDir,
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
        let mut f: BTreeMap<&'static str, String> = BTreeMap::new();
        f.insert("listen", "127.0.0.1:0".to_owned());
        f.insert("registry", registry.display().to_string());
        f.insert("data", data.path().display().to_string());
        for (k, v) in flags {
            f.insert(k, (*v).to_owned());
        }
        let config = Config::resolve(&Inputs {
            config_file: None,
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
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            _data: data,
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
