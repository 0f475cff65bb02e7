//! Regression tests for the classes of defects found by the second round of fault and attack
//! probes (`docs/reliability.md`, "Round 2"): each test covers a whole class, not only the one
//! input that showed it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::spawned::bin;
use crate::support::{Answer, Spawned, Stderr, TestServer, Upstream, example_registry};

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
    let (server, _tmp) = mirror_server_with_env(
        &up,
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

/// A server with a mirror policy that allows `up`, and the temp dir holding its policy.
async fn mirror_server(up: &Upstream) -> (TestServer, tempfile::TempDir) {
    mirror_server_with_env(up, &[]).await
}

/// [`mirror_server`] with `GF_REGISTRY_*` variables.
async fn mirror_server_with_env(
    up: &Upstream,
    env: &[(&str, &str)],
) -> (TestServer, tempfile::TempDir) {
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
        env,
    )
    .await;
    (server, tmp)
}

/// Defect 10, the class: every mirror path that a URL parser would rewrite into another path
/// (percent-encoded dot segments in any case and mix, backslashes raw or encoded) is refused
/// with a `400` that says why, and nothing is fetched upstream.
#[tokio::test]
async fn mirror_paths_a_url_parser_would_rewrite_are_refused_before_any_fetch() {
    let up = Upstream::start().await;
    for path in ["/b.tar.gz", "/a/b.tar.gz", "/a\\b.tar.gz", "/a/./b.tar.gz"] {
        up.set(path, Answer::Bytes(Bytes::from_static(b"bytes")));
    }
    let (server, _tmp) = mirror_server(&up).await;
    let host = up.host();
    for bad in [
        "/a/%2e%2e/b.tar.gz",
        "/a/%2E%2E/b.tar.gz",
        "/a/.%2e/b.tar.gz",
        "/a/%2E./b.tar.gz",
        "/a/%2e/b.tar.gz",
        "/a/../b.tar.gz",
        "/a\\b.tar.gz",
        "/a/..\\b.tar.gz",
        "/a%5cb.tar.gz",
        "/a%5C..%5Cb.tar.gz",
    ] {
        let got = server.raw("GET", &format!("/mirror/{host}{bad}")).await;
        assert_eq!(
            got.status,
            400,
            "{bad}: {:?}",
            String::from_utf8_lossy(&got.body)
        );
        let body = String::from_utf8_lossy(&got.body);
        assert!(
            body.contains("mirror path"),
            "{bad}: the error says why: {body}"
        );
    }
    for path in ["/b.tar.gz", "/a/b.tar.gz", "/a\\b.tar.gz", "/a/./b.tar.gz"] {
        assert_eq!(up.gets(path), 0, "{path} was fetched upstream");
    }
    // A dot inside a name is no dot segment.
    let ok = server
        .raw("GET", &format!("/mirror/{host}/a/b.tar.gz"))
        .await;
    assert_eq!(ok.status, 200);
    server.stop().await;
}

/// Defect 11, the class: a range with an `If-Range` that does not match the blob by strong
/// comparison (another tag, a weak tag, any date: the server sends no `Last-Modified`) gets
/// the whole blob with `200`; only the blob's own ETag keeps the `206`. On `/mirror` and
/// `/cas` alike.
#[tokio::test]
async fn a_range_whose_if_range_does_not_match_gets_the_whole_blob() {
    let up = Upstream::start().await;
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    up.set("/r.tar.gz", Answer::Bytes(Bytes::from(bytes.clone())));
    let (server, _tmp) = mirror_server(&up).await;
    let mirror = format!("/mirror/{}/r.tar.gz", up.host());
    let first = server.get(&mirror).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.bytes().await.expect("body"), bytes);
    let etag = format!(
        "\"{}\"",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    let pinned = server.get(&mirror).await;
    assert_eq!(
        pinned.headers().get("etag").and_then(|v| v.to_str().ok()),
        Some(etag.as_str()),
        "a pinned blob's ETag is its sha256"
    );
    let cas = format!("/cas/sha256/{}", etag.trim_matches('"'));
    for path in [&mirror, &cas] {
        for (if_range, want) in [
            (etag.as_str(), 206),
            ("\"0000\"", 200),
            (&format!("W/{etag}") as &str, 200),
            ("Tue, 01 Dec 2026 10:00:00 GMT", 200),
        ] {
            let got = server
                .client
                .get(server.url(path))
                .header("range", "bytes=10-19")
                .header("if-range", if_range)
                .send()
                .await
                .expect("request");
            assert_eq!(got.status(), want, "{path} with If-Range {if_range}");
            let body = got.bytes().await.expect("body");
            let expected: &[u8] = if want == 206 { &bytes[10..20] } else { &bytes };
            assert_eq!(&body[..], expected, "{path} with If-Range {if_range}");
        }
        // An unsatisfiable range with a failed condition is the whole blob too.
        let got = server
            .client
            .get(server.url(path))
            .header("range", "bytes=999999-")
            .header("if-range", "\"0000\"")
            .send()
            .await
            .expect("request");
        assert_eq!(
            got.status(),
            200,
            "{path}: unsatisfiable range, failed If-Range"
        );
    }
    server.stop().await;
}

