//! The read-through of upstream registries (issue 15, named and transparent doors): real BCR data served by the
//! upstream double, byte for byte through the server; ownership; outages; drift; TTLs;
//! replicas on one store; and no upstreams meaning plain 404s as before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use gf_registry::registry::RegistryPath;
use serde_json::Value;

use crate::support::fixtures::{
    bcr_snapshot_files as snapshot_files, example_registry, path_str, sha256_hex,
};
use crate::support::server::TestServer;
use crate::support::upstream::{Answer, Upstream};

/// Whether a module is in the sample: about one in forty, chosen by a stable hash of its name.
fn in_sample(module: &str) -> bool {
    let h = module.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h % 40 == 0 || module == "zlib"
}

/// Every file of the sample modules, and `bazel_registry.json`: URL path -> bytes.
fn sample() -> &'static BTreeMap<String, Vec<u8>> {
    static SAMPLE: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let out = snapshot_files(|rel| {
            rel == "bazel_registry.json"
                || rel
                    .strip_prefix("modules/")
                    .and_then(|r| r.split('/').next())
                    .is_some_and(in_sample)
        });
        assert!(out.len() > 200, "a sample of real size: {}", out.len());
        out
    })
}

/// The sample's module files the named door serves (registry paths; not Bazel 7.2.0 overlay
/// guesses; not `bazel_registry.json`, which the internal registry has).
fn servable() -> Vec<(&'static String, &'static Vec<u8>)> {
    sample()
        .iter()
        .filter(|(p, _)| p.starts_with("/modules/"))
        .filter(|(p, _)| {
            matches!(RegistryPath::parse(p), Ok(rp) if !matches!(rp, RegistryPath::LegacyOverlay(..)))
        })
        .collect()
}

/// A server over the example registry reading through `upstream`, with its data in `data`.
async fn server(data: &Path, upstream: &Upstream, env: &[(&str, &str)]) -> TestServer {
    let registry = example_registry();
    let base = format!("{}/", upstream.origin());
    TestServer::start_exact(
        &[
            ("registry", path_str(&registry)),
            ("data", path_str(data)),
            (
                "mirror-policy",
                path_str(&registry.join("../mirror-policy")),
            ),
            ("upstream", &base),
        ],
        None,
        env,
    )
    .await
}

fn one_module(name: &str) -> Vec<(&'static String, &'static Vec<u8>)> {
    let prefix = format!("/modules/{name}/");
    servable()
        .into_iter()
        .filter(|(p, _)| p.starts_with(&prefix))
        .collect()
}

