//! Crash consistency: the real binary, dozens of concurrent publishes and mirror fills, killed
//! with SIGKILL at seeded random points, round after round on the same folders.
//!
//! A write is *acknowledged* when its `2xx` answer was read to the end (for a fill: the whole
//! body, with the expected sha256). After each kill the binary is started again on the same
//! registry, data, policy and config, and:
//!
//! - every acknowledged publish serves `MODULE.bazel` (the submitted bytes) and `source.json`,
//!   `metadata.json` lists the version, and the archive `source.json` names is served with
//!   its integrity;
//! - every acknowledged fill is served by `/cas/sha256/HEX` (and by its mirror URL, with the
//!   upstream now answering `404`);
//! - nothing partial is on disk: every version `metadata.json` lists has a folder with
//!   `MODULE.bazel` and `source.json`; every file under `data/cas/sha256/` hashes to its name;
//!   every record parses; every pin names a stored blob; every `created` audit record names a
//!   listed version;
//! - no `.gf-registry-staging` folder is left after start, and `gf-registry storage verify
//!   --fix` exits 0.
//!
//! Leftover temporary files (`data/cas/tmp/`, object-store staging files `*#N`, publish work
//! folders in the server's `TMPDIR`) are counted before the restart and after `verify --fix`:
//! the main test reports them, `sigkill_leftovers_are_cleaned` requires them gone.
//!
//! The folders, the RNG and the publish bodies it shares with `soak.rs` are in `support::load`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::load::{
    Layout, Outcome, Release, Rng, allow_upstream, get_verified, publish, sri_hex,
};
use crate::support::{Answer, Spawned, Upstream, client, files_under, sha256_hex};

/// Rounds of start, load, SIGKILL, restart, check: 20 in the test suite; `GF_CRASH_ROUNDS`
/// sets another count (1 to 1,000) for a longer run outside CI (`bench/crash.sh` runs 100).
const ROUNDS: u32 = 20;
/// The time one round may take at most, for the whole test's bound.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// The rounds to run: `GF_CRASH_ROUNDS` when set, else [`ROUNDS`].
fn rounds() -> u32 {
    match std::env::var("GF_CRASH_ROUNDS") {
        Ok(v) => match v.parse::<u32>() {
            Ok(n @ 1..=1000) => n,
            _ => panic!("GF_CRASH_ROUNDS: expected a whole number from 1 to 1000, got {v:?}"),
        },
        Err(_) => ROUNDS,
    }
}
/// Publishes fired at once per round.
const PUBLISHES: usize = 24;
/// Mirror fills fired at once per round.
const FILLS: usize = 24;
/// Modules the publishes spread over.
const MODULES: [&str; 4] = ["crash_a", "crash_b", "crash_c", "crash_d"];
/// Pause between the starts of two requests of a round.
const STAGGER_MS: u64 = 8;
/// Bounds of the delay between firing the requests and the SIGKILL, in milliseconds.
const KILL_AFTER_MS: (u64, u64) = (20, 600);
/// The fixed seed: the same kill points on every run (timing still varies).
const SEED: u64 = 0x00C0_FFEE_2024_0001;
/// Bound on the whole crash test.
const CRASH_TEST_TIMEOUT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// One mirror fill: the upstream path and what it serves.
#[derive(Debug, Clone)]
struct FillSpec {
    path: String,
    sha256: String,
    size: usize,
}

/// An acknowledged write, to find again after every restart.
#[derive(Debug, Clone)]
enum Acked {
    Publish(Release),
    Fill(FillSpec),
}

#[derive(Debug, Default)]
struct Tally {
    acknowledged_publishes: usize,
    acknowledged_fills: usize,
    cut: usize,
    /// Requests whose turn came after the kill.
    not_sent: usize,
    /// Complete non-2xx answers to publishes or fills before the kill.
    refused: Vec<String>,
    /// Acknowledged writes not found (or not verified) after a restart.
    losses: Vec<String>,
    /// Partial state found on disk or served.
    partial: Vec<String>,
    /// Leftovers seen after a kill that start and `verify --fix` removed.
    leftovers_cleaned: usize,
    /// Leftovers still there after start and `verify --fix`, by round.
    leftovers_remaining: Vec<(u32, Vec<String>)>,
    /// Version folders `metadata.json` does not list (cut between the folder and the list).
    unlisted_versions: BTreeSet<String>,
    /// Of those, the ones whose `MODULE.bazel` the restarted server serves.
    unlisted_served: BTreeSet<String>,
    verify_failures: Vec<String>,
    kill_points_ms: Vec<u64>,
}

