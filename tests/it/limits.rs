//! Limits under load: slow clients, too many connections, oversized request lines and headers.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{TestServer, example_registry, raw_request};

/// Half-open connections that trickle their headers do not stop normal clients from being
/// served, and the server cuts them off after `server.header_timeout_seconds`.
#[tokio::test]
async fn slowloris_does_not_starve_normal_clients() {
    const SLOW: usize = 300;
    let server = TestServer::start_with_env(
        &example_registry(),
        &[],
        &[("GF_REGISTRY_HEADER_TIMEOUT_SECONDS", "2")],
    )
    .await;
    let addr = server.addr();
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /bazel_registry.json HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        slow.push(s);
    }
    // While they hold their connections (and keep trickling), normal requests are served.
    let started = Instant::now();
    let mut served = 0;
    for i in 0..20 {
        for s in slow.iter_mut().take(50) {
            let _ = s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await;
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            server.get("/modules/hello_lib/metadata.json"),
        )
        .await
        .expect("a normal request is answered within 5 s");
        assert_eq!(resp.status(), 200);
        served += 1;
    }
    let normal = started.elapsed();
    // The slow connections are closed by the server once their header time is up.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut closed = 0;
    for s in &mut slow {
        let mut buf = [0u8; 512];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.max(Duration::from_millis(10)), s.read(&mut buf)).await {
            // EOF, a reset, or a 408 before the close: all are the server ending it.
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => {}
        }
    }
    println!(
        "slowloris: {SLOW} half-open connections; {served} normal requests served in {normal:?}; {closed} slow connections closed by the server"
    );
    assert_eq!(closed, SLOW, "every slow connection is cut off");
    server.stop().await;
}

/// `server.workers` sets how many HTTP workers run, and every worker's listener answers. With
/// one worker more than there are CPUs, no listener is tied to a CPU, so the kernel spreads
/// connections over all of them by hash: 30 fresh connections per worker all get their file
/// (a listener no worker accepted on would leave its share unanswered).
#[tokio::test]
async fn every_configured_worker_answers() {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = cpus + 1;
    let server = TestServer::start_with_env(
        &example_registry(),
        &[],
        &[("GF_REGISTRY_WORKERS", &workers.to_string())],
    )
    .await;
    assert_eq!(server.running().workers(), workers);
    let addr = server.addr();
    let answers = futures::future::join_all(
        (0..30 * workers).map(|_| raw_request(addr, "GET", "/bazel_registry.json")),
    )
    .await;
    assert!(answers.iter().all(|r| r.status == 200));
    server.stop().await;
}

/// With `server.pin_workers`, each worker thread may run on one CPU only, a different one per
/// worker, and the server answers as usual.
#[tokio::test]
async fn pinned_workers_each_keep_to_one_cpu() {
    /// CPUs that `gf-http-*` threads of this process are pinned to (one CPU each).
    fn pinned_http_cpus() -> std::collections::BTreeSet<String> {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                let status = std::fs::read_to_string(dir.join("status")).ok()?;
                let cpus = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                    .trim()
                    .to_owned();
                let one_cpu = cpus.parse::<usize>().is_ok();
                (name.starts_with("gf-http-") && one_cpu).then_some(cpus)
            })
            .collect()
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let server = TestServer::start_with_env(
        &example_registry(),
        &[],
        &[("GF_REGISTRY_PIN_WORKERS", "true")],
    )
    .await;
    // No other test pins workers, so every pinned worker thread is this server's.
    assert_eq!(
        pinned_http_cpus().len(),
        cores,
        "one worker per core, each on its own CPU: {:?}",
        pinned_http_cpus()
    );
    let answers = futures::future::join_all(
        (0..20).map(|_| raw_request(server.addr(), "GET", "/bazel_registry.json")),
    )
    .await;
    assert!(answers.iter().all(|r| r.status == 200));
    server.stop().await;
}

/// Above `server.max_connections`, a new connection gets an immediate 503 with Retry-After.
#[tokio::test]
async fn connections_over_the_limit_get_503_at_once() {
    let server = TestServer::start_with_env(
        &example_registry(),
        &[],
        &[("GF_REGISTRY_MAX_CONNECTIONS", "4")],
    )
    .await;
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // A complete request on a keep-alive connection: the connection stays open after.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        raw_request(addr, "GET", "/bazel_registry.json"),
    )
    .await
    .expect("answered at once");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("1"));
    drop(held);
    // Once they close, requests are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = raw_request(addr, "GET", "/bazel_registry.json").await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {}", r.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// Oversized request targets get a 414 and oversized headers a 431; the server stays up.
#[tokio::test]
async fn oversized_request_lines_and_headers_are_refused() {
    let server = TestServer::start(&example_registry(), &[]).await;
    let long = format!("/modules/{}/metadata.json", "a".repeat(9000));
    let r = raw_request(server.addr(), "GET", &long).await;
    assert_eq!(r.status, 414, "{}", String::from_utf8_lossy(&r.body));
    let mut s = TcpStream::connect(server.addr()).await.expect("connect");
    let big = format!(
        "GET /bazel_registry.json HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(100_000)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let head = String::from_utf8_lossy(&buf);
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 431"),
        "a 431 or a closed connection, got {head:?}"
    );
    let ok = server.get("/bazel_registry.json").await;
    assert_eq!(ok.status(), 200);
    server.stop().await;
}
