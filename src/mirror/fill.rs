//! Pull-through of one URL: a single upstream fetch per URL at a time, spooled to a local file
//! while it is hashed, streamed to every waiting client at once, and stored only once it is
//! complete and verified.
//!
//! Clients are always one byte behind the spool until the blob is verified and stored: a
//! transfer that breaks or fails verification therefore never completes on the client side.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::watch;
use url::Url;

use super::records::{BlobRecord, EventKind, EventRecord, PinRecord, Record, UpstreamMeta};
use super::service::{Inner, write_state};
use super::verify::{CHUNK_SIZE, ChunkHashers, Digests, Hashers, ShaHashers};
use crate::registry::{Algorithm, Integrity};
use crate::storage::{Spool, StorageKey};
use crate::upstream::{Allowed, UpstreamError, UpstreamResponse};

/// Bytes gathered before they are hashed, written to the spool and announced.
const SPOOL_BATCH: usize = 1 << 20;

/// Why a fill failed.
#[derive(Debug, Clone)]
pub(super) enum FillError {
    /// The upstream refused, failed or was not allowed.
    Upstream(UpstreamError),
    /// The bytes do not match the expected integrity.
    Mismatch {
        /// Expected SRI.
        expected: String,
        /// Actual SRI.
        actual: String,
    },
    /// The storage backend failed.
    Storage(String),
    /// Anything else (size cap, truncation, spool I/O).
    Other(String),
}

impl std::fmt::Display for FillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream(e) => write!(f, "{e}"),
            Self::Mismatch { expected, actual } => write!(f, "expected {expected}, got {actual}"),
            Self::Storage(m) => write!(f, "storage: {m}"),
            Self::Other(m) => f.write_str(m),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Progress {
    /// Set once the upstream answered 200: its `Content-Length`, if any.
    head: Option<Option<u64>>,
    /// Bytes received: in the spool, or in one of the `recent` batches.
    received: u64,
    /// Bytes in the spool.
    written: u64,
    /// The newest batches as they arrived, oldest first: clients that keep up are served from
    /// here, without reading the spool back.
    recent: std::collections::VecDeque<Arc<SpoolBatch>>,
    /// Set once, at the end.
    done: Option<Result<Arc<BlobRecord>, FillError>>,
}

/// Batches kept in memory for clients that keep up with the transfer. With the pipeline's
/// queues this bounds a fill's memory to about five batches (5 MiB); batches not yet written
/// to the spool (at most the queued, the processed and the one waiting) are always among them.
const RECENT_BATCHES: usize = 3;

/// One batch of the upstream body, in the pieces it arrived in.
#[derive(Debug)]
struct SpoolBatch {
    /// Offset of its first byte in the blob.
    pos: u64,
    parts: Vec<Bytes>,
}

impl SpoolBatch {
    /// The bytes from `pos` on (up to `limit`, and within one piece), if `pos` is in this batch.
    fn slice(&self, pos: u64, limit: u64) -> Option<Bytes> {
        let mut start = self.pos;
        for part in &self.parts {
            let end = start + part.len() as u64;
            if (start..end).contains(&pos) {
                let from = usize::try_from(pos - start).ok()?;
                let to = usize::try_from(end.min(limit) - start).ok()?;
                return (from < to).then(|| part.slice(from..to));
            }
            start = end;
        }
        None
    }
}

/// One fill in progress (or just finished).
#[derive(Debug)]
pub(super) struct Fill {
    spool: Option<Spool>,
    rx: watch::Receiver<Progress>,
}

