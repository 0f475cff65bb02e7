//! Regression tests for the classes of defects found by the second round of fault and attack
//! probes (`docs/reliability.md`, "Round 2"): each test covers a whole class, not only the one
//! input that showed it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::upstream::{Answer, Upstream};
use crate::util::{TestServer, example_registry};

/// The header timeout the idle tests run with.
const HEADER_TIMEOUT_SECONDS: &str = "1";

/// Waits (bounded by `within`) for the server to close `stream`: EOF or a reset. Anything the
/// server sends before closing is read and returned.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let mut buf = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Ok(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return Err(format!("still open after {within:?}")),
        }
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` off a kept-alive connection.
async fn read_one_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before the response ended");
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if buf.len() >= end + 4 + length {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("response within 10 s");
    buf
}

/// Defect 1, the class: every connection with no request in progress is closed once it has
/// been idle for the header timeout, whatever it did before. A connection that never sends a
/// byte, one that sent part of a request line, one kept alive after a complete answer, and an
/// HTTP/2 connection that sent only its preface and settings are all closed.
#[tokio::test]
async fn idle_connections_of_every_kind_are_closed_after_the_header_timeout() {
    let server = TestServer::start_with_env(
        &example_registry(),
        &[],
        &[("GF_REGISTRY_HEADER_TIMEOUT_SECONDS", HEADER_TIMEOUT_SECONDS)],
    )
    .await;
    let addr = server.addr();
    let opened = Instant::now();

    let mut silent = TcpStream::connect(addr).await.expect("connect");

    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial.write_all(b"GET /bazel_reg").await.expect("write");

    let mut kept_alive = TcpStream::connect(addr).await.expect("connect");
    kept_alive
        .write_all(b"GET /bazel_registry.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = read_one_response(&mut kept_alive).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "kept-alive request answered"
    );

    let mut h2 = TcpStream::connect(addr).await.expect("connect");
    // The client preface, then an empty SETTINGS frame (length 0, type 4, flags 0, stream 0).
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("write");

    for (name, stream) in [
        ("silent", &mut silent),
        ("partial request line", &mut partial),
        ("kept alive", &mut kept_alive),
        ("HTTP/2, preface only", &mut h2),
    ] {
        closed_within(stream, Duration::from_secs(8))
            .await
            .unwrap_or_else(|e| panic!("{name} connection: {e}"));
    }
    println!(
        "idle connections: all four kinds closed {:?} after opening (header timeout {HEADER_TIMEOUT_SECONDS} s)",
        opened.elapsed()
    );
    server.stop().await;
}

/// The status of one `GET /bazel_registry.json` on a fresh connection, or `None` when the
/// connection failed before a status line arrived.
async fn status_of(addr: std::net::SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let _ = s
        .write_all(b"GET /bazel_registry.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()
}

/// Defect 1 as it was reported: `server.max_connections` silent connections lock every other
/// client out with `503` only until the header timeout closes them; then clients are served
/// again.
#[tokio::test]
async fn silent_connections_lock_nobody_out_for_longer_than_the_header_timeout() {
    const LIMIT: usize = 40;
    let server = TestServer::start_with_env(
        &example_registry(),
        &[],
        &[
            ("GF_REGISTRY_HEADER_TIMEOUT_SECONDS", HEADER_TIMEOUT_SECONDS),
            ("GF_REGISTRY_MAX_CONNECTIONS", &LIMIT.to_string()),
        ],
    )
    .await;
    let addr = server.addr();
    let mut silent = Vec::new();
    for _ in 0..LIMIT {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Let the workers accept them all, then the limit holds: a new client is refused at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status_of(addr).await,
        Some(503),
        "the silent connections hold the limit"
    );

    // Once they are closed, the limit is free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = status_of(addr).await;
        if status == Some(200) || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, Some(200), "served again after the header timeout");
    for (i, s) in silent.iter_mut().enumerate() {
        closed_within(s, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("silent connection {i}: {e}"));
    }
    server.stop().await;
}

/// The other side of defect 1's fix: a connection is not idle while its request is in
/// progress. A pull-through whose upstream takes three header timeouts to send its bytes
/// reaches its client whole, and the connection then serves a second request.
#[tokio::test]
async fn a_response_slower_than_the_header_timeout_is_not_cut() {
    let mut up = Upstream::start().await;
    let bytes: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    up.set(
        "/slow.tar.gz",
        Answer::Slow {
            bytes: Bytes::from(bytes.clone()),
            chunk: 4096,
            delay: Duration::from_millis(200),
        },
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = tmp.path().join("policy");
    std::fs::create_dir_all(&policy).expect("mkdir");
    std::fs::write(
        policy.join("policy.toml"),
        format!(
            "[[upstream]]\nprefix = \"{}/\"\nallow_private = true\n",
            up.origin()
        ),
    )
    .expect("write policy");
    let server = TestServer::start_with_env(
        &example_registry(),
        &[("mirror-policy", policy.to_str().expect("utf-8"))],
        &[("GF_REGISTRY_HEADER_TIMEOUT_SECONDS", HEADER_TIMEOUT_SECONDS)],
    )
    .await;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    let request = format!(
        "GET /mirror/{}/slow.tar.gz HTTP/1.1\r\nHost: x\r\n\r\n",
        up.host()
    );
    let started = Instant::now();
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 16384];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the server closed the connection mid-response");
            got.extend_from_slice(&chunk[..n]);
            if got.ends_with(&bytes) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the whole response within 30 s");
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(2),
        "the upstream is slow on purpose; took {took:?}"
    );
    // The connection is still usable: kept alive, not cut.
    stream
        .write_all(b"GET /bazel_registry.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let second = read_one_response(&mut stream).await;
    assert!(
        second.starts_with(b"HTTP/1.1 200"),
        "second request answered"
    );
    server.stop().await;
    up.stop().await;
}

/// Defect 2, the class: no label value of the request metrics comes from the client
/// unbounded. Made-up methods (long ones too, on routed and unmatched paths) are all counted
/// under `other`, made-up paths under `unmatched`, and `/metrics` stays small.
#[tokio::test]
async fn request_metric_labels_stay_bounded_whatever_the_client_sends() {
    let server = TestServer::start(&example_registry(), &[]).await;
    let addr = server.addr();
    let baseline = server.get("/metrics").await.text().await.expect("metrics");
    for i in 0..200 {
        let method = format!("X{i}{}", "M".repeat(1000));
        let target = if i % 2 == 0 {
            "/bazel_registry.json".to_owned()
        } else {
            format!("/no/such/path/{i}/{}", "p".repeat(500))
        };
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    }
    for i in 0..50 {
        let _ = server.get(&format!("/made/up/{i}")).await;
    }
    let after = server.get("/metrics").await.text().await.expect("metrics");
    assert!(
        !after.contains("MMMM") && !after.contains("pppp") && !after.contains("/made/up/"),
        "a client-sent method or path became a label"
    );
    assert!(
        after.contains("method=\"other\""),
        "made-up methods are counted as other"
    );
    let label_values = |text: &str, label: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("gf_registry_http_requests_total"))
            .filter_map(|l| {
                let start = l.find(&format!("{label}=\""))? + label.len() + 2;
                let rest = &l[start..];
                Some(rest[..rest.find('"')?].to_owned())
            })
            .collect()
    };
    let methods = label_values(&after, "method");
    let standard = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "other",
    ];
    assert!(
        methods.iter().all(|m| standard.contains(&m.as_str())),
        "method labels: {methods:?}"
    );
    // Route labels are route patterns or `unmatched`, never a request path.
    let routes = label_values(&after, "route");
    assert!(
        routes
            .iter()
            .all(|r| r == "unmatched" || r.starts_with('/')),
        "route labels: {routes:?}"
    );
    assert!(
        routes.len() < 40,
        "route labels are bounded by the route table: {routes:?}"
    );
    println!(
        "metrics: {} bytes before, {} bytes after 250 hostile requests",
        baseline.len(),
        after.len()
    );
    assert!(
        after.len() < baseline.len() + 16 * 1024,
        "/metrics grew from {} to {} bytes",
        baseline.len(),
        after.len()
    );
    server.stop().await;
}
