//! Azurite (Microsoft's Azure Storage emulator, npm `azurite`) for tests: its blob service on a
//! free loopback port, with a fresh folder and a fresh container, killed when the value is
//! dropped (also on panic). Every wait is bounded.
//!
//! `.ci/run` installs `azurite` and Microsoft's `@azure/storage-blob` client into
//! `/opt/gf-tools/npm`; the client creates the container (Azurite, like Azure, refuses an
//! unsigned create, and the server under test never creates containers: an operator does).
//! Without them the tests print why and pass, unless `CI` is set: then they fail.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `.ci/run` installs the npm packages.
const NPM_PREFIX: &str = "/opt/gf-tools/npm";

/// The account every Azurite has (documented by Microsoft; not a secret).
pub(crate) const ACCOUNT: &str = "devstoreaccount1";

/// The well-known key of [`ACCOUNT`].
pub(crate) const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Limit for Azurite to listen, and for the container to be created.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates a container with Microsoft's JavaScript client (argv: blob endpoint, name).
const CREATE_CONTAINER_JS: &str = r"
const { BlobServiceClient } = require('@azure/storage-blob');
const [endpoint, account, key, name] = process.argv.slice(1);
const conn = `DefaultEndpointsProtocol=http;AccountName=${account};AccountKey=${key};BlobEndpoint=${endpoint};`;
BlobServiceClient.fromConnectionString(conn).getContainerClient(name).create()
  .then(() => process.exit(0))
  .catch((e) => { console.error(e.message); process.exit(1); });
";

/// A running Azurite blob service with one container.
#[derive(Debug)]
pub(crate) struct Azurite {
    child: Child,
    port: u16,
    /// The container created for this run.
    pub(crate) container: String,
    log: PathBuf,
    _root: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `azurite-blob` launcher, or `None` (after saying why) when it is missing outside CI.
fn azurite_bin() -> Option<PathBuf> {
    let bin = Path::new(NPM_PREFIX).join("node_modules/.bin/azurite-blob");
    let client = Path::new(NPM_PREFIX).join("node_modules/@azure/storage-blob");
    if bin.exists() && client.exists() {
        return Some(bin);
    }
    let why = format!(
        "Azurite is not installed in {NPM_PREFIX} \
         (npm install --prefix {NPM_PREFIX} azurite@3.37.0 @azure/storage-blob@12.32.0)"
    );
    assert!(std::env::var_os("CI").is_none(), "CI is set but {why}");
    eprintln!("skipping: {why}; with CI set this fails");
    None
}

/// Waits until `port` accepts connections, or the process exits.
fn wait_listening(child: &mut Child, port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

impl Azurite {
    /// Starts Azurite and creates a container, or `None` when Azurite is missing outside CI.
    pub(crate) fn start() -> Option<Self> {
        let bin = azurite_bin()?;
        let root = tempfile::tempdir().expect("tempdir");
        // Azurite picks no free port by itself; take one that was free a moment ago, and try
        // again with another if something else took it first.
        for attempt in 1..=3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let log = root.path().join(format!("azurite-{attempt}.log"));
            let out = std::fs::File::create(&log).expect("create azurite log");
            let child = Command::new(&bin)
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(root.path().join(format!("data-{attempt}")))
                .args(["--skipApiVersionCheck", "--loose"])
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("clone log"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut child = child;
            if wait_listening(&mut child, port) {
                let me = Self {
                    child,
                    port,
                    container: format!("gf{}", std::process::id()),
                    log,
                    _root: root,
                };
                me.create_container();
                return Some(me);
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "azurite attempt {attempt} did not listen; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("Azurite did not start in three attempts");
    }

    fn create_container(&self) {
        let mut child = Command::new("node")
            .arg("-e")
            .arg(CREATE_CONTAINER_JS)
            .args([&self.blob_endpoint(), ACCOUNT, ACCOUNT_KEY, &self.container])
            .env("NODE_PATH", Path::new(NPM_PREFIX).join("node_modules"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait node") {
                let out = child.wait_with_output().expect("node output");
                assert!(
                    status.success(),
                    "creating container {}: {}\nazurite log:\n{}",
                    self.container,
                    String::from_utf8_lossy(&out.stderr),
                    self.log_tail()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("creating container {} timed out", self.container);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The account's blob endpoint (path style, as Azurite serves it).
    pub(crate) fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// `http://127.0.0.1:PORT`, for `AZURITE_BLOB_STORAGE_URL`.
    pub(crate) fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `az://CONTAINER/PREFIX`, for `--data`.
    pub(crate) fn data_url(&self, prefix: &str) -> String {
        format!("az://{}/{prefix}", self.container)
    }

    /// The `object_store` Azure options that reach this Azurite the way an operator reaches a
    /// real account with a custom endpoint (account, key, endpoint, plain HTTP).
    pub(crate) fn options(&self) -> Vec<(String, String)> {
        [
            ("account_name", ACCOUNT.to_owned()),
            ("access_key", ACCOUNT_KEY.to_owned()),
            ("endpoint", self.blob_endpoint()),
            ("allow_http", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}
