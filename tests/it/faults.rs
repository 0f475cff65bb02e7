//! Faults of the storage backend and of the upstream that the mirror must notice: damaged blob
//! files, encodings smuggled past the identity check, a data folder that refuses writes, clocks
//! that run ahead, and a backend that hangs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Answer, TestServer, Upstream, example_registry, path_str, sha256_hex};

/// Bound on every request the tests make, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A data folder, and a policy folder allowing `upstream`.
struct Setup {
    data: tempfile::TempDir,
    policy: tempfile::TempDir,
}

impl Setup {
    fn new(upstream: &Upstream) -> Self {
        let policy = tempfile::tempdir().expect("tempdir");
        let toml = format!(
            "[[upstream]]\nprefix = \"{}/\"\nallow_private = true\n",
            upstream.origin()
        );
        std::fs::write(policy.path().join("policy.toml"), toml).expect("policy");
        std::fs::write(policy.path().join("candidates.json"), "[]").expect("candidates");
        Self {
            data: tempfile::tempdir().expect("tempdir"),
            policy,
        }
    }

    async fn server(&self) -> TestServer {
        self.server_with_env(&[]).await
    }

    async fn server_with_env(&self, env: &[(&str, &str)]) -> TestServer {
        let mut all = vec![("GF_REGISTRY_GC_INTERVAL_SECONDS", "0")];
        all.extend_from_slice(env);
        TestServer::start_with_env(
            &example_registry(),
            &[
                ("data", path_str(self.data.path())),
                ("mirror-policy", path_str(self.policy.path())),
            ],
            &all,
        )
        .await
    }

    /// Runs `gf-registry storage verify` over the data folder, off the runtime.
    async fn verify(&self) -> (i32, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gf-registry"));
        cmd.args(["storage", "verify", "--data"])
            .arg(self.data.path())
            .arg("--mirror-policy")
            .arg(self.policy.path())
            .arg("--registry")
            .arg(example_registry());
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run"))
            .await
            .expect("join");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn blob_file(&self, bytes: &[u8]) -> std::path::PathBuf {
        self.data.path().join("cas/sha256").join(sha256_hex(bytes))
    }
}

/// Deterministic bytes that differ from chunk to chunk.
fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed) ^ (i as u8))
        .collect()
}

fn mirror_path(up: &Upstream, path: &str) -> String {
    format!("/mirror/{}{path}", up.host())
}

/// The ways a blob file can stop being its blob: bytes appended (the name no longer matches,
/// yet `[0, size)` is intact), bytes cut off, and bytes changed in place at the same size
/// (first chunk, last chunk). `(name, size, damage)`.
type Damage = fn(&Path);

fn damages() -> Vec<(&'static str, usize, Damage)> {
    fn append(p: &Path) {
        let mut b = std::fs::read(p).expect("read");
        b.extend_from_slice(b"appended");
        std::fs::write(p, b).expect("write");
    }
    fn append_one(p: &Path) {
        let mut b = std::fs::read(p).expect("read");
        b.push(0);
        std::fs::write(p, b).expect("write");
    }
    fn truncate_one(p: &Path) {
        let b = std::fs::read(p).expect("read");
        std::fs::write(p, &b[..b.len() - 1]).expect("write");
    }
    fn truncate_chunks(p: &Path) {
        // Shorter than the first chunk's end: a read from the start meets the end early.
        let b = std::fs::read(p).expect("read");
        std::fs::write(p, &b[..1000]).expect("write");
    }
    fn empty(p: &Path) {
        std::fs::write(p, b"").expect("write");
    }
    fn flip_first(p: &Path) {
        let mut b = std::fs::read(p).expect("read");
        b[3] ^= 0x40;
        std::fs::write(p, b).expect("write");
    }
    fn flip_last(p: &Path) {
        let mut b = std::fs::read(p).expect("read");
        let n = b.len();
        b[n - 1] ^= 1;
        std::fs::write(p, b).expect("write");
    }
    vec![
        ("appended", 300_000, append as Damage),
        ("appended-multi-chunk", 2_200_000, append_one),
        ("truncated-by-one", 2_100_000, truncate_one),
        ("truncated-far", 1_500_000, truncate_chunks),
        ("emptied", 50_000, empty),
        ("flipped-first-chunk", 1_300_000, flip_first),
        ("flipped-last-byte", 70_000, flip_last),
    ]
}

