//! Real Bazel against the mirror.
//!
//! Debian's `bazel-bootstrap` (Bazel 4.2.3, WORKSPACE mode) builds `tests/fixtures/bazel_workspace`,
//! whose `http_archive`s point at an "upstream" HTTP server run by the test on `127.0.0.1`. Each
//! test has its own `--output_user_root` and `--repository_cache` in a temp dir, every Bazel
//! command is bounded by [`BAZEL_TIMEOUT`], and the Bazel server is shut down when the test ends
//! (also on panic). Without `bazel` on PATH the tests print why and pass, unless `CI` is set.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::{TestServer, Upstream, client, example_registry, path_str, sha256_hex};

/// Upper bound for any single Bazel command (a cold build takes about 2 s here).
const BAZEL_TIMEOUT: Duration = Duration::from_secs(300);
/// Upper bound for `gf-registry mirror export`.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// The archives the fixture WORKSPACE fetches, served by the upstream under `/releases/`.
pub(crate) const ARCHIVES: [&str; 2] = ["hello_lib-1.2.0.tar.gz", "greet_overlay-0.2.0.tar.gz"];
/// The release the upstream "changes" in place.
pub(crate) const CHANGED: &str = "hello_lib-1.2.0.tar.gz";
/// What it serves instead: another valid archive (different bytes, same URL).
pub(crate) const CHANGED_TO: &str = "hello_lib-1.1.0.tar.gz";
/// Lines of `bazel-bin/combined.txt` that only the original (pinned) archives produce.
const EXPECTED_OUTPUT: [&str; 2] = ["version = \"1.2.0\"", "#define GREET_VERSION \"0.2.0\""];

/// Variables that would send Bazel's downloads elsewhere than `127.0.0.1`.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// Proves the harness without the mirror: Bazel fetches each archive once from the upstream, and
/// fails on changed bytes (so a passing build after an upstream change is meaningful).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bazel_builds_directly_from_the_upstream() {
    let Some(bin) = bazel_or_skip() else { return };
    let upstream = Upstream::start_with_files(original_files()).await;
    let bazel = Bazel::new(bin, &upstream.origin());

    bazel.build(&[]).assert_ok("direct build");
    bazel.assert_original_output();
    assert_eq!(
        upstream.hits_by_path(),
        one_hit_per_archive(),
        "one GET per archive"
    );

    upstream.serve_bytes(&release_path(CHANGED), fixture_archive(CHANGED_TO));
    bazel.forget_downloads();
    let out = bazel.build(&[]);
    assert!(
        !out.success(),
        "changed bytes must fail the build:\n{}",
        out.tail()
    );
    assert!(
        out.log.contains("Checksum was"),
        "fails on the checksum:\n{}",
        out.tail()
    );
}

/// Pins what Bazel 4.2.3 sends for `rewrite (.*) http://MIRROR/mirror/$1`: one
/// `GET /mirror/127.0.0.1:PORT/releases/<basename>` per archive, and nothing to the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bazel_requests_rewritten_urls_in_the_mirror_shape() {
    let Some(bin) = bazel_or_skip() else { return };
    let upstream = Upstream::start_with_files(original_files()).await;
    let host = upstream.host();
    // A stand-in mirror that serves the archives at the rewritten paths.
    let fake_mirror = Upstream::start_with_files(
        ARCHIVES
            .iter()
            .map(|name| (mirror_path(&host, name), fixture_archive(name))),
    )
    .await;
    let bazel = Bazel::new(bin, &upstream.origin());
    let config = format!("rewrite (.*) {}/mirror/$1\n", fake_mirror.origin());
    let flag = bazel.write_downloader_config(&config);

    bazel.build(&[&flag]).assert_ok("build through the rewrite");
    bazel.assert_original_output();
    assert_eq!(
        upstream.hits_by_path(),
        BTreeMap::new(),
        "the upstream is not asked"
    );
    let expected: BTreeMap<String, u32> = ARCHIVES
        .iter()
        .map(|name| (mirror_path(&host, name), 1))
        .collect();
    assert_eq!(fake_mirror.hits_by_path(), expected);
}

