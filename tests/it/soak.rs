//! A bounded soak of the real binary: mixed registry reads, mirror hits, misses and publishes
//! from several client tasks at once; only the expected answers, and memory stays flat.
//!
//! The load runs for `GF_SOAK_SECONDS` (default 30, so the normal suite stays fast). The
//! two-minute soak of the issue is
//!
//! ```sh
//! GF_SOAK_SECONDS=120 cargo test --test it soak -- --nocapture
//! ```
//!
//! The server's RSS (`VmRSS` of `/proc/PID/status`) is sampled after a warm-up (5 s) and at
//! the end; growth must stay under 50% (generous: memory targets belong in benchmarks; this
//! catches leaks). Every request is counted by kind and outcome, and the counts are printed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::support::load::{Layout, Outcome, Release, Rng, allow_upstream, get_verified, publish};
use crate::support::{
    Answer, Spawned, Upstream, client, example_registry, files_under, sha256_hex,
};

/// Client tasks.
const CLIENTS: usize = 8;
/// Default length of the load, in seconds.
const DEFAULT_SECONDS: u64 = 30;
/// When the first RSS sample is taken, after the load started.
const WARM_UP: Duration = Duration::from_secs(5);
/// Largest RSS growth accepted between the two samples, in percent.
const MAX_GROWTH_PCT: f64 = 50.0;
/// Pre-filled mirror URLs (the hits).
const HITS: usize = 16;
/// Fixed seed.
const SEED: u64 = 0x50AC_2024;

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    /// `GET /modules/M/metadata.json` of a module of the example registry: `200`, its bytes.
    Metadata,
    /// `GET /modules/M/V/MODULE.bazel` of the example registry: `200`, its bytes.
    ModuleFile,
    /// `GET /modules/unknown/metadata.json`: `404`.
    UnknownModule,
    /// A pre-filled mirror URL (its upstream answers `404` now): `200`, its bytes.
    MirrorHit,
    /// A new URL the upstream serves: `200`, its bytes.
    MirrorMiss,
    /// A new URL the upstream does not have: `404`.
    MirrorAbsent,
    /// A new version of a module of its own: `201`.
    Publish,
}

/// The example registry's files a reader asks for, with their bytes.
#[derive(Debug, Clone)]
struct Known {
    metadata: Vec<(String, Bytes)>,
    module_files: Vec<(String, Bytes)>,
}

fn known_files() -> Known {
    let root = example_registry();
    let mut known = Known {
        metadata: Vec::new(),
        module_files: Vec::new(),
    };
    for rel in files_under(&root) {
        let bytes = Bytes::from(std::fs::read(root.join(&rel)).expect("read"));
        let path = format!("/{rel}");
        if rel.starts_with("modules/") && rel.ends_with("/metadata.json") {
            known.metadata.push((path, bytes));
        } else if rel.starts_with("modules/") && rel.ends_with("/MODULE.bazel") {
            known.module_files.push((path, bytes));
        }
    }
    assert!(!known.metadata.is_empty() && !known.module_files.is_empty());
    known
}

/// Counts by kind and outcome, and the unexpected answers.
#[derive(Debug, Default)]
struct Counts {
    by: BTreeMap<(Kind, String), u64>,
    /// Total and largest latency by kind.
    latency: BTreeMap<Kind, (Duration, Duration)>,
    errors: Vec<String>,
    error_count: u64,
}

impl Counts {
    fn add(&mut self, kind: Kind, outcome: &str, error: Option<String>, took: Duration) {
        *self.by.entry((kind, outcome.to_owned())).or_default() += 1;
        let l = self.latency.entry(kind).or_default();
        l.0 += took;
        l.1 = l.1.max(took);
        if let Some(e) = error {
            self.error_count += 1;
            if self.errors.len() < 20 {
                self.errors.push(format!("{kind:?}: {e}"));
            }
        }
    }
}

/// `VmRSS` of a process, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A plain GET expecting `want` status and, for `200`, exactly `body` (when given).
async fn get_expect(
    c: &reqwest::Client,
    url: &str,
    want: u16,
    body: Option<&Bytes>,
) -> (String, Option<String>) {
    let resp = match c.get(url).send().await {
        Ok(r) => r,
        Err(e) => return ("transport".to_owned(), Some(format!("{url}: {e}"))),
    };
    let status = resp.status().as_u16();
    let got = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return ("transport".to_owned(), Some(format!("{url}: body: {e}"))),
    };
    let outcome = status.to_string();
    if status != want {
        let text = String::from_utf8_lossy(&got[..got.len().min(200)]).into_owned();
        return (
            outcome,
            Some(format!("{url}: {status}, expected {want}: {text}")),
        );
    }
    if let Some(b) = body
        && got != *b
    {
        return (
            "wrong-bytes".to_owned(),
            Some(format!("{url}: other bytes")),
        );
    }
    (outcome, None)
}