/// Files whose hash was checked: path -> (len, mtime ns, inode).
type Verified = HashMap<PathBuf, (u64, i128, u64)>;

/// Everything that looks like a leftover temporary object or file.
fn leftovers(layout: &Layout) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let staging = layout.registry.join(".gf-registry-staging");
    if staging.exists() {
        out.insert("registry/.gf-registry-staging/".to_owned());
        for rel in files_under(&staging) {
            out.insert(format!("registry/.gf-registry-staging/{rel}"));
        }
    }
    let tmp = layout.data.join("cas/tmp");
    if tmp.exists() {
        for rel in files_under(&tmp) {
            out.insert(format!("data/cas/tmp/{rel}"));
        }
    }
    if layout.data.exists() {
        for rel in files_under(&layout.data) {
            // object_store's local staging files (`name#N`), hidden from listings.
            if rel.contains('#') {
                out.insert(format!("data/{rel}"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(&layout.tmpdir) {
        for e in entries.flatten() {
            out.insert(format!("TMPDIR/{}", e.file_name().to_string_lossy()));
        }
    }
    out
}

/// Checks the registry folder, the cas role and the records role on disk.
fn check_disk(layout: &Layout, verified: &mut Verified, tally: &mut Tally) {
    // Registry: every listed version complete.
    let modules = layout.registry.join("modules");
    for entry in std::fs::read_dir(&modules).expect("modules").flatten() {
        let module = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let listed: BTreeSet<String> = match std::fs::read(dir.join("metadata.json")) {
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => v["versions"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(e) => {
                    tally.partial.push(format!(
                        "modules/{module}/metadata.json does not parse: {e}"
                    ));
                    BTreeSet::new()
                }
            },
            Err(_) => BTreeSet::new(),
        };
        for v in &listed {
            let vdir = dir.join(v);
            for f in ["MODULE.bazel", "source.json"] {
                if !vdir.join(f).is_file() {
                    tally.partial.push(format!(
                        "modules/{module}/metadata.json lists {v}, but {v}/{f} is missing"
                    ));
                }
            }
            if let Ok(bytes) = std::fs::read(vdir.join("source.json"))
                && serde_json::from_slice::<Value>(&bytes).is_err()
            {
                tally
                    .partial
                    .push(format!("modules/{module}/{v}/source.json does not parse"));
            }
        }
        for e in std::fs::read_dir(&dir).expect("module dir").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !listed.contains(&name) {
                tally.unlisted_versions.insert(format!("{module}@{name}"));
            }
        }
    }
    // The cas role: every blob holds the bytes its name says.
    let cas = layout.data.join("cas/sha256");
    let mut present = BTreeSet::new();
    if cas.exists() {
        for rel in files_under(&cas) {
            let path = cas.join(&rel);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let stamp = (
                meta.len(),
                i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                meta.ino(),
            );
            let name = rel.rsplit('/').next().unwrap_or_default().to_owned();
            present.insert(name.clone());
            if verified.get(&path) == Some(&stamp) {
                continue;
            }
            let bytes = std::fs::read(&path).expect("read blob");
            let got = sha256_hex(&bytes);
            if got == name {
                verified.insert(path, stamp);
            } else {
                tally.partial.push(format!(
                    "data/cas/sha256/{rel}: {} bytes hashing to {got}",
                    bytes.len()
                ));
            }
        }
    }
    // The records role: every record parses; pins name stored blobs; `created` audit records
    // name listed versions.
    let records = layout.data.join("records");
    if records.exists() {
        for rel in files_under(&records) {
            if rel.contains('#') || rel.starts_with("probe/") {
                continue;
            }
            let bytes = std::fs::read(records.join(&rel)).expect("read record");
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                tally.partial.push(format!(
                    "data/records/{rel}: not JSON ({} bytes)",
                    bytes.len()
                ));
                continue;
            };
            if v["kind"] == "pin"
                && let Some(sha) = v["sha256"].as_str()
                && !present.contains(sha)
            {
                tally.partial.push(format!(
                    "data/records/{rel}: pins {} to sha256 {sha}, which is not stored",
                    v["url"]
                ));
            }
            if rel.starts_with("audit/")
                && v["action"] == "publish"
                && v["outcome"] == "created"
                && let (Some(m), Some(ver)) = (v["module"].as_str(), v["version"].as_str())
            {
                let listed = std::fs::read(modules.join(m).join("metadata.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .is_some_and(|meta| {
                        meta["versions"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x == ver))
                    });
                if !listed {
                    tally.partial.push(format!(
                        "data/records/{rel}: audits {m}@{ver} as created, but metadata.json does not list it"
                    ));
                }
            }
        }
    }
}

/// Path and query of a URL (to ask the restarted server for what its predecessor named).
fn path_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    })
}

