//! Test helpers: starting the real server, raw HTTP, registry fixtures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gf_registry::config::{Config, Inputs};
use gf_registry::server::Running;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The example registry shipped in the repository.
pub(crate) fn example_registry() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("registry")
}

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

/// A response read off the wire.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) async fn raw_request(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
) -> RawResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("response within 10 s")
        .expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    RawResponse {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    }
}

/// Every regular file under `root`, as `/`-separated relative paths, sorted.
pub(crate) fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Copies a directory tree.
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    for rel in files_under(from) {
        let dst = to.join(&rel);
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from.join(&rel), dst).expect("copy");
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