/// Classifies an [`Outcome`] where `ok` is the expected status.
fn classify(o: Outcome, what: &str, ok: u16) -> (String, Option<String>) {
    match o {
        Outcome::Acknowledged => (ok.to_string(), None),
        Outcome::Refused(status, text) => (
            status.to_string(),
            Some(format!(
                "{what}: {status}: {}",
                &text[..text.len().min(200)]
            )),
        ),
        Outcome::Cut(e) => ("transport".to_owned(), Some(format!("{what}: {e}"))),
        Outcome::Wrong(e) => ("wrong".to_owned(), Some(format!("{what}: {e}"))),
    }
}

/// The state every client shares.
struct Shared {
    base: String,
    up: Arc<Upstream>,
    known: Known,
    hits: Vec<(String, String)>,
    /// Unique numbers for new URLs and unknown modules.
    next: AtomicU64,
    counts: Mutex<Counts>,
}

/// One client: random requests until `deadline`.
async fn client_task(shared: Arc<Shared>, index: usize, deadline: Instant, reads_only: bool) {
    let c = client::no_redirects(Duration::from_secs(60));
    let mut rng = Rng::new(SEED + index as u64 + if reads_only { 1000 } else { 0 });
    let mut published = 0u32;
    while Instant::now() < deadline {
        // Reads only: registry files, unknown modules and mirror hits, which store nothing new.
        let roll = rng.between(0, if reads_only { 78 } else { 99 });
        let sent = Instant::now();
        let (kind, (outcome, error)) = match roll {
            0..=28 => {
                let (p, b) = &shared.known.metadata
                    [rng.between(0, shared.known.metadata.len() as u64 - 1) as usize];
                let r = get_expect(&c, &format!("{}{p}", shared.base), 200, Some(b)).await;
                (Kind::Metadata, r)
            }
            29..=48 => {
                let (p, b) = &shared.known.module_files
                    [rng.between(0, shared.known.module_files.len() as u64 - 1) as usize];
                let r = get_expect(&c, &format!("{}{p}", shared.base), 200, Some(b)).await;
                (Kind::ModuleFile, r)
            }
            49..=58 => {
                let n = shared.next.fetch_add(1, Ordering::Relaxed);
                let url = format!("{}/modules/no_such_module_{n}/metadata.json", shared.base);
                (Kind::UnknownModule, get_expect(&c, &url, 404, None).await)
            }
            59..=78 => {
                let (path, sha) = &shared.hits[rng.between(0, HITS as u64 - 1) as usize];
                let url = format!("{}/mirror/{}{path}", shared.base, shared.up.host());
                (
                    Kind::MirrorHit,
                    classify(get_verified(&c, &url, sha).await, &url, 200),
                )
            }
            79..=88 => {
                let n = shared.next.fetch_add(1, Ordering::Relaxed);
                let path = format!("/miss/c{index}/{n}.bin");
                let size = (4usize << 10) << rng.between(0, 6);
                let mut bytes = format!("{path}\n").into_bytes();
                bytes.extend(rng.bytes(size));
                let sha = sha256_hex(&bytes);
                shared.up.set(&path, Answer::Bytes(Bytes::from(bytes)));
                let url = format!("{}/mirror/{}{path}", shared.base, shared.up.host());
                let r = classify(get_verified(&c, &url, &sha).await, &url, 200);
                // Served from the store from now on; the double forgets the bytes.
                shared.up.set(&path, Answer::Status(404));
                (Kind::MirrorMiss, r)
            }
            89..=95 => {
                let n = shared.next.fetch_add(1, Ordering::Relaxed);
                let url = format!(
                    "{}/mirror/{}/absent/c{index}/{n}.tar.gz",
                    shared.base,
                    shared.up.host()
                );
                (Kind::MirrorAbsent, get_expect(&c, &url, 404, None).await)
            }
            // 96..=99: 4% publishes (each one is a registry write under the lock).
            _ => {
                published += 1;
                let len = usize::try_from(rng.between(1 << 10, 16 << 10)).expect("len");
                let r = Release::new(
                    &format!("soak_c{index}"),
                    &format!("1.{published}.0"),
                    rng.bytes(len),
                    None,
                );
                let what = format!("publish {}@{}", r.module, r.version);
                let o = publish(&c, &shared.base, &r).await;
                (Kind::Publish, classify(o, &what, 201))
            }
        };
        shared
            .counts
            .lock()
            .expect("counts")
            .add(kind, &outcome, error, sent.elapsed());
    }
}

