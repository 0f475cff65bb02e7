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
    storage: Storage,
    pulls: Arc<Pulls>,
    ledger: Arc<Ledger>,
    upstream: Arc<TestUpstream>,
    clock: Arc<TestClock>,
    _policy_dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    setup_settling(std::time::Duration::from_millis(20)).await
}

/// A setup whose first fills settle for `settle`.
async fn setup_settling(settle: std::time::Duration) -> Setup {
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
        blobs: BlobStore::new(storage.clone()),
        policy,
        upstream: upstream.clone(),
        clock: clock.clone(),
        stats: Arc::new(MirrorStats::default()),
        settle,
        background: tokio::runtime::Handle::current(),
    }));
    Setup {
        storage,
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

fn body_of(n: u32) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 253) as u8).collect::<Vec<u8>>())
}

/// Reads `fill`'s stream into `into`; the error, if the transfer was cut.
async fn read_into(fill: Arc<super::Fill>, into: Arc<std::sync::Mutex<Vec<u8>>>) -> Option<String> {
    let mut body = fill.stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => into.lock().expect("lock").extend_from_slice(&b),
            Err(e) => return Some(e.to_string()),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_fill_holds_its_last_byte_while_it_settles_then_keeps_its_own_pin() {
    let s = setup_settling(std::time::Duration::from_secs(3)).await;
    let bytes = body_of(300_000);
    s.upstream.answer(
        URL,
        Answer::Body {
            bytes: bytes.clone(),
            piece: 64 * 1024,
        },
    );
    let fill = s
        .pulls
        .join_or_start(
            Url::parse(URL).expect("url"),
            allowed(),
            None,
            "test".to_owned(),
            &|| false,
        )
        .expect("a fill");
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = tokio::spawn(read_into(fill.clone(), got.clone()));
    // While the fill settles, the client has every byte but the last.
    let mut seen_settling = false;
    for _ in 0..1000 {
        if fill.outcome().is_some() {
            break;
        }
        if fill.is_settling() && got.lock().expect("lock").len() == bytes.len() - 1 {
            seen_settling = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        seen_settling,
        "the client waited one byte short while the fill settled"
    );
    let cut = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
        .await
        .expect("the transfer ends")
        .expect("reader task");
    assert_eq!(cut, None, "the transfer completes");
    assert_eq!(
        *got.lock().expect("lock"),
        bytes.to_vec(),
        "with every byte"
    );
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    assert_eq!(s.ledger.pin(URL), Some(sha.clone()), "the pin is ours");
    assert!(matches!(fill.outcome(), Some(Ok(r)) if r.sha256 == sha));
    assert!(s.ledger.read().drift.is_empty(), "no drift recorded");
}

/// A pin of [`URL`] to `winner`, written by another replica (its own ledger over the same
/// storage) and dated before anything this replica pins.
async fn pin_elsewhere(s: &Setup, winner: &Bytes) -> String {
    let sha = hex::encode(sha2::Sha256::digest(winner));
    let other = Ledger::load(s.storage.clone())
        .await
        .expect("other replica's ledger");
    let pin = crate::mirror::record::Record::Pin(crate::mirror::record::PinRecord {
        url: URL.to_owned(),
        sha256: sha.clone(),
        at: s.clock.now() - chrono::TimeDelta::seconds(1),
    });
    other.record(&pin).await.expect("pin written");
    sha
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_fill_whose_pin_lost_the_settle_is_cut_short_and_switches_to_the_winner() {
    let s = setup().await;
    let ours = body_of(200_000);
    s.upstream.answer(
        URL,
        Answer::Body {
            bytes: ours.clone(),
            piece: 64 * 1024,
        },
    );
    // The other replica's pin is in the store, not yet in this replica's ledger: this fill
    // pins too, and its settle step finds the earlier pin.
    let winner = pin_elsewhere(&s, &body_of(100_000)).await;
    assert_eq!(s.ledger.pin(URL), None, "not reloaded yet");
    let (head, body) = request(s.pulls.clone(), Arc::new(tokio::sync::Barrier::new(1))).await;
    assert_eq!(head.expect("head"), Some(ours.len() as u64));
    assert!(body.is_err(), "the transfer is cut short: {body:?}");
    assert_eq!(s.ledger.pin(URL), Some(winner.clone()), "the winner's pin");
    let drift = s.ledger.read().drift.clone();
    assert!(
        drift
            .iter()
            .any(|e| e.sha256 == winner && e.detail.starts_with("superseded")),
        "a supersede event is recorded: {drift:?}"
    );
    // The fill is over: a new request does not join it.
    assert!(!s.pulls.inflight.lock().expect("lock").contains_key(URL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_fill_that_finds_another_pin_when_it_pins_is_cut_short() {
    let s = setup().await;
    let ours = body_of(150_000);
    s.upstream.answer(
        URL,
        Answer::Body {
            bytes: ours.clone(),
            piece: 64 * 1024,
        },
    );
    s.upstream.set_gate(false);
    let url = Url::parse(URL).expect("url");
    let fill = s
        .pulls
        .join_or_start(url, allowed(), None, "test".to_owned(), &|| false)
        .expect("a fill");
    // The other replica's pin arrives (by a reload) while this fill fetches.
    let winner = pin_elsewhere(&s, &body_of(90_000)).await;
    s.ledger.reload().await.expect("reload");
    s.upstream.set_gate(true);
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let cut = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        read_into(fill.clone(), got.clone()),
    )
    .await
    .expect("the transfer ends");
    assert!(cut.is_some(), "the transfer is cut short");
    assert!(
        got.lock().expect("lock").len() < ours.len(),
        "without its last byte"
    );
    match fill.outcome() {
        Some(Err(FillError::Superseded { winner: w, .. })) => assert_eq!(w, winner),
        other => panic!("expected Superseded, got {other:?}"),
    }
    assert_eq!(
        s.ledger.pin(URL),
        Some(winner),
        "the pin stays the winner's"
    );
}
