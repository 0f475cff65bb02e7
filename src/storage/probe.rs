//! `storage probe`: a stop/go verdict on a backend before trusted writes go to it.
//!
//! The probe proves, with its own uniquely named objects under `probe/{run}/` in each role
//! (removed again at the end), that the backend keeps what it is given: read-after-write,
//! list-after-write, overwrite and delete visibility, multipart upload (nothing visible before
//! completion or after an abort), ranged reads, and a **bucket-index coherence canary**:
//! objects readable by key but missing from a listing (or a role root that stops listing while
//! its objects are readable) are a "no-go", with the keys as evidence. Whether conditional
//! create (`If-None-Match: *`) and conditional update (`If-Match`) are enforced is measured and
//! reported, never required: the design does not rely on conditional puts.
//!
//! Every backend call is bounded by [`ProbeOptions::op_timeout`], so a dead backend gives a
//! "no-go" in bounded time instead of a hang.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{
    ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use serde::Serialize;

use super::{Role, Storage};

/// The prefix, in every role, under which the probe writes its objects.
pub const PROBE_PREFIX: &str = "probe";

/// Size of each multipart part but the last (S3's minimum part size).
const PART: usize = 5 << 20;

/// What the probe does and how long it waits.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Run the multipart checks (a 5 MiB part and a small last part, plus an aborted upload).
    pub multipart: bool,
    /// How many canary objects the index-coherence check writes and looks for in listings.
    pub canary_objects: usize,
    /// Limit for each backend call.
    pub op_timeout: Duration,
    /// How long a listing may lag behind writes and deletes before it counts as wrong.
    pub settle: Duration,
}

impl ProbeOptions {
    /// Every check (a few seconds on a healthy backend).
    #[must_use]
    pub fn full() -> Self {
        Self {
            multipart: true,
            canary_objects: 32,
            op_timeout: Duration::from_secs(30),
            settle: Duration::from_secs(3),
        }
    }

    /// The quick part, for a server start: no multipart upload, fewer canaries.
    #[must_use]
    pub fn quick() -> Self {
        Self {
            multipart: false,
            canary_objects: 8,
            op_timeout: Duration::from_secs(10),
            settle: Duration::from_secs(1),
        }
    }
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self::full()
    }
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The backend behaved as required.
    Pass,
    /// It did not (or the check could not be completed).
    Fail,
    /// A conditional put was refused as it should be.
    Enforced,
    /// A conditional put was accepted against its condition.
    NotEnforced,
    /// The backend (or its client) does not offer the operation.
    Unsupported,
    /// Not run (see the detail).
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Enforced => "enforced",
            Self::NotEnforced => "not enforced",
            Self::Unsupported => "unsupported",
            Self::Skipped => "skipped",
        }
    }
}

/// One check of one role.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Its name (`read-after-write`, `index-coherence`, ...).
    pub name: &'static str,
    /// Whether a failure makes the verdict "no-go".
    pub required: bool,
    /// What happened.
    pub outcome: Outcome,
    /// How long it took.
    pub millis: u64,
    /// What was seen, for people.
    pub detail: String,
    /// The keys (or errors) that show a failure.
    pub evidence: Vec<String>,
}

/// The checks of one role.
#[derive(Debug, Clone, Serialize)]
pub struct RoleReport {
    /// `cas` or `records`.
    pub role: &'static str,
    /// The role's configured location.
    pub location: String,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
    /// Probe objects removed at the end.
    pub removed: usize,
    /// Probe objects that could not be removed.
    pub left_behind: Vec<String>,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every required check passed.
    Go,
    /// At least one required check failed.
    NoGo,
}

/// The probe's findings.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// "go" or "no-go".
    pub verdict: Verdict,
    /// The run's id: its objects lived under `probe/{run}/` in each role.
    pub run: String,
    /// How long the whole probe took.
    pub millis: u64,
    /// Per role.
    pub roles: Vec<RoleReport>,
}

impl ProbeReport {
    /// Whether the verdict is "go".
    #[must_use]
    pub fn is_go(&self) -> bool {
        self.verdict == Verdict::Go
    }

    /// One check of one role.
    #[must_use]
    pub fn check(&self, role: Role, name: &str) -> Option<&Check> {
        self.roles
            .iter()
            .find(|r| r.role == role.name())?
            .checks
            .iter()
            .find(|c| c.name == name)
    }