/// Fills one blob per kind of damage and a healthy one through a server, then damages the files.
async fn filled_and_damaged(
    upstream: &Upstream,
    setup: &Setup,
) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let healthy = data(400_000, 99);
    upstream.serve_bytes("/healthy.tar.gz", healthy.clone());
    let mut blobs = Vec::new();
    for (i, (name, size, _)) in damages().into_iter().enumerate() {
        let bytes = data(size, u8::try_from(i).expect("few"));
        upstream.serve_bytes(&format!("/{name}.tar.gz"), bytes.clone());
        blobs.push((name.to_owned(), bytes));
    }
    let server = setup.server().await;
    for (name, bytes) in blobs
        .iter()
        .map(|(n, b)| (n.as_str(), b))
        .chain([("healthy", &healthy)])
    {
        let (status, got) = server
            .get_bytes(&mirror_path(upstream, &format!("/{name}.tar.gz")))
            .await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(&got, bytes, "{name}");
    }
    server.stop().await;
    for ((name, bytes), (_, _, damage)) in blobs.iter().zip(damages()) {
        let file = setup.blob_file(bytes);
        assert!(file.exists(), "{name}: {}", file.display());
        damage(&file);
    }
    (blobs, healthy)
}

/// Issue 21, defect 7: `storage verify` read only `[0, size)` and passed a blob file with bytes
/// appended. Every kind of damage must fail the scrub (exit 1, each blob named).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_verify_fails_every_blob_file_that_is_not_its_blob() {
    let upstream = Upstream::start().await;
    let setup = Setup::new(&upstream);
    let (blobs, healthy) = filled_and_damaged(&upstream, &setup).await;
    let (code, out) = setup.verify().await;
    assert_eq!(code, 1, "{out}");
    for (name, bytes) in &blobs {
        assert!(
            out.contains(&format!("BAD blob sha256:{}", sha256_hex(bytes))),
            "{name} not reported: {out}"
        );
    }
    assert!(
        !out.contains(&format!("BAD blob sha256:{}", sha256_hex(&healthy))),
        "{out}"
    );
    assert!(
        out.contains(&format!("1 blob(s) verified, {} bad", blobs.len())),
        "{out}"
    );
}

/// Issue 21, defect 7, on the serving side: no kind of damage is served as a complete `200`
/// (a size mismatch is refused before any byte; changed bytes cut the body at the chunk), and
/// each damaged blob is quarantined: asked again, it is `404`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_file_that_is_not_its_blob_is_never_served_whole_and_is_quarantined() {
    let upstream = Upstream::start().await;
    let setup = Setup::new(&upstream);
    let (blobs, healthy) = filled_and_damaged(&upstream, &setup).await;
    let server = setup.server().await;
    // No pooled connections: a cut body ends its connection, and a request must not be sent
    // on one the server is closing.
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    for (name, bytes) in &blobs {
        let url = server.url(&format!("/cas/sha256/{}", sha256_hex(bytes)));
        // A body cut at its first chunk may end the connection before the headers left:
        // that, too, is a refusal.
        if let Ok(resp) = client.get(&url).send().await {
            let status = resp.status().as_u16();
            let body = resp.bytes().await;
            assert!(
                status != 200 || body.is_err(),
                "{name}: served as {status} with {:?} bytes",
                body.map(|b| b.len())
            );
        }
        // Quarantined at once: the next read is refused before any byte.
        let again = client.get(&url).send().await.expect("request");
        assert_eq!(again.status(), 404, "{name}");
    }
    let (status, got) = server
        .get_bytes(&format!("/cas/sha256/{}", sha256_hex(&healthy)))
        .await;
    assert_eq!((status, got == healthy), (200, true));
    server.stop().await;
}

