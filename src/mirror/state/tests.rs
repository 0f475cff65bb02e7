use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};

use super::key::Floor;
use super::*;
use crate::mirror::record::{
    BlobRecord, EventKind, EventRecord, PinRecord, Record, UpstreamMeta, key_time,
};

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

fn sri(algorithm: &str, byte: u8, len: usize) -> String {
    format!("{algorithm}-{}", STANDARD.encode(vec![byte; len]))
}

fn blob(supplement: bool, integrity: &[&str], secs: i64) -> Record {
    Record::Blob(BlobRecord {
        sha256: "ab".repeat(32),
        integrity: integrity.iter().map(|s| (*s).to_owned()).collect(),
        size: 1,
        url: Some("https://x.example/a".to_owned()),
        fetched_at: at(secs),
        upstream: None,
        rule: None,
        requested_by: None,
        chunk_size: 1 << 20,
        chunks: vec![],
        supplement,
    })
}

#[test]
fn a_supplement_adds_digests_but_never_revives_a_quarantined_blob() {
    let (own, s512) = (
        format!("sha256-{}", STANDARD.encode([0xab; 32])),
        sri("sha512", 7, 64),
    );
    let mut state = MirrorState::default();
    state.apply(&blob(false, &[&own], 1));
    state.apply(&Record::Event(EventRecord {
        event: EventKind::Quarantine,
        sha256: "ab".repeat(32),
        url: None,
        at: at(2),
        detail: String::new(),
    }));
    state.apply(&blob(true, &[&own, &s512], 1));
    let b = state.blob(&"ab".repeat(32)).expect("blob");
    assert!(b.quarantined, "still quarantined");
    assert_eq!(b.integrity(), [own.clone(), s512]);
    assert_eq!(
        state.resolve_alias("sha512", &hex::encode([7u8; 64])),
        Some("ab".repeat(32))
    );
    // A real re-ingest does clear it.
    state.apply(&blob(false, &[&own], 3));
    assert!(!state.blob(&"ab".repeat(32)).expect("blob").quarantined);
}

#[test]
fn applied_keys_are_forgotten_once_no_listing_can_return_them() {
    let mut state = MirrorState::default();
    let mut strings = Strings::default();
    let mut pin = |secs: i64| NewRecord {
        time: at(secs),
        key: RecordKey::parse(&format!(
            "pins/{}-0000000000000001-0000000001.json",
            key_time(at(secs))
        )),
        record: Folded::new(
            &Record::Pin(PinRecord {
                url: format!("https://x.example/{secs}"),
                sha256: "aa".repeat(32),
                at: at(secs),
            }),
            &mut strings,
        ),
    };
    let (early, late) = (pin(1_000), pin(1_000 + 3_600));
    let again = pin(1_000 + 3_600);
    state.apply_new(vec![early, late]);
    assert_eq!(state.pins.len(), 2, "both applied");
    assert_eq!(
        state.seen.len(),
        1,
        "the key an hour older than the newest is forgotten"
    );
    // Re-applying the remembered one is still a no-op.
    state.apply_new(vec![again]);
    assert_eq!(state.pins.len(), 2);
}

#[test]
fn first_pin_wins() {
    let mut state = MirrorState::default();
    for (sha, secs) in [("aa", 1), ("bb", 2)] {
        state.apply(&Record::Pin(PinRecord {
            url: "https://x.example/a".to_owned(),
            sha256: sha.repeat(32),
            at: at(secs),
        }));
    }
    assert_eq!(state.pins["https://x.example/a"].sha256, "aa".repeat(32));
}

#[test]
fn a_blob_record_reads_back_exactly_as_stored() {
    let sha = "0f".repeat(32);
    let own = format!("sha256-{}", STANDARD.encode([0x0f; 32]));
    let record = BlobRecord {
        sha256: sha.clone(),
        integrity: vec![
            own.clone(),
            sri("sha384", 1, 48),
            sri("sha512", 2, 64),
            // Not canonical (no padding), another sha256, an unknown algorithm, not SRI.
            sri("sha512", 3, 64).trim_end_matches('=').to_owned(),
            sri("sha256", 4, 32),
            "md5-abc".to_owned(),
            "??".to_owned(),
        ],
        size: 3 << 20,
        url: Some("https://x.example/a.tar.gz".to_owned()),
        fetched_at: at(5),
        upstream: Some(UpstreamMeta {
            status: 200,
            final_url: "https://cdn.example/a.tar.gz".to_owned(),
            etag: Some("\"e\"".to_owned()),
            last_modified: None,
            content_type: Some("application/gzip".to_owned()),
        }),
        rule: Some("https://x.example/".to_owned()),
        requested_by: Some("127.0.0.1".to_owned()),
        chunk_size: 1 << 20,
        chunks: vec!["12".repeat(32), "34".repeat(32), "56".repeat(32)],
        supplement: false,
    };
    let mut state = MirrorState::default();
    state.apply(&Record::Blob(record.clone()));
    let b = state.blob(&sha).expect("blob");
    assert_eq!(b.record(), record);
    assert_eq!(b.urls().collect::<Vec<_>>(), ["https://x.example/a.tar.gz"]);
    // Chunk digests not in lowercase hex are kept as text.
    let odd = BlobRecord {
        chunks: vec!["AB".repeat(32), "cd".repeat(32)],
        upstream: None,
        ..record.clone()
    };
    state.apply(&Record::Blob(odd.clone()));
    assert_eq!(state.blob(&sha).expect("blob").record(), odd);
    // Only the canonical sha384/sha512 values are aliases.
    assert_eq!(
        state.resolve_alias("sha384", &hex::encode([1u8; 48])),
        Some(sha.clone())
    );
    assert_eq!(state.resolve_alias("sha512", &hex::encode([3u8; 64])), None);
    // A record whose sha256 is not lowercase hex is not folded.
    state.apply(&Record::Blob(BlobRecord {
        sha256: "AB".repeat(32),
        ..record
    }));
    assert_eq!(state.blobs.len(), 1);
}