    /// The required checks that failed, as `(role, check)`.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, &Check)> {
        self.roles.iter().flat_map(|r| {
            r.checks
                .iter()
                .filter(|c| c.required && c.outcome == Outcome::Fail)
                .map(move |c| (r.role, c))
        })
    }

    /// The report as a table, for people.
    #[must_use]
    pub fn table(&self) -> String {
        const SHOWN: usize = 20;
        let mut out = String::new();
        let _ = writeln!(out, "storage probe {} ({} ms)", self.run, self.millis);
        for r in &self.roles {
            let _ = writeln!(out, "  {:<8} {}", r.role, r.location);
        }
        let _ = writeln!(
            out,
            "\n{:<8} {:<22} {:<20} {:>7}  detail",
            "role", "check", "result", "ms"
        );
        for r in &self.roles {
            for c in &r.checks {
                let result = if c.required || c.outcome == Outcome::Skipped {
                    c.outcome.label().to_owned()
                } else {
                    format!("{} (info)", c.outcome.label())
                };
                let _ = writeln!(
                    out,
                    "{:<8} {:<22} {:<20} {:>7}  {}",
                    r.role, c.name, result, c.millis, c.detail
                );
                for e in c.evidence.iter().take(SHOWN) {
                    let _ = writeln!(out, "{:<8}   evidence: {e}", "");
                }
                if c.evidence.len() > SHOWN {
                    let _ = writeln!(
                        out,
                        "{:<8}   ... and {} more (see --json)",
                        "",
                        c.evidence.len() - SHOWN
                    );
                }
            }
            for k in &r.left_behind {
                let _ = writeln!(out, "{:<8}   left behind (remove by hand): {k}", r.role);
            }
        }
        let failed: Vec<String> = self
            .failures()
            .map(|(role, c)| format!("{role}/{}", c.name))
            .collect();
        if failed.is_empty() {
            let _ = writeln!(
                out,
                "\nverdict: GO (conditional puts are reported, not required)"
            );
        } else {
            let _ = writeln!(
                out,
                "\nverdict: NO-GO ({} required check(s) failed: {})",
                failed.len(),
                failed.join(", ")
            );
        }
        out
    }
}

/// Probes every role of `storage` and returns the verdict with the evidence. Never fails:
/// an unreachable backend is a "no-go".
pub async fn probe(storage: &Storage, options: &ProbeOptions) -> ProbeReport {
    let started = Instant::now();
    let run = run_id();
    let mut roles = Vec::new();
    for (role, location) in [
        (Role::Cas, &storage.layout.cas),
        (Role::Records, &storage.layout.records),
    ] {
        let report = probe_store(
            storage.store(role).clone(),
            role.name(),
            location.to_string(),
            &run,
            options,
        )
        .await;
        // Local folders keep their (now empty) directories; remove those we made.
        if let Some(dir) = location.local_path() {
            let base = dir.join(PROBE_PREFIX);
            for d in [base.join(&run).join("canary"), base.join(&run), base] {
                let _ = std::fs::remove_dir(d);
            }
        }
        roles.push(report);
    }
    let failed = roles
        .iter()
        .flat_map(|r| &r.checks)
        .any(|c| c.required && c.outcome == Outcome::Fail);
    ProbeReport {
        verdict: if failed { Verdict::NoGo } else { Verdict::Go },
        run,
        millis: millis(started.elapsed()),
        roles,
    }
}

fn run_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!(
        "{}-{:08x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        h.finish() & 0xffff_ffff
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why a backend call did not give an answer.
#[derive(Debug)]
enum OpError {
    Store(object_store::Error),
    Timeout(Duration),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store(e) => write!(f, "{e}"),
            Self::Timeout(d) => write!(f, "no answer within {} s", d.as_secs_f32()),
        }
    }
}

/// A check that could not pass: what went wrong and the evidence.
#[derive(Debug)]
struct Failure {
    detail: String,
    evidence: Vec<String>,
}

impl Failure {
    fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            evidence: Vec::new(),
        }
    }

    fn with_evidence(detail: impl Into<String>, evidence: Vec<String>) -> Self {
        Self {
            detail: detail.into(),
            evidence,
        }
    }
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        Self::new(format!("backend error: {e}"))
    }
}

/// A finished check body: its outcome and detail.
type Body = Result<(Outcome, String), Failure>;

/// Deterministic, incompressible bytes for a probe object.
fn payload(run: &str, name: &str, version: u32, len: usize) -> Bytes {
    let mut h = blake3::Hasher::new();
    h.update(run.as_bytes());
    h.update(name.as_bytes());
    h.update(&version.to_le_bytes());
    let mut buf = vec![0u8; len];
    h.finalize_xof().fill(&mut buf);
    Bytes::from(buf)
}

struct Ctx {
    store: Arc<dyn ObjectStore>,
    base: String,
    run: String,
    opts: ProbeOptions,
}

impl Ctx {
    fn key(&self, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{name}", self.base))
    }

