//! The registry read path over a directory: every file, byte for byte, with its headers.
//!
//! Tests that only look at one answer go through [`TestApp`]; the ones that read raw bytes
//! off the wire, refresh in the background or compare the answers given before routing with
//! the router's use the real server.

use axum::body::Body;
use axum::http::Method;

use crate::support::{TestApp, TestServer, copy_tree, example_registry, files_under, sha256_hex};

#[tokio::test]
async fn every_file_is_served_byte_for_byte() {
    let root = example_registry();
    let server = TestServer::start(&root, &[]).await;
    let files = files_under(&root);
    assert!(
        files.len() >= 30,
        "example registry has {} files",
        files.len()
    );
    for rel in &files {
        let on_disk = std::fs::read(root.join(rel)).expect("read");
        let resp = server.get(&format!("/{rel}")).await;
        assert_eq!(resp.status(), 200, "{rel}");
        let etag = resp.headers()["etag"].to_str().expect("etag").to_owned();
        let len: usize = resp.headers()["content-length"]
            .to_str()
            .expect("len")
            .parse()
            .expect("num");
        let body = resp.bytes().await.expect("body");
        assert_eq!(
            sha256_hex(&body),
            sha256_hex(&on_disk),
            "{rel}: served bytes differ from disk"
        );
        assert_eq!(len, on_disk.len(), "{rel}: Content-Length");
        assert_eq!(
            etag,
            format!("\"{}\"", sha256_hex(&on_disk)),
            "{rel}: strong ETag is the sha256"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn content_types_and_cache_control() {
    let app = TestApp::init(&example_registry(), &[]).await;
    let cases = [
        ("/bazel_registry.json", "application/json", "no-cache"),
        (
            "/modules/hello_lib/metadata.json",
            "application/json",
            "no-cache",
        ),
        (
            "/modules/hello_lib/1.2.0/MODULE.bazel",
            "text/plain; charset=utf-8",
            "immutable",
        ),
        (
            "/modules/hello_lib/1.2.0/source.json",
            "application/json",
            "immutable",
        ),
        (
            "/modules/hello_lib/1.2.0/presubmit.yml",
            "application/yaml",
            "immutable",
        ),
        (
            "/modules/hello_lib/1.1.0.bcr.1/patches/fix_build.patch",
            "text/x-diff",
            "immutable",
        ),
        (
            "/modules/greet_overlay/0.2.0/overlay/src/BUILD.bazel",
            "application/octet-stream",
            "immutable",
        ),
    ];
    for (path, content_type, cache) in cases {
        let resp = app.get(path).await;
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.headers["content-type"], content_type, "{path}");
        let cc = resp.headers["cache-control"].to_str().expect("cc");
        assert!(cc.contains(cache), "{path}: cache-control {cc}");
        assert!(
            resp.headers.get("content-encoding").is_none(),
            "{path}: never re-encoded"
        );
    }
}

#[tokio::test]
async fn head_matches_get_without_a_body() {
    let server = TestServer::start(&example_registry(), &[]).await;
    for path in [
        "/bazel_registry.json",
        "/modules/app_toolkit/metadata.json",
        "/modules/app_toolkit/1.0.0-rc.1/MODULE.bazel",
        "/modules/greet_overlay/0.1.0/overlay/BUILD.bazel",
    ] {
        let get = server.get(path).await;
        let get_len = get.headers()["content-length"].clone();
        let get_etag = get.headers()["etag"].clone();
        let raw = server.raw("HEAD", path).await;
        assert_eq!(raw.status, 200, "{path}");
        assert_eq!(
            raw.header("content-length"),
            get_len.to_str().ok(),
            "{path}"
        );
        assert_eq!(raw.header("etag"), get_etag.to_str().ok(), "{path}");
        assert!(raw.body.is_empty(), "{path}: HEAD has no body");
    }
    let missing = server.head("/modules/nope/1.0/MODULE.bazel").await;
    assert_eq!(missing.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn absent_things_are_a_plain_404() {
    let app = TestApp::init(&example_registry(), &[]).await;
    for path in [
        "/modules/no_such_module/1.0.0/MODULE.bazel",
        "/modules/no_such_module/metadata.json",
        "/modules/hello_lib/9.9.9/MODULE.bazel",
        "/modules/hello_lib/9.9.9/source.json",
        "/modules/hello_lib/1.2.0/attestations.json",
        "/modules/hello_lib/1.2.0/patches/none.patch",
        "/modules/hello_lib/1.1.0/presubmit.yml",
        "/modules/greet_overlay/0.2.0/overlay/missing/BUILD",
        // Not listed in source.json overlay: the Bazel 7.2.0 location serves nothing else.
        "/modules/hello_lib/1.2.0/hello.cc",
        "/",
        "/index.html",
        "/modules",
        "/modules/hello_lib",
        "/modules/hello_lib/1.2.0",
    ] {
        let resp = app.get(path).await;
        assert_eq!(resp.status, 404, "{path}");
        assert!(
            resp.headers.get("location").is_none(),
            "{path}: never a redirect"
        );
        let ct = resp.headers["content-type"]
            .to_str()
            .expect("ct")
            .to_owned();
        assert!(ct.starts_with("text/plain"), "{path}: {ct}");
        let body = resp.text();
        assert!(
            body.len() < 200 && !body.contains('<'),
            "{path}: plain body {body:?}"
        );
    }
}

#[tokio::test]
async fn overlay_is_also_served_where_bazel_7_2_0_looked() {
    let app = TestApp::init(&example_registry(), &[]).await;
    let new = app
        .get("/modules/greet_overlay/0.2.0/overlay/src/BUILD.bazel")
        .await;
    assert_eq!(new.status, 200);
    let new = new.body;
    let old = app
        .get("/modules/greet_overlay/0.2.0/src/BUILD.bazel")
        .await;
    assert_eq!(old.status, 200);
    assert_eq!(old.body, new);
}

/// Literal dot segments below a version folder resolve inside the module's folder, as a static
/// server (the BCR's) resolves them: Bazel appends a patch's name from `source.json` to the
/// version's `patches/` URL as written, and the BCR's grpc 1.62.1.bcr.1 names another
/// version's patches as `../../1.62.1/patches/...`. Leaving the module's folder, or a dot
/// segment in the name or version, is still a 400.
#[tokio::test]
async fn dot_segments_resolve_inside_the_module_only() {
    let app = TestApp::init(&example_registry(), &[]).await;
    let file = |p: &str| std::fs::read(example_registry().join(p)).expect("fixture");
    for (asked, served) in [
        (
            "/modules/greet_overlay/0.1.0/overlay/src/../BUILD.bazel",
            "modules/greet_overlay/0.1.0/overlay/BUILD.bazel",
        ),
        (
            "/modules/greet_overlay/0.1.0/patches/../../0.2.0/overlay/src/./BUILD.bazel",
            "modules/greet_overlay/0.2.0/overlay/src/BUILD.bazel",
        ),
    ] {
        let got = app.get(asked).await;
        assert_eq!(got.status, 200, "{asked}");
        assert_eq!(got.body.as_ref(), file(served).as_slice(), "{asked}");
    }
    for refused in [
        "/modules/greet_overlay/0.1.0/../../hello_lib/metadata.json",
        "/modules/greet_overlay/0.1.0/overlay/../../../../etc/passwd",
        "/modules/greet_overlay/../greet_overlay/0.1.0/MODULE.bazel",
        "/modules/greet_overlay/0.1.0/overlay/..",
        "/modules/greet_overlay/0.1.0/overlay/%2e%2e/BUILD.bazel",
    ] {
        assert_eq!(app.get(refused).await.status, 400, "{refused}");
    }
}

#[tokio::test]
async fn if_none_match_gives_304() {
    let app = TestApp::init(&example_registry(), &[]).await;
    let path = "/modules/hello_lib/1.2.0/source.json";
    let etag = app.get(path).await.headers["etag"].clone();
    let resp = app
        .send(
            Method::GET,
            path,
            &[("if-none-match", etag.to_str().expect("etag"))],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, 304);
    assert_eq!(resp.headers["etag"], etag);
    let resp = app
        .send(
            Method::GET,
            path,
            &[("if-none-match", "\"other\"")],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn gzip_is_never_applied() {
    let server = TestServer::start(&example_registry(), &[]).await;
    let raw =
        crate::support::raw_request(server.addr(), "GET", "/modules/hello_lib/metadata.json").await;
    assert_eq!(raw.status, 200);
    assert!(raw.header("content-encoding").is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_directory_registry_picks_up_new_versions_on_refresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&example_registry(), dir.path());
    // No polling: only the refresh endpoint may change what is served.
    let server = TestServer::start_with_env(
        dir.path(),
        &[],
        &[("GF_REGISTRY_POLL_INTERVAL_SECONDS", "0")],
    )
    .await;
    let path = "/modules/hello_lib/1.3.0/MODULE.bazel";
    assert_eq!(server.get(path).await.status(), 404);
    let version_dir = dir.path().join("modules/hello_lib/1.3.0");
    std::fs::create_dir_all(&version_dir).expect("mkdir");
    let module = "module(name = \"hello_lib\", version = \"1.3.0\")\n";
    std::fs::write(version_dir.join("MODULE.bazel"), module).expect("write");
    // Served without waiting for a poll or refresh (within the one-second folder cache).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.get(path).await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "new version folder not served within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let resp = server.post("/admin/registry/refresh").await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["switched"], true);
    let resp = server.get(path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("text"), module);
    server.stop().await;
}

#[tokio::test]
async fn a_changed_metadata_json_is_seen_quickly_in_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&example_registry(), dir.path());
    let server = TestServer::start(dir.path(), &[]).await;
    let path = "/modules/hello_lib/metadata.json";
    let before = server.get(path).await.bytes().await.expect("body");
    let changed = String::from_utf8(before.to_vec()).expect("utf8").replace(
        "\"yanked_versions\": {",
        "\"yanked_versions\": {\n        \"1.1.0\": \"broken build\",",
    );
    std::fs::write(dir.path().join("modules/hello_lib/metadata.json"), &changed).expect("write");
    // Bounded wait: mutable files of a live directory are cached for at most a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = server.get(path).await.bytes().await.expect("body");
        if now == changed.as_bytes() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metadata.json change not seen within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn symlinks_in_a_directory_registry_are_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&example_registry(), dir.path());
    let secret = tempfile::tempdir().expect("tempdir");
    std::fs::write(secret.path().join("secret.txt"), "secret").expect("write");
    let overlay = dir.path().join("modules/greet_overlay/0.2.0/overlay");
    std::os::unix::fs::symlink(secret.path().join("secret.txt"), overlay.join("link.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(secret.path(), overlay.join("linkdir")).expect("symlink");
    let server = TestServer::start(dir.path(), &[]).await;
    assert_eq!(
        server
            .get("/modules/greet_overlay/0.2.0/overlay/link.txt")
            .await
            .status(),
        404
    );
    assert_eq!(
        server
            .get("/modules/greet_overlay/0.2.0/overlay/linkdir/secret.txt")
            .await
            .status(),
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn concurrent_cold_reads_agree_and_are_cached() {
    let server = TestServer::start(&example_registry(), &[]).await;
    let path = "/modules/app_toolkit/1.0.0/source.json";
    let want = std::fs::read(example_registry().join("modules/app_toolkit/1.0.0/source.json"))
        .expect("read");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = server.client.clone();
        let url = server.url(path);
        tasks.push(tokio::spawn(async move {
            client
                .get(url)
                .send()
                .await
                .expect("send")
                .bytes()
                .await
                .expect("body")
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), want);
    }
    // However the 32 interleaved, a request after them is answered from the cache.
    assert_eq!(server.get(path).await.bytes().await.expect("body"), want);
    let metrics = server.get("/metrics").await.text().await.expect("text");
    let hits = metric_value(
        &metrics,
        "gf_registry_cache_hits_total{cache=\"registry_files\"}",
    );
    let misses = metric_value(
        &metrics,
        "gf_registry_cache_misses_total{cache=\"registry_files\"}",
    );
    assert!(hits + misses >= 33.0, "{hits} hits + {misses} misses");
    assert!(hits >= 1.0, "later requests hit the cache: {metrics}");
    let loads = metric_value(
        &metrics,
        "gf_registry_cache_loads_total{cache=\"registry_files\"}",
    );
    assert_eq!(
        loads, 1.0,
        "32 requests for one file read the source once:\n{metrics}"
    );
    server.stop().await;
}

pub(crate) fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse().expect("number"))
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn a_new_module_folder_is_served_without_waiting_for_a_poll() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&example_registry(), dir.path());
    let server = TestServer::start_with_env(
        dir.path(),
        &[],
        &[("GF_REGISTRY_POLL_INTERVAL_SECONDS", "0")],
    )
    .await;
    let path = "/modules/brand_new/0.1.0/MODULE.bazel";
    // Unknown, and answered from the index while nothing changed on disk.
    assert_eq!(server.get(path).await.status(), 404);
    let version_dir = dir.path().join("modules/brand_new/0.1.0");
    std::fs::create_dir_all(&version_dir).expect("mkdir");
    std::fs::write(
        version_dir.join("MODULE.bazel"),
        "module(name = \"brand_new\", version = \"0.1.0\")\n",
    )
    .expect("write");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.get(path).await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "new module not served within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Other unknown modules are still 404.
    assert_eq!(
        server
            .get("/modules/still_unknown/1.0/MODULE.bazel")
            .await
            .status(),
        404
    );
    server.stop().await;
}

/// Cached files and sure 404s are answered before routing (the hot path); a query string
/// sends the same request through the router. Both must give the same answer, and both count
/// under the same route label.
#[tokio::test]
async fn answers_before_routing_match_the_router() {
    let root = example_registry();
    let server = TestServer::start(&root, &[]).await;
    let mut paths: Vec<String> = files_under(&root)
        .iter()
        .map(|rel| format!("/{rel}"))
        .collect();
    paths.extend(
        [
            "/modules/no_such_module/1.0.0/MODULE.bazel",
            "/modules/no_such_module/metadata.json",
            "/modules/no_such_module/1.0.0/patches/x.patch",
            "/modules/hello_lib/9.9.9/MODULE.bazel",
            "/modules/hello_lib/1.2.0/hello.cc",
            "/modules/Not..Valid/1.0/MODULE.bazel",
            "/modules/no_such_module/not a version/MODULE.bazel",
        ]
        .map(str::to_owned),
    );
    let shown = [
        "content-type",
        "content-length",
        "etag",
        "cache-control",
        "x-content-type-options",
    ];
    for path in &paths {
        // The first request fills the cache; the second may be answered before routing.
        let _ = server.raw("GET", path).await;
        for method in ["GET", "HEAD"] {
            let fast = server.raw(method, path).await;
            let routed = server.raw(method, &format!("{path}?via=router")).await;
            assert_eq!(fast.status, routed.status, "{method} {path}");
            assert_eq!(fast.body, routed.body, "{method} {path}: body");
            for h in shown {
                assert_eq!(fast.header(h), routed.header(h), "{method} {path}: {h}");
            }
        }
    }
    // A conditional request, both ways.
    let etag = server.get("/bazel_registry.json").await.headers()["etag"]
        .to_str()
        .expect("etag")
        .to_owned();
    for path in ["/bazel_registry.json", "/bazel_registry.json?via=router"] {
        let resp = server
            .client
            .get(server.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 304, "{path}");
    }
    // Both ways count under the router's route label.
    let metrics = server.get("/metrics").await.text().await.expect("metrics");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("gf_registry_http_requests_total{")
                && l.contains("route=\"/modules/{name}/metadata.json\"")
                && l.contains("method=\"HEAD\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no HEAD metadata.json line in {metrics}"));
    let count: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("count");
    let metadata_files = paths
        .iter()
        .filter(|p| p.ends_with("/metadata.json"))
        .count();
    let present = files_under(&root)
        .iter()
        .filter(|p| p.ends_with("/metadata.json"))
        .count();
    assert!(
        metadata_files > present,
        "absent metadata paths are included"
    );
    assert_eq!(count, (2 * present) as f64, "{line}");
    server.stop().await;
}
