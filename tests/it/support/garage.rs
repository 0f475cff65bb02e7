//! Garage (a distributed S3-compatible store) for tests: a single node, or a 3-node cluster
//! with replication factor 3, on loopback, each run with fresh data and metadata folders,
//! a fresh layout, key and bucket. The processes are killed when the value is dropped (also on
//! panic); every wait is bounded.
//!
//! The binary is `garage` on PATH or `/opt/gf-tools/bin/garage` (`.ci/run` installs 2.5.0
//! there). Without it the tests print why and pass, unless `CI` is set: then they fail.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gf_registry::storage::{Location, S3Settings, Storage, StorageLayout};

/// The region Garage is configured with.
pub(crate) const REGION: &str = "garage";

/// Where `.ci/run` installs the pinned Garage.
const CACHED_BIN: &str = "/opt/gf-tools/bin/garage";

/// Limit for one `garage` CLI call.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Limit for a node (or the cluster) to come up.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `garage` binary, or `None` (after saying why) when it is missing outside CI.
pub(crate) fn garage_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("garage"))
            .find(|p| is_executable(p))
    });
    let found = on_path.or_else(|| Some(PathBuf::from(CACHED_BIN)).filter(|p| is_executable(p)));
    match found {
        Some(bin) => Some(bin),
        None if std::env::var_os("CI").is_some() => panic!(
            "CI is set but `garage` is neither on PATH nor at {CACHED_BIN} \
             (cargo install garage --version 2.5.0 --locked --root /opt/gf-tools)"
        ),
        None => {
            eprintln!(
                "skipping: `garage` is neither on PATH nor at {CACHED_BIN} \
                 (cargo install garage --version 2.5.0 --locked --root /opt/gf-tools; \
                 with CI set this fails)"
            );
            None
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Sends `sig` (`-STOP`, `-CONT`) to a node with `kill(1)`, waiting for it (bounded: `kill`
/// returns at once).
fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .stdin(Stdio::null())
        .status();
    if let Err(e) = status {
        eprintln!("kill {sig} {}: {e}", child.id());
    }
}

/// A hex string no other run uses.
fn unique_hex(bytes: usize) -> String {
    use sha2::Digest as _;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = sha2::Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes(),
    );
    let mut out = hex::encode(h.finalize());
    out.truncate(bytes * 2);
    out
}

/// Ports on 127.0.0.1 that were free a moment ago (held together, so they differ).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}

/// One Garage process with its folders and ports.
#[derive(Debug)]
struct Node {
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    rpc: u16,
    s3: u16,
    admin: u16,
    id: String,
    child: Option<Child>,
}

impl Node {
    fn rpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.rpc)
    }
}

/// A running Garage (one node or a cluster) with a key and a bucket the key may read and
/// write.
#[derive(Debug)]
pub(crate) struct Garage {
    bin: PathBuf,
    nodes: Vec<Node>,
    admin_token: String,
    /// The bucket created for this run.
    pub(crate) bucket: String,
    /// The access key id.
    pub(crate) key_id: String,
    /// The secret key.
    pub(crate) secret: String,
    /// How long it took from the first spawn to a usable bucket.
    pub(crate) started_in: Duration,
    _root: tempfile::TempDir,
}