/// Checks one acknowledged write against the running server; `Err` describes a loss.
async fn check_acked(
    client: &reqwest::Client,
    s: &Spawned,
    up: &Upstream,
    acked: &Acked,
    full: bool,
) -> Result<(), String> {
    match acked {
        Acked::Publish(r) => {
            let at = format!("{}@{}", r.module, r.version);
            let vpath = format!("/modules/{}/{}", r.module, r.version);
            let get = |p: String| async move {
                let resp = client
                    .get(s.url(&p))
                    .send()
                    .await
                    .map_err(|e| format!("{p}: {e}"))?;
                let status = resp.status().as_u16();
                let body = resp.bytes().await.map_err(|e| format!("{p}: {e}"))?;
                if status == 200 {
                    Ok(body)
                } else {
                    Err(format!("{p}: {status} {}", String::from_utf8_lossy(&body)))
                }
            };
            let mb = get(format!("{vpath}/MODULE.bazel")).await?;
            if mb != r.module_bazel.as_bytes() {
                return Err(format!("{at}: MODULE.bazel differs from the submitted one"));
            }
            let meta: Value =
                serde_json::from_slice(&get(format!("/modules/{}/metadata.json", r.module)).await?)
                    .map_err(|e| format!("{at}: metadata.json: {e}"))?;
            if !meta["versions"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == r.version.as_str()))
            {
                return Err(format!("{at}: metadata.json does not list it"));
            }
            let source: Value = serde_json::from_slice(&get(format!("{vpath}/source.json")).await?)
                .map_err(|e| format!("{at}: source.json: {e}"))?;
            let integrity = source["integrity"].as_str().unwrap_or_default();
            let want = r.archive_sha256();
            if sri_hex(integrity).as_deref() != Some(want.as_str()) {
                return Err(format!(
                    "{at}: source.json integrity {integrity}, archive {want}"
                ));
            }
            // The archive as source.json names it: the upload's /cas/ URL, or the mirror URL of
            // an upstream source (the upstream answers 404 by now).
            let url = match &r.upstream_path {
                None => source["url"].as_str().unwrap_or_default().to_owned(),
                Some(p) => {
                    if source["url"] != json!(up.url(p)) {
                        return Err(format!("{at}: source.json url {}", source["url"]));
                    }
                    source["mirror_urls"][0]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                }
            };
            let path = path_of(&url).ok_or_else(|| format!("{at}: archive url {url:?}"))?;
            match get_verified(client, &s.url(&path), &want).await {
                Outcome::Acknowledged => Ok(()),
                other => Err(format!("{at}: archive {path}: {other:?}")),
            }
        }
        Acked::Fill(f) => {
            let cas = format!("/cas/sha256/{}", f.sha256);
            if full {
                for p in [cas, format!("/mirror/{}{}", up.host(), f.path)] {
                    match get_verified(client, &s.url(&p), &f.sha256).await {
                        Outcome::Acknowledged => {}
                        other => return Err(format!("fill {}: {p}: {other:?}", f.path)),
                    }
                }
                Ok(())
            } else {
                // Present by HEAD; its bytes are checked on disk by `check_disk`.
                let resp = client
                    .head(s.url(&cas))
                    .send()
                    .await
                    .map_err(|e| format!("fill {}: HEAD {cas}: {e}", f.path))?;
                let len = resp
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok());
                if resp.status() == 200 && len == Some(f.size) {
                    Ok(())
                } else {
                    Err(format!(
                        "fill {}: HEAD {cas}: {} (length {len:?}, expected {})",
                        f.path,
                        resp.status(),
                        f.size
                    ))
                }
            }
        }
    }
}