/// No upstreams configured: a module the registry does not hold is a plain 404, as before,
/// and the status API lists nothing.
#[tokio::test]
async fn no_upstreams_answer_plain_404s() {
    let server = TestServer::start(&example_registry(), &[]).await;
    for path in [
        "/modules/zlib/metadata.json",
        "/modules/zlib/1.3.1/MODULE.bazel",
    ] {
        let (status, body) = server.get_bytes(path).await;
        assert_eq!(status, 404, "{path}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(
        server.get_json("/api/v1/upstreams").await,
        serde_json::json!({ "upstreams": [] })
    );
    server.stop().await;
}

/// Every file of a real BCR sample comes through the named door byte for byte, is pinned in
/// the `cas` role (reachable by digest), and a module the internal registry holds shadows an
/// upstream module of the same name, versions and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sample_served_byte_for_byte_and_internal_names_shadow_upstream_ones() {
    let mut files: Vec<(String, Vec<u8>)> = sample()
        .iter()
        .map(|(p, b)| (p.clone(), b.clone()))
        .collect();
    // An upstream module with the name of an internal one, with a version the internal
    // registry does not have.
    let fake_meta = br#"{"versions": ["1.0.0", "9.9.9"]}"#.to_vec();
    files.push(("/modules/hello_lib/metadata.json".to_owned(), fake_meta));
    files.push((
        "/modules/hello_lib/9.9.9/MODULE.bazel".to_owned(),
        b"module(name = \"hello_lib\", version = \"9.9.9\")\n".to_vec(),
    ));
    let upstream = Upstream::start_with_files(files).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), &upstream, &[]).await;

    let servable = servable();
    assert!(servable.len() > 200, "{}", servable.len());
    for (path, bytes) in &servable {
        let (status, body) = server.get_bytes(path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(body == **bytes, "{path}: not the upstream's bytes");
    }
    // A second pass is answered from the pins: no new upstream requests for immutable files.
    let before = upstream.total_requests();
    for (path, bytes) in &servable {
        if path.ends_with("/metadata.json") {
            continue;
        }
        let (status, body) = server.get_bytes(path).await;
        assert_eq!((status, &body), (200, *bytes), "{path}");
    }
    assert_eq!(
        upstream.total_requests(),
        before,
        "pinned files are not fetched again"
    );
    // Each pinned variant is a blob in the cas role.
    let (path, bytes) = servable
        .iter()
        .find(|(p, _)| p.ends_with("/source.json"))
        .expect("a source.json");
    let (status, body) = server
        .get_bytes(&format!("/cas/sha256/{}", sha256_hex(bytes)))
        .await;
    assert_eq!((status, &body), (200, *bytes), "{path} by digest");
    let immutable = servable
        .iter()
        .filter(|(p, _)| !p.ends_with("/metadata.json"))
        .count();
    let s = status_of(&server).await;
    assert_eq!(s["files_pinned"], immutable, "{s}");
    assert_eq!(s["drift_count"], 0, "{s}");
    assert!(s["last_contact"].is_string(), "{s}");
    // The same figures in /metrics, one series per configured upstream.
    let (_, metrics) = server.get_bytes("/metrics").await;
    let metrics = String::from_utf8(metrics).expect("utf-8");
    let label = format!("{{upstream=\"{}/\"}}", upstream.origin());
    for (name, value) in [
        ("files_pinned", s["files_pinned"].as_u64()),
        ("hits", s["hits"].as_u64()),
        ("misses", s["misses"].as_u64()),
        ("errors", s["errors"].as_u64()),
    ] {
        let suffix = if name == "files_pinned" { "" } else { "_total" };
        let line = format!(
            "gf_registry_upstream_registry_{name}{suffix}{label} {}",
            value.expect("a number")
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} in:\n{metrics}"
        );
    }

    // Ownership: the internal hello_lib wins, and its name is never asked upstream.
    let internal = std::fs::read(example_registry().join("modules/hello_lib/metadata.json"))
        .expect("internal metadata");
    let (status, body) = server.get_bytes("/modules/hello_lib/metadata.json").await;
    assert_eq!((status, body), (200, internal));
    let (status, _) = server
        .get_bytes("/modules/hello_lib/9.9.9/MODULE.bazel")
        .await;
    assert_eq!(
        status, 404,
        "an upstream version of an owned name is invisible"
    );
    assert_eq!(upstream.gets("/modules/hello_lib/metadata.json"), 0);
    assert_eq!(upstream.gets("/modules/hello_lib/9.9.9/MODULE.bazel"), 0);
    // The internal registry's own bazel_registry.json is served, not the upstream's.
    let own = std::fs::read(example_registry().join("bazel_registry.json")).expect("own");
    assert_eq!(server.get_bytes("/bazel_registry.json").await, (200, own));
    // A module nobody has: the upstream's 404.
    let (status, _) = server
        .get_bytes("/modules/no_such_module_x/metadata.json")
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// The transparent door: `GET /bazel/downloader.cfg` rewrites the upstream registry's host to
/// `/mirror/`, and through that rewrite every file of the sample comes byte for byte from the
/// upstream (`bazel_registry.json` too: the upstream's own, not ours), pinned once for both
/// doors; `If-None-Match` gets a `304`; a module name the internal registry holds is a `404`
/// there (so Bazel asks the next registry, ours) and is never asked upstream; a deny glob holds
/// through this door too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transparent_door_serves_the_upstreams_bytes_under_its_own_url() {
    let mut files: Vec<(String, Vec<u8>)> = sample()
        .iter()
        .map(|(p, b)| (p.clone(), b.clone()))
        .collect();
    files.push((
        "/modules/hello_lib/metadata.json".to_owned(),
        br#"{"versions": ["9.9.9"]}"#.to_vec(),
    ));
    // The upstream's bazel_registry.json differs from ours (the snapshot's equals the example
    // registry's), so the test tells which one a door serves.
    let upstreams_json = br#"{
    "mirrors": ["https://mirror.example/"],
    "module_base_path": "modules"
}
"#
    .to_vec();
    files.retain(|(p, _)| p != "/bazel_registry.json");
    files.push(("/bazel_registry.json".to_owned(), upstreams_json.clone()));
    let upstream = Upstream::start_with_files(files).await;
    let data = tempfile::tempdir().expect("tempdir");
    let denied = one_module("zlib");
    let server = server(
        data.path(),
        &upstream,
        &[("GF_REGISTRY_UPSTREAM_MODULES", "!zlib")],
    )
    .await;

    // The rewrite Bazel applies to the registry URL it keeps in .bazelrc.
    let (status, cfg) = server.get_bytes("/bazel/downloader.cfg").await;
    assert_eq!(status, 200);
    let cfg = String::from_utf8(cfg).expect("utf-8");
    let host = upstream.host();
    let rule = format!(
        "rewrite ({}/.*) {}/mirror/$1\n",
        host.replace('.', "\\."),
        server.url("")
    );
    assert_eq!(cfg.matches(&rule).count(), 1, "{rule:?} once in:\n{cfg}");
    let rc = String::from_utf8(server.get_bytes("/bazel/bazelrc").await.1).expect("utf-8");
    assert!(
        rc.contains(&format!("# common --registry={}/\n", upstream.origin())),
        "{rc}"
    );
    let through = |path: &str| format!("/mirror/{host}{path}");

    let mut served = 0;
    for (path, bytes) in sample() {
        let is_registry_path = matches!(
            RegistryPath::parse(path),
            Ok(rp) if !matches!(rp, RegistryPath::LegacyOverlay(..))
        );
        if !is_registry_path || !path.starts_with("/modules/") || path.starts_with("/modules/zlib/")
        {
            continue;
        }
        let (status, body) = server.get_bytes(&through(path)).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(body == *bytes, "{path}: not the upstream's bytes");
        served += 1;
    }
    assert!(served > 200, "{served}");
    let own = std::fs::read(example_registry().join("bazel_registry.json")).expect("own");
    assert_ne!(own, upstreams_json, "the test needs two different files");
    assert_eq!(
        server.get_bytes(&through("/bazel_registry.json")).await,
        (200, upstreams_json)
    );
    assert_eq!(server.get_bytes("/bazel_registry.json").await, (200, own));

    // One pin for both doors: the named door asks the upstream nothing more.
    let before = upstream.total_requests();
    for (path, bytes) in servable() {
        if path.ends_with("/metadata.json") || path.starts_with("/modules/zlib/") {
            continue;
        }
        assert_eq!(server.get_bytes(path).await, (200, bytes.clone()), "{path}");
    }
    assert_eq!(upstream.total_requests(), before, "pins are shared");

    // Conditional requests, as for any registry file.
    let (path, bytes) = servable()
        .into_iter()
        .find(|(p, _)| p.ends_with("/source.json"))
        .expect("a source.json");
    let client = reqwest::Client::new();
    let resp = client
        .get(server.url(&through(path)))
        .header("if-none-match", format!("\"{}\"", sha256_hex(bytes)))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 304, "{path}");

    // Ownership: an internal name is a 404 through this door, never asked upstream.
    let (status, body) = server
        .get_bytes(&through("/modules/hello_lib/metadata.json"))
        .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("hello_lib"), "{body}");
    assert_eq!(upstream.gets("/modules/hello_lib/metadata.json"), 0);

    // The deny glob holds here too.
    for (path, _) in &denied {
        assert_eq!(server.get_bytes(&through(path)).await.0, 404, "{path}");
        assert_eq!(upstream.gets(path), 0, "{path} was asked upstream");
    }
    server.stop().await;
}