    async fn op<T>(
        &self,
        fut: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, OpError> {
        match tokio::time::timeout(self.opts.op_timeout, fut).await {
            Ok(r) => r.map_err(OpError::Store),
            Err(_) => Err(OpError::Timeout(self.opts.op_timeout)),
        }
    }

    async fn put(&self, key: &ObjectPath, bytes: Bytes) -> Result<(), OpError> {
        self.op(self.store.put(key, PutPayload::from_bytes(bytes)))
            .await
            .map(drop)
    }

    /// The whole object, or `None` when absent.
    async fn get(&self, key: &ObjectPath) -> Result<Option<Bytes>, OpError> {
        let got = self
            .op(async {
                match self.store.get(key).await {
                    Ok(r) => r.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(got)
    }

    /// The size, or `None` when absent.
    async fn head(&self, key: &ObjectPath) -> Result<Option<u64>, OpError> {
        self.op(async {
            match self.store.head(key).await {
                Ok(m) => Ok(Some(m.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn delete(&self, key: &ObjectPath) -> Result<(), OpError> {
        self.op(async {
            match self.store.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Every object under `prefix` (recursive) with its size.
    async fn list(&self, prefix: &ObjectPath) -> Result<BTreeMap<String, u64>, OpError> {
        self.op(self
            .store
            .list(Some(prefix))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect())
            .await
    }

    /// Lists `prefix` until `done` holds or the settle time is over; returns the last
    /// listing and, when it needed more than one, how long it took.
    async fn list_until(
        &self,
        prefix: &ObjectPath,
        done: impl Fn(&BTreeMap<String, u64>) -> bool,
    ) -> Result<(BTreeMap<String, u64>, Option<Duration>), OpError> {
        let start = Instant::now();
        let mut first = true;
        loop {
            let listed = self.list(prefix).await?;
            if done(&listed) {
                return Ok((listed, (!first).then(|| start.elapsed())));
            }
            if start.elapsed() >= self.opts.settle {
                return Ok((listed, None));
            }
            first = false;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn lag_note(lag: Option<Duration>) -> String {
    lag.map(|d| format!(" (the listing lagged {} ms)", d.as_millis()))
        .unwrap_or_default()
}

async fn probe_store(
    store: Arc<dyn ObjectStore>,
    role: &'static str,
    location: String,
    run: &str,
    opts: &ProbeOptions,
) -> RoleReport {
    let cx = Ctx {
        store,
        base: format!("{PROBE_PREFIX}/{run}"),
        run: run.to_owned(),
        opts: opts.clone(),
    };
    let mut checks = Vec::new();
    let mut record = |name: &'static str, required: bool, started: Instant, body: Body| {
        let (outcome, detail, evidence) = match body {
            Ok((o, d)) => (o, d, Vec::new()),
            Err(f) => (Outcome::Fail, f.detail, f.evidence),
        };
        checks.push(Check {
            name,
            required,
            outcome,
            millis: millis(started.elapsed()),
            detail,
            evidence,
        });
    };

    let t = Instant::now();
    let reachable = check_reachable(&cx).await;
    let up = reachable.is_ok();
    record("reachable", true, t, reachable);
    if up {
        let t = Instant::now();
        record(
            "read-after-write",
            true,
            t,
            check_read_after_write(&cx).await,
        );
        let t = Instant::now();
        record(
            "list-after-write",
            true,
            t,
            check_list_after_write(&cx).await,
        );
        let t = Instant::now();
        record("overwrite-visibility", true, t, check_overwrite(&cx).await);
        let t = Instant::now();
        record("delete-visibility", true, t, check_delete(&cx).await);
        let t = Instant::now();
        let multipart = if opts.multipart {
            check_multipart(&cx).await
        } else {
            Ok((Outcome::Skipped, "quick probe".to_owned()))
        };
        let ranged_on = match &multipart {
            Ok((Outcome::Pass, _)) => Some(cx.key("multipart")),
            _ => None,
        };
        record("multipart-upload", true, t, multipart);
        let t = Instant::now();
        record(
            "ranged-read",
            true,
            t,
            check_ranged_read(&cx, ranged_on).await,
        );
        let t = Instant::now();
        record("conditional-create", false, t, check_cond_create(&cx).await);
        let t = Instant::now();
        record("conditional-update", false, t, check_cond_update(&cx).await);
        let t = Instant::now();
        record("index-coherence", true, t, check_index_coherence(&cx).await);
    } else {
        for (name, required) in [
            ("read-after-write", true),
            ("list-after-write", true),
            ("overwrite-visibility", true),
            ("delete-visibility", true),
            ("multipart-upload", true),
            ("ranged-read", true),
            ("conditional-create", false),
            ("conditional-update", false),
            ("index-coherence", true),
        ] {
            checks.push(Check {
                name,
                required,
                outcome: Outcome::Skipped,
                millis: 0,
                detail: "the backend is not reachable".to_owned(),
                evidence: Vec::new(),
            });
        }
    }
    let (removed, left_behind) = if up {
        cleanup(&cx).await
    } else {
        (0, Vec::new())
    };
    RoleReport {
        role,
        location,
        checks,
        removed,
        left_behind,
    }
}

/// A `HEAD` of a key never written must answer "not found" (not an error, not an object).
async fn check_reachable(cx: &Ctx) -> Body {
    match cx.head(&cx.key("never-written")).await? {
        None => Ok((
            Outcome::Pass,
            "a HEAD of a missing key answers not found".into(),
        )),
        Some(size) => Err(Failure::with_evidence(
            "a key the probe never wrote exists",
            vec![format!("{} ({size} bytes)", cx.key("never-written"))],
        )),
    }
}

async fn check_read_after_write(cx: &Ctx) -> Body {
    let key = cx.key("object");
    let v1 = payload(&cx.run, "object", 1, 4096);
    cx.put(&key, v1.clone()).await?;
    match cx.get(&key).await? {
        Some(b) if b == v1 => {}
        Some(b) => {
            return Err(Failure::with_evidence(
                "a read right after a write returned other bytes",
                vec![format!("{key}: wrote {} bytes, read {}", v1.len(), b.len())],
            ));
        }
        None => {
            return Err(Failure::with_evidence(
                "an object was not found right after it was written",
                vec![key.to_string()],
            ));
        }
    }
    match cx.head(&key).await? {
        Some(n) if n == v1.len() as u64 => {}
        other => {
            return Err(Failure::with_evidence(
                "HEAD right after a write reports another size",
                vec![format!(
                    "{key}: wrote {} bytes, HEAD says {other:?}",
                    v1.len()
                )],
            ));
        }
    }
    Ok((Outcome::Pass, "4 KiB written, read back equal".into()))
}

async fn check_list_after_write(cx: &Ctx) -> Body {
    let key = cx.key("object").to_string();
    let (listed, lag) = cx
        .list_until(&ObjectPath::from(cx.base.as_str()), |l| {
            l.contains_key(&key)
        })
        .await?;
    if listed.contains_key(&key) {
        Ok((
            Outcome::Pass,
            format!("the new object is listed{}", lag_note(lag)),
        ))
    } else {
        Err(Failure::with_evidence(
            format!(
                "a written object is missing from the listing after {} ms",
                cx.opts.settle.as_millis()
            ),
            vec![key],
        ))
    }
}

async fn check_overwrite(cx: &Ctx) -> Body {
    let key = cx.key("object");
    let v2 = payload(&cx.run, "object", 2, 6000);
    cx.put(&key, v2.clone()).await?;
    match cx.get(&key).await? {
        Some(b) if b == v2 => {}
        Some(b) => {
            return Err(Failure::with_evidence(
                "a read after an overwrite returned the old (or other) bytes",
                vec![format!("{key}: wrote {} bytes, read {}", v2.len(), b.len())],
            ));
        }
        None => {
            return Err(Failure::with_evidence(
                "an overwritten object was not found",
                vec![key.to_string()],
            ));
        }
    }
    let want = v2.len() as u64;
    let k = key.to_string();
    let (listed, lag) = cx
        .list_until(&ObjectPath::from(cx.base.as_str()), |l| {
            l.get(&k) == Some(&want)
        })
        .await?;
    match listed.get(&k) {
        Some(&n) if n == want => Ok((
            Outcome::Pass,
            format!(
                "new bytes read back; the listing shows the new size{}",
                lag_note(lag)
            ),
        )),
        other => Err(Failure::with_evidence(
            "the listing does not show the overwritten object's new size",
            vec![format!("{k}: size {want}, listed {other:?}")],
        )),
    }
}

async fn check_delete(cx: &Ctx) -> Body {
    let key = cx.key("object");
    cx.delete(&key).await?;
    if let Some(b) = cx.get(&key).await? {
        return Err(Failure::with_evidence(
            "a deleted object can still be read",
            vec![format!("{key} ({} bytes)", b.len())],
        ));
    }
    if let Some(n) = cx.head(&key).await? {
        return Err(Failure::with_evidence(
            "HEAD still finds a deleted object",
            vec![format!("{key} ({n} bytes)")],
        ));
    }
    let k = key.to_string();
    let (listed, lag) = cx
        .list_until(&ObjectPath::from(cx.base.as_str()), |l| !l.contains_key(&k))
        .await?;
    if listed.contains_key(&k) {
        return Err(Failure::with_evidence(
            "a deleted object is still listed",
            vec![k],
        ));
    }
    Ok((
        Outcome::Pass,
        format!("gone from reads and listings{}", lag_note(lag)),
    ))
}

async fn check_multipart(cx: &Ctx) -> Body {
    let key = cx.key("multipart");
    let data = payload(&cx.run, "multipart", 1, PART + (1 << 20) + 123);
    let mut upload = cx.op(cx.store.put_multipart(&key)).await?;
    let parts = [data.slice(..PART), data.slice(PART..)];
    let mut sent = Ok(());
    for p in parts {
        sent = cx.op(upload.put_part(PutPayload::from_bytes(p))).await;
        if sent.is_err() {
            break;
        }
    }
    if let Err(e) = sent {
        let _ = cx.op(upload.abort()).await;
        return Err(e.into());
    }
    if let Some(n) = cx.head(&key).await? {
        let _ = cx.op(upload.abort()).await;
        return Err(Failure::with_evidence(
            "an object is visible before its multipart upload completed",
            vec![format!("{key} ({n} bytes)")],
        ));
    }
    cx.op(upload.complete()).await?;
    match cx.get(&key).await? {
        Some(b) if b == data => {}
        other => {
            return Err(Failure::with_evidence(
                "a completed multipart upload reads back wrong",
                vec![format!(
                    "{key}: wrote {} bytes in 2 parts, read {:?} bytes",
                    data.len(),
                    other.map(|b| b.len())
                )],
            ));
        }
    }
    // An aborted upload leaves nothing at its key.
    let aborted = cx.key("multipart-aborted");
    let mut upload = cx.op(cx.store.put_multipart(&aborted)).await?;
    let part = cx
        .op(upload.put_part(PutPayload::from_bytes(data.slice(..PART))))
        .await;
    cx.op(upload.abort()).await?;
    part?;
    if let Some(n) = cx.head(&aborted).await? {
        return Err(Failure::with_evidence(
            "an aborted multipart upload left an object",
            vec![format!("{aborted} ({n} bytes)")],
        ));
    }
    Ok((
        Outcome::Pass,
        format!(
            "{} bytes in 2 parts: invisible until complete, read back equal; an aborted upload left nothing",
            data.len()
        ),
    ))
}

async fn check_ranged_read(cx: &Ctx, on: Option<ObjectPath>) -> Body {
    let (key, data) = match on {
        Some(key) => {
            let data = payload(&cx.run, "multipart", 1, PART + (1 << 20) + 123);
            (key, data)
        }
        None => {
            let key = cx.key("ranged");
            let data = payload(&cx.run, "ranged", 1, (2 << 20) + 77);
            cx.put(&key, data.clone()).await?;
            (key, data)
        }
    };
    let len = data.len();
    let mib = 1 << 20;
    let ranges = [
        0..1,
        0..len,
        len - 1..len,
        1234..1234 + 100_000,
        mib - 1..mib + 1,
        (len / 2)..(len / 2 + 3 * mib / 2).min(len),
        (len.min(PART) - 10)..(len.min(PART) + 10).min(len),
    ];
    let mut bad = Vec::new();
    for r in &ranges {
        let got = cx
            .op(cx.store.get_range(&key, r.start as u64..r.end as u64))
            .await?;
        if got[..] != data[r.clone()] {
            bad.push(format!(
                "{key} bytes {}..{}: got {} bytes that differ",
                r.start,
                r.end,
                got.len()
            ));
        }
    }
    if bad.is_empty() {
        Ok((
            Outcome::Pass,
            format!(
                "{} ranges of a {len}-byte object read back equal",
                ranges.len()
            ),
        ))
    } else {
        Err(Failure::with_evidence(
            "ranged reads returned wrong bytes",
            bad,
        ))
    }
}

async fn check_cond_create(cx: &Ctx) -> Body {
    let key = cx.key("conditional-create");
    let v1 = payload(&cx.run, "conditional-create", 1, 100);
    let v2 = payload(&cx.run, "conditional-create", 2, 200);
    cx.put(&key, v1).await?;
    let create = PutOptions::from(PutMode::Create);
    match cx
        .op(cx
            .store
            .put_opts(&key, PutPayload::from_bytes(v2.clone()), create))
        .await
    {
        Err(OpError::Store(object_store::Error::AlreadyExists { .. })) => Ok((
            Outcome::Enforced,
            "a create-only put over an existing object was refused".into(),
        )),
        Err(OpError::Store(object_store::Error::NotImplemented { .. })) => Ok((
            Outcome::Unsupported,
            "the client does not offer create-only puts here".into(),
        )),
        Ok(_) => {
            let now = cx.get(&key).await?;
            let replaced = now.as_ref() == Some(&v2);
            Ok((
                Outcome::NotEnforced,
                format!(
                    "a create-only put (If-None-Match: *) over an existing object succeeded{}",
                    if replaced { " and replaced it" } else { "" }
                ),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

async fn check_cond_update(cx: &Ctx) -> Body {
    let key = cx.key("conditional-update");
    let v1 = payload(&cx.run, "conditional-update", 1, 100);
    let v2 = payload(&cx.run, "conditional-update", 2, 200);
    let v3 = payload(&cx.run, "conditional-update", 3, 300);
    let first = cx
        .op(cx.store.put(&key, PutPayload::from_bytes(v1)))
        .await?;
    cx.put(&key, v2).await?;
    let Some(stale) = first.e_tag else {
        return Ok((
            Outcome::Unsupported,
            "the backend returns no ETag to condition on".into(),
        ));
    };
    let update = PutOptions::from(PutMode::Update(UpdateVersion {
        e_tag: Some(stale),
        version: None,
    }));
    match cx
        .op(cx
            .store
            .put_opts(&key, PutPayload::from_bytes(v3.clone()), update))
        .await
    {
        Err(OpError::Store(object_store::Error::Precondition { .. })) => Ok((
            Outcome::Enforced,
            "a put conditioned on a stale ETag was refused".into(),
        )),
        Err(OpError::Store(object_store::Error::NotImplemented { .. })) => Ok((
            Outcome::Unsupported,
            "the client does not offer conditional updates here".into(),
        )),
        Ok(_) => {
            let now = cx.get(&key).await?;
            let replaced = now.as_ref() == Some(&v3);
            Ok((
                Outcome::NotEnforced,
                format!(
                    "a put conditioned on a stale ETag (If-Match) succeeded{}",
                    if replaced {
                        " and replaced the newer object"
                    } else {
                        ""
                    }
                ),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Objects readable by key must be listed, the listing must hold nothing else, and the
/// probe's prefix must show in the listing of the role's root while its objects are readable.
async fn check_index_coherence(cx: &Ctx) -> Body {
    let n = cx.opts.canary_objects;
    let keys: Vec<ObjectPath> = (0..n).map(|i| cx.key(&format!("canary/{i:04}"))).collect();
    let writes: Vec<Result<(), OpError>> = futures::stream::iter(keys.iter().enumerate())
        .map(|(i, k)| async move {
            let name = format!("canary/{i:04}");
            cx.put(k, payload(&cx.run, &name, 1, 64 + i)).await
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let write_errors: Vec<String> = writes
        .into_iter()
        .filter_map(Result::err)
        .map(|e| e.to_string())
        .collect();
    if !write_errors.is_empty() {
        return Err(Failure::with_evidence(
            format!("{} of {n} canary writes failed", write_errors.len()),
            write_errors,
        ));
    }
    let mut readable = BTreeSet::new();
    let mut unreadable = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        match cx.head(k).await? {
            Some(size) if size == (64 + i) as u64 => {
                readable.insert(k.to_string());
            }
            other => unreadable.push(format!("{k}: written, HEAD says {other:?}")),
        }
    }
    let written: BTreeSet<String> = keys.iter().map(ToString::to_string).collect();
    let canary_prefix = ObjectPath::from(format!("{}/canary", cx.base));
    let (listed, lag) = cx
        .list_until(&canary_prefix, |l| {
            readable.iter().all(|k| l.contains_key(k)) && l.keys().all(|k| written.contains(k))
        })
        .await?;
    let mut evidence: Vec<String> = unreadable;
    evidence.extend(
        readable
            .iter()
            .filter(|k| !listed.contains_key(*k))
            .map(|k| format!("{k}: readable by key, missing from the listing")),
    );
    evidence.extend(
        listed
            .keys()
            .filter(|k| !written.contains(*k))
            .map(|k| format!("{k}: listed, never written by this probe")),
    );
    // The probe's folders must show in delimiter listings of their parents, up to the root.
    let parent = ObjectPath::from(PROBE_PREFIX);
    let run_dir = ObjectPath::from(cx.base.as_str());
    for (at, want) in [(Some(&parent), &run_dir), (None, &parent)] {
        let shown = match cx.op(cx.store.list_with_delimiter(at)).await {
            Ok(l) => l.common_prefixes.contains(want),
            Err(e) => {
                evidence.push(format!(
                    "listing {} failed while {} probe objects are readable by key: {e}",
                    at.map_or_else(|| "the role's root".to_owned(), |p| format!("`{p}/`")),
                    readable.len()
                ));
                continue;
            }
        };
        if !shown {
            evidence.push(format!(
                "`{want}/` is missing from the listing of {} while {} objects under it are readable by key",
                at.map_or_else(|| "the role's root".to_owned(), |p| format!("`{p}/`")),
                readable.len()
            ));
        }
    }
    if evidence.is_empty() {
        Ok((
            Outcome::Pass,
            format!(
                "{n} canaries readable by key and listed; the probe prefix shows at the root{}",
                lag_note(lag)
            ),
        ))
    } else {
        Err(Failure::with_evidence(
            "the bucket index disagrees with the objects: do not trust this backend with writes",
            evidence,
        ))
    }
}

/// Removes every probe object of this run; returns how many went and which could not.
async fn cleanup(cx: &Ctx) -> (usize, Vec<String>) {
    let base = ObjectPath::from(cx.base.as_str());
    let mut keys: BTreeSet<String> = [
        "object",
        "multipart",
        "multipart-aborted",
        "ranged",
        "conditional-create",
        "conditional-update",
    ]
    .iter()
    .map(|n| cx.key(n).to_string())
    .collect();
    keys.extend((0..cx.opts.canary_objects).map(|i| cx.key(&format!("canary/{i:04}")).to_string()));
    if let Ok(listed) = cx.list(&base).await {
        keys.extend(listed.into_keys());
    }
    let mut removed = 0;
    let mut left = Vec::new();
    for k in keys {
        let key = ObjectPath::from(k.as_str());
        if let Ok(None) = cx.head(&key).await {
            continue;
        }
        match cx.delete(&key).await {
            Ok(()) => removed += 1,
            Err(e) => left.push(format!("{k}: {e}")),
        }
    }
    (removed, left)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutResult,
    };

    use super::*;
    use crate::storage::{Location, S3Settings, StorageLayout};

    type Fut<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

    /// A store whose listings lose every object whose key ends in `drop`, as a bucket index
    /// that lost entries would: the objects stay readable by key.
    #[derive(Debug)]
    struct LossyListing {
        inner: InMemory,
        drop: &'static [&'static str],
    }

    impl std::fmt::Display for LossyListing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("LossyListing")
        }
    }

    impl LossyListing {
        fn lost(&self, p: &ObjectPath) -> bool {
            let s = p.to_string();
            self.drop.iter().any(|d| s.ends_with(d))
        }
    }

    // `object_store`'s trait is written with `async_trait`; these are its expanded signatures.
    impl ObjectStore for LossyListing {
        fn put_opts<'a, 'b, 't>(
            &'a self,
            location: &'b ObjectPath,
            payload: PutPayload,
            opts: PutOptions,
        ) -> Fut<'t, PutResult>
        where
            'a: 't,
            'b: 't,
            Self: 't,
        {
            self.inner.put_opts(location, payload, opts)
        }

        fn put_multipart_opts<'a, 'b, 't>(
            &'a self,
            location: &'b ObjectPath,
            opts: PutMultipartOptions,
        ) -> Fut<'t, Box<dyn MultipartUpload>>
        where
            'a: 't,
            'b: 't,
            Self: 't,
        {
            self.inner.put_multipart_opts(location, opts)
        }

        fn get_opts<'a, 'b, 't>(
            &'a self,
            location: &'b ObjectPath,
            options: GetOptions,
        ) -> Fut<'t, GetResult>
        where
            'a: 't,
            'b: 't,
            Self: 't,
        {
            self.inner.get_opts(location, options)
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<ObjectPath>>,
        ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            let drop = self.drop;
            self.inner
                .list(prefix)
                .try_filter(move |m| {
                    let s = m.location.to_string();
                    futures::future::ready(!drop.iter().any(|d| s.ends_with(d)))
                })
                .boxed()
        }

        fn list_with_delimiter<'a, 'b, 't>(
            &'a self,
            prefix: Option<&'b ObjectPath>,
        ) -> Fut<'t, ListResult>
        where
            'a: 't,
            'b: 't,
            Self: 't,
        {
            Box::pin(async move {
                let mut r = self.inner.list_with_delimiter(prefix).await?;
                r.objects.retain(|m| !self.lost(&m.location));
                r.common_prefixes.retain(|p| !self.lost(p));
                Ok(r)
            })
        }

        fn copy_opts<'a, 'b, 'c, 't>(
            &'a self,
            from: &'b ObjectPath,
            to: &'c ObjectPath,
            options: CopyOptions,
        ) -> Fut<'t, ()>
        where
            'a: 't,
            'b: 't,
            'c: 't,
            Self: 't,
        {
            self.inner.copy_opts(from, to, options)
        }
    }

    fn storage_with(cas: Arc<dyn ObjectStore>) -> Storage {
        Storage {
            layout: StorageLayout {
                cas: Location::parse("memory:///cas").unwrap(),
                records: Location::parse("memory:///records").unwrap(),
                s3: S3Settings::default(),
            },
            cas,
            records: Arc::new(InMemory::new()),
        }
    }

    fn fast() -> ProbeOptions {
        ProbeOptions {
            settle: Duration::from_millis(300),
            ..ProbeOptions::full()
        }
    }

    #[tokio::test]
    async fn go_on_memory_and_everything_is_cleaned_up() {
        let s = storage_with(Arc::new(InMemory::new()));
        let report = probe(&s, &fast()).await;
        assert!(report.is_go(), "{}", report.table());
        for role in [Role::Cas, Role::Records] {
            assert!(s.list(role, PROBE_PREFIX).await.unwrap().is_empty());
            let c = report.check(role, "conditional-create").unwrap();
            assert_eq!(c.outcome, Outcome::Enforced, "{}", report.table());
            let c = report.check(role, "conditional-update").unwrap();
            assert_eq!(c.outcome, Outcome::Enforced, "{}", report.table());
        }
        let table = report.table();
        assert!(table.contains("verdict: GO"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["verdict"], "go");
        assert_eq!(json["roles"][0]["checks"][0]["name"], "reachable");
    }

    #[tokio::test]
    async fn a_listing_that_loses_objects_is_a_no_go_with_the_keys() {
        let lossy = LossyListing {
            inner: InMemory::new(),
            drop: &["canary/0003", "canary/0011"],
        };
        let s = storage_with(Arc::new(lossy));
        let report = probe(&s, &fast()).await;
        assert!(!report.is_go(), "{}", report.table());
        let failed: Vec<_> = report.failures().map(|(r, c)| (r, c.name)).collect();
        assert_eq!(failed, [("cas", "index-coherence")], "{}", report.table());
        let c = report.check(Role::Cas, "index-coherence").unwrap();
        assert_eq!(c.evidence.len(), 2, "{:?}", c.evidence);
        assert!(
            c.evidence[0].contains("canary/0003") && c.evidence[0].contains("missing"),
            "{:?}",
            c.evidence
        );
        assert!(c.evidence[1].contains("canary/0011"), "{:?}", c.evidence);
        // The records role is fine.
        assert_eq!(
            report
                .check(Role::Records, "index-coherence")
                .unwrap()
                .outcome,
            Outcome::Pass
        );
        let table = report.table();
        assert!(table.contains("verdict: NO-GO"), "{table}");
        assert!(table.contains("canary/0011"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["verdict"], "no-go");
    }

    #[tokio::test]
    async fn a_root_listing_without_the_probe_prefix_is_a_no_go() {
        // Every object is lost from listings (the whole index is gone).
        let lossy = LossyListing {
            inner: InMemory::new(),
            drop: &[""],
        };
        let s = storage_with(Arc::new(lossy));
        let report = probe(&s, &ProbeOptions::quick()).await;
        assert!(!report.is_go(), "{}", report.table());
        let c = report.check(Role::Cas, "list-after-write").unwrap();
        assert_eq!(c.outcome, Outcome::Fail);
        let c = report.check(Role::Cas, "index-coherence").unwrap();
        assert_eq!(c.outcome, Outcome::Fail);
        assert!(
            c.evidence.iter().filter(|e| e.contains("missing")).count() >= 8,
            "{:?}",
            c.evidence
        );
        assert!(
            c.evidence
                .iter()
                .any(|e| e.starts_with("`probe/") && e.contains("the role's root")),
            "{:?}",
            c.evidence
        );
        eprintln!("{}", report.table());
    }

    #[tokio::test]
    async fn an_unreachable_backend_is_a_no_go_in_bounded_time() {
        let s = Storage::open(StorageLayout {
            cas: Location::parse("s3://nobucket/cas").unwrap(),
            records: Location::parse("s3://nobucket/records").unwrap(),
            s3: S3Settings {
                options: vec![
                    ("endpoint".into(), "http://127.0.0.1:9".into()),
                    ("region".into(), "garage".into()),
                    ("allow_http".into(), "true".into()),
                    ("access_key_id".into(), "x".into()),
                    ("secret_access_key".into(), "y".into()),
                ],
            },
        })
        .unwrap();
        let opts = ProbeOptions {
            op_timeout: Duration::from_millis(500),
            ..ProbeOptions::quick()
        };
        let t = Instant::now();
        let report = probe(&s, &opts).await;
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(!report.is_go());
        let c = report.check(Role::Cas, "reachable").unwrap();
        assert_eq!(c.outcome, Outcome::Fail);
        assert_eq!(
            report.check(Role::Cas, "index-coherence").unwrap().outcome,
            Outcome::Skipped
        );
    }
}