#[test]
fn urls_are_sorted_and_shared() {
    let mut state = MirrorState::default();
    let sha = "ab".repeat(32);
    state.apply(&blob(false, &[], 1));
    for u in [
        "https://z.example/a",
        "https://x.example/a",
        "https://b.example/a",
    ] {
        state.apply(&Record::Pin(PinRecord {
            url: u.to_owned(),
            sha256: sha.clone(),
            at: at(2),
        }));
    }
    let b = state.blob(&sha).expect("blob");
    assert_eq!(
        b.urls().collect::<Vec<_>>(),
        [
            "https://b.example/a",
            "https://x.example/a",
            "https://z.example/a"
        ]
    );
    let (pinned, _) = state
        .pins
        .get_key_value("https://x.example/a")
        .expect("pin");
    assert!(b.urls.iter().any(|u| Arc::ptr_eq(u, pinned)), "one copy");
}

#[test]
fn record_keys_read_back_and_sort_like_their_text() {
    let written = format!(
        "blobs/{}-{:016x}-{:010}.json",
        key_time(Utc::now()),
        0x0123_4567_89ab_cdef_u64,
        42
    );
    let texts = [
        written.as_str(),
        "blobs/20260101T000000.000000000Z-0000000000000000-0000000000.json",
        "blobs/20260101T000000.000000000Z-0000000000000000-0000000001.json",
        "blobs/20260101T000000.000000001Z-0000000000000000-0000000000.json",
        "events/19991231T235959.999999999Z-ffffffffffffffff-9999999999.json",
        "pins/20260101T000000.000000000Z-00000000000000ff-0000000000.json",
        // Not the written form: kept as text.
        "pins/20260101T000000.000000000Z-00000000000000FF-0000000000.json",
        "pins/20260101T000000.000000000Z-00000000000000ff-10000000000.json",
        "pins/20261301T000000.000000000Z-00000000000000ff-0000000000.json",
        "blobs/x.json",
        "other/20260101T000000.000000000Z-0000000000000000-0000000000.json",
        "noslash",
        "",
    ];
    let keys: Vec<RecordKey> = texts.iter().map(|t| RecordKey::parse(t)).collect();
    for (k, t) in keys.iter().zip(texts) {
        assert_eq!(k.to_string(), t);
        assert_eq!(k.stream(), t.split_once('/').map_or("", |(s, _)| s));
    }
    assert!(
        matches!(keys[0].0, key::Repr::Parsed { .. }),
        "written keys are numbers"
    );
    assert!(matches!(keys[6].0, key::Repr::Text(_)));
    for (a, ta) in keys.iter().zip(texts) {
        for (b, tb) in keys.iter().zip(texts) {
            assert_eq!(a.cmp(b), ta.cmp(tb), "{ta} vs {tb}");
            assert_eq!(a == b, ta == tb);
        }
    }
    // The floor keeps what the original text comparison kept.
    for stream in ["blobs", "pins", "events", "other", "blob"] {
        for t in [
            at(1_767_225_600),
            at(1_767_225_600) + chrono::TimeDelta::nanoseconds(1),
        ] {
            let floor = Floor::new(stream, t);
            let prefix = format!("{stream}/");
            let text_floor = format!("{prefix}{}", key_time(t));
            for (k, text) in keys.iter().zip(texts) {
                let want = !text.starts_with(&prefix) || text > text_floor.as_str();
                assert_eq!(floor.keeps(k), want, "{text} at {stream} {t}");
            }
        }
    }
}