/// The issue's flow: Bazel builds through `GET /bazel/downloader.cfg`; the mirror then covers an
/// upstream outage and an upstream that changed a release in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bazel_builds_through_the_mirror_across_upstream_outage_and_change() {
    let Some(bin) = bazel_or_skip() else { return };
    let mut upstream = Upstream::start_with_files(original_files()).await;
    let work = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(work.path(), &upstream);
    let server =
        TestServer::start(&example_registry(), &[("mirror-policy", path_str(&policy))]).await;
    let bazel = Bazel::new(bin, &upstream.origin());
    let flag = bazel.write_downloader_config(&downloader_config(&server).await);

    // a. Cold: the mirror pulls each archive from the upstream exactly once.
    bazel.build(&[&flag]).assert_ok("build through the mirror");
    bazel.assert_original_output();
    assert_eq!(
        upstream.hits_by_path(),
        one_hit_per_archive(),
        "one upstream GET per archive"
    );

    outage_then_change(&bazel, &mut upstream, &[&flag]).await;
    // Whether the mirror revalidates with the upstream is its own business: only report it.
    eprintln!(
        "upstream hits after the change: {:?}",
        upstream.hits_by_path()
    );

    drop(bazel);
    server.stop().await;
    upstream.stop().await;
}

/// The mirror alone serves a build with the upstream down and Bazel's caches gone (b), and
/// the pinned originals once the upstream is back with other bytes at one URL (c): the
/// WORKSPACE still pins the original sha256. `flags` send Bazel's downloads to the mirror.
pub(crate) async fn outage_then_change(bazel: &Bazel, upstream: &mut Upstream, flags: &[&str]) {
    upstream.stop().await;
    bazel.forget_downloads();
    bazel.build(flags).assert_ok("build with the upstream down");
    bazel.assert_original_output();

    upstream.serve_bytes(&release_path(CHANGED), fixture_archive(CHANGED_TO));
    upstream.restart().await;
    bazel.forget_downloads();
    bazel
        .build(flags)
        .assert_ok("build after the upstream changed a release");
    bazel.assert_original_output();
}

/// `gf-registry mirror export --format repository-cache` (no server running) gives a directory
/// that Bazel uses as `--repository_cache` with no network at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bazel_builds_offline_from_an_exported_repository_cache() {
    let Some(bin) = bazel_or_skip() else { return };
    let mut upstream = Upstream::start_with_files(original_files()).await;
    let work = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(work.path(), &upstream);
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir data");
    let server = TestServer::start(
        &example_registry(),
        &[
            ("mirror-policy", path_str(&policy)),
            ("data", path_str(&data)),
        ],
    )
    .await;

    // Fill the mirror the way Bazel would (the URL shape the previous tests pin).
    for name in ARCHIVES {
        let resp = server.get(&mirror_path(&upstream.host(), name)).await;
        assert_eq!(resp.status(), 200, "mirror GET of {name}");
        let body = resp.bytes().await.expect("body");
        assert_eq!(
            sha256_hex(&body),
            sha256_hex(&fixture_archive(name)),
            "{name}"
        );
    }
    server.stop().await;
    upstream.stop().await;

    // Nothing is listening any more: export straight into the dir Bazel will use as its cache.
    let bazel = Bazel::new(bin, &upstream.origin());
    let cache = bazel.repo_cache();
    let mut export = Command::new(env!("CARGO_BIN_EXE_gf-registry"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GF_REGISTRY_") {
            export.env_remove(k);
        }
    }
    export
        .args(["mirror", "export", "--format", "repository-cache"])
        .arg(&cache)
        .arg("--all")
        .arg("--data")
        .arg(&data)
        .arg("--mirror-policy")
        .arg(&policy)
        .arg("--registry")
        .arg(example_registry());
    let out = run_bounded(
        format!("{export:?}"),
        &mut export,
        &work.path().join("export.log"),
        EXPORT_TIMEOUT,
    );
    out.assert_ok("mirror export");
    for name in ARCHIVES {
        let digest = sha256_hex(&fixture_archive(name));
        let file = cache.join(format!("content_addressable/sha256/{digest}/file"));
        assert_eq!(
            std::fs::read(&file).ok().map(|b| sha256_hex(&b)),
            Some(digest),
            "{} holds {name}",
            file.display()
        );
    }

    // No downloader config, upstream and mirror both gone: only the cache can serve.
    bazel
        .build(&[])
        .assert_ok("offline build from the exported cache");
    bazel.assert_original_output();
}

