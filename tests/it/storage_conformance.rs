//! One conformance suite for the storage facade (in the style of object_store's own
//! integration tests: public test functions over a [`Storage`]), run on `memory://`, `file://`
//! and a real Garage (S3). Each suite function gets a fresh, empty storage, so listings can be
//! compared exactly.
//!
//! Garage 2.5 ignores `If-None-Match` and `If-Match` on PutObject (measured by
//! `storage probe`, see `storage_probe.rs`), so nothing here relies on conditional puts; the
//! records test writes concurrently from several writers and would catch a regression to
//! read-modify-write, which loses facts on such a store.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt as _, TryStreamExt as _};
use gf_registry::mirror::records::{PinRecord, Record, Records};
use gf_registry::storage::{Location, Role, S3Settings, Storage, StorageKey, StorageLayout};

use crate::support::Garage;
use crate::support::sha256_hex;

/// Size of the large upload: over 100 MB, with a last part that is not full.
pub(crate) const LARGE: u64 = 110_000_123;

/// Deterministic, incompressible bytes.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut buf);
    buf
}

fn blob_key(bytes: &[u8]) -> StorageKey {
    StorageKey::blob("sha256", &sha256_hex(bytes))
}

fn record(stream: &'static str, id: &str) -> StorageKey {
    StorageKey::Record {
        stream,
        id: id.to_owned(),
    }
}