/// The first upstream's figures from `GET /api/v1/upstreams`.
async fn status_of(server: &TestServer) -> Value {
    server.get_json("/api/v1/upstreams").await["upstreams"][0].clone()
}

/// With the upstream down, every pinned file is still served identically (metadata.json as
/// last seen), an unpinned module is a 503 (never a 404), a 5xx is a 503, and once the
/// upstream is back the same requests succeed. A second replica on the same store serves
/// the pins without asking the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_keeps_pins_served_and_unpinned_files_are_503() {
    let zlib = one_module("zlib");
    let other = servable()
        .into_iter()
        .find(|(p, _)| !p.starts_with("/modules/zlib/") && p.ends_with("/MODULE.bazel"))
        .expect("another module");
    let mut upstream =
        Upstream::start_with_files(sample().iter().map(|(p, b)| (p.clone(), b.clone()))).await;
    upstream.set("/modules/broken/metadata.json", Answer::Status(500));
    let data = tempfile::tempdir().expect("tempdir");
    let env = [("GF_REGISTRY_UPSTREAM_TTL_SECONDS", "1")];
    let first = server(data.path(), &upstream, &env).await;
    for (path, bytes) in &zlib {
        assert_eq!(
            first.get_bytes(path).await,
            (200, (*bytes).clone()),
            "{path}"
        );
    }
    let (status, body) = first.get_bytes("/modules/broken/metadata.json").await;
    assert_eq!(
        status,
        503,
        "a 5xx upstream: {}",
        String::from_utf8_lossy(&body)
    );

    upstream.stop().await;
    // Past the TTL: metadata.json must be revalidated, and cannot be.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (path, bytes) in &zlib {
        assert_eq!(
            first.get_bytes(path).await,
            (200, (*bytes).clone()),
            "{path} (down)"
        );
    }
    let (status, body) = first.get_bytes(other.0).await;
    assert_eq!(
        status,
        503,
        "{}: {}",
        other.0,
        String::from_utf8_lossy(&body)
    );
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("never pinned"), "the reason is given: {text}");
    let s = status_of(&first).await;
    assert!(s["last_error"].is_string(), "{s}");

    // A replica on the same store, started while the upstream is down.
    let requests = upstream.total_requests();
    let second = server(data.path(), &upstream, &env).await;
    for (path, bytes) in &zlib {
        assert_eq!(
            second.get_bytes(path).await,
            (200, (*bytes).clone()),
            "{path} (replica)"
        );
    }
    assert_eq!(upstream.total_requests(), requests, "the upstream is down");
    second.stop().await;

    upstream.restart().await;
    // It recovers by itself (an upstream that just failed is retried after a second).
    let mut got = (0, Vec::new());
    for _ in 0..50 {
        got = first.get_bytes(other.0).await;
        if got.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (got.0, &got.1),
        (200, other.1),
        "{} after the restart",
        other.0
    );
    first.stop().await;
}