impl Fill {
    /// Joins the fill of `url` in progress, or starts one; `None` when `stored` says the URL's
    /// blob was stored meanwhile (a fill that just ended), so the caller serves it instead.
    ///
    /// `stored` is asked under the in-flight lock, and a fill leaves the in-flight map only
    /// after its pin is recorded: a request sees either the fill or its result, and a burst of
    /// requests for one URL makes exactly one upstream fetch however fast that fetch is.
    pub(super) fn join_or_start(
        inner: &Arc<Inner>,
        url: Url,
        allowed: Allowed,
        expected: Option<Integrity>,
        requested_by: String,
        stored: &dyn Fn() -> bool,
    ) -> Option<Arc<Self>> {
        let mut map = inner
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = map.get(url.as_str()) {
            return Some(f.clone());
        }
        if stored() {
            return None;
        }
        let (tx, rx) = watch::channel(Progress::default());
        // The storage puts the spool in the file store's own folder when it has one, so the
        // verified spool becomes the blob by a rename instead of a second copy.
        let spool = match inner.blobs.spool("fill") {
            Ok(spool) => spool,
            Err(e) => {
                tx.send_modify(|p| {
                    p.done = Some(Err(FillError::Other(format!(
                        "cannot create a spool file: {e}"
                    ))))
                });
                return Some(Arc::new(Self { spool: None, rx }));
            }
        };
        let fill = Arc::new(Self {
            spool: Some(spool),
            rx,
        });
        map.insert(url.to_string(), fill.clone());
        drop(map);
        let task = FillTask {
            inner: inner.clone(),
            fill: fill.clone(),
            url,
            allowed,
            expected,
            requested_by,
        };
        inner.background.spawn(task.run(tx));
        Some(fill)
    }

    /// Waits until the fill is over (stored or failed).
    pub(super) async fn finished(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|p| p.done.is_some()).await;
    }

    /// Waits for the upstream's answer: its length (if sent), or the failure.
    pub(super) async fn wait_for_head(&self) -> Result<Option<u64>, FillError> {
        let mut rx = self.rx.clone();
        let p = match rx.wait_for(|p| p.head.is_some() || p.done.is_some()).await {
            Ok(p) => p.clone(),
            Err(_) => {
                return Err(FillError::Other(
                    "the fill task ended unexpectedly".to_owned(),
                ));
            }
        };
        match (p.done, p.head) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(len)) => Ok(len),
            (_, None) => Err(FillError::Other(
                "the fill ended without an upstream answer".to_owned(),
            )),
        }
    }

    /// The result, once over.
    pub(super) fn outcome(&self) -> Option<Result<Arc<BlobRecord>, FillError>> {
        self.rx.borrow().done.clone()
    }

    /// The bytes for one client, from the spool, as they arrive; the last byte only once the
    /// blob is verified and stored; an error item when the fill fails.
    pub(super) fn stream(self: &Arc<Self>) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
        let st = Reader {
            fill: self.clone(),
            rx: self.rx.clone(),
            pos: 0,
            over: false,
        };
        futures::stream::unfold(st, |mut st| async move {
            if st.over {
                return None;
            }
            loop {
                let (limit, in_memory, done) = {
                    let p = st.rx.borrow_and_update();
                    let complete = matches!(p.done, Some(Ok(_)));
                    // Until the blob is verified and stored, the last byte is held back.
                    let available = if complete {
                        p.written
                    } else {
                        p.received.saturating_sub(1)
                    };
                    let in_memory = p.recent.iter().find_map(|b| b.slice(st.pos, available));
                    (p.written.min(available), in_memory, p.done.clone())
                };
                if let Some(bytes) = in_memory {
                    st.pos += bytes.len() as u64;
                    return Some((Ok(bytes), st));
                }
                if st.pos < limit {
                    let item = st.read_up_to(limit).await;
                    st.over = item.is_err();
                    return Some((item, st));
                }
                match done {
                    Some(Ok(_)) => return None,
                    Some(Err(e)) => {
                        st.over = true;
                        return Some((Err(std::io::Error::other(e.to_string())), st));
                    }
                    None => {
                        if st.rx.changed().await.is_err() {
                            st.over = true;
                            return Some((
                                Err(std::io::Error::other("the fill task ended unexpectedly")),
                                st,
                            ));
                        }
                    }
                }
            }
        })
        .boxed()
    }
}

