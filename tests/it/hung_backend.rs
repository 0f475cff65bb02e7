//! A hung S3 backend (Garage frozen with SIGSTOP: connections are accepted, nothing answers).
//! Reads and fills that need storage answer 503 with `Retry-After` within the storage
//! deadlines instead of object_store's three-minute retry budget; registry files from the
//! registry folder keep being served; `/readyz` says not ready; once Garage is thawed the same
//! requests succeed again by themselves.
//!
//! Without `garage` the test prints why and passes, unless `CI` is set: then it fails.

use std::time::{Duration, Instant};

use crate::support::{Garage, TestServer, Upstream, example_registry, sha256_hex};

/// A bound on each wait while Garage is frozen (the deadlines are 1 s and 2 s, object_store's
/// default retry budget 180 s): a bound, not a speed assertion.
const FROZEN_BOUND: Duration = Duration::from_secs(30);

/// How long the server may take to serve again after the thaw.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

/// Sends `GET path`, bounded by [`FROZEN_BOUND`]: status, `Retry-After`, body and the time it
/// took. A transfer cut mid-body counts as status 0.
async fn timed_get(server: &TestServer, path: &str) -> (u16, Option<String>, Vec<u8>, Duration) {
    let t = Instant::now();
    let answer = tokio::time::timeout(FROZEN_BOUND, async {
        let resp = server.get(path).await;
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match resp.bytes().await {
            Ok(body) => (status, retry, body.to_vec()),
            Err(_) => (0, retry, Vec::new()),
        }
    })
    .await
    .unwrap_or_else(|_| panic!("GET {path} took over {FROZEN_BOUND:?} with garage frozen"));
    (answer.0, answer.1, answer.2, t.elapsed())
}

/// Retries `GET path` until it answers 200 (bounded by [`RECOVERY_BOUND`]); the body and the
/// time it took.
async fn until_ok(server: &TestServer, path: &str) -> (Vec<u8>, Duration) {
    let t = Instant::now();
    loop {
        let (status, _, body, _) = timed_get(server, path).await;
        if status == 200 {
            return (body, t.elapsed());
        }
        assert!(
            t.elapsed() < RECOVERY_BOUND,
            "GET {path} still {status} {RECOVERY_BOUND:?} after the thaw: {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_garage_answers_503_fast_and_recovers_by_itself() {
    let Some(mut garage) = Garage::single() else {
        return;
    };
    let upstream = Upstream::start().await;
    let (pinned, fresh) = (vec![7u8; 300_000], vec![8u8; 200_000]);
    upstream.serve_bytes("/pinned.tar.gz", pinned.clone());
    upstream.serve_bytes("/fresh.tar.gz", fresh.clone());
    let policy = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        policy.path().join("policy.toml"),
        format!(
            "[[upstream]]\nprefix = \"{}/\"\nallow_private = true\n",
            upstream.origin()
        ),
    )
    .expect("policy");
    let data = garage.data_url("hung");
    let owned = garage.env();
    let mut env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("GF_REGISTRY_GC_INTERVAL_SECONDS", "0"),
        ("GF_REGISTRY_STORAGE_ANSWER_TIMEOUT_MS", "1000"),
        ("GF_REGISTRY_STORAGE_STALL_TIMEOUT_MS", "2000"),
    ]);
    let server = TestServer::start_with_env(
        &example_registry(),
        &[
            ("data", data.as_str()),
            ("mirror-policy", policy.path().to_str().expect("utf8")),
        ],
        &env,
    )
    .await;
    let mirror = |p: &str| format!("/mirror/{}{p}", upstream.host());
    let cas = format!("/cas/sha256/{}", sha256_hex(&pinned));
    let registry_file = "/modules/hello_lib/metadata.json";
    let (status, _, body, _) = timed_get(&server, &mirror("/pinned.tar.gz")).await;
    assert_eq!(
        (status, body == pinned),
        (200, true),
        "the fill before the freeze"
    );
    assert_eq!(timed_get(&server, "/readyz").await.0, 200);

    garage.freeze_all();
    for path in [
        mirror("/pinned.tar.gz"),
        cas.clone(),
        mirror("/fresh.tar.gz"),
    ] {
        let (status, retry, body, took) = timed_get(&server, &path).await;
        let text = String::from_utf8_lossy(&body);
        eprintln!("frozen: GET {path} -> {status} in {took:?}: {text}");
        assert_eq!(status, 503, "GET {path}: {text}");
        assert_eq!(retry.as_deref(), Some("5"), "GET {path}");
        assert!(text.contains("storage backend"), "GET {path}: {text}");
    }
    let (status, _, body, took) = timed_get(&server, "/readyz").await;
    eprintln!("frozen: GET /readyz -> {status} in {took:?}");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    // The registry folder is not in the object store: its files are still served.
    let (status, _, _, took) = timed_get(&server, registry_file).await;
    eprintln!("frozen: GET {registry_file} -> {status} in {took:?}");
    assert_eq!(status, 200);
    assert!(
        upstream.gets("/fresh.tar.gz") <= 1,
        "one failed fill at most"
    );

    garage.thaw_all();
    let (body, took) = until_ok(&server, &mirror("/pinned.tar.gz")).await;
    eprintln!("thawed: pinned blob served again after {took:?}");
    assert_eq!(body, pinned);
    let (body, took) = until_ok(&server, &cas).await;
    eprintln!("thawed: /cas served again after {took:?}");
    assert_eq!(body, pinned);
    // The fill that failed left nothing visible: its blob is absent, not half there.
    let fresh_cas = format!("/cas/sha256/{}", sha256_hex(&fresh));
    assert_eq!(timed_get(&server, &fresh_cas).await.0, 404);
    let (body, took) = until_ok(&server, &mirror("/fresh.tar.gz")).await;
    eprintln!("thawed: the new fill succeeded after {took:?}");
    assert_eq!(body, fresh);
    let (_, took) = until_ok(&server, "/readyz").await;
    eprintln!("thawed: ready again after {took:?}");
    assert_eq!(timed_get(&server, &fresh_cas).await.0, 200);
    server.stop().await;
}