impl Drop for Garage {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                // A frozen node is thawed first, so no stopped process is ever left behind.
                signal(&c, "-CONT");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Garage {
    /// A single node (replication factor 1), or `None` when Garage is missing outside CI.
    pub(crate) fn single() -> Option<Self> {
        Some(Self::start_retrying(garage_bin()?, 1))
    }

    /// Three nodes with replication factor 3 (quorum 2), or `None` when Garage is missing
    /// outside CI.
    pub(crate) fn cluster() -> Option<Self> {
        Some(Self::start_retrying(garage_bin()?, 3))
    }

    /// Starts, up to three times: the free ports are found by binding and releasing them, and
    /// on a loaded machine another test can take one before Garage binds it (the node then
    /// exits at start). A partial start is cleaned up by `Drop` as the attempt unwinds.
    fn start_retrying(bin: PathBuf, n: usize) -> Self {
        for attempt in 1..3 {
            let b = bin.clone();
            match std::panic::catch_unwind(move || Self::start(b, n)) {
                Ok(g) => return g,
                Err(_) => {
                    eprintln!("garage start attempt {attempt} failed; retrying with new ports")
                }
            }
        }
        Self::start(bin, n)
    }

    fn start(bin: PathBuf, n: usize) -> Self {
        let started = Instant::now();
        let root = tempfile::tempdir().expect("tempdir");
        let rpc_secret = unique_hex(32);
        let admin_token = unique_hex(16);
        let mut nodes = Vec::new();
        for i in 0..n {
            let [rpc, s3, admin] = free_ports::<3>();
            let dir = root.path().join(format!("node{i}"));
            std::fs::create_dir_all(dir.join("meta")).expect("mkdir meta");
            std::fs::create_dir_all(dir.join("data")).expect("mkdir data");
            let config = dir.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = {n}
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{admin_token}"
"#,
                    meta = dir.join("meta").display(),
                    data = dir.join("data").display(),
                ),
            )
            .expect("write garage.toml");
            nodes.push(Node {
                log: dir.join("garage.log"),
                dir,
                config,
                rpc,
                s3,
                admin,
                id: String::new(),
                child: None,
            });
        }
        let mut g = Self {
            bin,
            nodes,
            admin_token,
            bucket: format!("gf-{}", unique_hex(6)),
            key_id: String::new(),
            secret: String::new(),
            started_in: Duration::ZERO,
            _root: root,
        };
        for i in 0..n {
            g.spawn(i);
        }
        for i in 0..n {
            g.wait_answers(i);
            let id = g.cli(i, &["node", "id", "-q"]);
            g.nodes[i].id = id.trim().split('@').next().unwrap_or_default().to_owned();
        }
        for i in 0..n {
            g.connect(i);
        }
        for i in 0..n {
            let id = g.nodes[i].id.clone();
            let zone = format!("dc{}", i + 1);
            g.cli(0, &["layout", "assign", "-z", &zone, "-c", "1G", &id]);
        }
        g.cli(0, &["layout", "apply", "--version", "1"]);
        g.wait_healthy();
        let key = g.cli(0, &["key", "create", "gf-test"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no `{name}` in `garage key create` output:\n{key}"))
        };
        g.key_id = field("Key ID");
        g.secret = field("Secret key");
        let bucket = g.bucket.clone();
        g.cli(0, &["bucket", "create", &bucket]);
        g.cli(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", "gf-test",
            ],
        );
        g.started_in = started.elapsed();
        g
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open garage.log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "garage=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        node.child = Some(child);
    }

    /// The tail of a node's log, for failure messages.
    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn assert_running(&mut self, i: usize) {
        let exited = self.nodes[i]
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            panic!(
                "garage node {i} exited ({status}); its log:\n{}",
                self.log_tail(i)
            );
        }
    }

    /// Runs the CLI against node `i` (bounded); panics with its output when it fails.
    fn cli(&mut self, i: usize, args: &[&str]) -> String {
        match self.try_cli(i, args) {
            Ok(out) => out,
            Err(e) => panic!(
                "garage {}: {e}\nnode {i} log:\n{}",
                args.join(" "),
                self.log_tail(i)
            ),
        }
    }

    /// Runs `garage -c <node i's config> args...` with a bounded wait.
    pub(crate) fn try_cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let node = &self.nodes[i];
        let out_path = node.dir.join(format!("cli-{}.out", unique_hex(4)));
        let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {CLI_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        if status.success() {
            Ok(text)
        } else {
            Err(format!("{status}:\n{text}"))
        }
    }

    /// Waits until node `i`'s daemon answers its CLI (`node id` alone reads the key file).
    fn wait_answers(&mut self, i: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.assert_running(i);
            match self.try_cli(i, &["status"]) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!(
                    "garage node {i} did not answer within {START_TIMEOUT:?}: {e}\n{}",
                    self.log_tail(i)
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The cluster's health as node `i`'s admin API reports it.
    pub(crate) fn health(&self, i: usize) -> Option<serde_json::Value> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.nodes[i].admin).into();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /v2/GetClusterHealth HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
            self.admin_token
        )
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return None;
        }
        serde_json::from_str(body).ok()
    }

    /// Waits until every running node reports every node connected and every partition
    /// fully available.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let total = self.nodes.len();
        loop {
            let running: Vec<usize> = (0..total)
                .filter(|&i| self.nodes[i].child.is_some())
                .collect();
            for &i in &running {
                self.assert_running(i);
            }
            let healthy = running.iter().all(|&i| {
                self.health(i).is_some_and(|h| {
                    h["status"] == "healthy"
                        && h["connectedNodes"].as_u64() == Some(total as u64)
                        && h["partitionsAllOk"] == h["partitions"]
                })
            });
            if healthy {
                return;
            }
            if Instant::now() > deadline {
                let states: Vec<String> = running
                    .iter()
                    .map(|&i| format!("node {i}: {:?}", self.health(i)))
                    .collect();
                panic!(
                    "garage did not become healthy within {START_TIMEOUT:?}: {}\nnode 0 log:\n{}",
                    states.join("; "),
                    self.log_tail(0)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Stops node `i` the hard way (SIGKILL), as a crash or a lost machine would.
    pub(crate) fn stop_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again with its folders and ports, and waits until the whole cluster
    /// is healthy again (bounded).
    pub(crate) fn restart_node(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        self.spawn(i);
        self.wait_answers(i);
        // Each node counts a peer as up from its own connection, and retries a lost one only
        // every 30 s or so: connect both ways right away.
        self.connect(i);
        self.wait_healthy();
    }

    /// Connects node `i` and every other running node, both ways.
    fn connect(&mut self, i: usize) {
        for j in 0..self.nodes.len() {
            if j == i || self.nodes[j].child.is_none() {
                continue;
            }
            for (from, to) in [(i, j), (j, i)] {
                let peer = format!("{}@{}", self.nodes[to].id, self.nodes[to].rpc_addr());
                self.cli(from, &["node", "connect", &peer]);
            }
        }
    }

    /// Freezes every node (SIGSTOP): connections are still accepted by the kernel, but
    /// nothing answers, as with a hung backend. `thaw_all` (or the drop) resumes them.
    pub(crate) fn freeze_all(&mut self) {
        for n in &self.nodes {
            if let Some(c) = &n.child {
                signal(c, "-STOP");
            }
        }
    }

    /// Resumes every frozen node (SIGCONT).
    pub(crate) fn thaw_all(&mut self) {
        for n in &self.nodes {
            if let Some(c) = &n.child {
                signal(c, "-CONT");
            }
        }
    }

    /// Stops every node.
    pub(crate) fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }

    /// Starts every stopped node and waits until the cluster is healthy.
    pub(crate) fn restart_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.spawn(i);
            }
        }
        for i in 0..self.nodes.len() {
            self.wait_answers(i);
        }
        for i in 0..self.nodes.len() {
            self.connect(i);
        }
        self.wait_healthy();
    }

    /// Node `i`'s data folder (where block files live).
    pub(crate) fn data_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("data")
    }

    /// The S3 endpoint of node `i`.
    pub(crate) fn endpoint_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3)
    }

    /// The S3 endpoint of the first node.
    pub(crate) fn endpoint(&self) -> String {
        self.endpoint_of(0)
    }

    /// Settings for the storage facade, talking to node `i`.
    pub(crate) fn s3_settings_via(&self, i: usize) -> S3Settings {
        S3Settings {
            options: vec![
                ("endpoint".to_owned(), self.endpoint_of(i)),
                ("region".to_owned(), REGION.to_owned()),
                ("allow_http".to_owned(), "true".to_owned()),
                ("access_key_id".to_owned(), self.key_id.clone()),
                ("secret_access_key".to_owned(), self.secret.clone()),
            ],
        }
    }

    /// Settings for the storage facade, talking to the first node.
    pub(crate) fn s3_settings(&self) -> S3Settings {
        self.s3_settings_via(0)
    }

    /// `s3://BUCKET/PREFIX`, for `--data`.
    pub(crate) fn data_url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The storage facade over `s3://BUCKET/PREFIX/{cas,records}`, through node `i`.
    pub(crate) fn storage_via(&self, i: usize, prefix: &str) -> Storage {
        let root = Location::parse(&self.data_url(prefix)).expect("location");
        Storage::open(StorageLayout {
            cas: root.join("cas"),
            records: root.join("records"),
            s3: self.s3_settings_via(i),
        })
        .expect("open storage")
    }

    /// The storage facade over `s3://BUCKET/PREFIX/{cas,records}`, through the first node.
    pub(crate) fn storage(&self, prefix: &str) -> Storage {
        self.storage_via(0, prefix)
    }

    /// `GF_REGISTRY_S3_*` variables for a child `gf-registry` talking to node `i`.
    pub(crate) fn env_via(&self, i: usize) -> Vec<(&'static str, String)> {
        vec![
            ("GF_REGISTRY_S3_ENDPOINT", self.endpoint_of(i)),
            ("GF_REGISTRY_S3_REGION", REGION.to_owned()),
            ("GF_REGISTRY_S3_ALLOW_HTTP", "true".to_owned()),
            ("GF_REGISTRY_S3_ACCESS_KEY_ID", self.key_id.clone()),
            ("GF_REGISTRY_S3_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }

    /// `GF_REGISTRY_S3_*` variables for a child `gf-registry` talking to the first node.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        self.env_via(0)
    }

    /// What `garage bucket info` says about the run's bucket.
    pub(crate) fn bucket_info(&self) -> String {
        self.try_cli(0, &["bucket", "info", &self.bucket])
            .unwrap_or_else(|e| panic!("garage bucket info: {e}"))
    }
}
