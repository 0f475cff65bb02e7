//! The upstream double itself (`support::upstream`): every answer kind, stop and restart.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::support::client;
use crate::support::upstream::{Answer, Hits, Upstream};

fn test_client() -> reqwest::Client {
    client::no_redirects(Duration::from_secs(30))
}

/// The double itself: every answer kind, and GET and HEAD counted apart.
#[tokio::test]
async fn upstream_double_answers() {
    let mut up = Upstream::start().await;
    let body = Bytes::from(vec![7u8; 300_000]);
    up.serve_bytes("/a?v=1", body.clone());
    let (chunk, delay) = (100_000, Duration::from_millis(20));
    up.set(
        "/slow",
        Answer::Slow {
            bytes: body.clone(),
            chunk,
            delay,
        },
    );
    up.set(
        "/cut",
        Answer::Cut {
            bytes: body.clone(),
            after: 1000,
        },
    );
    up.set("/gone", Answer::Status(410));
    up.set(
        "/moved",
        Answer::Redirect("http://127.0.0.1:9/x".to_owned()),
    );
    let client = test_client();
    let get = |path: &str| client.get(up.url(path)).send();

    let ok = get("/a?v=1").await.expect("get");
    assert_eq!(ok.bytes().await.expect("body"), body);
    let head = client.head(up.url("/a?v=1")).send().await.expect("head");
    assert_eq!(head.headers()["content-length"], "300000");
    assert_eq!(up.hits("/a?v=1"), Hits { get: 1, head: 1 });
    assert_eq!(get("/a?v=2").await.expect("get").status(), 404);
    let started = Instant::now();
    assert_eq!(
        get("/slow")
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body"),
        body
    );
    assert!(started.elapsed() >= 3 * delay, "slow is slow");

    let mut cut = get("/cut").await.expect("headers arrive before the cut");
    assert_eq!(cut.headers()["content-length"], "300000");
    let mut received = 0;
    let cut_error = loop {
        match cut.chunk().await {
            Ok(Some(c)) => received += c.len(),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert!(cut_error.is_some(), "the cut body fails");
    assert_eq!(received, 1000, "the bytes before the cut arrive");

    assert_eq!(get("/gone").await.expect("get").status(), 410);
    let moved = get("/moved").await.expect("get");
    assert_eq!(moved.status(), 302);
    assert_eq!(moved.headers()["location"], "http://127.0.0.1:9/x");
    assert_eq!(up.total_requests(), 7);
    up.stop().await;
}

/// A stop is an outage; a restart keeps the port, the answers (changed meanwhile) and counts.
#[tokio::test]
async fn upstream_double_stops_and_restarts() {
    let mut up = Upstream::start().await;
    up.serve_bytes("/a", "original");
    let client = test_client();
    let url = up.url("/a");
    let text = |resp: reqwest::Response| async move { resp.text().await.expect("body") };

    assert_eq!(
        text(client.get(&url).send().await.expect("up")).await,
        "original"
    );
    up.stop().await;
    assert!(
        client.get(&url).send().await.is_err(),
        "a stopped upstream does not answer"
    );
    up.serve_bytes("/a", "changed");
    up.restart().await;
    assert_eq!(up.url("/a"), url, "same port");
    assert_eq!(
        text(client.get(&url).send().await.expect("back")).await,
        "changed"
    );
    assert_eq!(up.gets("/a"), 2);
    up.stop().await;
}