/// A pinned file changed upstream keeps its pinned bytes, and the drift is recorded; a new
/// version added upstream appears in metadata.json once the TTL has passed; an upstream 404
/// is believed for the negative TTL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drift_is_recorded_and_metadata_follows_the_upstream_after_the_ttl() {
    let zlib = one_module("zlib");
    let upstream =
        Upstream::start_with_files(zlib.iter().map(|(p, b)| ((*p).clone(), (*b).clone()))).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = server(
        data.path(),
        &upstream,
        &[
            ("GF_REGISTRY_UPSTREAM_TTL_SECONDS", "3"),
            ("GF_REGISTRY_UPSTREAM_NEGATIVE_TTL_SECONDS", "3"),
        ],
    )
    .await;
    let module = "/modules/zlib/1.3.1/MODULE.bazel";
    let metadata = "/modules/zlib/metadata.json";
    let pinned = sample()[module].clone();
    let meta = sample()[metadata].clone();
    assert_eq!(server.get_bytes(module).await, (200, pinned.clone()));
    assert_eq!(server.get_bytes(metadata).await, (200, meta.clone()));
    let late = "/modules/late_module/metadata.json";
    assert_eq!(server.get_bytes(late).await.0, 404);

    let mut drifted = pinned.clone();
    drifted.extend_from_slice(b"# edited in place upstream\n");
    upstream.serve_bytes(module, drifted.clone());
    let text = String::from_utf8(meta.clone()).expect("utf-8");
    let newer = text.replacen("\"versions\": [", "\"versions\": [\n        \"0.0.1\",", 1);
    assert_ne!(newer, text);
    upstream.serve_bytes(metadata, newer.clone().into_bytes());
    upstream.serve_bytes(late, b"{\"versions\": []}".to_vec());
    // Within the TTLs: what was seen.
    assert_eq!(server.get_bytes(metadata).await, (200, meta.clone()));
    assert_eq!(
        server.get_bytes(late).await.0,
        404,
        "the 404 is believed for a while"
    );

    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(server.get_bytes(metadata).await, (200, newer.into_bytes()));
    assert_eq!(server.get_bytes(late).await.0, 200);
    assert_eq!(
        server.get_bytes(module).await,
        (200, pinned.clone()),
        "the pin holds"
    );
    let mut drift = Value::Null;
    for _ in 0..100 {
        drift = status_of(&server).await;
        if drift["drift_count"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(drift["drift_count"], 1, "{drift}");
    let event = &drift["drift_events"][0];
    assert_eq!(event["path"], "modules/zlib/1.3.1/MODULE.bazel", "{drift}");
    assert_eq!(event["pinned"], sha256_hex(&pinned), "{drift}");
    assert_eq!(event["seen"], sha256_hex(&drifted), "{drift}");
    assert_eq!(
        server.get_bytes(module).await,
        (200, pinned),
        "still the pin"
    );
    // The drifted variant is stored too, reachable by digest.
    let (status, body) = server
        .get_bytes(&format!("/cas/sha256/{}", sha256_hex(&drifted)))
        .await;
    assert_eq!((status, body), (200, drifted));
    server.stop().await;
}

/// `registry.upstream_modules` deny globs hold through the named door: a denied module is a
/// 404 and its name is never asked upstream; others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_upstream_modules_are_never_asked_for() {
    let zlib = one_module("zlib");
    let other = servable()
        .into_iter()
        .find(|(p, _)| !p.starts_with("/modules/zlib/") && p.ends_with("/metadata.json"))
        .expect("another module");
    let upstream = Upstream::start_with_files(
        zlib.iter()
            .chain(std::iter::once(&other))
            .map(|(p, b)| ((*p).clone(), (*b).clone())),
    )
    .await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = server(
        data.path(),
        &upstream,
        &[("GF_REGISTRY_UPSTREAM_MODULES", "!zl*")],
    )
    .await;
    for (path, _) in &zlib {
        assert_eq!(server.get_bytes(path).await.0, 404, "{path}");
        assert_eq!(upstream.gets(path), 0, "{path} was asked upstream");
    }
    assert_eq!(server.get_bytes(other.0).await, (200, other.1.clone()));
    server.stop().await;
}