/// The upstream double itself (no Bazel needed): a stop is a real outage even for a client that
/// keeps connections alive, and a restart keeps the port, the hit counts and changed bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_double_stops_restarts_and_changes_bytes() {
    let mut upstream = Upstream::start_with_files(original_files()).await;
    let client = client::plain();
    let url = format!("{}{}", upstream.origin(), release_path(CHANGED));
    let body = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), 200);
        resp.bytes().await.expect("body").to_vec()
    };

    let resp = client.get(&url).send().await.expect("upstream up");
    assert_eq!(body(resp).await, fixture_archive(CHANGED));
    upstream.stop().await;
    assert!(
        client.get(&url).send().await.is_err(),
        "stopped upstream answered"
    );

    upstream.serve_bytes(&release_path(CHANGED), fixture_archive(CHANGED_TO));
    upstream.restart().await;
    let resp = client.get(&url).send().await.expect("upstream back");
    assert_eq!(body(resp).await, fixture_archive(CHANGED_TO));
    let resp = client
        .get(format!("{}/releases/missing.tar.gz", upstream.origin()))
        .send()
        .await
        .expect("upstream up");
    assert_eq!(resp.status(), 404);
    let expected: BTreeMap<String, u32> = [
        (release_path(CHANGED), 2),
        ("/releases/missing.tar.gz".to_owned(), 1),
    ]
    .into();
    assert_eq!(upstream.hits_by_path(), expected);
    upstream.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// `bazel` from PATH, or `None` (after saying why) when it is missing outside CI.
