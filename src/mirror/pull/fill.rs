//! One fill as its clients see it: the progress of the transfer, the batches kept in memory
//! for clients that keep up, and each client's stream of the bytes.
//!
//! Clients are always one byte behind the spool until the blob is verified and stored: a
//! transfer that breaks or fails verification therefore never completes on the client side.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::watch;
use url::Url;

use crate::mirror::error::MirrorError;
use crate::mirror::record::BlobRecord;
use crate::storage::Spool;
use crate::upstream::UpstreamError;

/// Bytes gathered before they are hashed, written to the spool and announced.
pub(super) const SPOOL_BATCH: usize = 1 << 20;

/// Why a fill failed.
#[derive(Debug, Clone)]
pub(crate) enum FillError {
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
    /// Another replica's pin of the URL (to other bytes) won over this fill's: its clients
    /// are cut off before the last byte, and the URL serves the winner's bytes.
    Superseded {
        /// This fill's hex sha256.
        ours: String,
        /// The winning pin's hex sha256.
        winner: String,
    },
    /// Anything else (size cap, truncation, spool I/O).
    Other(String),
}

impl std::fmt::Display for FillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream(e) => write!(f, "{e}"),
            Self::Mismatch { expected, actual } => write!(f, "expected {expected}, got {actual}"),
            Self::Storage(m) => write!(f, "storage: {m}"),
            Self::Superseded { ours, winner } => write!(
                f,
                "another replica pinned the URL to sha256 {winner} first (this fill got {ours})"
            ),
            Self::Other(m) => f.write_str(m),
        }
    }
}

impl FillError {
    /// The answer to a request for `url` whose fill failed so.
    pub(crate) fn into_mirror_error(self, url: &Url) -> MirrorError {
        match self {
            Self::Upstream(UpstreamError::NotFound { url, status }) => {
                MirrorError::NotFound(format!("upstream {url} answered {status}"))
            }
            Self::Upstream(e @ UpstreamError::NotAllowed(_)) => {
                MirrorError::NotFound(format!("refused: {e}"))
            }
            Self::Upstream(e @ UpstreamError::PrivateAddress { .. }) => {
                MirrorError::NotFound(format!("refused: {e}"))
            }
            Self::Upstream(UpstreamError::Timeout(u)) => MirrorError::Upstream {
                message: format!("upstream {u} timed out"),
                timeout: true,
            },
            Self::Upstream(other) => MirrorError::Upstream {
                message: other.to_string(),
                timeout: false,
            },
            Self::Mismatch { expected, actual } => MirrorError::IntegrityMismatch {
                url: url.to_string(),
                expected,
                actual,
            },
            e @ Self::Superseded { .. } => MirrorError::Upstream {
                message: format!("{url}: {e}; retry"),
                timeout: false,
            },
            Self::Other(m) => MirrorError::Upstream {
                message: format!("{url}: {m}"),
                timeout: false,
            },
            Self::Storage(m) => MirrorError::Storage(m),
        }
    }
}

/// How far a fill got: what its clients wait on.
#[derive(Debug, Clone, Default)]
pub(super) struct Progress {
    /// Set once the upstream answered 200: its `Content-Length`, if any.
    pub(super) head: Option<Option<u64>>,
    /// Bytes received: in the spool, or in one of the `recent` batches.
    pub(super) received: u64,
    /// Bytes in the spool.
    pub(super) written: u64,
    /// The newest batches as they arrived, oldest first: clients that keep up are served from
    /// here, without reading the spool back.
    pub(super) recent: std::collections::VecDeque<Arc<SpoolBatch>>,
    /// Set once the blob is stored and pinned and the fill waits out the settle window
    /// (see [`super::SETTLE_WINDOW`]) before it releases the last byte.
    pub(super) settling: bool,
    /// Set once, at the end.
    pub(super) done: Option<Result<Arc<BlobRecord>, FillError>>,
}

/// Batches kept in memory for clients that keep up with the transfer. With the pipeline's
/// queues this bounds a fill's memory to about five batches (5 MiB); batches not yet written
/// to the spool (at most the queued, the processed and the one waiting) are always among them.
pub(super) const RECENT_BATCHES: usize = 3;

/// One batch of the upstream body, in the pieces it arrived in.
#[derive(Debug)]
pub(super) struct SpoolBatch {
    /// Offset of its first byte in the blob.
    pub(super) pos: u64,
    pub(super) parts: Vec<Bytes>,
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
pub(crate) struct Fill {
    spool: Option<Spool>,
    rx: watch::Receiver<Progress>,
}

impl Fill {
    /// A fill over `spool` (`None` when it could not be created), reporting on `rx`.
    pub(super) fn new(spool: Option<Spool>, rx: watch::Receiver<Progress>) -> Self {
        Self { spool, rx }
    }

    /// The spool, unless it could not be created.
    pub(super) fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref()
    }

    /// Waits until the fill is over (stored or failed).
    pub(crate) async fn finished(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|p| p.done.is_some()).await;
    }

    /// Waits for the upstream's answer: its length (if sent), or the failure.
    pub(crate) async fn wait_for_head(&self) -> Result<Option<u64>, FillError> {
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

    /// Whether the fill has all its bytes and is settling its pin: a request that joins now
    /// waits for the verdict rather than stream a transfer that may be withdrawn.
    pub(crate) fn is_settling(&self) -> bool {
        let p = self.rx.borrow();
        p.settling && p.done.is_none()
    }

    /// The result, once over.
    pub(crate) fn outcome(&self) -> Option<Result<Arc<BlobRecord>, FillError>> {
        self.rx.borrow().done.clone()
    }

    /// The bytes for one client, from the spool, as they arrive; the last byte only once the
    /// blob is verified and stored; an error item when the fill fails.
    pub(crate) fn stream(self: &Arc<Self>) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
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