/// Retention never evicts a pinned upstream file: with a budget of 0 bytes for unreferenced
/// blobs and retention running every second, the pinned files (and the last seen
/// `metadata.json`) are still served byte for byte once the upstream is gone.
#[tokio::test]
async fn retention_keeps_pinned_upstream_files() {
    let zlib = one_module("zlib");
    let mut upstream =
        Upstream::start_with_files(sample().iter().map(|(p, b)| (p.clone(), b.clone()))).await;
    let data = tempfile::tempdir().expect("tempdir");
    let policy = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        policy.path().join("policy.toml"),
        "[retention]\ncached_max_bytes = \"0B\"\ncached_max_age = \"1s\"\n",
    )
    .expect("write policy");
    let base = format!("{}/", upstream.origin());
    let server = TestServer::start_exact(
        &[
            ("registry", path_str(&example_registry())),
            ("data", path_str(data.path())),
            ("mirror-policy", path_str(policy.path())),
            ("upstream", &base),
        ],
        None,
        &[
            ("GF_REGISTRY_GC_INTERVAL_SECONDS", "1"),
            ("GF_REGISTRY_UPSTREAM_TTL_SECONDS", "1"),
        ],
    )
    .await;
    for (path, bytes) in &zlib {
        assert_eq!(
            server.get_bytes(path).await,
            (200, (*bytes).clone()),
            "{path}"
        );
    }
    upstream.stop().await;
    // Several retention runs, each of which would evict every unreferenced blob.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for (path, bytes) in &zlib {
        assert_eq!(
            server.get_bytes(path).await,
            (200, (*bytes).clone()),
            "{path}: evicted by retention while pinned"
        );
    }
    server.stop().await;
}

