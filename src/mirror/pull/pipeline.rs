//! The hashing and spooling of one fill's upstream body.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::watch;

use super::fill::{Fill, FillError, Progress, RECENT_BATCHES, SPOOL_BATCH, SpoolBatch};
use crate::mirror::record::UpstreamMeta;
use crate::mirror::verify::{ChunkHashers, Digests, Hashers, ShaHashers};
use crate::registry::{Algorithm, Integrity};
use crate::upstream::UpstreamResponse;

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
        crate::tasks::spawn_thread("gf-fill-sha", move || {
            while let Some(batch) = sha_rx.blocking_recv() {
                for part in &batch.parts {
                    hashers.update(part);
                }
            }
            let _ = sha_out.send(hashers);
        })?;
        crate::tasks::spawn_thread("gf-fill-spool", move || {
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
            // A spool write fails when the folder is full or goes read-only: storage.
            .map_err(|e| FillError::Storage(format!("spool file: {e}")))?;
        let sha = sha_done.await.map_err(|_| lost())?;
        Ok(Hashers::from_parts(sha, chunks))
    }
}

/// Copies the body into the spool file, announcing progress. Each 1 MiB batch is hashed
/// and written on the blocking pool, off the threads that serve requests.
pub(super) async fn spool(
    fill: &Fill,
    expected: Option<&Integrity>,
    mut resp: UpstreamResponse,
    tx: &watch::Sender<Progress>,
    max: u64,
) -> Result<(Digests, UpstreamMeta), FillError> {
    let file = fill
        .spool()
        .map(|s| s.file().clone())
        .ok_or_else(|| FillError::Other("no spool file".to_owned()))?;
    let extra: Vec<Algorithm> = expected
        .into_iter()
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
