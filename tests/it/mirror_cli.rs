//! The `mirror` commands against a data folder filled by a real server: retention, exports,
//! drift probes and the durable-authority gate.

use std::process::Command;

use crate::support::Upstream;
use crate::support::{TestServer, example_registry, sha256_hex};

/// A data folder, a policy folder allowing `upstream`, and the flags that name them.
struct Setup {
    data: tempfile::TempDir,
    policy: tempfile::TempDir,
}

impl Setup {
    fn new(upstream: &Upstream, extra_policy: &str, candidates: &str) -> Self {
        let policy = tempfile::tempdir().expect("tempdir");
        let toml = format!(
            "[[upstream]]\nprefix = \"{}/\"\nallow_private = true\n{extra_policy}",
            upstream.origin()
        );
        std::fs::write(policy.path().join("policy.toml"), toml).expect("policy");
        std::fs::write(policy.path().join("candidates.json"), candidates).expect("candidates");
        Self {
            data: tempfile::tempdir().expect("tempdir"),
            policy,
        }
    }

    fn flags(&self) -> Vec<(&'static str, String)> {
        vec![
            ("data", self.data.path().display().to_string()),
            ("mirror-policy", self.policy.path().display().to_string()),
        ]
    }

    async fn server(&self) -> TestServer {
        let flags = self.flags();
        let borrowed: Vec<(&'static str, &str)> =
            flags.iter().map(|(k, v)| (*k, v.as_str())).collect();
        TestServer::start_with_env(
            &example_registry(),
            &borrowed,
            &[("GF_REGISTRY_GC_INTERVAL_SECONDS", "0")],
        )
        .await
    }

    /// Runs `gf-registry mirror ARGS --data .. --mirror-policy .. --registry ..` off the runtime.
    async fn mirror(&self, args: &[&str]) -> (i32, String, String) {
        self.run("mirror", args).await
    }

    /// Runs `gf-registry storage ARGS ...` likewise.
    async fn mirror_storage(&self, args: &[&str]) -> (i32, String, String) {
        self.run("storage", args).await
    }

    async fn run(&self, group: &str, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gf-registry"));
        cmd.arg(group).args(args);
        for (k, v) in self.flags() {
            cmd.arg(format!("--{k}")).arg(v);
        }
        cmd.arg("--registry").arg(example_registry());
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run"))
            .await
            .expect("join");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

async fn fetch(server: &TestServer, upstream: &Upstream, path: &str) -> Vec<u8> {
    let resp = server
        .get(&format!("/mirror/{}{path}", upstream.host()))
        .await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.bytes().await.expect("body").to_vec()
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sri(bytes: &[u8]) -> String {
    gf_registry::registry::Integrity::of(gf_registry::registry::Algorithm::Sha256, bytes)
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_evicts_unpinned_blobs_over_budget_and_keeps_pinned_ones() {
    let mut upstream = Upstream::start().await;
    let (a, b, c) = (data(300_000, 1), data(300_000, 2), data(300_000, 3));
    upstream.serve_bytes("/a.bin", a.clone());
    upstream.serve_bytes("/b.bin", b.clone());
    upstream.serve_bytes("/c.bin", c.clone());
    let candidates = format!(
        r#"[{{"name": "c", "urls": ["{}"], "integrity": "{}", "required": true}}]"#,
        upstream.url("/c.bin"),
        sri(&c)
    );
    let setup = Setup::new(
        &upstream,
        "[retention]\ncached_max_bytes = \"400KB\"\ncached_max_age = \"30d\"\n",
        &candidates,
    );
    let server = setup.server().await;
    for path in ["/a.bin", "/b.bin", "/c.bin"] {
        fetch(&server, &upstream, path).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;

    let (code, out, err) = setup.mirror(&["gc", "--dry-run"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("would evict sha256:{}", sha256_hex(&a))),
        "{out}"
    );
    assert!(out.contains("1 evicted, 1 pinned kept"), "{out}");
    let (code, out, err) = setup.mirror(&["gc"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("evicted sha256:{}", sha256_hex(&a)))
            && !out.contains(&sha256_hex(&b)),
        "{out}"
    );
    assert!(out.contains("unpinned bytes 600000 -> 300000"), "{out}");
    // A second run has nothing left to do.
    let (_, out, _) = setup.mirror(&["gc"]).await;
    assert!(out.starts_with("0 evicted"), "{out}");

    // With the upstream gone, the evicted blob can no longer be served; the others can.
    upstream.stop().await;
    let server = setup.server().await;
    assert_eq!(
        server
            .get(&format!("/cas/sha256/{}", sha256_hex(&a)))
            .await
            .status(),
        404
    );
    assert_eq!(fetch(&server, &upstream, "/b.bin").await, b);
    assert_eq!(fetch(&server, &upstream, "/c.bin").await, c);
    let info: serde_json::Value = server
        .get(&format!("/api/v1/blobs/{}", sha256_hex(&c)))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(info["retention"], "pinned");
    assert_eq!(info["referenced_by"][0], "candidate:c");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_write_verified_files_and_report_distdir_collisions() {
    let upstream = Upstream::start().await;
    let (one, two) = (data(70_000, 5), data(90_000, 6));
    upstream.serve_bytes("/x/v1/pkg.tar.gz", one.clone());
    upstream.serve_bytes("/y/v1/pkg.tar.gz", two.clone());
    upstream.serve_bytes("/z/tool.zip", one.clone());
    let setup = Setup::new(&upstream, "", "[]");
    let server = setup.server().await;
    for p in ["/x/v1/pkg.tar.gz", "/y/v1/pkg.tar.gz", "/z/tool.zip"] {
        fetch(&server, &upstream, p).await;
    }
    server.stop().await;

    let out_dir = tempfile::tempdir().expect("tempdir");
    let cache = out_dir.path().join("cache");
    let (code, out, err) = setup
        .mirror(&[
            "export",
            "--format",
            "repository-cache",
            cache.to_str().expect("utf8"),
            "--all",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    for (bytes, urls) in [
        (&one, vec!["/x/v1/pkg.tar.gz", "/z/tool.zip"]),
        (&two, vec!["/y/v1/pkg.tar.gz"]),
    ] {
        let entry = cache
            .join("content_addressable/sha256")
            .join(sha256_hex(bytes));
        assert_eq!(&std::fs::read(entry.join("file")).expect("file"), bytes);
        for u in urls {
            // The canonical id of a one-URL http_archive is that URL.
            let marker = entry.join(format!("id-{}", sha256_hex(upstream.url(u).as_bytes())));
            assert!(marker.exists(), "missing {}", marker.display());
        }
    }

    let distdir = out_dir.path().join("distdir");
    let (code, out, err) = setup
        .mirror(&[
            "export",
            "--format",
            "distdir",
            distdir.to_str().expect("utf8"),
            "--all",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("collision pkg.tar.gz"), "{out}");
    assert!(
        !distdir.join("pkg.tar.gz").exists(),
        "a collision is never resolved by picking one"
    );
    assert_eq!(
        std::fs::read(distdir.join("tool.zip")).expect("tool.zip"),
        one
    );

    let (code, _, err) = setup
        .mirror(&[
            "export",
            "--format",
            "distdir",
            distdir.to_str().expect("utf8"),
        ])
        .await;
    assert_eq!(code, 2, "a selection is required: {err}");
    assert!(err.contains("--all"), "{err}");
    let (code, _, err) = setup
        .mirror(&[
            "export",
            "--format",
            "distdir",
            distdir.to_str().expect("utf8"),
            "--module",
            "nope@1.0",
        ])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("nope@1.0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_upstream_records_drift_without_changing_what_is_served() {
    let upstream = Upstream::start().await;
    let original = data(50_000, 9);
    upstream.serve_bytes("/lib.tar.gz", original.clone());
    upstream.serve_bytes("/stable.tar.gz", data(1000, 1));
    let setup = Setup::new(&upstream, "", "[]");
    let server = setup.server().await;
    fetch(&server, &upstream, "/lib.tar.gz").await;
    fetch(&server, &upstream, "/stable.tar.gz").await;
    server.stop().await;

    let (code, out, err) = setup.mirror(&["verify-upstream"]).await;
    assert_eq!(code, 0, "{out}{err}");
    upstream.serve_bytes("/lib.tar.gz", data(50_000, 10));
    let (code, out, err) = setup.mirror(&["verify-upstream"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("DRIFT   {}", upstream.url("/lib.tar.gz"))),
        "{out}"
    );
    assert!(
        out.contains(&format!("ok      {}", upstream.url("/stable.tar.gz"))),
        "{out}"
    );
    assert!(err.contains("2 URL(s) probed, 1 drifted"), "{err}");

    let server = setup.server().await;
    assert_eq!(
        fetch(&server, &upstream, "/lib.tar.gz").await,
        original,
        "still the pinned bytes"
    );
    let info: serde_json::Value = server
        .get(&format!("/api/v1/blobs/{}", sha256_hex(&original)))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(info["drift"][0]["url"], upstream.url("/lib.tar.gz"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_authority_gate() {
    let upstream = Upstream::start().await;
    let wanted = data(120_000, 4);
    upstream.serve_bytes("/dist/tool-1.0.tar.gz", wanted.clone());
    let candidates = format!(
        r#"[{{"name": "tool", "urls": ["{}"], "integrity": "{}", "required": true}},
            {{"name": "optional", "urls": ["https://example.invalid/x.tgz"], "integrity": "{}", "required": false}}]"#,
        upstream.url("/dist/tool-1.0.tar.gz"),
        sri(&wanted),
        sri(b"never fetched")
    );
    let setup = Setup::new(&upstream, "", &candidates);
    let (code, out, _) = setup.mirror(&["status"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("tool") && l.contains("candidate")),
        "{out}"
    );

    let (code, out, err) = setup.mirror(&["fetch", "--candidates"]).await;
    assert_eq!(
        code, 1,
        "the optional candidate cannot be fetched: {out}{err}"
    );
    assert!(
        out.contains(&format!(
            "tool: materialized sha256:{}",
            sha256_hex(&wanted)
        )),
        "{out}"
    );
    assert!(out.contains("optional: FAILED"), "{out}");

    let (code, out, err) = setup.mirror(&["status", "--json"]).await;
    assert_eq!(code, 0, "required candidates are durable: {out}{err}");
    let statuses: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(statuses[0]["state"], "durable");
    assert_eq!(statuses[1]["state"], "candidate");

    let server = setup.server().await;
    let resp = server.get("/api/v1/mirror/status").await;
    assert_eq!(resp.status(), 200);
    // Corrupt the stored blob: the restore check catches it and the gate closes.
    let blob = setup
        .data
        .path()
        .join("cas/sha256")
        .join(sha256_hex(&wanted));
    let mut bytes = std::fs::read(&blob).expect("blob");
    bytes[1000] ^= 0xff;
    std::fs::write(&blob, bytes).expect("write");
    let resp = server.get("/api/v1/mirror/status").await;
    assert_eq!(resp.status(), 503);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_verify_scrubs_blobs_and_records_and_fixes_leftovers() {
    let upstream = Upstream::start().await;
    let (good, bad) = (data(1_500_000, 7), data(40_000, 8));
    upstream.serve_bytes("/good.tar.gz", good.clone());
    upstream.serve_bytes("/bad.tar.gz", bad.clone());
    let setup = Setup::new(&upstream, "", "[]");
    let server = setup.server().await;
    fetch(&server, &upstream, "/good.tar.gz").await;
    fetch(&server, &upstream, "/bad.tar.gz").await;
    server.stop().await;
    let (code, out, err) = setup.mirror_storage(&["verify"]).await;
    assert_eq!(code, 0, "{out}{err}");

    // Damage: one flipped byte, an orphan object, an old temporary upload, a broken record.
    let cas = setup.data.path().join("cas");
    let blob = cas.join("sha256").join(sha256_hex(&bad));
    let mut bytes = std::fs::read(&blob).expect("blob");
    bytes[123] ^= 1;
    std::fs::write(&blob, bytes).expect("write");
    let orphan = cas.join("sha256").join("0".repeat(64));
    std::fs::write(&orphan, b"nobody knows me").expect("orphan");
    std::fs::create_dir_all(cas.join("tmp")).expect("tmp");
    let temp = cas.join("tmp/leftover");
    std::fs::write(&temp, b"half an upload").expect("temp");
    // Leftovers younger than an hour may belong to a running server: age them.
    let aged = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&temp)
        .arg(&orphan)
        .status()
        .expect("touch");
    assert!(aged.success());
    std::fs::write(
        setup
            .data
            .path()
            .join("records/events/00000000T000000Z-broken.json"),
        b"{not json",
    )
    .expect("record");

    let (code, out, err) = setup.mirror_storage(&["verify"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("BAD blob sha256:{}", sha256_hex(&bad))),
        "{out}"
    );
    assert!(
        out.contains("BAD record events/00000000T000000Z-broken.json"),
        "{out}"
    );
    assert!(
        out.contains(&format!("orphan sha256/{}", "0".repeat(64))),
        "{out}"
    );
    assert!(out.contains("temp-leftover tmp/leftover"), "{out}");
    assert!(out.contains("1 blob(s) verified, 1 bad"), "{out}");

    let (_, out, _) = setup.mirror_storage(&["verify", "--fix"]).await;
    assert!(out.contains("(removed)"), "{out}");
    assert!(!orphan.exists() && !temp.exists(), "leftovers removed");
    assert!(blob.exists(), "a quarantined blob stays for inspection");
    // The corrupt blob was quarantined by the first scrub: it is no longer served.
    let server = setup.server().await;
    assert_eq!(
        server
            .get(&format!("/cas/sha256/{}", sha256_hex(&bad)))
            .await
            .status(),
        404
    );
    assert_eq!(
        server
            .get(&format!("/cas/sha256/{}", sha256_hex(&good)))
            .await
            .status(),
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_restores_a_quarantined_blob_only_from_matching_bytes() {
    let upstream = Upstream::start().await;
    let (one, two) = (data(1_200_000, 11), data(60_000, 12));
    upstream.serve_bytes("/one.tar.gz", one.clone());
    upstream.serve_bytes("/two.tar.gz", two.clone());
    let setup = Setup::new(&upstream, "", "[]");
    let server = setup.server().await;
    fetch(&server, &upstream, "/one.tar.gz").await;
    fetch(&server, &upstream, "/two.tar.gz").await;
    server.stop().await;
    for bytes in [&one, &two] {
        let blob = setup.data.path().join("cas/sha256").join(sha256_hex(bytes));
        let mut stored = std::fs::read(&blob).expect("blob");
        stored[10] ^= 0x55;
        std::fs::write(&blob, stored).expect("write");
    }
    let (code, out, _) = setup.mirror_storage(&["verify"]).await;
    assert_eq!(code, 1, "{out}");
    // The upstream still has `one`, but now serves other bytes for `two`.
    upstream.serve_bytes("/two.tar.gz", data(60_000, 13));
    let (code, out, err) = setup.mirror(&["repair"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "repaired sha256:{} from {}",
            sha256_hex(&one),
            upstream.url("/one.tar.gz")
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("NOT repaired sha256:{}", sha256_hex(&two))),
        "{out}"
    );
    assert!(
        err.contains("2 quarantined blob(s), 1 not repaired"),
        "{err}"
    );
    let server = setup.server().await;
    assert_eq!(fetch(&server, &upstream, "/one.tar.gz").await, one);
    let resp = server
        .get(&format!("/cas/sha256/{}", sha256_hex(&two)))
        .await;
    assert_eq!(resp.status(), 404, "never restored from other bytes");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_never_fetches_from_the_upstream() {
    let upstream = Upstream::start().await;
    upstream.serve_bytes("/h.tar.gz", data(10_000, 1));
    let setup = Setup::new(&upstream, "", "[]");
    let server = setup.server().await;
    let path = format!("/mirror/{}/h.tar.gz", upstream.host());
    assert_eq!(server.head(&path).await.status(), 404);
    assert_eq!(
        upstream.total_requests(),
        0,
        "a HEAD on a miss sent nothing upstream"
    );
    fetch(&server, &upstream, "/h.tar.gz").await;
    let head = server.head(&path).await;
    assert_eq!(head.status(), 200, "a HEAD on a hit answers");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_is_fetched_again_and_a_pin_seen_on_another_replica_holds() {
    let upstream = Upstream::start().await;
    let original = data(300_000, 21);
    upstream.serve_bytes("/x.tar.gz", original.clone());
    let setup = Setup::new(&upstream, "", "[]");
    // Two replicas on one data folder; the second reads records only on misses.
    let one = setup.server().await;
    let flags = setup.flags();
    let borrowed: Vec<(&'static str, &str)> = flags.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let two = TestServer::start_with_env(
        &example_registry(),
        &borrowed,
        &[
            ("GF_REGISTRY_GC_INTERVAL_SECONDS", "0"),
            ("GF_REGISTRY_RECORDS_REFRESH_SECONDS", "0"),
        ],
    )
    .await;
    assert_eq!(fetch(&one, &upstream, "/x.tar.gz").await, original);
    // The stored object disappears: the pinned URL is fetched again, not answered 404.
    let blob = setup
        .data
        .path()
        .join("cas/sha256")
        .join(sha256_hex(&original));
    std::fs::remove_file(&blob).expect("rm");
    assert_eq!(fetch(&one, &upstream, "/x.tar.gz").await, original);
    assert_eq!(upstream.gets("/x.tar.gz"), 2);
    // Now the object disappears again and the upstream changes its bytes: replica two, which
    // never served the URL, finds the pin in the records and refuses the new bytes.
    std::fs::remove_file(&blob).expect("rm");
    upstream.serve_bytes("/x.tar.gz", data(300_000, 22));
    let resp = two
        .get(&format!("/mirror/{}/x.tar.gz", upstream.host()))
        .await;
    assert_eq!(resp.status(), 502, "never the drifted bytes as a success");
    let body = resp.text().await.expect("text");
    assert!(
        body.contains(&sha256_hex(&original)) || body.contains("expected"),
        "{body}"
    );
    one.stop().await;
    two.stop().await;
}