/// Issue 21, defect 9: only `identity` passed the check, and only on the first
/// `Content-Encoding` line. Every line and every comma-separated item counts, in any case and
/// spacing; a response with any other coding is refused (`502`) and nothing is pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_encoding_other_than_identity_on_any_line_or_item_is_refused() {
    let upstream = Upstream::start().await;
    let setup = Setup::new(&upstream);
    let server = setup.server().await;
    let lines = |values: &[&str]| -> Vec<(String, String)> {
        values
            .iter()
            .map(|v| ("content-encoding".to_owned(), (*v).to_owned()))
            .collect()
    };
    let refused: &[&[&str]] = &[
        &["gzip"],
        &["identity", "gzip"],
        &["gzip", "identity"],
        &["identity", "identity", "br"],
        &["identity, gzip"],
        &["identity,gzip"],
        &["IDENTITY , GZip"],
        &["identity", "Identity, x-gzip"],
        &["deflate"],
    ];
    for (i, values) in refused.iter().enumerate() {
        let path = format!("/refused-{i}.tar.gz");
        let bytes = data(20_000, 40 + u8::try_from(i).expect("few"));
        upstream.set(
            &path,
            Answer::WithHeaders {
                bytes: bytes.clone().into(),
                headers: lines(values),
            },
        );
        let (status, _) = server.get_bytes(&mirror_path(&upstream, &path)).await;
        assert_eq!(status, 502, "{values:?}");
        // Nothing was pinned: with the encoding gone, the URL is fetched and served anew.
        let plain = data(20_000, 140 + u8::try_from(i).expect("few"));
        upstream.serve_bytes(&path, plain.clone());
        let (status, got) = server.get_bytes(&mirror_path(&upstream, &path)).await;
        assert_eq!((status, got == plain), (200, true), "{values:?}");
    }
    let accepted: &[&[&str]] = &[
        &["identity"],
        &["IDENTITY"],
        &[" Identity "],
        &["identity", "identity"],
        &["identity, identity"],
    ];
    for (i, values) in accepted.iter().enumerate() {
        let path = format!("/accepted-{i}.tar.gz");
        let bytes = data(20_000, 80 + u8::try_from(i).expect("few"));
        upstream.set(
            &path,
            Answer::WithHeaders {
                bytes: bytes.clone().into(),
                headers: lines(values),
            },
        );
        let (status, got) = server.get_bytes(&mirror_path(&upstream, &path)).await;
        assert_eq!((status, got == bytes), (200, true), "{values:?}");
    }
    server.stop().await;
}

/// The value of the counter `name` in `/metrics`.
async fn counter(server: &TestServer, name: &str) -> u64 {
    let text = server.get("/metrics").await.text().await.expect("metrics");
    let prefix = format!("gf_registry_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        .parse()
        .expect("counter value")
}

/// Makes `dir` refuse new entries by putting a regular file at its path. The tests run as
/// root, which ignores permission bits, and a read-only mount or a full tmpfs needs
/// privileges a test cannot count on; creating a file under a path that is not a folder fails
/// (`ENOTDIR`) for every user, at the same calls a read-only or full folder fails.
/// The folder itself is kept aside and put back by [`allow_writes`].
fn refuse_writes(dir: &Path) {
    std::fs::create_dir_all(dir).expect("folder");
    std::fs::rename(dir, aside(dir)).expect("folder aside");
    std::fs::write(dir, b"not a folder").expect("file in its place");
}

fn allow_writes(dir: &Path) {
    std::fs::remove_file(dir).expect("remove the file");
    std::fs::rename(aside(dir), dir).expect("folder back");
}

fn aside(dir: &Path) -> std::path::PathBuf {
    dir.with_extension("aside")
}

/// Issue 21, defect 6: a data folder that refuses writes made a fill answer `502` (blaming the
/// upstream), with no log line and no `fills_failed`, while `/readyz` stayed ready. Wherever
/// the refusal hits (the spool, the blob folder, the records), the fill is a storage failure:
/// `503`, counted; `/readyz` notices a folder that takes no new file; nothing is pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_folder_that_refuses_writes_is_a_storage_failure() {
    let upstream = Upstream::start().await;
    let setup = Setup::new(&upstream);
    let server = setup.server().await;
    assert_eq!(server.get("/readyz").await.status(), 200);
    let data_dir = setup.data.path();
    // (folder that refuses, whether /readyz must notice)
    let places = [
        (data_dir.join("cas/tmp"), true),
        (data_dir.join("cas/sha256"), false),
        (data_dir.join("records/pins"), false),
    ];
    for (i, (dir, readiness)) in places.iter().enumerate() {
        let path = format!("/refused-{i}.tar.gz");
        let bytes = data(30_000, 200 + u8::try_from(i).expect("few"));
        upstream.serve_bytes(&path, bytes.clone());
        let failed = counter(&server, "mirror_fills_failed").await;
        refuse_writes(dir);
        if *readiness {
            let ready = server.get("/readyz").await;
            assert_eq!(ready.status(), 503, "{}", dir.display());
        }
        let resp = server.get(&mirror_path(&upstream, &path)).await;
        let status = resp.status().as_u16();
        let body = resp.bytes().await;
        // Before any byte: 503. A refusal after the client has its headers cuts the body.
        assert!(
            status == 503 || (status == 200 && body.is_err()),
            "{}: {status} {:?}",
            dir.display(),
            body.map(|b| b.len())
        );
        assert_eq!(
            counter(&server, "mirror_fills_failed").await,
            failed + 1,
            "{}",
            dir.display()
        );
        allow_writes(dir);
        assert_eq!(server.get("/readyz").await.status(), 200);
        // Nothing was pinned: the URL is filled again, and served whole.
        let (status, got) = server.get_bytes(&mirror_path(&upstream, &path)).await;
        assert_eq!((status, got == bytes), (200, true), "{}", dir.display());
    }
    server.stop().await;
}