/// `gf-registry storage verify --fix` on the layout; `Err` with its output unless it exits 0.
async fn verify_fix(layout: &Layout) -> Result<String, String> {
    let mut cmd = layout.command(&["storage", "verify", "--fix"]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run storage verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("exit {:?}: {text}", out.status.code()))
    }
}

/// Runs `rounds` rounds; returns the tally.
async fn run_rounds(rounds: u32, seed: u64) -> Tally {
    let up = Upstream::start().await;
    let layout = Layout::new(&allow_upstream(&up));
    let client = client::no_redirects(Duration::from_secs(60));
    let mut rng = Rng::new(seed);
    // One random base: every fill is a distinct header on a slice of it.
    let base = Bytes::from(rng.bytes(5 << 20));
    let mut tally = Tally::default();
    let mut acked: Vec<Acked> = Vec::new();
    let mut verified = Verified::new();
    let mut server = layout.serve();
    for round in 0..rounds {
        // The round's upstream content.
        let mut fills = Vec::new();
        for i in 0..FILLS {
            // 32 KiB to 4 MiB, log-uniform: small ones complete early, big ones get cut.
            let size = (32usize << 10 << rng.between(0, 7))
                + usize::try_from(rng.between(0, 64 << 10)).expect("size");
            let mut bytes = format!("round {round} fill {i} seed {seed}\n").into_bytes();
            bytes.extend_from_slice(&base[..size - bytes.len()]);
            let path = format!("/fills/r{round}/f{i}.bin");
            let spec = FillSpec {
                path: path.clone(),
                sha256: sha256_hex(&bytes),
                size,
            };
            let bytes = Bytes::from(bytes);
            if i % 3 == 0 {
                up.set(
                    &path,
                    Answer::Slow {
                        bytes,
                        chunk: 64 << 10,
                        delay: Duration::from_millis(6),
                    },
                );
            } else {
                up.set(&path, Answer::Bytes(bytes));
            }
            fills.push(spec);
        }
        let mut releases = Vec::new();
        for j in 0..PUBLISHES {
            let module = MODULES[j % MODULES.len()];
            let version = format!("{}.{}.0", round + 1, j / MODULES.len());
            let len = usize::try_from(rng.between(4 << 10, 64 << 10)).expect("len");
            let padding = rng.bytes(len);
            let via_url = j % 3 == 1;
            let r = Release::new(module, &version, padding, via_url.then_some(&up));
            if let Some(p) = &r.upstream_path {
                if j % 2 == 0 {
                    up.set(
                        p,
                        Answer::Slow {
                            bytes: r.archive.clone(),
                            chunk: 16 << 10,
                            delay: Duration::from_millis(5),
                        },
                    );
                } else {
                    up.set(p, Answer::Bytes(r.archive.clone()));
                }
            }
            releases.push(r);
        }

        // Fire everything at once, interleaved.
        // Fired interleaved, one every STAGGER_MS, so dozens overlap and the early ones can
        // complete before the kill; a request whose turn comes after the kill is not sent.
        let killed = Arc::new(AtomicBool::new(false));
        let mut work: Vec<Acked> = Vec::new();
        for k in 0..PUBLISHES.max(FILLS) {
            if let Some(f) = fills.get(k) {
                work.push(Acked::Fill(f.clone()));
            }
            if let Some(r) = releases.get(k) {
                work.push(Acked::Publish(r.clone()));
            }
        }
        let mut tasks = Vec::new();
        for (n, what) in work.into_iter().enumerate() {
            let (c, base_url, host) = (client.clone(), server.base.clone(), up.host());
            let killed = killed.clone();
            let wait = Duration::from_millis(STAGGER_MS * n as u64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if killed.load(Ordering::SeqCst) {
                    return (what, None);
                }
                let o = match &what {
                    Acked::Publish(r) => publish(&c, &base_url, r).await,
                    Acked::Fill(f) => {
                        let url = format!("{base_url}/mirror/{host}{}", f.path);
                        get_verified(&c, &url, &f.sha256).await
                    }
                };
                (what, Some(o))
            }));
        }
        let delay = rng.between(KILL_AFTER_MS.0, KILL_AFTER_MS.1);
        tally.kill_points_ms.push(delay);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        assert!(
            server.alive(),
            "round {round}: the server died before the kill"
        );
        killed.store(true, Ordering::SeqCst);
        server.kill();
        let (mut round_pubs, mut round_fills) = (0, 0);
        let mut new_acks = Vec::new();
        for t in tasks {
            let (what, outcome) = tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("requests end once the server is gone")
                .expect("request task");
            let Some(outcome) = outcome else {
                tally.not_sent += 1;
                continue;
            };
            match outcome {
                Outcome::Acknowledged => {
                    match &what {
                        Acked::Publish(_) => round_pubs += 1,
                        Acked::Fill(_) => round_fills += 1,
                    }
                    new_acks.push(what);
                }
                Outcome::Cut(_) => tally.cut += 1,
                Outcome::Refused(status, text) => tally.refused.push(format!(
                    "round {round}: {}: {status} {text}",
                    describe(&what)
                )),
                Outcome::Wrong(why) => tally.losses.push(format!(
                    "round {round}: {} answered wrong: {why}",
                    describe(&what)
                )),
            }
        }
        tally.acknowledged_publishes += round_pubs;
        tally.acknowledged_fills += round_fills;
        // From now on the upstream has nothing: what is served comes from the store.
        for f in &fills {
            up.set(&f.path, Answer::Status(404));
        }
        for r in &releases {
            if let Some(p) = &r.upstream_path {
                up.set(p, Answer::Status(404));
            }
        }
        let before = leftovers(&layout);

        // Restart on the same folders and check.
        server = layout.serve();
        if layout.registry.join(".gf-registry-staging").exists() {
            tally.partial.push(format!(
                "round {round}: .gf-registry-staging is still there after start"
            ));
        }
        acked.extend(new_acks);
        let last = round + 1 == rounds;
        let newest = acked.len() - (round_pubs + round_fills);
        for (n, a) in acked.iter().enumerate() {
            if let Err(e) = check_acked(&client, &server, &up, a, last || n >= newest).await {
                tally.losses.push(format!("round {round}: {e}"));
            }
        }
        check_disk(&layout, &mut verified, &mut tally);
        for at in &tally.unlisted_versions {
            let Some((m, v)) = at.split_once('@') else {
                continue;
            };
            if let Ok(resp) = client
                .get(server.url(&format!("/modules/{m}/{v}/MODULE.bazel")))
                .send()
                .await
                && resp.status() == 200
            {
                tally.unlisted_served.insert(at.clone());
            }
        }
        if let Err(e) = verify_fix(&layout).await {
            tally
                .verify_failures
                .push(format!("round {round}: storage verify --fix: {e}"));
        }
        let after = leftovers(&layout);
        tally.leftovers_cleaned += before.difference(&after).count();
        if !after.is_empty() {
            tally
                .leftovers_remaining
                .push((round, after.into_iter().collect()));
        }
        eprintln!(
            "crash: round {round}: killed after {delay} ms; acknowledged {round_pubs} publishes, {round_fills} fills; leftovers before restart {}",
            before.len()
        );
    }
    server.kill();
    tally
}