pub(crate) fn bazel_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bazel"))
            .find(|p| is_executable(p))
    });
    match found {
        Some(bin) => Some(bin),
        None if std::env::var_os("CI").is_some() => {
            panic!("CI is set but `bazel` is not on PATH (apt-get install bazel-bootstrap)")
        }
        None => {
            eprintln!(
                "skipping: `bazel` is not on PATH (apt-get install bazel-bootstrap; with CI set this fails)"
            );
            None
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(crate) fn fixture_archive(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/archives")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub(crate) fn release_path(name: &str) -> String {
    format!("/releases/{name}")
}

/// The mirror path for an upstream URL `http://{host}/releases/{name}`.
fn mirror_path(host: &str, name: &str) -> String {
    format!("/mirror/{host}{}", release_path(name))
}

pub(crate) fn original_files() -> BTreeMap<String, Vec<u8>> {
    ARCHIVES
        .iter()
        .map(|name| (release_path(name), fixture_archive(name)))
        .collect()
}

pub(crate) fn one_hit_per_archive() -> BTreeMap<String, u32> {
    ARCHIVES
        .iter()
        .map(|name| (release_path(name), 1))
        .collect()
}

/// The transparent door with real Bazel: a WORKSPACE fetches real BCR registry files
/// (`http_file` with the upstream registry's own URLs and their sha256) through the
/// downloader config the server generates for its upstream registry. Bazel verifies the
/// bytes; the upstream is asked once per file; with the upstream down and Bazel's caches gone
/// the pins still build; a module the internal registry holds is a 404 through that door, so
/// Bazel's fetch of it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bazel_fetches_upstream_registry_files_through_the_transparent_door() {
    let Some(bin) = bazel_or_skip() else { return };
    let wanted = [
        "modules/zlib/1.3.1/MODULE.bazel",
        "modules/zlib/1.3.1/source.json",
    ];
    let mut files = crate::support::fixtures::bcr_snapshot_files(|rel| wanted.contains(&rel));
    assert_eq!(files.len(), 2, "{:?}", files.keys());
    files.insert(
        "/modules/hello_lib/metadata.json".to_owned(),
        br#"{"versions": ["9.9.9"]}"#.to_vec(),
    );
    let mut upstream = Upstream::start_with_files(files.clone()).await;
    let data = tempfile::tempdir().expect("tempdir");
    let registry = example_registry();
    let base = format!("{}/", upstream.origin());
    let server = TestServer::start_exact(
        &[
            ("registry", path_str(&registry)),
            ("data", path_str(data.path())),
            ("upstream", &base),
        ],
        None,
        &[],
    )
    .await;
    let http_file = |name: &str, path: &str, sha256: &str| {
        format!(
            "http_file(\n    name = \"{name}\",\n    urls = [\"{base}{path}\"],\n    \
             sha256 = \"{sha256}\",\n    downloaded_file_path = \"f\",\n)\n"
        )
    };
    let mut workspace =
        String::from("load(\"@bazel_tools//tools/build_defs/repo:http.bzl\", \"http_file\")\n");
    workspace += &http_file(
        "zlib_module",
        wanted[0],
        &sha256_hex(&files[&format!("/{}", wanted[0])]),
    );
    workspace += &http_file(
        "zlib_source",
        wanted[1],
        &sha256_hex(&files[&format!("/{}", wanted[1])]),
    );
    workspace += &http_file(
        "owned",
        "modules/hello_lib/metadata.json",
        &sha256_hex(&files["/modules/hello_lib/metadata.json"]),
    );
    let genrule = |name: &str, srcs: &str| {
        format!(
            "genrule(\n    name = \"{name}\",\n    srcs = [{srcs}],\n    outs = [\"{name}.txt\"],\n    \
             cmd = \"cat $(SRCS) > $@\",\n)\n"
        )
    };
    let bazel = Bazel::with_workspace(
        bin,
        &[
            ("WORKSPACE", workspace),
            (
                "BUILD",
                genrule("combined", "\"@zlib_module//file\", \"@zlib_source//file\""),
            ),
            ("owned/BUILD", genrule("owned", "\"@owned//file\"")),
        ],
    );
    let cfg = downloader_config(&server).await;
    assert!(
        cfg.contains(&format!(
            "rewrite ({}/.*)",
            upstream.host().replace('.', "\\.")
        )),
        "{cfg}"
    );
    let flag = bazel.write_downloader_config(&cfg);
    let expected: Vec<u8> = [
        files[&format!("/{}", wanted[0])].clone(),
        files[&format!("/{}", wanted[1])].clone(),
    ]
    .concat();
    let output = || std::fs::read(bazel.ws().join("bazel-bin/combined.txt")).expect("output");

    bazel
        .build(&[&flag])
        .assert_ok("build through the transparent door");
    assert!(output() == expected, "the upstream's bytes");
    let hits = upstream.hits_by_path();
    for path in wanted {
        assert_eq!(hits.get(&format!("/{path}")), Some(&1), "{hits:?}");
    }

    upstream.stop().await;
    bazel.forget_downloads();
    bazel
        .build(&[&flag])
        .assert_ok("build with the upstream down");
    assert!(output() == expected, "the pinned bytes");

    // Ownership: hello_lib is ours, so through the upstream's URL it does not exist.
    upstream.restart().await;
    let owned = bazel.run(&[
        "build",
        "--color=no",
        "--curses=no",
        "--spawn_strategy=local",
        &flag,
        "//owned:all",
    ]);
    assert!(
        !owned.success(),
        "an owned module's file was fetched through the door"
    );
    assert!(owned.log.contains("404"), "{}", owned.tail());
    assert_eq!(upstream.gets("/modules/hello_lib/metadata.json"), 0);

    drop(bazel);
    server.stop().await;
    upstream.stop().await;
}

/// Writes `policy/policy.toml` allowing the upstream; returns the policy folder.
pub(crate) fn write_policy(dir: &Path, upstream: &Upstream) -> PathBuf {
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).expect("mkdir policy");
    std::fs::write(
        policy.join("policy.toml"),
        format!(
            "[[upstream]]\nprefix = \"{}/\"\nallow_private = true\n",
            upstream.origin()
        ),
    )
    .expect("write policy.toml");
    policy
}