/// The URLs replica `server` lists for blob `sha`.
async fn blob_urls(server: &TestServer, sha: &str) -> Vec<String> {
    let resp = server.get(&format!("/api/v1/blobs/{sha}")).await;
    if resp.status() != 200 {
        // Not read yet.
        return Vec::new();
    }
    let info: serde_json::Value = resp.json().await.expect("json");
    info["urls"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| u.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 21, defect 4, between two replicas over one data folder: a record from a replica
/// whose clock reads 2099 (key and content) used to move the other replica's listing past
/// everything real; it then never saw another pin. The reading replica reloads every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_a_clock_far_ahead_hides_nothing_from_another_replica() {
    let upstream = Upstream::start().await;
    let a = data(100_000, 61);
    upstream.serve_bytes("/a.tar.gz", a.clone());
    upstream.serve_bytes("/a-again.tar.gz", a.clone());
    let setup = Setup::new(&upstream);
    let one = setup
        .server_with_env(&[("GF_REGISTRY_RECORDS_REFRESH_SECONDS", "0")])
        .await;
    let two = setup
        .server_with_env(&[("GF_REGISTRY_RECORDS_REFRESH_SECONDS", "1")])
        .await;
    let sha = sha256_hex(&a);
    let (status, got) = one.get_bytes(&mirror_path(&upstream, "/a.tar.gz")).await;
    assert_eq!((status, got == a), (200, true));
    // The skewed replica's pin, as its clock would write it.
    let skewed = upstream.url("/skewed.tar.gz");
    std::fs::write(
        setup
            .data
            .path()
            .join("records/pins/20990101T000000.000000000Z-00000000000000ff-0000000000.json"),
        serde_json::json!({"kind": "pin", "url": skewed, "sha256": sha, "at": "2099-01-01T00:00:00Z"})
            .to_string(),
    )
    .expect("skewed record");
    let wait_for = |want: String| {
        let two = &two;
        let sha = &sha;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                let urls = blob_urls(two, sha).await;
                if urls.contains(&want) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "replica two never saw {want}: {urls:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_for(skewed.clone()).await;
    // A pin written after the skewed record, through replica one: replica two still sees it.
    let (status, got) = one
        .get_bytes(&mirror_path(&upstream, "/a-again.tar.gz"))
        .await;
    assert_eq!((status, got == a), (200, true));
    wait_for(upstream.url("/a-again.tar.gz")).await;
    one.stop().await;
    two.stop().await;
}