fn describe(a: &Acked) -> String {
    match a {
        Acked::Publish(r) => format!("publish {}@{}", r.module, r.version),
        Acked::Fill(f) => format!("fill {}", f.path),
    }
}

/// What kind of leftover a [`leftovers`] entry is.
fn category(leftover: &str) -> &'static str {
    if leftover.starts_with("registry/") {
        "registry_staging"
    } else if leftover.starts_with("data/cas/tmp/") {
        "cas_tmp"
    } else if leftover.starts_with("data/") {
        "store_staging"
    } else {
        "tmpdir"
    }
}

/// Leftovers remaining after the last round, by [`category`].
fn remaining_by_category(t: &Tally) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for c in ["registry_staging", "cas_tmp", "store_staging", "tmpdir"] {
        out.insert(c, 0);
    }
    if let Some((_, l)) = t.leftovers_remaining.last() {
        for x in l {
            *out.entry(category(x)).or_default() += 1;
        }
    }
    out
}

/// Leftovers remaining after the last round, by file name up to its random suffix
/// (`data/cas/tmp/gf-registry-fill-`, `TMPDIR/gf-registry-publish-`, ...).
fn remaining_by_prefix(t: &Tally) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    if let Some((_, l)) = t.leftovers_remaining.last() {
        for x in l {
            let prefix = match x.rfind('-') {
                Some(i) if !x.starts_with("registry/") => &x[..=i],
                _ => x.as_str(),
            };
            *out.entry(prefix.to_owned()).or_default() += 1;
        }
    }
    out
}