/// The soak: 8 clients for `GF_SOAK_SECONDS`; zero unexpected answers, RSS growth under 50%.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_mixed_load_has_no_errors_and_flat_memory() {
    let seconds: u64 = std::env::var("GF_SOAK_SECONDS")
        .ok()
        .map(|v| v.parse().expect("GF_SOAK_SECONDS is a number of seconds"))
        .unwrap_or(DEFAULT_SECONDS);
    let duration = Duration::from_secs(seconds.max(1));
    let warm_up = WARM_UP.min(duration / 3);
    let up = Arc::new(Upstream::start().await);
    let layout = Layout::new(&allow_upstream(&up));
    let mut server: Spawned = layout.serve();
    let c = client::no_redirects(Duration::from_secs(60));

    // The hits: filled once, then only the store has them.
    let mut rng = Rng::new(SEED);
    let mut hits = Vec::new();
    for i in 0..HITS {
        let path = format!("/hits/h{i}.bin");
        let size = (64usize << 10) << rng.between(0, 4);
        let mut bytes = format!("{path}\n").into_bytes();
        bytes.extend(rng.bytes(size));
        let sha = sha256_hex(&bytes);
        up.set(&path, Answer::Bytes(Bytes::from(bytes)));
        let url = server.url(&format!("/mirror/{}{path}", up.host()));
        assert_eq!(
            get_verified(&c, &url, &sha).await,
            Outcome::Acknowledged,
            "pre-fill {url}"
        );
        up.set(&path, Answer::Status(404));
        hits.push((path, sha));
    }

    let shared = Arc::new(Shared {
        base: server.base.clone(),
        up: up.clone(),
        known: known_files(),
        hits,
        next: AtomicU64::new(0),
        counts: Mutex::new(Counts::default()),
    });
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client_task(shared.clone(), i, deadline, false)))
        .collect();
    tokio::time::sleep(warm_up).await;
    let rss_start = rss_kb(server.pid);
    let mut rss_peak = rss_start;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        if server.alive() {
            rss_peak = rss_peak.max(rss_kb(server.pid));
        }
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("clients stop after the deadline")
            .expect("client task");
    }
    let elapsed = started.elapsed();
    // A reads-only phase: nothing new is stored, so RSS should not grow. This separates a leak
    // from the state the mixed phase legitimately added.
    let mixed_requests: u64 = shared.counts.lock().expect("counts").by.values().sum();
    let read_phase = (duration / 4).max(Duration::from_secs(10));
    let read_deadline = Instant::now() + read_phase;
    let readers: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client_task(shared.clone(), i, read_deadline, true)))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_read_start = rss_kb(server.pid);
    for t in readers {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("readers stop after the deadline")
            .expect("reader task");
    }
    let rss_read_end = rss_kb(server.pid);
    let read_growth_pct =
        (rss_read_end as f64 - rss_read_start as f64) * 100.0 / rss_read_start as f64;
    println!(
        "soak: reads_only_seconds={:.1} rss_read_start_kb={rss_read_start} rss_read_end_kb={rss_read_end} read_growth_pct={read_growth_pct:.1}",
        read_phase.as_secs_f64()
    );
    assert!(
        server.alive(),
        "the server died; log:\n{}",
        layout.log_tail()
    );
    let rss_end = rss_kb(server.pid);
    rss_peak = rss_peak.max(rss_end);
    let healthz = c
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz")
        .status();
    server.kill();

    let counts = shared.counts.lock().expect("counts");
    let requests: u64 = counts.by.values().sum();
    let growth_pct = (rss_end as f64 - rss_start as f64) * 100.0 / rss_start as f64;
    let mut per_kind: HashMap<Kind, u64> = HashMap::new();
    for ((k, _), n) in &counts.by {
        *per_kind.entry(*k).or_default() += n;
    }
    for ((k, outcome), n) in &counts.by {
        let (total, max) = counts.latency.get(k).copied().unwrap_or_default();
        let mean = total / u32::try_from(per_kind[k].max(1)).unwrap_or(u32::MAX);
        println!("soak: {k:?} {outcome}: {n} (mean {mean:.1?}, max {max:.1?})");
    }
    for e in &counts.errors {
        println!("soak: error: {e}");
    }
    println!(
        "soak: seconds={:.1} requests={mixed_requests} (then {} reads only) errors={} rss_start_kb={rss_start} rss_end_kb={rss_end} rss_peak_kb={rss_peak} growth_pct={growth_pct:.1} clients={CLIENTS} rate_per_s={:.0}",
        elapsed.as_secs_f64(),
        requests - mixed_requests,
        counts.error_count,
        mixed_requests as f64 / elapsed.as_secs_f64(),
    );
    assert_eq!(healthz, 200, "healthz after the soak");
    assert_eq!(
        counts.error_count, 0,
        "unexpected answers: {:#?}",
        counts.errors
    );
    for k in [
        Kind::Metadata,
        Kind::ModuleFile,
        Kind::UnknownModule,
        Kind::MirrorHit,
        Kind::MirrorMiss,
        Kind::MirrorAbsent,
        Kind::Publish,
    ] {
        assert!(
            per_kind.get(&k).copied().unwrap_or(0) > 0,
            "no {k:?} request ran"
        );
    }
    assert!(
        growth_pct < MAX_GROWTH_PCT,
        "RSS grew {growth_pct:.1}% ({rss_start} kB -> {rss_end} kB)"
    );
    assert!(
        read_growth_pct < MAX_READ_GROWTH_PCT,
        "RSS grew {read_growth_pct:.1}% under reads only ({rss_read_start} kB -> {rss_read_end} kB)"
    );
}

/// RSS growth allowed while only reads run (nothing new is stored then).
const MAX_READ_GROWTH_PCT: f64 = 10.0;