/// Reads `range` of `key` through the facade's streaming ranged read.
async fn read_range(s: &Storage, key: &StorageKey, range: std::ops::Range<u64>) -> Option<Vec<u8>> {
    let stream = s.get_range(key, range).await.expect("get_range")?;
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("range stream");
    Some(chunks.concat())
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

/// CAS blobs: put, get, size, list, delete (twice), and a small `put_file`.
pub(crate) async fn blobs_round_trip(s: &Storage, scratch: &Path) {
    s.check(Duration::from_secs(10)).await.expect("check");
    let bytes = noise("blob", 70_001);
    let key = blob_key(&bytes);
    assert_eq!(s.get(&key).await.expect("get"), None);
    assert_eq!(s.size(&key).await.expect("size"), None);
    s.put(&key, Bytes::from(bytes.clone())).await.expect("put");
    assert_eq!(s.get(&key).await.expect("get").as_deref(), Some(&bytes[..]));
    assert_eq!(s.size(&key).await.expect("size"), Some(bytes.len() as u64));
    assert_eq!(
        s.list(Role::Cas, "sha256").await.expect("list"),
        [key.path().to_string()]
    );
    // A small file goes up through put_file too (one request, below the part size).
    let small = noise("small file", 3 << 20);
    let path = scratch.join("small");
    std::fs::write(&path, &small).expect("write");
    let small_key = blob_key(&small);
    assert_eq!(
        s.put_file(&small_key, &path).await.expect("put_file"),
        small.len() as u64
    );
    assert_eq!(
        s.get(&small_key).await.expect("get").as_deref(),
        Some(&small[..])
    );
    let mut want = vec![key.path().to_string(), small_key.path().to_string()];
    want.sort();
    assert_eq!(s.list(Role::Cas, "sha256").await.expect("list"), want);
    s.delete(&key).await.expect("delete");
    assert_eq!(s.get(&key).await.expect("get"), None);
    assert_eq!(s.size(&key).await.expect("size"), None);
    s.delete(&key)
        .await
        .expect("deleting an absent blob succeeds");
    assert_eq!(
        s.list(Role::Cas, "sha256").await.expect("list"),
        [small_key.path().to_string()]
    );
}

/// Records: put, get, size, list, overwrite, delete.
pub(crate) async fn records_round_trip(s: &Storage) {
    let a = record("pins", "20260101T000000Z-a.json");
    let b = record("pins", "20260101T000000Z-b.json");
    s.put(&a, Bytes::from_static(b"{\"a\":1}"))
        .await
        .expect("put");
    s.put(&b, Bytes::from_static(b"{\"b\":22}"))
        .await
        .expect("put");
    assert_eq!(
        s.get(&a).await.expect("get").as_deref(),
        Some(&b"{\"a\":1}"[..])
    );
    assert_eq!(s.size(&b).await.expect("size"), Some(8));
    assert_eq!(
        s.list(Role::Records, "pins").await.expect("list"),
        [a.path().to_string(), b.path().to_string()]
    );
    // A put replaces the object as a whole.
    s.put(&a, Bytes::from_static(b"{\"a\":333}"))
        .await
        .expect("overwrite");
    assert_eq!(
        s.get(&a).await.expect("get").as_deref(),
        Some(&b"{\"a\":333}"[..])
    );
    let meta = s.list_meta(Role::Records, "pins").await.expect("list_meta");
    assert_eq!(meta.len(), 2);
    assert_eq!((meta[0].0.as_str(), meta[0].1), (a.path().as_ref(), 9));
    let age = Utc::now() - meta[0].2;
    assert!(
        age.num_seconds().abs() < 600,
        "last_modified {} is far from now",
        meta[0].2
    );
    s.delete(&a).await.expect("delete");
    assert_eq!(s.get(&a).await.expect("get"), None);
    assert_eq!(
        s.list(Role::Records, "pins").await.expect("list"),
        [b.path().to_string()]
    );
}

/// The same relative path in the two roles names two objects; neither role lists the other's.
pub(crate) async fn roles_are_apart(s: &Storage) {
    let bytes = noise("apart", 1000);
    let blob = blob_key(&bytes);
    let hex = sha256_hex(&bytes);
    // A record whose path equals the blob's path, in the other role.
    let twin = record("sha256", &hex);
    assert_eq!(blob.path(), twin.path());
    s.put(&blob, Bytes::from(bytes.clone())).await.expect("put");
    assert_eq!(s.get(&twin).await.expect("get"), None);
    assert!(s.list(Role::Records, "").await.expect("list").is_empty());
    s.put(&twin, Bytes::from_static(b"record"))
        .await
        .expect("put");
    assert_eq!(
        s.get(&blob).await.expect("get").as_deref(),
        Some(&bytes[..])
    );
    assert_eq!(
        s.get(&twin).await.expect("get").as_deref(),
        Some(&b"record"[..])
    );
    assert_eq!(
        s.list(Role::Cas, "").await.expect("list"),
        [blob.path().to_string()]
    );
    assert_eq!(
        s.list(Role::Records, "").await.expect("list"),
        [twin.path().to_string()]
    );
    s.delete(&blob).await.expect("delete");
    assert_eq!(
        s.get(&twin).await.expect("get").as_deref(),
        Some(&b"record"[..])
    );
    assert!(s.list(Role::Cas, "").await.expect("list").is_empty());
}

/// Listing is by whole path segments, recursive, sorted, and never crosses into a sibling
/// whose name merely starts with the prefix.
pub(crate) async fn listing_under_prefixes(s: &Storage) {
    let b1 = StorageKey::blob("sha256", &"aa".repeat(32));
    let b2 = StorageKey::blob("sha256", &"0b".repeat(32));
    let b3 = StorageKey::blob("sha512", &"cc".repeat(64));
    let tmp = StorageKey::Temp {
        id: "upload-1".to_owned(),
    };
    for (i, k) in [&b1, &b2, &b3, &tmp].into_iter().enumerate() {
        s.put(k, Bytes::from(vec![b'x'; i + 1])).await.expect("put");
    }
    let p = |k: &StorageKey| k.path().to_string();
    assert_eq!(
        s.list(Role::Cas, "sha256").await.expect("list"),
        [p(&b2), p(&b1)]
    );
    assert_eq!(s.list(Role::Cas, "sha512").await.expect("list"), [p(&b3)]);
    assert_eq!(s.list(Role::Cas, "tmp").await.expect("list"), [p(&tmp)]);
    assert_eq!(
        s.list(Role::Cas, "").await.expect("list"),
        [p(&b2), p(&b1), p(&b3), p(&tmp)]
    );
    assert!(
        s.list(Role::Cas, "sha").await.expect("list").is_empty(),
        "a prefix matches whole segments only"
    );
    assert!(s.list(Role::Cas, "nothing").await.expect("list").is_empty());
    let sizes: Vec<(String, u64)> = s
        .list_meta(Role::Cas, "")
        .await
        .expect("list_meta")
        .into_iter()
        .map(|(k, n, _)| (k, n))
        .collect();
    assert_eq!(sizes, [(p(&b2), 2), (p(&b1), 1), (p(&b3), 3), (p(&tmp), 4)]);

    for (stream, id) in [
        ("pins", "2"),
        ("pins", "1"),
        ("pins", "3"),
        ("pinsx", "1"),
        ("events", "1"),
    ] {
        s.put(&record(stream, id), Bytes::from_static(b"{}"))
            .await
            .expect("put");
    }
    assert_eq!(
        s.list(Role::Records, "pins").await.expect("list"),
        ["pins/1", "pins/2", "pins/3"]
    );
    assert_eq!(
        s.list(Role::Records, "pinsx").await.expect("list"),
        ["pinsx/1"]
    );
    assert_eq!(s.list(Role::Records, "").await.expect("list").len(), 5);
    // Many objects: listings page on S3 (1000 keys a page); nothing is lost across pages.
    let many: Vec<String> = (0..1100).map(|i| format!("{i:05}")).collect();
    futures::stream::iter(many.iter())
        .map(|id| async move {
            s.put(&record("events", id), Bytes::from_static(b"{}"))
                .await
                .expect("put");
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let listed = s.list(Role::Records, "events").await.expect("list");
    assert_eq!(listed.len(), 1101);
    assert_eq!(listed[0], "events/00000");
    assert_eq!(listed[1100], "events/1");
}

/// Ranged reads at the edges, across a 1 MiB boundary (Garage's block size), and of absent
/// objects.
pub(crate) async fn ranged_reads(s: &Storage) {
    let bytes = noise("ranged", (3 << 20) + 17);
    let key = blob_key(&bytes);
    s.put(&key, Bytes::from(bytes.clone())).await.expect("put");
    let len = bytes.len() as u64;
    let mib = 1u64 << 20;
    for r in [
        0..1,
        0..len,
        len - 1..len,
        mib - 1..mib + 1,
        12_345..2_000_000,
        2 * mib..3 * mib,
        len / 2..len,
    ] {
        let got = read_range(s, &key, r.clone()).await.expect("present");
        assert!(
            got == bytes[r.start as usize..r.end as usize],
            "range {r:?}: {} bytes that differ",
            got.len()
        );
    }
    let absent = StorageKey::blob("sha256", &"de".repeat(32));
    assert!(read_range(s, &absent, 0..10).await.is_none());
}

/// Rename within a role: the temp upload becomes the blob, and the temp key is gone.
pub(crate) async fn rename_within_role(s: &Storage) {
    let bytes = noise("rename", 200_000);
    let tmp = StorageKey::Temp {
        id: "r1".to_owned(),
    };
    let blob = blob_key(&bytes);
    s.put(&tmp, Bytes::from(bytes.clone())).await.expect("put");
    s.rename(&tmp, &blob).await.expect("rename");
    assert_eq!(
        s.get(&blob).await.expect("get").as_deref(),
        Some(&bytes[..])
    );
    assert_eq!(s.get(&tmp).await.expect("get"), None);
    assert!(s.list(Role::Cas, "tmp").await.expect("list").is_empty());
    // Onto an existing object: the target holds the renamed bytes.
    let tmp2 = StorageKey::Temp {
        id: "r2".to_owned(),
    };
    s.put(&tmp2, Bytes::from(bytes.clone())).await.expect("put");
    s.rename(&tmp2, &blob).await.expect("rename over");
    assert_eq!(
        s.get(&blob).await.expect("get").as_deref(),
        Some(&bytes[..])
    );
    assert_eq!(
        s.list(Role::Cas, "").await.expect("list"),
        [blob.path().to_string()]
    );
    // In the records role.
    let (a, b) = (record("events", "a"), record("events", "b"));
    s.put(&a, Bytes::from_static(b"{}")).await.expect("put");
    s.rename(&a, &b).await.expect("rename record");
    assert_eq!(
        s.list(Role::Records, "events").await.expect("list"),
        ["events/b"]
    );
}

/// A file over 100 MB goes up in parts through `put_file` to a temp key, is renamed to its
/// blob key, and reads back equal (whole and in ranges across part boundaries). Returns the
/// upload time.
pub(crate) async fn large_multipart_upload(s: &Storage, scratch: &Path) -> Duration {
    let path = scratch.join("large");
    let sha = {
        use sha2::Digest as _;
        let mut f = std::fs::File::create(&path).expect("create");
        let mut h = sha2::Sha256::new();
        let mut xof = blake3::Hasher::new().update(b"large").finalize_xof();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = LARGE as usize;
        while left > 0 {
            let n = left.min(buf.len());
            xof.fill(&mut buf[..n]);
            h.update(&buf[..n]);
            f.write_all(&buf[..n]).expect("write");
            left -= n;
        }
        hex::encode(h.finalize())
    };
    let tmp = StorageKey::Temp {
        id: "large".to_owned(),
    };
    let t = Instant::now();
    let n = s.put_file(&tmp, &path).await.expect("put_file");
    let took = t.elapsed();
    assert_eq!(n, LARGE);
    let blob = StorageKey::blob("sha256", &sha);
    s.rename(&tmp, &blob).await.expect("rename");
    assert_eq!(s.size(&blob).await.expect("size"), Some(LARGE));
    assert_eq!(
        s.list(Role::Cas, "").await.expect("list"),
        [blob.path().to_string()]
    );
    // The whole object, streamed, hashes to the file's digest.
    {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        let mut stream = s
            .get_range(&blob, 0..LARGE)
            .await
            .expect("get_range")
            .expect("present");
        let mut total = 0u64;
        while let Some(chunk) = stream.try_next().await.expect("chunk") {
            total += chunk.len() as u64;
            h.update(&chunk);
        }
        assert_eq!(total, LARGE);
        assert_eq!(hex::encode(h.finalize()), sha, "read-back digest");
    }
    // Ranges across the 10 MiB part boundaries of the upload and at the end.
    let mut file = std::fs::File::open(&path).expect("open");
    let part = 10u64 << 20;
    for r in [
        part - 3..part + 3,
        5 * part - 1..5 * part + 65_537,
        LARGE - 100..LARGE,
        0..4096,
    ] {
        let mut want = vec![0u8; (r.end - r.start) as usize];
        file.seek(SeekFrom::Start(r.start)).expect("seek");
        file.read_exact(&mut want).expect("read");
        let got = read_range(s, &blob, r.clone()).await.expect("present");
        assert!(got == want, "range {r:?} differs");
    }
    std::fs::remove_file(&path).expect("remove");
    took
}

/// An upload interrupted after data was sent (the writer cancelled mid-transfer, as a crash
/// or a dropped client would) leaves nothing visible: no object at the key, nothing listed.
///
/// The source is a FIFO: the test writes 25 MiB into it (so `put_file` has started a multipart
/// upload and sent parts), keeps it open, and cancels the upload while it waits for more.
pub(crate) async fn interrupted_upload_leaves_nothing(s: &Storage, scratch: &Path) {
    let fifo = scratch.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo failed");
    let (written_tx, written_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open fifo");
            let chunk = noise("interrupted", 1 << 20);
            for _ in 0..25 {
                if f.write_all(&chunk).is_err() {
                    return;
                }
            }
            let _ = written_tx.send(());
            // Hold the FIFO open (the reader blocks) until released, bounded.
            let _ = release_rx.recv_timeout(Duration::from_secs(120));
        })
    };
    let key = StorageKey::Temp {
        id: "interrupted".to_owned(),
    };
    let upload = {
        let s = s.clone();
        let key = key.clone();
        let fifo = fifo.clone();
        tokio::spawn(async move { s.put_file(&key, &fifo).await })
    };
    tokio::task::spawn_blocking(move || written_rx.recv_timeout(Duration::from_secs(120)))
        .await
        .expect("join")
        .expect("25 MiB read by put_file within 120 s");
    // Let the parts already handed to the backend land, then cut the upload.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !upload.is_finished(),
        "the upload ended without its input ending"
    );
    upload.abort();
    let cancelled = upload.await;
    assert!(
        cancelled
            .as_ref()
            .is_err_and(tokio::task::JoinError::is_cancelled),
        "{cancelled:?}"
    );
    let _ = release_tx.send(());
    writer.join().expect("writer");
    assert_eq!(s.get(&key).await.expect("get"), None);
    assert_eq!(s.size(&key).await.expect("size"), None);
    assert!(
        s.list(Role::Cas, "").await.expect("list").is_empty(),
        "an interrupted upload is listed"
    );
    std::fs::remove_file(&fifo).expect("remove fifo");
}

