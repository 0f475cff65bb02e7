//! The probe's checks, one function each, and the context they share.
//!
//! Over 400 lines on purpose: eleven checks of one backend that share one context, one
//! failure type and one cleanup, and read best side by side (each is 20 to 90 lines, and the
//! file has no other job). Splitting them would scatter that shared vocabulary.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{
    ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
};

use super::report::{Check, Outcome, RoleReport, millis};
use super::{PROBE_PREFIX, ProbeOptions};

/// Size of each multipart part but the last (S3's minimum part size).
const PART: usize = 5 << 20;

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

pub(super) async fn probe_store(
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

/// Attempts of the first `HEAD`: a backend's first answer after it lost a node can wait out its
/// own failover (a 3-node Garage with one node down has taken over 5 s), which says nothing of
/// how it behaves; a backend that is really unreachable fails every attempt.
const REACHABLE_ATTEMPTS: usize = 3;

/// A `HEAD` of a key never written must answer "not found" (not an error, not an object).
async fn check_reachable(cx: &Ctx) -> Body {
    let key = cx.key("never-written");
    let mut attempt = 1;
    let head = loop {
        match cx.head(&key).await {
            Err(_) if attempt < REACHABLE_ATTEMPTS => attempt += 1,
            other => break other?,
        }
    };
    let retried = if attempt > 1 {
        format!(" (on attempt {attempt} of {REACHABLE_ATTEMPTS})")
    } else {
        String::new()
    };
    match head {
        None => Ok((
            Outcome::Pass,
            format!("a HEAD of a missing key answers not found{retried}"),
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