#[test]
fn aliases_resolve_as_a_plain_map_of_every_recorded_value_would() {
    // The model: what the state kept before it was packed, a map from every sha384/sha512
    // value of every blob record to that record's blob, the latest winning.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap_or(0)
    };
    // Values that share their first eight bytes, to exercise the spill.
    let digest = |i: usize, len: usize| {
        let mut d = vec![0x5a; len];
        d[8] = u8::try_from(i).unwrap_or(0);
        if i.is_multiple_of(3) {
            d[0] = u8::try_from(i).unwrap_or(0);
        }
        d
    };
    let values: Vec<String> = (0..8_usize)
        .map(|i| {
            let (algorithm, len) = if i.is_multiple_of(2) {
                ("sha384", 48)
            } else {
                ("sha512", 64)
            };
            format!("{algorithm}-{}", STANDARD.encode(digest(i, len)))
        })
        .collect();
    let shas: Vec<String> = (0..4).map(|i| format!("{i:02x}").repeat(32)).collect();
    for _round in 0..200 {
        let mut state = MirrorState::default();
        let mut model: std::collections::HashMap<String, String> = Default::default();
        for step in 0..12 {
            let sha = shas[next(shas.len())].clone();
            let integrity: Vec<String> = (0..next(4))
                .map(|_| values[next(values.len())].clone())
                .collect();
            let supplement = next(3) == 0;
            for v in &integrity {
                model.insert(v.clone(), sha.clone());
            }
            state.apply(&Record::Blob(BlobRecord {
                sha256: sha,
                integrity,
                size: 1,
                url: None,
                fetched_at: at(step),
                upstream: None,
                rule: None,
                requested_by: None,
                chunk_size: 1,
                chunks: vec![],
                supplement,
            }));
            for v in &values {
                let (algorithm, b64) = v.split_once('-').expect("sri");
                let hex = hex::encode(STANDARD.decode(b64).expect("base64"));
                assert_eq!(
                    state.resolve_alias(algorithm, &hex),
                    model.get(v).cloned(),
                    "{v}"
                );
            }
        }
    }
}

#[test]
fn a_key_listed_twice_is_applied_once() {
    let mut state = MirrorState::default();
    let mut strings = Strings::default();
    let mut drift = |secs: i64| NewRecord {
        time: at(secs),
        key: RecordKey::parse(&format!(
            "events/{}-0000000000000001-0000000001.json",
            key_time(at(secs))
        )),
        record: Folded::new(
            &Record::Event(EventRecord {
                event: EventKind::Drift,
                sha256: "aa".repeat(32),
                url: Some("https://x.example/a".to_owned()),
                at: at(secs),
                detail: String::new(),
            }),
            &mut strings,
        ),
    };
    let batch = vec![drift(5), drift(4), drift(5)];
    let later = vec![drift(4), drift(6)];
    state.apply_new(batch);
    assert_eq!(state.drift.len(), 2);
    state.apply_new(later);
    assert_eq!(state.drift.len(), 3);
    assert_eq!(state.seen.len(), 3);
    assert!(state.has_seen(&RecordKey::parse(&format!(
        "events/{}-0000000000000001-0000000001.json",
        key_time(at(4))
    ))));
}

/// Issue 21, defect 4: listing positions come from keys, capped at now plus a margin. A
/// replica whose clock runs a year ahead writes keys dated then; this replica's listings must
/// still start before its own now, and move on once real keys pass the cap.
#[test]
fn listing_positions_follow_keys_and_stop_a_little_past_now() {
    use crate::mirror::clock::{Clock as _, TestClock};
    let clock = TestClock::at(at(1_000_000));
    let mut strings = Strings::default();
    let mut pin = |key_at: DateTime<Utc>, inner_at: DateTime<Utc>, n: u32| NewRecord {
        time: inner_at,
        key: RecordKey::parse(&format!(
            "pins/{}-0000000000000002-{n:010}.json",
            key_time(key_at)
        )),
        record: Folded::new(
            &Record::Pin(PinRecord {
                url: format!("https://x.example/{n}"),
                sha256: "aa".repeat(32),
                at: inner_at,
            }),
            &mut strings,
        ),
    };
    let year = chrono::TimeDelta::days(365);
    let now = clock.now();
    let mut state = MirrorState::default();
    // A record whose content claims a year ahead, under a key of now: the key counts.
    state.apply_new_at(vec![pin(now, now + year, 1)], now);
    assert_eq!(state.newest["pins"], now);
    // A key a year ahead (a fast clock elsewhere): capped.
    state.apply_new_at(vec![pin(now + year, now + year, 2)], now);
    assert_eq!(state.newest["pins"], now + FUTURE_MARGIN);
    assert!(
        state.newest["pins"] - RELIST_WINDOW < now,
        "listing reaches back before now"
    );
    // Time passes here; real keys move the position on, never past now plus the margin.
    clock.advance(chrono::TimeDelta::minutes(10));
    let later = clock.now();
    state.apply_new_at(vec![pin(later, later, 3)], later);
    assert_eq!(state.newest["pins"], later);
    state.apply_new_at(vec![pin(later + year, later, 4)], later);
    assert_eq!(state.newest["pins"], later + FUTURE_MARGIN);
    assert_eq!(state.pins.len(), 4);
}
