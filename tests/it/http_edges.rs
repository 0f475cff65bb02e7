//! Hostile paths, health, readiness and metrics.

use axum::body::Body;
use axum::http::Method;

use crate::support::{TestApp, TestServer, copy_tree, example_registry};

#[tokio::test]
async fn traversal_attempts_never_leave_the_registry() {
    // A secret beside the registry folder: no request may reach it.
    let outer = tempfile::tempdir().expect("tempdir");
    let root = outer.path().join("registry");
    copy_tree(&example_registry(), &root);
    std::fs::write(outer.path().join("secret.txt"), "TOP-SECRET").expect("write");
    let server = TestServer::start(&root, &[]).await;
    let attempts = [
        "/../secret.txt",
        "/modules/../../secret.txt",
        "/modules/hello_lib/../../../secret.txt",
        "/modules/hello_lib/1.2.0/../../../../secret.txt",
        "/modules/hello_lib/1.2.0/patches/../../../../../secret.txt",
        "/modules/hello_lib/1.2.0/overlay/../../../../../secret.txt",
        "/modules/hello_lib/1.2.0/overlay/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/modules/hello_lib/1.2.0/overlay/%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/modules/hello_lib/1.2.0/overlay/..%2f..%2f..%2fsecret.txt",
        "/modules/hello_lib/1.2.0/overlay/..%5c..%5csecret.txt",
        "/modules/hello_lib/1.2.0/overlay/a%00b",
        "/modules/hello_lib/1.2.0/overlay/%c0%ae%c0%ae/secret.txt",
        "/modules/%2e%2e/metadata.json",
        "/modules/hello_lib/%2e%2e/metadata.json",
        "/modules/hello_lib/1.2.0/patches/%2fetc%2fpasswd",
        "/modules/hello_lib/1.2.0/overlay//etc/passwd",
        "/modules/hello_lib/1.2.0/overlay/\u{ff0e}\u{ff0e}/secret.txt",
        "//etc/passwd",
        "/modules/HELLO_LIB/1.2.0/source.json",
        "/modules/hello_lib/1.2.0+build/source.json",
        "/modules/hello_lib/1.2.0/source.json%00",
        "/modules/hello_lib/1.2.0/overlay/..",
    ];
    for target in attempts {
        // Non-ASCII in a request line is sent as raw UTF-8 bytes.
        let resp = server.raw("GET", target).await;
        assert!(
            resp.status == 400 || resp.status == 404,
            "{target}: status {}",
            resp.status
        );
        let body = String::from_utf8_lossy(&resp.body);
        assert!(
            !body.contains("TOP-SECRET") && !body.contains("root:"),
            "{target}: leaked {body}"
        );
        assert!(resp.header("location").is_none(), "{target}: redirect");
    }
    // The typical ones are refused as bad requests, with the segment at fault named.
    let resp = server
        .raw("GET", "/modules/hello_lib/1.2.0/overlay/%2e%2e/x")
        .await;
    assert_eq!(resp.status, 400);
    assert!(
        String::from_utf8_lossy(&resp.body).contains(".."),
        "names the segment"
    );
    // Names outside the grammar are a 404 that says why: a 400 would make Bazel stop instead
    // of asking the next registry.
    for target in [
        "/modules/Hello/1.0/source.json",
        "/modules/hello/1.0+build/MODULE.bazel",
    ] {
        let resp = server.raw("GET", target).await;
        assert_eq!(resp.status, 404, "{target}");
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        assert!(
            body.contains("Hello") || body.contains("+build"),
            "{target}: {body}"
        );
    }
    // The server is still healthy.
    assert_eq!(server.get("/healthz").await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start(&example_registry(), &[]).await;
    assert_eq!(server.get("/healthz").await.status(), 200);
    assert_eq!(server.get("/readyz").await.status(), 200);
    assert_eq!(
        server
            .get("/modules/hello_lib/1.2.0/MODULE.bazel")
            .await
            .status(),
        200
    );
    // Repeats are answered before routing (a cache hit, a sure 404); they count in the
    // same series as the router's answers.
    for _ in 0..3 {
        let resp = server.get("/modules/hello_lib/1.2.0/MODULE.bazel").await;
        assert_eq!(resp.status(), 200);
    }
    let resp = server.head("/modules/hello_lib/1.2.0/MODULE.bazel").await;
    assert_eq!(resp.status(), 200);
    for _ in 0..2 {
        assert_eq!(
            server.get("/modules/nope/1.0/MODULE.bazel").await.status(),
            404
        );
    }
    let resp = server.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("text");
    for needle in [
        "gf_registry_http_requests_total{route=\"/modules/{name}/{version}/{*file}\",method=\"GET\",status=\"200\"} 4",
        "gf_registry_http_requests_total{route=\"/modules/{name}/{version}/{*file}\",method=\"HEAD\",status=\"200\"} 1",
        "gf_registry_http_requests_total{route=\"/modules/{name}/{version}/{*file}\",method=\"GET\",status=\"404\"} 2",
        "gf_registry_http_request_duration_seconds_count{route=\"/modules/{name}/{version}/{*file}\",method=\"GET\",status=\"200\"} 4",
        "gf_registry_http_request_duration_seconds_bucket{",
        "gf_registry_cache_misses_total{cache=\"registry_files\"}",
        "gf_registry_registry_modules{cache=\"registry_files\"} 3",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn readiness_fails_when_a_storage_role_is_gone() {
    let data = tempfile::tempdir().expect("tempdir");
    let cas = data.path().join("cas");
    let app = TestApp::init(
        &example_registry(),
        &[("data", &data.path().display().to_string())],
    )
    .await;
    assert_eq!(app.get("/readyz").await.status, 200);
    // Replace the cas folder by a file: the backend can no longer list it.
    std::fs::remove_dir_all(&cas).expect("rm");
    std::fs::write(&cas, "not a folder").expect("write");
    let resp = app.get("/readyz").await;
    assert_eq!(resp.status, 503);
    let body = resp.text();
    assert!(body.contains("cas"), "names the role: {body}");
    // Liveness is unaffected.
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn other_methods_are_refused() {
    let app = TestApp::init(&example_registry(), &[]).await;
    let resp = app
        .send(
            Method::PUT,
            "/modules/hello_lib/metadata.json",
            &[],
            Body::from("x"),
        )
        .await;
    assert_eq!(resp.status, 405);
    let resp = app
        .send(
            Method::DELETE,
            "/modules/hello_lib/1.2.0/source.json",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, 405);
}
