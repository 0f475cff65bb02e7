//! The Garage harness itself (`support::garage`): one node and a three-node cluster start, serve
//! the storage facade, survive a node going down, and fail fast while stopped.
//!
//! Without `garage` the tests print why and pass, unless `CI` is set: then they fail.

use std::time::{Duration, Instant};

use bytes::Bytes;
use gf_registry::storage::{Location, Role, Storage, StorageKey, StorageLayout};

use crate::support::garage::{Garage, START_TIMEOUT};

#[tokio::test]
async fn a_single_node_starts_with_a_bucket_and_serves_the_storage_facade() {
    let Some(g) = Garage::single() else { return };
    eprintln!("garage single node ready in {:?}", g.started_in);
    assert!(g.started_in < START_TIMEOUT);
    let s = g.storage("harness");
    s.check(Duration::from_secs(5)).await.expect("reachable");
    let key = StorageKey::Record {
        stream: "pins",
        id: "one".to_owned(),
    };
    s.put(&key, Bytes::from_static(b"hello"))
        .await
        .expect("put");
    assert_eq!(
        s.get(&key).await.expect("get").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        s.list(Role::Records, "pins").await.expect("list"),
        ["pins/one"]
    );
    // A wrong secret is refused: the bucket is not open to anyone.
    let mut wrong = g.s3_settings();
    wrong.options[4].1 = "0".repeat(64);
    let other = Storage::open(StorageLayout {
        cas: Location::parse(&g.data_url("harness/cas")).expect("loc"),
        records: Location::parse(&g.data_url("harness/records")).expect("loc"),
        s3: wrong,
    })
    .expect("open");
    assert!(other.get(&key).await.is_err());
}

#[tokio::test]
async fn a_three_node_cluster_keeps_serving_with_one_node_down_and_loses_nothing() {
    let Some(mut g) = Garage::cluster() else {
        return;
    };
    eprintln!("garage 3-node cluster ready in {:?}", g.started_in);
    assert_eq!(g.len(), 3);
    let key = |i: usize| StorageKey::Record {
        stream: "pins",
        id: format!("{i:03}"),
    };
    let s0 = g.storage_via(0, "cluster");
    for i in 0..10 {
        s0.put(&key(i), Bytes::from(format!("v{i}")))
            .await
            .expect("put");
    }
    g.stop_node(2);
    // Quorum is 2 of 3: writes and reads through node 0 still work.
    for i in 10..20 {
        tokio::time::timeout(
            Duration::from_secs(30),
            s0.put(&key(i), Bytes::from(format!("v{i}"))),
        )
        .await
        .expect("write within 30 s with one node down")
        .expect("put with one node down");
    }
    assert_eq!(
        s0.list(Role::Records, "pins").await.expect("list").len(),
        20
    );
    let t = Instant::now();
    g.restart_node(2);
    eprintln!("node 2 back and cluster healthy in {:?}", t.elapsed());
    // Everything acknowledged is readable through the node that was down.
    let s2 = g.storage_via(2, "cluster");
    let listed = s2
        .list(Role::Records, "pins")
        .await
        .expect("list via node 2");
    assert_eq!(listed.len(), 20, "{listed:?}");
    for i in 0..20 {
        assert_eq!(
            s2.get(&key(i)).await.expect("get via node 2").as_deref(),
            Some(format!("v{i}").as_bytes())
        );
    }
}

#[tokio::test]
async fn a_stopped_garage_fails_fast_and_keeps_its_data_when_it_returns() {
    let Some(mut g) = Garage::single() else {
        return;
    };
    let s = g.storage("restart");
    let blob = StorageKey::blob("sha256", &crate::support::sha256_hex(b"kept"));
    s.put(&blob, Bytes::from_static(b"kept"))
        .await
        .expect("put");
    // The bytes are in the node's data folder (as block files), not only in memory.
    assert!(
        !crate::support::files_under(&g.data_dir(0)).is_empty(),
        "no block files under {}",
        g.data_dir(0).display()
    );
    g.stop_all();
    let down = s.check(Duration::from_secs(2)).await;
    assert!(down.is_err(), "check passed with garage stopped");
    g.restart_all();
    assert_eq!(
        s.get(&blob).await.expect("get after restart").as_deref(),
        Some(&b"kept"[..])
    );
}
