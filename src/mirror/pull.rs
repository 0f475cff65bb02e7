//! Pull-through of one URL: a single upstream fetch per URL at a time, spooled to a local file
//! while it is hashed, streamed to every waiting client at once, and stored only once it is
//! complete and verified.
//!
//! [`Pulls`] owns the in-flight map and the background work: fills run on the runtime the
//! mirror was loaded on, not on the worker of the request that started them.

mod fill;
mod pipeline;
mod store;
mod supplement;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use url::Url;

use super::clock::Clock;
use super::ledger::Ledger;
use super::policy::Policy;
use super::record::BlobRecord;
use super::stats::MirrorStats;
use crate::registry::Integrity;
use crate::storage::BlobStore;
use crate::upstream::{Allowed, Fetch};
use fill::Progress;
pub(crate) use fill::{Fill, FillError};

/// Upstream fetches running at once, at most; more answer 503 (which Bazel retries).
const MAX_CONCURRENT_FILLS: usize = 64;

/// How long a first fill waits, pin written and last byte held back, before it reloads the
/// pins and releases that byte: another replica that filled the same URL at the same time
/// (from an upstream that answered it other bytes) has written its pin by then.
pub(super) const SETTLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// The fills in flight, and where they run.
#[derive(Debug)]
pub(super) struct Pulls {
    ledger: Arc<Ledger>,
    blobs: BlobStore,
    policy: Arc<Policy>,
    upstream: Arc<dyn Fetch>,
    clock: Arc<dyn Clock>,
    stats: Arc<MirrorStats>,
    /// See [`SETTLE_WINDOW`].
    settle: std::time::Duration,
    inflight: Mutex<HashMap<String, Arc<Fill>>>,
    /// The runtime background work runs on (fills, record writes): the one the mirror was
    /// loaded on, which lives as long as the process, not a per-connection worker's.
    background: tokio::runtime::Handle,
}

/// What [`Pulls::new`] wires together.
#[derive(Debug)]
pub(super) struct PullParts {
    pub(super) ledger: Arc<Ledger>,
    pub(super) blobs: BlobStore,
    pub(super) policy: Arc<Policy>,
    pub(super) upstream: Arc<dyn Fetch>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) stats: Arc<MirrorStats>,
    /// How long a first fill settles (see [`SETTLE_WINDOW`]).
    pub(super) settle: std::time::Duration,
    pub(super) background: tokio::runtime::Handle,
}

impl Pulls {
    pub(super) fn new(parts: PullParts) -> Self {
        let PullParts {
            ledger,
            blobs,
            policy,
            upstream,
            clock,
            stats,
            settle,
            background,
        } = parts;
        Self {
            ledger,
            blobs,
            policy,
            upstream,
            clock,
            stats,
            settle,
            inflight: Mutex::new(HashMap::new()),
            background,
        }
    }

    /// The upstream client.
    pub(super) fn upstream(&self) -> &dyn Fetch {
        &*self.upstream
    }

    /// Whether a new fill of `url` must wait: the cap on fills in flight is reached, and none
    /// of them is for `url`.
    pub(super) fn is_full(&self, url: &str) -> bool {
        let inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        inflight.len() >= MAX_CONCURRENT_FILLS && !inflight.contains_key(url)
    }

    /// The cap on fills in flight.
    pub(super) fn max_concurrent() -> usize {
        MAX_CONCURRENT_FILLS
    }

    /// Joins the fill of `url` in progress, or starts one; `None` when `stored` says the URL's
    /// blob was stored meanwhile (a fill that just ended), so the caller serves it instead.
    ///
    /// `stored` is asked under the in-flight lock, and a fill leaves the in-flight map only
    /// after its pin is recorded: a request sees either the fill or its result, and a burst of
    /// requests for one URL makes exactly one upstream fetch however fast that fetch is.
    pub(super) fn join_or_start(
        self: &Arc<Self>,
        url: Url,
        allowed: Allowed,
        expected: Option<Integrity>,
        requested_by: String,
        stored: &dyn Fn() -> bool,
    ) -> Option<Arc<Fill>> {
        let mut map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = map.get(url.as_str()) {
            return Some(f.clone());
        }
        if stored() {
            return None;
        }
        let (tx, rx) = watch::channel(Progress::default());
        // The storage puts the spool in the file store's own folder when it has one, so the
        // verified spool becomes the blob by a rename instead of a second copy.
        let spool = match self.blobs.spool("fill") {
            Ok(spool) => spool,
            Err(e) => {
                // The folder refuses a new file (read-only, full): the storage fails, not the
                // upstream, and it is counted and logged like any failed fill.
                let e = FillError::Storage(format!("cannot create a spool file: {e}"));
                self.stats.fills_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(url = %url, error = %e, "pull-through failed: the storage refuses writes; nothing stored");
                tx.send_modify(|p| p.done = Some(Err(e)));
                return Some(Arc::new(Fill::new(None, rx)));
            }
        };
        let fill = Arc::new(Fill::new(Some(spool), rx));
        map.insert(url.to_string(), fill.clone());
        drop(map);
        let task = FillTask {
            pulls: self.clone(),
            fill: fill.clone(),
            url,
            allowed,
            expected,
            requested_by,
        };
        self.background.spawn(task.run(tx));
        Some(fill)
    }
}

/// Removes a fill from the in-flight map when dropped (if it is still the one there).
struct LeaveInflight {
    pulls: Arc<Pulls>,
    url: String,
    fill: Arc<Fill>,
}

impl Drop for LeaveInflight {
    fn drop(&mut self) {
        let mut map = self
            .pulls
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&self.url)
            .is_some_and(|f| Arc::ptr_eq(f, &self.fill))
        {
            map.remove(&self.url);
        }
    }
}

/// The background work of one fill; not tied to any client, so a client that goes away does
/// not stop the fill the others are waiting for.
struct FillTask {
    pulls: Arc<Pulls>,
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
            pulls: self.pulls.clone(),
            url: self.url.to_string(),
            fill: self.fill.clone(),
        };
        self.pulls
            .stats
            .upstream_fetches
            .fetch_add(1, Ordering::Relaxed);
        let result = self.fetch_and_store(&tx).await;
        match &result {
            Ok(r) => {
                self.pulls
                    .stats
                    .fills_stored
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(url = %self.url, blob.sha256 = %r.sha256, size_bytes = r.size, "mirrored");
            }
            Err(e) => {
                self.pulls
                    .stats
                    .fills_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %self.url, error = %e, "pull-through failed; nothing stored");
                self.record_drift(e).await;
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
        let policy = &self.pulls.policy;
        let allow = |u: &Url| policy.allows(u);
        let resp = self
            .pulls
            .upstream
            .fetch(&self.url, &allow)
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
        let (digests, meta) =
            pipeline::spool(&self.fill, self.expected.as_ref(), resp, tx, max).await?;
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
        let stored = self.store(&digests, meta).await?;
        if self.expected.is_some() {
            // The expected digest fixes the content: a replica racing this fill stores and
            // pins the same bytes, so there is nothing to settle.
            return Ok(stored);
        }
        self.settle(stored, tx).await
    }
}

#[cfg(test)]
mod tests;
