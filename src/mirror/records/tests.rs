use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::*;
use crate::storage::{Location, S3Settings, StorageLayout};

fn storage(records: &str, cas: &str) -> Storage {
    Storage::open(StorageLayout {
        cas: Location::parse(cas).expect("cas"),
        records: Location::parse(records).expect("records"),
        s3: S3Settings::default(),
    })
    .expect("storage")
}

async fn write_some(storage: &Storage) {
    let records = Records::new(storage.clone());
    let sha = "ab".repeat(32);
    let at = |secs: i64| DateTime::from_timestamp(secs, 0).unwrap_or_default();
    let blob = BlobRecord {
        sha256: sha.clone(),
        integrity: vec![format!("sha256-{}", STANDARD.encode([0xab; 32]))],
        size: 5,
        url: Some("https://x.example/a.tar.gz".to_owned()),
        fetched_at: at(10),
        upstream: Some(UpstreamMeta {
            status: 200,
            final_url: "https://x.example/a.tar.gz".to_owned(),
            etag: Some("\"1\"".to_owned()),
            last_modified: None,
            content_type: None,
        }),
        rule: Some("https://x.example/".to_owned()),
        requested_by: Some("127.0.0.1".to_owned()),
        chunk_size: 1 << 20,
        chunks: vec!["cd".repeat(32)],
        supplement: false,
    };
    let supplement = BlobRecord {
        integrity: vec![format!("sha512-{}", STANDARD.encode([7u8; 64]))],
        supplement: true,
        ..blob.clone()
    };
    let event = |event, secs| {
        Record::Event(EventRecord {
            event,
            sha256: sha.clone(),
            url: Some("https://x.example/a.tar.gz".to_owned()),
            at: at(secs),
            detail: String::new(),
        })
    };
    for r in [
        Record::Blob(blob),
        Record::Pin(PinRecord {
            url: "https://x.example/a.tar.gz".to_owned(),
            sha256: sha.clone(),
            at: at(10),
        }),
        Record::Blob(supplement),
        event(EventKind::Access, 20),
        event(EventKind::Drift, 30),
        event(EventKind::Quarantine, 40),
    ] {
        records.append(&r).await.expect("append");
    }
    let junk = StorageKey::Record {
        stream: "pins",
        id: "not-a-record.json".to_owned(),
    };
    storage
        .put(&junk, Bytes::from_static(b"{"))
        .await
        .expect("put");
}

#[tokio::test]
async fn a_local_folder_loads_like_any_other_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().display();
    let local = storage(&format!("{root}/records/"), &format!("{root}/cas/"));
    let memory = storage("memory:///records", "memory:///cas");
    let mut loaded = Vec::new();
    for s in [&local, &memory] {
        write_some(s).await;
        let (state, bad) = Records::new(s.clone()).load().await.expect("load");
        assert_eq!(bad, 1, "the junk record");
        loaded.push(state);
    }
    // The first store really is a local folder (read by the storage's local readers).
    assert!(local.layout().records.local_path().is_some());
    for (state, s) in loaded.iter().zip([&local, &memory]) {
        let sha = "ab".repeat(32);
        let b = state.blob(&sha).expect("blob");
        assert!(b.quarantined);
        assert_eq!(b.integrity().len(), 2, "with the supplement");
        assert_eq!(
            b.last_access,
            DateTime::from_timestamp(20, 0).unwrap_or_default()
        );
        assert_eq!(
            state.pin("https://x.example/a.tar.gz").map(|p| p.sha256),
            Some(b.sha256())
        );
        assert_eq!(state.drift.len(), 1);
        assert_eq!(
            state.resolve_alias("sha512", &hex::encode([7u8; 64])),
            Some(sha.clone())
        );
        // Every key just read is remembered: the next reload skips them all.
        let (again, _) = Records::new(s.clone())
            .fetch_new(&state.newest, &|k| state.has_seen(k))
            .await
            .expect("reload");
        assert!(again.is_empty(), "{again:?}");
    }
    assert_eq!(
        loaded[0].blob(&"ab".repeat(32)).map(BlobState::record),
        loaded[1].blob(&"ab".repeat(32)).map(BlobState::record)
    );
}

/// Issue 21, defect 4: the incremental listing started from the newest time inside a record,
/// so one record dated 2099 hid every newer record from the other replicas. Whether the
/// future date is inside the record only (a damaged file) or in its key too (a replica whose
/// clock runs ahead), records written afterwards are still listed.
#[tokio::test]
async fn a_future_dated_record_hides_no_newer_record() {
    let future = DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z")
        .expect("date")
        .to_utc();
    let pin = |url: &str, at: DateTime<Utc>| {
        Record::Pin(PinRecord {
            url: url.to_owned(),
            sha256: "ab".repeat(32),
            at,
        })
    };
    // (key time, inner time) of the future-dated record.
    for (key_at, inner_at) in [
        (None, future),
        (Some(future), future),
        (Some(future), Utc::now()),
    ] {
        let s = storage("memory:///records", "memory:///cas");
        let records = Records::new(s.clone());
        records
            .append(&pin("https://x.example/real", Utc::now()))
            .await
            .expect("append");
        let bytes = serde_json::to_vec(&pin("https://x.example/skewed", inner_at)).expect("json");
        match key_at {
            // A record written now whose content claims 2099.
            None => {
                records
                    .append(&serde_json::from_slice(&bytes).expect("record"))
                    .await
                    .expect("append");
            }
            // A record whose writer's clock reads 2099.
            Some(t) => {
                let key = StorageKey::Record {
                    stream: "pins",
                    id: format!("{}-{:016x}-{:010}.json", key_time(t), 7, 0),
                };
                s.put(&key, Bytes::from(bytes)).await.expect("put");
            }
        }
        let (mut state, bad) = records.load().await.expect("load");
        assert_eq!(bad, 0);
        assert!(state.pin("https://x.example/skewed").is_some());
        // Another replica pins a URL afterwards: the next reload must see it.
        Records::new(s.clone())
            .append(&pin("https://x.example/later", Utc::now()))
            .await
            .expect("append");
        let (new, _) = records
            .fetch_new(&state.newest, &|k| state.has_seen(k))
            .await
            .expect("reload");
        assert_eq!(new.len(), 1, "{key_at:?} {inner_at}: {new:?}");
        let cap = Utc::now() + super::super::state::FUTURE_MARGIN;
        assert!(state.newest["pins"] <= cap, "{:?}", state.newest);
        state.apply_new(new);
        assert!(
            state.pin("https://x.example/later").is_some(),
            "{key_at:?} {inner_at}"
        );
        // And it is not read twice.
        let (again, _) = records
            .fetch_new(&state.newest, &|k| state.has_seen(k))
            .await
            .expect("reload");
        assert!(again.is_empty(), "{again:?}");
    }
}