/// One client's position in the spool.
struct Reader {
    fill: Arc<Fill>,
    rx: watch::Receiver<Progress>,
    pos: u64,
    over: bool,
}

impl Reader {
    async fn read_up_to(&mut self, limit: u64) -> Result<Bytes, std::io::Error> {
        let file = self
            .fill
            .spool
            .as_ref()
            .map(|s| s.file().clone())
            .ok_or_else(|| std::io::Error::other("no spool file"))?;
        let pos = self.pos;
        let want = usize::try_from((limit - pos).min(SPOOL_BATCH as u64)).unwrap_or(SPOOL_BATCH);
        let buf = crate::tasks::spawn_blocking(move || {
            use std::os::unix::fs::FileExt as _;
            let mut buf = vec![0u8; want];
            file.read_exact_at(&mut buf, pos).map(|()| buf)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.pos += buf.len() as u64;
        Ok(Bytes::from(buf))
    }
}

/// Removes a fill from the in-flight map when dropped (if it is still the one there).
struct LeaveInflight {
    inner: Arc<Inner>,
    url: String,
    fill: Arc<Fill>,
}

impl Drop for LeaveInflight {
    fn drop(&mut self) {
        let mut map = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map
            .get(&self.url)
            .is_some_and(|f| Arc::ptr_eq(f, &self.fill))
        {
            map.remove(&self.url);
        }
    }
}

/// The hashing and spooling of one fill, on two threads of its own: one computes the SHA-2
/// digests, the other the per-chunk BLAKE3 digests and the spool writes. Each takes the
/// batches in order from a short queue, so both run flat out while the next batches arrive,
/// and the transfer waits only when one of them falls behind.
struct Pipeline {
    sha: tokio::sync::mpsc::Sender<Arc<SpoolBatch>>,
    disk: tokio::sync::mpsc::Sender<Arc<SpoolBatch>>,
    sha_done: tokio::sync::oneshot::Receiver<ShaHashers>,
    disk_done: tokio::sync::oneshot::Receiver<std::io::Result<ChunkHashers>>,
}

/// Batches queued per pipeline thread before the transfer waits.
const PIPELINE_DEPTH: usize = 1;

impl Pipeline {
    fn start(
        extra: &[Algorithm],
        file: Arc<std::fs::File>,
        tx: watch::Sender<Progress>,
    ) -> std::io::Result<Self> {
        let (sha, mut sha_rx) = tokio::sync::mpsc::channel::<Arc<SpoolBatch>>(PIPELINE_DEPTH);
        let (disk, mut disk_rx) = tokio::sync::mpsc::channel::<Arc<SpoolBatch>>(PIPELINE_DEPTH);
        let (sha_out, sha_done) = tokio::sync::oneshot::channel();
        let (disk_out, disk_done) = tokio::sync::oneshot::channel();
        let mut hashers = ShaHashers::new(extra);
        std::thread::Builder::new()
            .name("gf-fill-sha".to_owned())
            .spawn(move || {
                while let Some(batch) = sha_rx.blocking_recv() {
                    for part in &batch.parts {
                        hashers.update(part);
                    }
                }
                let _ = sha_out.send(hashers);
            })?;
        std::thread::Builder::new()
            .name("gf-fill-spool".to_owned())
            .spawn(move || {
                use std::os::unix::fs::FileExt as _;
                let mut chunks = ChunkHashers::new();
                let result = loop {
                    let Some(batch) = disk_rx.blocking_recv() else {
                        break Ok(chunks);
                    };
                    let mut pos = batch.pos;
                    let mut failed = None;
                    for part in &batch.parts {
                        chunks.update(part);
                        if let Err(e) = file.write_all_at(part, pos) {
                            failed = Some(e);
                            break;
                        }
                        pos += part.len() as u64;
                    }
                    if let Some(e) = failed {
                        break Err(e);
                    }
                    tx.send_modify(|p| p.written = pos);
                };
                let _ = disk_out.send(result);
            })?;
        Ok(Self {
            sha,
            disk,
            sha_done,
            disk_done,
        })
    }

    /// Queues a batch; `false` when a pipeline thread has stopped (its error comes from
    /// [`Pipeline::finish`]).
    async fn push(&self, batch: Arc<SpoolBatch>) -> bool {
        self.sha.send(batch.clone()).await.is_ok() && self.disk.send(batch).await.is_ok()
    }

    /// Waits for both threads to drain their queues.
    async fn finish(self) -> Result<Hashers, FillError> {
        let Self {
            sha,
            disk,
            sha_done,
            disk_done,
        } = self;
        drop((sha, disk));
        let lost = || FillError::Other("a spool thread ended unexpectedly".to_owned());
        let chunks = disk_done
            .await
            .map_err(|_| lost())?
            .map_err(|e| FillError::Other(format!("spool file: {e}")))?;
        let sha = sha_done.await.map_err(|_| lost())?;
        Ok(Hashers::from_parts(sha, chunks))
    }
}

/// The background work of one fill; not tied to any client, so a client that goes away does
/// not stop the fill the others are waiting for.
struct FillTask {
    inner: Arc<Inner>,
    fill: Arc<Fill>,
    url: Url,
    allowed: Allowed,
    expected: Option<Integrity>,
    requested_by: String,
}

impl FillTask {
    async fn run(self, tx: watch::Sender<Progress>) {
        // However this task ends (done, panicked, cancelled at shutdown), the URL leaves the
        // in-flight map, so a later request starts a new fill instead of joining a dead one.
        let _leave = LeaveInflight {
            inner: self.inner.clone(),
            url: self.url.to_string(),
            fill: self.fill.clone(),
        };
        self.inner
            .stats
            .upstream_fetches
            .fetch_add(1, Ordering::Relaxed);
        let result = self.fetch_and_store(&tx).await;
        match &result {
            Ok(r) => {
                self.inner
                    .stats
                    .fills_stored
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(url = %self.url, blob.sha256 = %r.sha256, size_bytes = r.size, "mirrored");
            }
            Err(e) => {
                self.inner
                    .stats
                    .fills_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %self.url, error = %e, "pull-through failed; nothing stored");
                if let FillError::Mismatch { actual, .. } = e {
                    self.record_drift_if_pinned(actual).await;
                }
            }
        }
        drop(_leave);
        tx.send_modify(|p| {
            p.done = Some(result.map(Arc::new));
            // Clients still behind read the rest from the spool.
            p.recent.clear();
        });
    }

    async fn fetch_and_store(&self, tx: &watch::Sender<Progress>) -> Result<BlobRecord, FillError> {
        let policy = &self.inner.policy;
        let allow = |u: &Url| policy.allows(u);
        let resp = self
            .inner
            .upstream
            .get(&self.url, &allow)
            .await
            .map_err(FillError::Upstream)?;
        let max = policy.max_blob_bytes;
        if let Some(n) = resp.content_length
            && n > max
        {
            return Err(FillError::Other(format!(
                "upstream announces {n} bytes, over the policy's max_blob_bytes ({max})"
            )));
        }
        tx.send_modify(|p| p.head = Some(resp.content_length));
        let (digests, meta) = self.spool(resp, tx, max).await?;
        if let Some(expected) = &self.expected
            && let Err(actual) = digests.check(expected)
        {
            let actual = actual.map_or_else(
                || format!("sha256-… ({})", digests.sha256_hex),
                |a| a.to_string(),
            );
            return Err(FillError::Mismatch {
                expected: expected.to_string(),
                actual,
            });
        }
        self.store(&digests, meta).await
    }

    /// Copies the body into the spool file, announcing progress. Each 1 MiB batch is hashed
    /// and written on the blocking pool, off the threads that serve requests.
    async fn spool(
        &self,
        mut resp: UpstreamResponse,
        tx: &watch::Sender<Progress>,
        max: u64,
    ) -> Result<(Digests, UpstreamMeta), FillError> {
        let file = self
            .fill
            .spool
            .as_ref()
            .map(|s| s.file().clone())
            .ok_or_else(|| FillError::Other("no spool file".to_owned()))?;
        let extra: Vec<Algorithm> = self
            .expected
            .iter()
            .map(Integrity::algorithm)
            .filter(|a| *a != Algorithm::Sha256)
            .collect();
        // One batch is hashed and written on the blocking pool while the next is received:
        // the upstream transfer and the hashing overlap, and their order is kept.
        let pipeline = Pipeline::start(&extra, file, tx.clone())
            .map_err(|e| FillError::Other(format!("cannot start the spool threads: {e}")))?;
        // The pieces as the upstream body delivered them: never copied into one buffer.
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        let mut received = 0u64;
        loop {
            let next = resp.body.next().await;
            let end = next.is_none();
            if let Some(chunk) = next {
                let chunk = chunk.map_err(FillError::Upstream)?;
                received += chunk.len() as u64;
                if received > max {
                    return Err(FillError::Other(format!(
                        "upstream sent more than the policy's max_blob_bytes ({max})"
                    )));
                }
                if !chunk.is_empty() {
                    pending_len += chunk.len();
                    pending.push(chunk);
                }
            }
            if pending_len >= SPOOL_BATCH || (end && pending_len > 0) {
                let batch = Arc::new(SpoolBatch {
                    pos: received - pending_len as u64,
                    parts: std::mem::take(&mut pending),
                });
                pending_len = 0;
                // Clients may take these bytes now; the last byte still waits for the
                // verdict on the whole blob.
                tx.send_modify(|p| {
                    p.received = received;
                    if p.recent.len() == RECENT_BATCHES {
                        p.recent.pop_front();
                    }
                    p.recent.push_back(batch.clone());
                });
                if !pipeline.push(batch).await {
                    break;
                }
            }
            if end {
                break;
            }
        }
        let hashers = pipeline.finish().await?;
        let written = tx.borrow().written;
        if let Some(n) = resp.content_length
            && n != written
        {
            return Err(FillError::Other(format!(
                "upstream sent {written} of {n} announced bytes"
            )));
        }
        let meta = UpstreamMeta {
            status: resp.status,
            final_url: resp.final_url.to_string(),
            etag: resp.etag,
            last_modified: resp.last_modified,
            content_type: resp.content_type,
        };
        Ok((hashers.finish(), meta))
    }

    /// Write, verify, then expose: upload to a temporary key, move to the CAS key, check the
    /// size the backend reports, then append provenance and the pin.
    async fn store(&self, d: &Digests, meta: UpstreamMeta) -> Result<BlobRecord, FillError> {
        let storage = &self.inner.storage;
        let st = |e: crate::storage::StorageError| FillError::Storage(e.to_string());
        let blob_key = StorageKey::blob("sha256", &d.sha256_hex);
        let available = self
            .inner
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .blob(&d.sha256_hex)
            .is_some_and(super::records::BlobState::is_available);
        let present = available && storage.size(&blob_key).await.map_err(st)? == Some(d.size);
        let now = Utc::now();
        let record = BlobRecord {
            sha256: d.sha256_hex.clone(),
            integrity: d.integrity.iter().map(ToString::to_string).collect(),
            size: d.size,
            url: Some(self.url.to_string()),
            fetched_at: now,
            upstream: Some(meta),
            rule: Some(self.allowed.rule.clone()),
            requested_by: Some(self.requested_by.clone()),
            chunk_size: CHUNK_SIZE,
            chunks: d.chunks.clone(),
            supplement: false,
        };
        // Placement and retention's deletes exclude each other: a blob is never deleted
        // between being placed and its record being written.
        let _placing = self.inner.placement.lock().await;
        let mut new_records = Vec::new();
        if !present {
            let spool = self
                .fill
                .spool
                .as_ref()
                .ok_or_else(|| FillError::Other("no spool file".to_owned()))?;
            self.inner
                .blobs
                .place(spool, &d.sha256_hex, d.size)
                .await
                .map_err(|e| {
                    if e.is_storage() {
                        FillError::Storage(e.to_string())
                    } else {
                        FillError::Other(e.to_string())
                    }
                })?;
            new_records.push(Record::Blob(record.clone()));
        }
        let pinned = self
            .inner
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pins
            .contains_key(self.url.as_str());
        if !pinned {
            new_records.push(Record::Pin(PinRecord {
                url: self.url.to_string(),
                sha256: d.sha256_hex.clone(),
                at: now,
            }));
        }
        for r in &new_records {
            self.inner.record(r).await.map_err(st)?;
        }
        let stored_new_blob = new_records.iter().any(|r| matches!(r, Record::Blob(_)));
        let result = {
            let state = write_state(&self.inner);
            state
                .blob(&d.sha256_hex)
                .map_or_else(|| record.clone(), super::records::BlobState::record)
        };
        if stored_new_blob && record.integrity.len() < 3 {
            self.complete_integrity(record);
        }
        Ok(result)
    }

    /// Provenance carries sha256, sha384 and sha512. Only sha256 (and the algorithm of a known
    /// integrity) is computed on the transfer's critical path; the others are computed from
    /// the spool afterwards and recorded as a supplement to the same ingest.
    fn complete_integrity(&self, record: BlobRecord) {
        let inner = self.inner.clone();
        let fill = self.fill.clone();
        self.inner.background.spawn(async move {
            let Some(file) = fill.spool.as_ref().map(|s| s.file().clone()) else {
                return;
            };
            // About 2.5 CPU seconds per GB: on a thread of its own at the lowest priority, so
            // it only ever takes CPU that serving requests leaves idle.
            let hashed = crate::tasks::spawn_idle(
                "gf-supplement",
                move || -> std::io::Result<(Vec<u8>, Vec<u8>)> {
                    use sha2::Digest as _;
                    use std::os::unix::fs::FileExt as _;
                    let (mut h384, mut h512) = (sha2::Sha384::new(), sha2::Sha512::new());
                    let mut buf = vec![0u8; 1 << 20];
                    let mut pos = 0u64;
                    loop {
                        let n = file.read_at(&mut buf, pos)?;
                        if n == 0 {
                            break;
                        }
                        pos += n as u64;
                        h384.update(&buf[..n]);
                        h512.update(&buf[..n]);
                    }
                    Ok((h384.finalize().to_vec(), h512.finalize().to_vec()))
                },
            )
            .await;
            let Ok(Ok((d384, d512))) = hashed else {
                tracing::warn!(blob.sha256 = %record.sha256, "could not complete sha384/sha512 provenance");
                return;
            };
            let mut full = record;
            full.supplement = true;
            for i in [
                Integrity::of_digest(Algorithm::Sha384, d384),
                Integrity::of_digest(Algorithm::Sha512, d512),
            ] {
                let s = i.to_string();
                if !full.integrity.contains(&s) {
                    full.integrity.push(s);
                }
            }
            // Same ingest time: the supplement folds right after the original record.
            let supplement = Record::Blob(full);
            if let Err(e) = inner.record(&supplement).await {
                tracing::warn!(error = %e, "could not record sha384/sha512 provenance");
                return;
            }
            drop(fill);
        });
    }

    async fn record_drift_if_pinned(&self, actual: &str) {
        let pin = self
            .inner
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pins
            .get(self.url.as_str())
            .cloned();
        if let Some(pin) = pin {
            let event = Record::Event(EventRecord {
                event: EventKind::Drift,
                sha256: pin.sha256.to_hex(),
                url: Some(self.url.to_string()),
                at: Utc::now(),
                detail: format!("upstream now serves {actual}"),
            });
            if let Err(e) = self.inner.record(&event).await {
                tracing::error!(error = %e, "could not record drift");
            }
        }
    }
}