/// "Also seen": the fill-concurrency `503` carries `Retry-After`, like the other caps. 64
/// slow fills hold every fill slot; a request for a 65th URL is refused at once with it.
#[tokio::test]
async fn the_fill_cap_answers_503_with_retry_after() {
    const FILLS: usize = 64;
    let up = Upstream::start().await;
    for i in 0..=FILLS {
        up.set(
            &format!("/f{i}.tar.gz"),
            Answer::Slow {
                bytes: Bytes::from(vec![i as u8; 8 * 1024]),
                chunk: 1024,
                delay: Duration::from_millis(400),
            },
        );
    }
    let (server, _tmp) = mirror_server(&up).await;
    let host = up.host();
    let holders: Vec<_> = (0..FILLS)
        .map(|i| {
            let (client, url) = (
                server.client.clone(),
                server.url(&format!("/mirror/{host}/f{i}.tar.gz")),
            );
            tokio::spawn(async move {
                let r = client.get(url).send().await.expect("request");
                r.bytes().await.map(|b| b.len())
            })
        })
        .collect();
    // Every holder's fill has started once the upstream has seen its GET.
    let deadline = Instant::now() + Duration::from_secs(15);
    while (0..FILLS).any(|i| up.gets(&format!("/f{i}.tar.gz")) == 0) {
        assert!(Instant::now() < deadline, "the 64 fills did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = server.get(&format!("/mirror/{host}/f{FILLS}.tar.gz")).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "the fill cap's 503 says when to retry"
    );
    for h in holders {
        let len = h.await.expect("join").expect("body");
        assert_eq!(len, 8 * 1024);
    }
    server.stop().await;
}

/// Starts the binary on the example registry with `args`, its stderr collected (a pipe, so
/// never a terminal).
fn binary_serving(data: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Spawned {
    let mut cmd = bin();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--registry"])
        .arg(example_registry())
        .arg("--data")
        .arg(data)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Spawned::spawn(&mut cmd, Stderr::Collect, Duration::from_secs(60))
}

/// "Also seen": one access-log line per request (method, path, query keys, status, body
/// bytes, duration, client, actor), for answers given before routing and routed ones alike, as
/// JSON with `--log-format json`; and no ANSI colour escapes when the log is not a terminal,
/// in either format. `server.access_log = false` turns the lines off.
#[tokio::test]
async fn access_log_lines_in_both_formats_without_colour_escapes() {
    let client = crate::support::client::plain();
    let data = tempfile::tempdir().expect("tempdir");
    // JSON: every line parses, and each request has its line.
    let served = binary_serving(data.path(), &["--log-format", "json"], &[]);
    let hit = client
        .get(served.url("/bazel_registry.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(hit.status(), 200);
    let hit_bytes = hit.bytes().await.expect("body").len();
    // Once more: now the answer comes from before routing (the file is cached).
    let _ = client
        .get(served.url("/bazel_registry.json"))
        .send()
        .await
        .expect("request");
    let miss = client
        .get(served.url("/modules/no_such_module/metadata.json?x=1&access_token=gfr_secret"))
        .send()
        .await
        .expect("request");
    assert_eq!(miss.status(), 404);
    let err = served.terminate();
    assert!(!err.contains('\u{1b}'), "ANSI escapes in a piped JSON log");
    let access: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v: &serde_json::Value| v["target"] == "gf_registry::access")
        .collect();
    let registry_json: Vec<_> = access
        .iter()
        .filter(|v| v["path"] == "/bazel_registry.json")
        .collect();
    assert_eq!(registry_json.len(), 2, "{err}");
    for line in &registry_json {
        assert_eq!(line["method"], "GET");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes"], hit_bytes as u64);
        assert_eq!(line["client"], "127.0.0.1");
        assert_eq!(line["actor"], "-");
        assert_eq!(line["complete"], true);
        assert!(
            line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{line}"
        );
    }
    assert!(
        access
            .iter()
            .any(|v| v["path"] == "/modules/no_such_module/metadata.json"
                && v["query"] == "x=…&access_token=…"
                && v["status"] == 404),
        "the routed 404 has its line, with the query's keys: {err}"
    );
    assert!(
        !err.contains("gfr_secret"),
        "a query value was logged: {err}"
    );

    // Text: one readable line per request, no escapes.
    let served = binary_serving(data.path(), &[], &[]);
    let _ = client
        .get(served.url("/bazel_registry.json"))
        .send()
        .await
        .expect("request");
    let err = served.terminate();
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escapes in a piped text log:\n{err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("gf_registry::access"))
        .unwrap_or_else(|| panic!("no access line:\n{err}"));
    for field in [
        "method=GET",
        "path=/bazel_registry.json",
        "status=200",
        "client=127.0.0.1",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }

    // Off.
    let served = binary_serving(data.path(), &[], &[("GF_REGISTRY_ACCESS_LOG", "false")]);
    let _ = client
        .get(served.url("/bazel_registry.json"))
        .send()
        .await
        .expect("request");
    let err = served.terminate();
    assert!(!err.contains("gf_registry::access"), "{err}");
}