fn report(name: &str, rounds: u32, t: &Tally, started: Instant) {
    let remaining = remaining_by_category(t);
    let remaining = remaining
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{name}: rounds={rounds} acknowledged_publishes={} acknowledged_fills={} losses={} partial={} leftovers_cleaned={} leftovers_remaining={remaining} unlisted_version_folders={} unlisted_served={} cut_requests={} not_sent={} refused={} verify_failures={} kill_points_ms={:?} seconds={:.1}",
        t.acknowledged_publishes,
        t.acknowledged_fills,
        t.losses.len(),
        t.partial.len(),
        t.leftovers_cleaned,
        t.unlisted_versions.len(),
        t.unlisted_served.len(),
        t.cut,
        t.not_sent,
        t.refused.len(),
        t.verify_failures.len(),
        t.kill_points_ms,
        started.elapsed().as_secs_f64(),
    );
    for (what, list) in [
        ("loss", &t.losses),
        ("partial", &t.partial),
        ("refused", &t.refused),
        ("verify", &t.verify_failures),
    ] {
        for l in list.iter().take(20) {
            println!("{name}: {what}: {l}");
        }
    }
    if let Some((round, l)) = t.leftovers_remaining.last() {
        let mut shown: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for x in l {
            let v = shown.entry(category(x)).or_default();
            if v.len() < 3 {
                v.push(x);
            }
        }
        println!(
            "{name}: leftovers after start and verify --fix in round {round} ({} in all): {:?}, e.g. {shown:?}",
            l.len(),
            remaining_by_prefix(t)
        );
    }
    if !t.unlisted_versions.is_empty() {
        println!(
            "{name}: version folders metadata.json does not list (never acknowledged): {:?}",
            t.unlisted_versions
        );
    }
}

/// The crash-consistency harness: 20 rounds (see [`rounds`]) of concurrent publishes and fills, SIGKILL at a
/// seeded random point, restart, and the checks above. No acknowledged write may be lost and
/// nothing partial may be visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_publishes_and_fills_loses_nothing() {
    let started = Instant::now();
    let rounds = rounds();
    let limit = CRASH_TEST_TIMEOUT.max(ROUND_TIMEOUT * rounds);
    let t = tokio::time::timeout(limit, run_rounds(rounds, SEED))
        .await
        .expect("the crash test finishes in time");
    report("crash", rounds, &t, started);
    assert!(
        t.losses.is_empty(),
        "acknowledged writes lost: {:#?}",
        t.losses
    );
    assert!(t.partial.is_empty(), "partial state: {:#?}", t.partial);
    assert!(
        t.refused.is_empty(),
        "requests refused before the kill: {:#?}",
        t.refused
    );
    assert!(
        t.verify_failures.is_empty(),
        "storage verify --fix: {:#?}",
        t.verify_failures
    );
    if t.acknowledged_publishes == 0 || t.acknowledged_fills == 0 {
        println!("crash: warning: a kind of write was never acknowledged (a slow machine?)");
    }
    assert!(
        t.acknowledged_publishes + t.acknowledged_fills > 0,
        "the kills landed too early to test anything"
    );
}