/// The server's downloader config, as Bazel would be given it.
async fn downloader_config(server: &TestServer) -> String {
    let resp = server.get("/bazel/downloader.cfg").await;
    assert_eq!(resp.status(), 200, "GET /bazel/downloader.cfg");
    let text = resp.text().await.expect("downloader.cfg body");
    eprintln!("downloader.cfg:\n{text}");
    text
}

// ---------------------------------------------------------------------------------------------
// Bazel: a workspace, an output root and a repository cache in one temp dir
// ---------------------------------------------------------------------------------------------

pub(crate) struct Bazel {
    bin: PathBuf,
    /// `ws/` (the workspace), `root/` (output user root), `repo-cache/`, `logs/`.
    dir: tempfile::TempDir,
    runs: AtomicU32,
    /// Extra startup options (the same on every call, or Bazel restarts its server).
    startup: Vec<String>,
}

impl Bazel {
    /// Copies the fixture workspace with its URLs pointing at `upstream` (`http://host:port`).
    pub(crate) fn new(bin: PathBuf, upstream: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bazel_workspace");
        let ws = dir.path().join("ws");
        crate::support::copy_tree(&fixture, &ws);
        let template = std::fs::read_to_string(ws.join("WORKSPACE")).expect("read WORKSPACE");
        assert!(template.contains("@UPSTREAM@"), "WORKSPACE has @UPSTREAM@");
        for name in ARCHIVES {
            let digest = sha256_hex(&fixture_archive(name));
            assert!(
                template.contains(&digest),
                "the fixture WORKSPACE must pin {name} at sha256 {digest} (archive regenerated?)"
            );
        }
        std::fs::write(
            ws.join("WORKSPACE"),
            template.replace("@UPSTREAM@", upstream),
        )
        .expect("write WORKSPACE");
        std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir logs");
        Self {
            bin,
            dir,
            runs: AtomicU32::new(0),
            startup: Vec::new(),
        }
    }

