//! Two replicas sharing one store race the first fill of one URL, from an upstream that
//! answers every request other bytes (issue 21, defect 5): both fill and pin, one pin wins,
//! and no client may complete a transfer of bytes the URL does not serve afterwards.

use std::time::Duration;

use futures::StreamExt as _;

use crate::support::upstream::changing_bytes;
use crate::support::{Answer, Garage, TestServer, Upstream, example_registry};

const ROUNDS: u32 = 4;
const CLIENTS: usize = 24;
const SIZE: usize = 256 * 1024;
/// The upstream sends half of each answer, then the rest after this: the fills overlap.
const UPSTREAM_DELAY: Duration = Duration::from_millis(400);
/// Bound on one client's request, body included.
const CLIENT_WAIT: Duration = Duration::from_secs(60);

/// What one client got.
#[derive(Debug)]
enum Got {
    /// `200` and every byte its `Content-Length` announced.
    Complete(Vec<u8>),
    /// `200`, then the body was cut short (the client would retry).
    Truncated,
    /// Another status.
    Status(u16),
}

async fn fetch(server: &TestServer, path: &str) -> Got {
    let fetched = tokio::time::timeout(CLIENT_WAIT, async {
        let resp = server
            .client
            .get(server.url(path))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        if status != 200 {
            return Got::Status(status);
        }
        let length = resp.content_length();
        let mut body = resp.bytes_stream();
        let mut got = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => got.extend_from_slice(&b),
                Err(_) => return Got::Truncated,
            }
        }
        if length.is_some_and(|n| n != got.len() as u64) {
            return Got::Truncated;
        }
        Got::Complete(got)
    })
    .await;
    fetched.expect("the request ends in time")
}

async fn replica(data: &str, policy: &std::path::Path, env: &[(&str, &str)]) -> TestServer {
    let mut all = env.to_vec();
    // Other replicas' records are read on misses only, and nothing is collected meanwhile.
    all.push(("GF_REGISTRY_RECORDS_REFRESH_SECONDS", "0"));
    all.push(("GF_REGISTRY_GC_INTERVAL_SECONDS", "0"));
    TestServer::start_with_env(
        &example_registry(),
        &[
            ("data", data),
            ("mirror-policy", policy.to_str().expect("utf8")),
        ],
        &all,
    )
    .await
}

/// What the rounds measured.
#[derive(Debug, Default)]
struct Tally {
    raced_rounds: u32,
    complete: usize,
    truncated: usize,
}

/// Runs the rounds against two replicas over `data`, asserting that every complete body is
/// the URL's final bytes on both replicas.
async fn race(data: &str, env: &[(&str, &str)]) -> Tally {
    let upstream = Upstream::start().await;
    let policy = upstream.policy_dir();
    let one = replica(data, policy.path(), env).await;
    let two = replica(data, policy.path(), env).await;
    let mut tally = Tally::default();
    for round in 0..ROUNDS {
        let path = format!("/changing-{round}.tar.gz");
        upstream.set(
            &path,
            Answer::Changing {
                size: SIZE,
                delay: UPSTREAM_DELAY,
            },
        );
        let url = format!("/mirror/{}{path}", upstream.host());
        let clients = (0..CLIENTS).map(|i| {
            let server = if i % 2 == 0 { &one } else { &two };
            fetch(server, &url)
        });
        let got = futures::future::join_all(clients).await;
        let fetches = upstream.gets(&path);
        // Afterwards both replicas serve one set of bytes: the final pin's.
        let Got::Complete(pinned) = fetch(&one, &url).await else {
            panic!("round {round}: replica one serves the URL in full");
        };
        let Got::Complete(again) = fetch(&two, &url).await else {
            panic!("round {round}: replica two serves the URL in full");
        };
        assert!(
            pinned == again,
            "round {round}: both replicas serve the same bytes"
        );
        assert!(
            (1..=fetches).any(|n| changing_bytes(SIZE, n) == pinned),
            "round {round}: the pinned bytes are one of the upstream's answers"
        );
        assert_eq!(
            upstream.gets(&path),
            fetches,
            "round {round}: the pinned URL is served without a new upstream fetch"
        );
        let mut truncated = 0;
        for (i, g) in got.iter().enumerate() {
            match g {
                Got::Complete(body) => {
                    assert!(
                        *body == pinned,
                        "round {round}: client {i} completed a transfer of bytes the URL does not serve"
                    );
                    tally.complete += 1;
                }
                Got::Truncated => truncated += 1,
                Got::Status(s) => panic!("round {round}: client {i} got status {s}"),
            }
        }
        tally.truncated += truncated;
        if fetches >= 2 {
            tally.raced_rounds += 1;
        }
        eprintln!(
            "round {round}: {fetches} upstream fetches, {} complete (all the pinned bytes), {truncated} truncated",
            CLIENTS - truncated
        );
    }
    assert!(
        tally.raced_rounds > 0,
        "no round raced (every round made one upstream fetch): the test proved nothing"
    );
    eprintln!("{tally:?}");
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_a_first_fill_on_a_shared_folder_never_complete_the_losers_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = format!("file://{}", dir.path().display());
    race(&data, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_a_first_fill_on_garage_never_complete_the_losers_bytes() {
    let Some(garage) = Garage::single() else {
        return;
    };
    let data = garage.data_url("race");
    let owned: Vec<(&str, String)> = garage.env().into_iter().collect();
    let env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    race(&data, &env).await;
}