/// `registry sync --lockfile` with a real lockfile (ARM-software/kleidiai, 75 registry files,
/// all identical in the snapshot) whose registry is the snapshot served on loopback: every
/// file is pinned and matches; a second sync fetches nothing; with the upstream gone, a server
/// on the same data serves every file with the recorded hash; a tampered hash is reported,
/// naming the URL, and exits 1; a lockfile that is not one is refused before anything is
/// fetched, naming the flag and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_sync_pins_a_lockfiles_files_and_reports_a_tampered_hash() {
    let lockfiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/lockfiles");
    let real = std::fs::read_to_string(lockfiles.join("ARM-software_kleidiai.MODULE.bazel.lock"))
        .expect("the shared lockfile");
    let lock: Value = serde_json::from_str(&real).expect("json");
    let hashes = lock["registryFileHashes"]
        .as_object()
        .expect("hashes")
        .clone();
    assert_eq!(hashes.len(), 75);
    let bcr = "https://bcr.bazel.build/";
    let wanted: std::collections::BTreeSet<String> = hashes
        .keys()
        .map(|u| u.strip_prefix(bcr).expect("a BCR URL").to_owned())
        .collect();
    let files = snapshot_files(|rel| wanted.contains(rel));
    assert_eq!(
        files.len(),
        75,
        "every file the lockfile names is in the snapshot"
    );
    let mut upstream = Upstream::start_with_files(files.clone()).await;
    let base = format!("{}/", upstream.origin());
    // The lockfile as Bazel writes it when that registry is its --registry.
    let ours = real.replace(bcr, &base);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let lockfile = dir.path().join("MODULE.bazel.lock");
    std::fs::write(&lockfile, &ours).expect("write lockfile");
    let registry = example_registry();
    let sync = move |lockfile: PathBuf| {
        let mut cmd = crate::support::spawned::bin();
        cmd.args(["registry", "sync", "--lockfile"])
            .arg(&lockfile)
            .arg("--registry")
            .arg(&registry)
            .arg("--data")
            .arg(&data)
            .args(["--upstream", &base]);
        crate::support::spawned::output_within(&mut cmd, Duration::from_secs(120))
    };
    let run = |lockfile: PathBuf| {
        let sync = sync.clone();
        async move {
            tokio::task::spawn_blocking(move || sync(lockfile))
                .await
                .expect("join")
        }
    };

    let (code, out, err) = run(lockfile.clone()).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("75 registry files from 1 lockfile(s): 75 pinned now, 0 already pinned"),
        "{out}"
    );
    assert_eq!(upstream.total_requests(), 75, "one request per file");
    let (code, out, err) = run(lockfile.clone()).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("0 pinned now, 75 already pinned"), "{out}");
    assert_eq!(upstream.total_requests(), 75, "a second sync asks nothing");

    // Tampered: one hash changed. Reported with its URL, exit 1.
    let (url, hash) = hashes.iter().nth(10).expect("an entry");
    let hash = hash.as_str().expect("hex");
    let forged = format!(
        "{}{}",
        &hash[..63],
        if hash.ends_with('0') { '1' } else { '0' }
    );
    let tampered = dir.path().join("tampered.lock");
    std::fs::write(&tampered, ours.replacen(hash, &forged, 1)).expect("write");
    let (code, out, err) = run(tampered).await;
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let url = url.replace(bcr, &format!("{}/", upstream.origin()));
    assert!(
        out.lines()
            .any(|l| l.contains(&url) && l.contains("hash mismatch") && l.contains(&forged)),
        "{out}"
    );
    assert!(out.contains("1 problem(s)"), "{out}");

    // Not a lockfile: refused before anything is fetched, naming flag and file.
    let broken = dir.path().join("broken.lock");
    std::fs::write(&broken, "{\"registryFileHashes\": {\"x\": \"abc\"}}").expect("write");
    let before = upstream.total_requests();
    let (code, _, err) = run(broken.clone()).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--lockfile") && err.contains("broken.lock"),
        "{err}"
    );
    assert_eq!(upstream.total_requests(), before);

    // The upstream gone: a server on the same data serves every file with its recorded hash.
    upstream.stop().await;
    let server = server(&dir.path().join("data"), &upstream, &[]).await;
    for (url, hash) in &hashes {
        let path = &url[bcr.len() - 1..];
        let (status, body) = server.get_bytes(path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(sha256_hex(&body), hash.as_str().expect("hex"), "{path}");
    }
    server.stop().await;
}