    /// A workspace of the given files (path in the workspace, contents), not the fixture.
    fn with_workspace(bin: PathBuf, files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let path = dir.path().join("ws").join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, text).expect("write workspace file");
        }
        std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir logs");
        Self {
            bin,
            dir,
            runs: AtomicU32::new(0),
            startup: Vec::new(),
        }
    }

    /// Makes Bazel's JVM trust the CA in `ca` (PEM) for HTTPS, through a trust store made
    /// with the JDK's `keytool`; before the first command.
    pub(crate) fn trust_ca(&mut self, ca: &Path) {
        let store = self.dir.path().join("truststore.p12");
        let out = Command::new("keytool")
            .args([
                "-importcert",
                "-noprompt",
                "-alias",
                "gf-test-ca",
                "-storepass",
                "changeit",
            ])
            .arg("-file")
            .arg(ca)
            .arg("-keystore")
            .arg(&store)
            .output()
            .expect("run keytool (it comes with Bazel's JDK)");
        assert!(
            out.status.success(),
            "keytool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.startup = vec![
            format!(
                "--host_jvm_args=-Djavax.net.ssl.trustStore={}",
                store.display()
            ),
            "--host_jvm_args=-Djavax.net.ssl.trustStorePassword=changeit".to_owned(),
        ];
    }

    pub(crate) fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    fn repo_cache(&self) -> PathBuf {
        self.dir.path().join("repo-cache")
    }

    /// Writes a downloader config file; returns the flag that uses it.
    pub(crate) fn write_downloader_config(&self, text: &str) -> String {
        let path = self.dir.path().join("downloader.cfg");
        std::fs::write(&path, text).expect("write downloader.cfg");
        // Bazel 4.2 resolves a relative path against the server's cwd: always pass it absolute.
        format!("--experimental_downloader_config={}", path.display())
    }

    /// `bazel build //:all` with this test's repository cache.
    pub(crate) fn build(&self, extra: &[&str]) -> Outcome {
        let cache = format!("--repository_cache={}", self.repo_cache().display());
        let mut args = vec![
            "build",
            "--color=no",
            "--curses=no",
            // No sandbox: nothing here needs one, and containers may forbid namespaces.
            "--spawn_strategy=local",
            &cache,
        ];
        args.extend_from_slice(extra);
        args.push("//:all");
        self.run(&args)
    }

    /// Forgets every download: the output base (`clean --expunge`, which also stops the Bazel
    /// server) and the repository cache.
    pub(crate) fn forget_downloads(&self) {
        self.run(&["clean", "--expunge", "--color=no", "--curses=no"])
            .assert_ok("clean --expunge");
        match std::fs::remove_dir_all(self.repo_cache()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove the repository cache: {e}"),
        }
    }

    /// The last build used the original archives.
    pub(crate) fn assert_original_output(&self) {
        let path = self.ws().join("bazel-bin/combined.txt");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        for line in EXPECTED_OUTPUT {
            assert!(text.contains(line), "{line:?} in the build output:\n{text}");
        }
    }

    /// Runs one Bazel command in the workspace; output goes to `logs/NN-<command>.log`.
    fn run(&self, args: &[&str]) -> Outcome {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!(
            "logs/{n:02}-{}.log",
            args.first().unwrap_or(&"bazel")
        ));
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(self.ws())
            // Startup options: identical on every call, or Bazel restarts its server.
            .arg("--nohome_rc")
            .arg(format!(
                "--output_user_root={}",
                self.dir.path().join("root").display()
            ))
            // Client/server gRPC on 127.0.0.1 rather than [::1].
            .arg("--host_jvm_args=-Djava.net.preferIPv4Stack=true")
            // A server orphaned by a killed test goes away by itself.
            .arg("--max_idle_secs=600")
            .args(&self.startup)
            .args(args);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        run_bounded(
            format!("bazel {}", args.join(" ")),
            &mut cmd,
            &log,
            BAZEL_TIMEOUT,
        )
    }
}

impl Drop for Bazel {
    fn drop(&mut self) {
        // Bounded like every other call; the result does not matter (there may be no server).
        let out = self.run(&["shutdown"]);
        if !out.success() {
            eprintln!("bazel shutdown: {}", out.tail());
        }
    }
}

/// How a command ended, and everything it printed.
pub(crate) struct Outcome {
    what: String,
    /// `None`: killed at the timeout.
    status: Option<ExitStatus>,
    pub(crate) log: String,
}

impl Outcome {
    pub(crate) fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The last lines of output (the whole log can be long).
    pub(crate) fn tail(&self) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        let start = lines.len().saturating_sub(60);
        format!(
            "`{}` ended with {:?}; last output:\n{}",
            self.what,
            self.status,
            lines[start..].join("\n")
        )
    }

    pub(crate) fn assert_ok(&self, step: &str) {
        assert!(self.success(), "{step}: {}", self.tail());
    }
}

/// Runs `cmd` with stdout and stderr in `log`, killing it after `limit`. Blocks the current
/// worker thread (`block_in_place`), so the servers in this runtime keep answering meanwhile.
fn run_bounded(what: String, cmd: &mut Command, log: &Path, limit: Duration) -> Outcome {
    let file = File::create(log).expect("create log");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone log"))
        .stderr(file);
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let status = tokio::task::block_in_place(|| wait_bounded(&mut child, limit));
    eprintln!(
        "{what}: {status:?} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Outcome {
        what,
        status,
        log: String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned(),
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