/// Facts written at once by many writers for one stream are all kept: records are one
/// object per fact, never read, modified and written back (which loses writes when two
/// writers interleave, and Garage enforces no precondition that would catch it).
pub(crate) async fn concurrent_records_are_all_kept(s: &Storage) {
    const WRITERS: usize = 8;
    const EACH: usize = 16;
    // Through the facade.
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let key = record("pins", &format!("w{w}-{i:03}.json"));
                    s.put(&key, Bytes::from(format!("{{\"w\":{w},\"i\":{i}}}")))
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let listed = s.list(Role::Records, "pins").await.expect("list");
    assert_eq!(listed.len(), WRITERS * EACH, "facts lost: {listed:?}");
    for w in 0..WRITERS {
        for i in 0..EACH {
            let got = s
                .get(&record("pins", &format!("w{w}-{i:03}.json")))
                .await
                .expect("get");
            assert_eq!(
                got.as_deref(),
                Some(format!("{{\"w\":{w},\"i\":{i}}}").as_bytes())
            );
        }
    }
    // Through the mirror's record log, as replicas would: one `Records` per writer, all
    // appending pins with the same timestamp to the same stream at once.
    for key in listed {
        let (_, id) = key.split_once('/').expect("stream/id");
        s.delete(&record("pins", id)).await.expect("delete");
    }
    let at = Utc::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let records = Records::new(s.clone());
            tokio::spawn(async move {
                for i in 0..EACH {
                    records
                        .append(&Record::Pin(PinRecord {
                            url: format!("https://upstream.example/{w}/{i}.tar.gz"),
                            sha256: format!("{w:02x}{i:02x}").repeat(16),
                            at,
                        }))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("appender");
    }
    let (state, bad) = Records::new(s.clone()).load().await.expect("load");
    assert_eq!(bad, 0);
    assert_eq!(state.pins.len(), WRITERS * EACH, "pins lost");
    for w in 0..WRITERS {
        for i in 0..EACH {
            let url = format!("https://upstream.example/{w}/{i}.tar.gz");
            assert_eq!(
                state.pins[url.as_str()].sha256,
                format!("{w:02x}{i:02x}").repeat(16)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The backends
// ---------------------------------------------------------------------------------------------

/// Runs every suite function on fresh storage from `open(name)`; prints timings.
async fn run_suite(backend: &str, open: impl Fn(&str) -> Storage) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let total = Instant::now();
    macro_rules! step {
        ($name:ident $(, $arg:expr)*) => {{
            let t = Instant::now();
            let s = open(stringify!($name));
            let r = $name(&s $(, $arg)*).await;
            eprintln!("{backend}: {} ok in {:?}", stringify!($name), t.elapsed());
            r
        }};
    }
    step!(blobs_round_trip, scratch.path());
    step!(records_round_trip);
    step!(roles_are_apart);
    step!(listing_under_prefixes);
    step!(ranged_reads);
    step!(rename_within_role);
    step!(interrupted_upload_leaves_nothing, scratch.path());
    step!(concurrent_records_are_all_kept);
    let took = step!(large_multipart_upload, scratch.path());
    eprintln!(
        "{backend}: {} MB uploaded with put_file in {:.2} s ({:.0} MB/s)",
        LARGE / 1_000_000,
        took.as_secs_f64(),
        LARGE as f64 / 1e6 / took.as_secs_f64()
    );
    eprintln!("{backend}: suite done in {:?}", total.elapsed());
}

fn layout(root: &str, s3: S3Settings) -> StorageLayout {
    let root = Location::parse(root).expect("location");
    StorageLayout {
        cas: root.join("cas"),
        records: root.join("records"),
        s3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_memory() {
    run_suite("memory", |name| {
        Storage::open(layout(&format!("memory:///{name}"), S3Settings::default())).expect("open")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_suite("file", |name| {
        let root = dir.path().join(name);
        Storage::open(layout(
            &format!("file://{}", root.display()),
            S3Settings::default(),
        ))
        .expect("open")
    })
    .await;
    // The interrupted upload left no staging file behind on disk either (removal is
    // asynchronous: bounded wait).
    let cas = dir.path().join("interrupted_upload_leaves_nothing/cas");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !crate::support::files_under(&cas).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(crate::support::files_under(&cas), Vec::<String>::new());
}

/// Azure Blob Storage through Azurite, Microsoft's emulator, with the options an operator
/// gives for an account behind a custom endpoint. Where Azurite differs from Azure: it
/// serves plain HTTP on a path-style endpoint (`http://HOST/ACCOUNT`), has one fixed account
/// and key, and its multipart (block list) limits are not Azure's; the suite passes the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_azurite() {
    let Some(a) = crate::support::azurite::Azurite::start() else {
        return;
    };
    run_suite("azurite", |name| {
        Storage::open(layout(
            &a.data_url(name),
            S3Settings {
                options: a.options(),
            },
        ))
        .expect("open")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_garage() {
    let Some(g) = Garage::single() else { return };
    eprintln!("garage: single node ready in {:?}", g.started_in);
    run_suite("garage", |name| g.storage(name)).await;
    // The interrupted upload did send data: Garage holds its parts as an unfinished
    // multipart upload, which no read or listing shows.
    let info = g.bucket_info();
    let unfinished = info
        .lines()
        .find_map(|l| l.strip_prefix("Unfinished uploads:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        unfinished.is_some_and(|n| n >= 1),
        "no unfinished upload in `garage bucket info`:\n{info}"
    );
}
