//! The facade's pull-through over in-memory storage, with the upstream and clock doubles:
//! concurrent requests, failures shared by every waiter, and the clock behind access records.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use sha2::Digest as _;

use super::clock::TestClock;
use super::{Mirror, MirrorError};
use crate::mirror::policy::Policy;
use crate::registry::{CacheSettings, Registry};
use crate::source::RegistrySource;
use crate::storage::{Location, Role, S3Settings, Storage, StorageLayout};
use crate::upstream::testing::{Answer, TestUpstream};

const PATH: &str = "up.example/pkg/a.tar.gz";
const URL: &str = "https://up.example/pkg/a.tar.gz";

struct Setup {
    mirror: Mirror,
    storage: Storage,
    upstream: Arc<TestUpstream>,
    clock: Arc<TestClock>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn setup() -> Setup {
    let storage = Storage::open(StorageLayout {
        cas: Location::parse("memory:///cas").expect("cas"),
        records: Location::parse("memory:///records").expect("records"),
        s3: S3Settings::default(),
    })
    .expect("storage");
    let policy_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        policy_dir.path().join("policy.toml"),
        "[[upstream]]\nprefix = \"https://up.example/\"\n",
    )
    .expect("policy");
    let registry_dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(registry_dir.path().join("modules")).expect("modules");
    std::fs::write(registry_dir.path().join("bazel_registry.json"), "{}").expect("registry");
    let source = RegistrySource::open(registry_dir.path(), None).expect("source");
    let registry = Registry::load(
        source,
        CacheSettings {
            capacity_bytes: 0,
            ttl: std::time::Duration::from_secs(1),
        },
    )
    .await
    .expect("registry");
    let upstream = Arc::new(TestUpstream::new());
    let clock = Arc::new(TestClock::at(
        chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
    ));
    let mirror = Mirror::load_with(
        storage.clone(),
        Policy::load(policy_dir.path()).expect("policy"),
        Arc::new(registry),
        upstream.clone(),
        clock.clone(),
    )
    .await
    .expect("mirror");
    Setup {
        mirror,
        storage,
        upstream,
        clock,
        _dirs: (policy_dir, registry_dir),
    }
}

async fn get(mirror: Mirror) -> Result<Vec<u8>, MirrorError> {
    let resp = mirror.get_url(PATH, None, "test", true).await?;
    let mut body = resp.body;
    let mut got = Vec::new();
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.map_err(|e| MirrorError::Storage(e.to_string()))?);
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_of_one_url_share_one_fetch_and_then_hit_the_store() {
    let s = setup().await;
    let bytes = Bytes::from(
        (0..2_500_000u32)
            .map(|i| (i % 241) as u8)
            .collect::<Vec<u8>>(),
    );
    s.upstream.answer(
        URL,
        Answer::Body {
            bytes: bytes.clone(),
            piece: 100_000,
        },
    );
    s.upstream.set_gate(false);
    let requests: Vec<_> = (0..6)
        .map(|_| tokio::spawn(get(s.mirror.clone())))
        .collect();
    // Requests that come after the fill ended are served from the store: either way the
    // burst makes one upstream fetch.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    s.upstream.set_gate(true);
    for r in requests {
        assert_eq!(r.await.expect("task").expect("get"), bytes.to_vec());
    }
    assert_eq!(s.upstream.fetches(), 1);
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let hit = s
        .mirror
        .get_url(PATH, None, "test", false)
        .await
        .expect("hit");
    assert_eq!(
        hit.sha256.as_deref(),
        Some(sha.as_str()),
        "served from the store"
    );
    assert_eq!(s.upstream.fetches(), 1, "a hit does not fetch");
    assert_eq!(
        s.mirror
            .stats()
            .upstream_fetches
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_answers_every_waiter_the_same() {
    let s = setup().await;
    s.upstream.answer(URL, Answer::Status(503));
    s.upstream.set_gate(false);
    let requests: Vec<_> = (0..4)
        .map(|_| tokio::spawn(get(s.mirror.clone())))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    s.upstream.set_gate(true);
    for r in requests {
        match r.await.expect("task") {
            Err(MirrorError::Upstream { message, timeout }) => {
                assert!(!timeout);
                assert!(message.contains("503"), "{message}");
            }
            other => panic!("expected an upstream failure, got {other:?}"),
        }
    }
    assert!(
        s.upstream.fetches() <= 4,
        "failed fills are not shared once over"
    );
    assert!(s.mirror.state().pins.is_empty(), "nothing pinned");
    // A missing upstream object is a 404 for the client.
    s.upstream.answer(URL, Answer::Status(404));
    assert!(matches!(
        get(s.mirror.clone()).await,
        Err(MirrorError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_recorded_at_most_once_an_hour_by_the_clock() {
    let s = setup().await;
    s.upstream.answer(
        URL,
        Answer::Body {
            bytes: Bytes::from_static(b"hello, mirror"),
            piece: 4,
        },
    );
    get(s.mirror.clone()).await.expect("fill");
    let events = || async {
        s.storage
            .list(Role::Records, "events")
            .await
            .expect("list")
            .len()
    };
    let wait_for = |n: usize| async move {
        for _ in 0..200 {
            if events().await >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("expected {n} access records");
    };
    // The fill's own answer streams from the spool; this read is the first from the store.
    get(s.mirror.clone()).await.expect("read");
    wait_for(1).await;
    s.clock.advance(chrono::TimeDelta::minutes(10));
    get(s.mirror.clone()).await.expect("read");
    s.clock.advance(chrono::TimeDelta::hours(2));
    get(s.mirror.clone()).await.expect("read");
    wait_for(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        events().await,
        2,
        "the read ten minutes later was not recorded"
    );
    assert_eq!(
        s.mirror
            .state()
            .blobs
            .values()
            .next()
            .map(|b| b.last_access),
        Some(s.clock_now()),
    );
}

impl Setup {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use super::clock::Clock as _;
        self.clock.now()
    }
}
