//! The pull-through's concurrency, over in-memory storage with the upstream and clock doubles.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use sha2::Digest as _;
use url::Url;

use super::{FillError, PullParts, Pulls};
use crate::mirror::clock::{Clock, TestClock};
use crate::mirror::ledger::Ledger;
use crate::mirror::policy::Policy;
use crate::mirror::stats::MirrorStats;
use crate::storage::{BlobStore, Location, S3Settings, Storage, StorageLayout};
use crate::upstream::testing::{Answer, TestUpstream};
use crate::upstream::{Allowed, UpstreamError};

const URL: &str = "https://up.example/a.tar.gz";

struct Setup {
    pulls: Arc<Pulls>,
    ledger: Arc<Ledger>,
    upstream: Arc<TestUpstream>,
    clock: Arc<TestClock>,
    _policy_dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let storage = Storage::open(StorageLayout {
        cas: Location::parse("memory:///cas").expect("cas"),
        records: Location::parse("memory:///records").expect("records"),
        s3: S3Settings::default(),
    })
    .expect("storage");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("policy.toml"),
        "[[upstream]]\nprefix = \"https://up.example/\"\n",
    )
    .expect("policy");
    let policy = Arc::new(Policy::load(dir.path()).expect("policy"));
    let ledger = Arc::new(Ledger::load(storage.clone()).await.expect("ledger"));
    let upstream = Arc::new(TestUpstream::new());
    let clock = Arc::new(TestClock::at(
        chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
    ));
    let pulls = Arc::new(Pulls::new(PullParts {
        ledger: ledger.clone(),
        blobs: BlobStore::new(storage),
        policy,
        upstream: upstream.clone(),
        clock: clock.clone(),
        stats: Arc::new(MirrorStats::default()),
        background: tokio::runtime::Handle::current(),
    }));
    Setup {
        pulls,
        ledger,
        upstream,
        clock,
        _policy_dir: dir,
    }
}

fn allowed() -> Allowed {
    Allowed {
        rule: "https://up.example/".to_owned(),
        allow_private: false,
    }
}

type Outcome = (Result<Option<u64>, FillError>, Result<Vec<u8>, String>);

/// Joins or starts the fill of [`URL`] as a request would, waits at `joined` until every
/// request has joined, and reads what the fill streams.
async fn request(pulls: Arc<Pulls>, joined: Arc<tokio::sync::Barrier>) -> Outcome {
    let url = Url::parse(URL).expect("url");
    let fill = pulls
        .join_or_start(url, allowed(), None, "test".to_owned(), &|| false)
        .expect("a fill");
    joined.wait().await;
    let head = fill.wait_for_head().await;
    let mut body = fill.stream();
    let mut got = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => got.extend_from_slice(&b),
            Err(e) => return (head, Err(e.to_string())),
        }
    }
    (head, Ok(got))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_for_one_url_makes_one_upstream_fetch() {
    let s = setup().await;
    let bytes = Bytes::from(
        (0..3_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    s.upstream.answer(
        URL,
        Answer::Body {
            bytes: bytes.clone(),
            piece: 64 * 1024,
        },
    );
    // Held until every request has joined.
    s.upstream.set_gate(false);
    let joined = Arc::new(tokio::sync::Barrier::new(9));
    let requests: Vec<_> = (0..8)
        .map(|_| tokio::spawn(request(s.pulls.clone(), joined.clone())))
        .collect();
    joined.wait().await;
    s.upstream.set_gate(true);
    for r in requests {
        let (head, body) = r.await.expect("request task");
        assert_eq!(head.expect("head"), Some(bytes.len() as u64));
        assert_eq!(
            body.expect("body"),
            bytes.to_vec(),
            "every client gets the bytes"
        );
    }
    assert_eq!(s.upstream.fetches(), 1, "one upstream fetch for the burst");
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    assert_eq!(s.ledger.pin(URL), Some(sha.clone()), "pinned to its bytes");
    let record = s.ledger.available(&sha).expect("stored").record();
    assert_eq!(
        record.fetched_at,
        s.clock.now(),
        "recorded at the clock's time"
    );
    assert_eq!(record.size, bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_is_reported_to_every_waiter_and_not_joined_again() {
    let s = setup().await;
    s.upstream.answer(URL, Answer::Status(500));
    s.upstream.set_gate(false);
    let joined = Arc::new(tokio::sync::Barrier::new(6));
    let requests: Vec<_> = (0..5)
        .map(|_| tokio::spawn(request(s.pulls.clone(), joined.clone())))
        .collect();
    joined.wait().await;
    s.upstream.set_gate(true);
    for r in requests {
        let (head, body) = r.await.expect("request task");
        match head {
            Err(FillError::Upstream(UpstreamError::Status { status: 500, .. })) => {}
            other => panic!("expected the upstream's 500, got {other:?}"),
        }
        assert!(body.is_err(), "the stream ends with an error: {body:?}");
    }
    assert_eq!(
        s.upstream.fetches(),
        1,
        "one upstream fetch for all waiters"
    );
    assert_eq!(s.ledger.pin(URL), None, "nothing pinned");
    // The failed fill left the in-flight map: the next request fetches again.
    let (head, _) = request(s.pulls.clone(), Arc::new(tokio::sync::Barrier::new(1))).await;
    assert!(head.is_err());
    assert_eq!(s.upstream.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_stored_meanwhile_is_served_rather_than_fetched() {
    let s = setup().await;
    let url = Url::parse(URL).expect("url");
    let joined = s
        .pulls
        .join_or_start(url, allowed(), None, "test".to_owned(), &|| true);
    assert!(joined.is_none(), "the caller serves the stored blob");
    assert_eq!(s.upstream.fetches(), 0);
    s.clock.advance(chrono::TimeDelta::seconds(1));
}