/// Leftover temporary objects and files of killed writes are removed by the next start or by
/// `storage verify --fix`: nothing under `data/cas/tmp/`, no object-store staging file
/// (`name#N`), no registry staging folder, no publish work folder in the server's `TMPDIR`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_leftovers_are_cleaned() {
    let started = Instant::now();
    let rounds = 3;
    let t = tokio::time::timeout(CRASH_TEST_TIMEOUT, run_rounds(rounds, SEED ^ 0x5A5A))
        .await
        .expect("the test finishes in time");
    report("crash-leftovers", rounds, &t, started);
    assert!(
        t.losses.is_empty(),
        "acknowledged writes lost: {:#?}",
        t.losses
    );
    assert!(t.partial.is_empty(), "partial state: {:#?}", t.partial);
    assert!(
        t.leftovers_remaining.is_empty(),
        "leftovers after start and verify --fix: {:#?}",
        t.leftovers_remaining
    );
}

/// The disk checks themselves: each kind of partial state is found.
#[test]
fn disk_checks_find_partial_state() {
    let layout = Layout::new("");
    let module = layout.registry.join("modules/half_mod");
    std::fs::create_dir_all(module.join("1.0.0")).expect("mkdir");
    std::fs::write(
        module.join("metadata.json"),
        r#"{"versions": ["1.0.0", "2.0.0"]}"#,
    )
    .expect("metadata");
    std::fs::write(module.join("1.0.0/MODULE.bazel"), "module()\n").expect("MODULE.bazel");
    std::fs::create_dir_all(module.join("3.0.0")).expect("mkdir");
    let cas = layout.data.join("cas/sha256");
    std::fs::create_dir_all(&cas).expect("mkdir");
    std::fs::write(cas.join(sha256_hex(b"right")), b"right").expect("blob");
    std::fs::write(cas.join(sha256_hex(b"right bytes")), b"wrong bytes").expect("blob");
    let pins = layout.data.join("records/pins");
    std::fs::create_dir_all(&pins).expect("mkdir");
    let missing = sha256_hex(b"never stored");
    std::fs::write(
        pins.join("0001"),
        json!({"kind": "pin", "url": "http://x/y", "sha256": missing, "at": "2024-01-01T00:00:00Z"})
            .to_string(),
    )
    .expect("pin");
    std::fs::write(pins.join("0002"), "{\"kind\": \"pi").expect("torn record");
    let mut tally = Tally::default();
    check_disk(&layout, &mut Verified::new(), &mut tally);
    let text = tally.partial.join("\n");
    for want in [
        "lists 1.0.0, but 1.0.0/source.json is missing",
        "lists 2.0.0, but 2.0.0/MODULE.bazel is missing",
        "hashing to",
        "which is not stored",
        "not JSON",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    assert_eq!(tally.partial.len(), 6, "{text}");
    assert!(tally.unlisted_versions.contains("half_mod@3.0.0"));
    let staging = layout.registry.join(".gf-registry-staging/dir-1");
    std::fs::create_dir_all(&staging).expect("mkdir");
    std::fs::write(staging.join("x"), "x").expect("x");
    std::fs::create_dir_all(layout.data.join("cas/tmp")).expect("mkdir");
    std::fs::write(layout.data.join("cas/tmp/gf-registry-fill-1"), "x").expect("spool");
    std::fs::write(layout.data.join("records/pins/0003#1"), "x").expect("staged");
    std::fs::create_dir_all(layout.tmpdir.join("gf-registry-publish-1")).expect("mkdir");
    let found: BTreeSet<&str> = leftovers(&layout).iter().map(|l| category(l)).collect();
    assert_eq!(
        found,
        BTreeSet::from(["registry_staging", "cas_tmp", "store_staging", "tmpdir"])
    );
}