/// Runs `git args...` in `dir`, bounded; panics with its output on failure.
fn git_in(dir: &Path, args: &[&str]) {
    let mut cmd = std::process::Command::new("git");
    cmd.current_dir(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args);
    let (code, out, err) =
        crate::support::spawned::output_within(&mut cmd, Duration::from_secs(60));
    assert_eq!(code, 0, "git {args:?}: {out}{err}");
}

/// `clone =`: the BCR read from a local clone of its tree (a directory, then a git repository
/// at a ref), with no network, its URL still its identity: both doors serve the clone's bytes
/// under `https://bcr.bazel.build/`, the downloader config rewrites that host, the status
/// names that URL. The operator refreshes the clone: a new `metadata.json` is served after the
/// TTL, a changed pinned file keeps its pin; with the clone gone the pins are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_read_from_a_local_clone_keep_their_url() {
    let zlib = one_module("zlib");
    assert!(zlib.len() > 5, "{}", zlib.len());
    let meta_path = "/modules/zlib/metadata.json";
    let (module_path, module_bytes) = zlib
        .iter()
        .find(|(p, _)| p.ends_with("/MODULE.bazel"))
        .expect("a MODULE.bazel");
    for kind in ["directory", "git"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("bcr");
        let put = |rel: &str, bytes: &[u8]| {
            let p = tree.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, bytes).expect("write");
        };
        for (p, b) in &zlib {
            put(p, b);
        }
        put("/bazel_registry.json", &sample()["/bazel_registry.json"]);
        let git_ref = if kind == "git" {
            git_in(&tree, &["init", "-q", "-b", "main"]);
            git_in(&tree, &["add", "-A"]);
            git_in(&tree, &["commit", "-q", "-m", "the BCR, cloned"]);
            "ref = \"main\"\n"
        } else {
            ""
        };
        let cfg = dir.path().join("gf.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[registry.upstreams]]\nurl = \"https://bcr.bazel.build/\"\nclone = \"{}\"\n{git_ref}",
                tree.display()
            ),
        )
        .expect("write config");
        let registry = example_registry();
        let data = dir.path().join("data");
        let server = TestServer::start_exact(
            &[("registry", path_str(&registry)), ("data", path_str(&data))],
            Some(&cfg),
            &[("GF_REGISTRY_UPSTREAM_TTL_SECONDS", "1")],
        )
        .await;
        for (path, bytes) in &zlib {
            assert_eq!(
                server.get_bytes(path).await,
                (200, (*bytes).clone()),
                "{kind} {path}"
            );
            let through = format!("/mirror/bcr.bazel.build{path}");
            assert_eq!(
                server.get_bytes(&through).await,
                (200, (*bytes).clone()),
                "{kind} {through}"
            );
        }
        let cfg_text =
            String::from_utf8(server.get_bytes("/bazel/downloader.cfg").await.1).expect("utf-8");
        assert!(
            cfg_text.contains("rewrite (bcr\\.bazel\\.build/.*) "),
            "{cfg_text}"
        );
        let s = status_of(&server).await;
        assert_eq!(s["url"], "https://bcr.bazel.build/", "{s}");
        assert_eq!(s["errors"], 0, "{s}");

        // The operator refreshes the clone.
        let new_meta = br#"{"versions": ["1.3.1", "9.9.9"], "yanked_versions": {}}"#.to_vec();
        put(meta_path, &new_meta);
        put(
            module_path,
            b"module(name = \"zlib\", version = \"tampered\")\n",
        );
        if kind == "git" {
            git_in(&tree, &["commit", "-q", "-a", "-m", "refresh"]);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = server.get_bytes(meta_path).await;
            if (status, &body) == (200, &new_meta) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{kind}: metadata.json did not follow the clone: {status} {}",
                String::from_utf8_lossy(&body)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            server.get_bytes(module_path).await,
            (200, (*module_bytes).clone()),
            "{kind}: the pin holds"
        );

        // The clone gone: the pins are still served.
        std::fs::remove_dir_all(&tree).expect("remove the clone");
        for (path, bytes) in &zlib {
            if path.ends_with("/metadata.json") {
                continue;
            }
            assert_eq!(
                server.get_bytes(path).await,
                (200, (*bytes).clone()),
                "{kind} {path}"
            );
        }
        server.stop().await;
    }
}
