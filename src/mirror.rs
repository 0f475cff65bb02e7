//! The content-addressed mirror: pull-through with first-seen pinning, verification on the
//! way in and on the way out, append-only provenance, retention, and client configuration.
//!
//! No HTTP framework, object-store or git types here: blobs and records go through
//! [`crate::storage::Storage`], upstream traffic through [`crate::upstream::Fetch`].
//!
//! # Parts
//!
//! [`Mirror`] is a facade that composes parts; each part takes the ledger and the blob store,
//! and none points back to the facade:
//!
//! - `ledger`: the records and the state folded from them (`record`: the types, `records`:
//!   their I/O, `state`: the fold), the placement lock and the ingest gate;
//! - `pull`: the fills in flight and the background work (one upstream fetch per URL);
//! - `serve`: verified reads, the readers retention must spare, access records, quarantine;
//! - `known`: the integrity the registry and the candidates give each URL;
//! - `ops/*`: one file per operator feature, each a function over the parts;
//! - `lookup` and `ingest`: the flows by URL, by digest and for publishing, over the parts.
//!
//! # Lock order
//!
//! Take locks only in this order, and release a later one before taking an earlier one:
//!
//! 1. `Ledger::placement` (tokio; held across the writes that place and record a blob, and
//!    across retention's re-check and delete),
//! 2. `Known::cache` (tokio; held while the registry's sources are read),
//! 3. `Ledger::reload` (tokio; held while new records are listed and read),
//! 4. `Pulls::inflight` (std; `stored` reads the state under it),
//! 5. `Ledger::state` (std `RwLock`; never held across an await),
//! 6. the leaves, which take no other lock: `Serve::readers`, `Serve::access_written`,
//!    `Ledger::ingest_refused`.

pub mod client_config;
mod clock;
mod error;
mod ingest;
mod known;
mod ledger;
mod lookup;
pub mod ops;
mod parts;
pub mod policy;
mod pull;
mod record;
pub mod records;
mod response;
mod serve;
mod state;
mod stats;
mod verify;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::registry::{Integrity, Registry};
use crate::storage::{BlobStore, Storage};
use crate::upstream::{Fetch, UpstreamClient};
use clock::{Clock, SystemClock};
use known::Known;
pub use known::RetentionHolds;
use ledger::Ledger;
use ops::{
    BlobInfo, CandidateStatus, ExportFormat, ExportReport, GcReport, Probe, Repair, ScrubReport,
    Selection,
};
use parts::{Parts, PullThrough};
use pull::{PullParts, Pulls};
use serve::Serve;

pub use error::MirrorError;
use records::MirrorState;
pub use response::{BlobResponse, ByteRange};
pub use stats::MirrorStats;
pub use verify::CHUNK_SIZE;

/// The mirror.
#[derive(Debug, Clone)]
pub struct Mirror {
    ledger: Arc<Ledger>,
    blobs: BlobStore,
    pulls: Arc<Pulls>,
    serve: Arc<Serve>,
    known: Arc<Known>,
    policy: Arc<policy::Policy>,
    stats: Arc<MirrorStats>,
    clock: Arc<dyn Clock>,
}

impl Mirror {
    /// Loads the state from the records and sets up the mirror.
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the records cannot be listed.
    pub async fn load(
        storage: Storage,
        policy: policy::Policy,
        registry: Arc<Registry>,
        upstream: UpstreamClient,
    ) -> Result<Self, MirrorError> {
        Self::load_with(
            storage,
            policy,
            registry,
            Arc::new(upstream),
            Arc::new(SystemClock),
        )
        .await
    }

    /// [`Mirror::load`] with the upstream and the clock given (tests substitute them).
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the records cannot be listed.
    pub(crate) async fn load_with(
        storage: Storage,
        policy: policy::Policy,
        registry: Arc<Registry>,
        upstream: Arc<dyn Fetch>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, MirrorError> {
        let ledger = Arc::new(Ledger::load(storage.clone()).await?);
        let blobs = BlobStore::new(storage);
        let policy = Arc::new(policy);
        let stats = Arc::new(MirrorStats::default());
        // Background work (fills, record writes) runs on the runtime the mirror is loaded
        // on, which lives as long as the process, not on a per-connection worker's.
        let background = tokio::runtime::Handle::current();
        let pulls = Arc::new(Pulls::new(PullParts {
            ledger: ledger.clone(),
            blobs: blobs.clone(),
            policy: policy.clone(),
            upstream,
            clock: clock.clone(),
            stats: stats.clone(),
            settle: pull::SETTLE_WINDOW,
            background: background.clone(),
        }));
        let serve = Arc::new(Serve::new(
            ledger.clone(),
            blobs.clone(),
            stats.clone(),
            clock.clone(),
            background,
        ));
        Ok(Self {
            known: Arc::new(Known::new(registry, policy.clone())),
            ledger,
            blobs,
            pulls,
            serve,
            policy,
            stats,
            clock,
        })
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            ledger: &self.ledger,
            blobs: &self.blobs,
            serve: &self.serve,
            known: &self.known,
            pulls: &self.pulls,
            policy: &self.policy,
            clock: &*self.clock,
            pull: self,
        }
    }

    /// Reads the records other replicas wrote since the last reload and applies them. Reloads
    /// run one at a time; each lists only from a few minutes before the newest record seen.
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the records cannot be listed.
    pub async fn reload_records(&self) -> Result<(), MirrorError> {
        Ok(self.ledger.reload().await?)
    }

    /// Refuses (with the reason) or allows pinned ingest: pull-through writes new blobs and
    /// pins, which must not go to a backend that failed its probe.
    pub fn refuse_ingest(&self, reason: Option<String>) {
        self.ledger.refuse_ingest(reason);
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> &policy::Policy {
        &self.policy
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &MirrorStats {
        &self.stats
    }

    /// A copy of the folded state.
    #[must_use]
    pub fn state(&self) -> MirrorState {
        self.ledger.read().clone()
    }

    /// Makes retention keep what `holds` names, as if a registry entry referenced it.
    pub fn hold(&self, holds: Arc<dyn RetentionHolds>) {
        self.known.hold(holds);
    }

    /// The known integrity of `url` and who names it (registry entries, candidates).
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the registry cannot be read.
    pub async fn known_integrity(
        &self,
        url: &str,
    ) -> Result<Option<(Integrity, Vec<String>)>, MirrorError> {
        self.known.integrity(url).await
    }

    /// Every digest that a registry entry or candidate references (hex sha256 when known, or
    /// the SRI value), with its referrers: these blobs are pinned by retention.
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the registry cannot be read.
    pub async fn references(&self) -> Result<HashMap<String, Vec<String>>, MirrorError> {
        self.known.references(&self.ledger).await
    }

    /// Serves the archive whose upstream URL is `SCHEME://{host_and_path}`: the pinned blob
    /// when there is one, otherwise a pull-through when the policy allows it.
    ///
    /// # Errors
    /// [`MirrorError`] for misses that may not be fetched, upstream failures and the like.
    pub async fn get_url(
        &self,
        host_and_path: &str,
        range: Option<ByteRange>,
        requested_by: &str,
        fetch: bool,
    ) -> Result<BlobResponse, MirrorError> {
        lookup::get_url(self.parts(), host_and_path, range, requested_by, fetch).await
    }

    /// Serves a blob by digest (`sha256`, `sha384` or `sha512`, lowercase hex).
    ///
    /// # Errors
    /// [`MirrorError::NotFound`] when no available blob has that digest.
    pub async fn get_digest(
        &self,
        algorithm: &str,
        hex_digest: &str,
        range: Option<ByteRange>,
    ) -> Result<BlobResponse, MirrorError> {
        lookup::get_digest(self.parts(), algorithm, hex_digest, range).await
    }

    /// The available blob whose digest is `integrity`: its hex sha256 and size. Memory only:
    /// after a miss, [`Mirror::reload_records`] picks up what other replicas stored.
    #[must_use]
    pub fn stored(&self, integrity: &Integrity) -> Option<(String, u64)> {
        lookup::stored(self.parts(), integrity)
    }

    /// Stores (or finds) the archive at `url` and returns its hex sha256. A URL pinned before
    /// keeps its first-seen bytes; `expected` must match what is (or gets) stored.
    ///
    /// # Errors
    /// [`MirrorError::NotFound`] when the policy allows no such upstream; upstream failures;
    /// [`MirrorError::IntegrityMismatch`] when the bytes differ from `expected`.
    pub async fn ingest_url(
        &self,
        url: &url::Url,
        expected: Option<&Integrity>,
        requested_by: &str,
    ) -> Result<String, MirrorError> {
        ingest::ingest_url(self.parts(), url, expected, requested_by).await
    }

    /// Binds `urls` to the stored blob `sha256` as first-seen pins (a push); returns how
    /// many pins were written.
    ///
    /// # Errors
    /// [`MirrorError::NotFound`] when the blob is not stored; [`MirrorError::PinConflict`]
    /// when a URL is pinned to another blob (then nothing is written).
    pub async fn bind_urls(
        &self,
        urls: &[url::Url],
        sha256: &str,
        requested_by: &str,
    ) -> Result<usize, MirrorError> {
        ingest::bind_urls(self.parts(), urls, sha256, requested_by).await
    }

    /// Records that a client named blob `sha256`'s download from `url` by canonical id `id`
    /// (Bazel's repository-cache key), once per blob and id; exports mark it.
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the record cannot be written.
    pub async fn note_canonical_id(
        &self,
        sha256: &str,
        url: &url::Url,
        id: &str,
    ) -> Result<(), MirrorError> {
        ingest::note_canonical_id(self.parts(), sha256, url, id).await
    }

    /// Stores uploaded bytes as a blob and returns its hex sha256.
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the backend refuses the write or ingest is refused.
    pub async fn ingest_bytes(
        &self,
        bytes: Arc<Vec<u8>>,
        label: &str,
        requested_by: &str,
    ) -> Result<String, MirrorError> {
        ingest::ingest_bytes(self.parts(), bytes, label, requested_by).await
    }

    /// Copies a stored blob, verified chunk by chunk, into `dest`.
    ///
    /// # Errors
    /// [`MirrorError`] when the blob is missing or does not verify.
    pub async fn copy_blob_to(&self, sha256: &str, dest: &Path) -> Result<u64, MirrorError> {
        ingest::copy_blob_to(self.parts(), sha256, dest).await
    }

    /// Provenance and state of a blob, for the API.
    ///
    /// # Errors
    /// [`MirrorError::NotFound`] for unknown blobs.
    pub async fn provenance(&self, sha256: &str) -> Result<BlobInfo, MirrorError> {
        ops::provenance::provenance(self.parts(), sha256).await
    }

    /// Streams a whole stored blob, verified chunk by chunk (for exports and restore checks).
    ///
    /// # Errors
    /// [`MirrorError::NotFound`] when the blob is not available.
    pub async fn read_blob(&self, sha256: &str) -> Result<BlobResponse, MirrorError> {
        self.serve.read_blob(sha256).await
    }

    /// Applies retention: unpinned blobs not read for `cached_max_age` are evicted, then the
    /// least recently read until the unpinned bytes fit `cached_max_bytes`. Pinned blobs and
    /// blobs being read are never removed.
    ///
    /// # Errors
    /// [`MirrorError`] when the registry or storage fails.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport, MirrorError> {
        ops::gc::gc(self.parts(), dry_run).await
    }

    /// The durable-authority gate for every candidate. Reads each present blob back from the
    /// backend and re-hashes it.
    ///
    /// # Errors
    /// [`MirrorError`] when the registry fails.
    pub async fn candidate_status(&self) -> Result<Vec<CandidateStatus>, MirrorError> {
        ops::candidates::candidate_status(self.parts()).await
    }

    /// Materializes every candidate that is not yet present, trying its URLs in order.
    /// `progress` is told `(name, bytes so far)` as bytes arrive.
    ///
    /// # Errors
    /// Per-candidate failures are in the result; only registry failures are errors.
    pub async fn fetch_candidates(
        &self,
        progress: &mut dyn FnMut(&str, u64),
    ) -> Result<Vec<(String, Result<String, String>)>, MirrorError> {
        ops::candidates::fetch_candidates(self.parts(), progress).await
    }

    /// Re-probes every pinned URL (or those starting with `filter`): fetches the upstream,
    /// hashes it, and records drift as an event. What is served does not change.
    ///
    /// # Errors
    /// [`MirrorError`] when a drift record cannot be written.
    pub async fn verify_upstream(&self, filter: Option<&str>) -> Result<Vec<Probe>, MirrorError> {
        ops::drift::verify_upstream(self.parts(), filter).await
    }

    /// Exports the selected blobs into `dir` (created if needed). Every file is re-hashed
    /// after it is written.
    ///
    /// # Errors
    /// [`MirrorError`] for storage, registry or filesystem failures.
    pub async fn export(
        &self,
        format: ExportFormat,
        selection: &Selection,
        dir: &Path,
    ) -> Result<ExportReport, MirrorError> {
        ops::export::export(self.parts(), format, selection, dir).await
    }

    /// Refetches every quarantined blob from the upstream URLs recorded for it, and restores
    /// it only if the bytes have its digest (the fill verifies against the pin). Per-blob
    /// failures are in the result.
    pub async fn repair(&self) -> Vec<Repair> {
        ops::repair::repair(self.parts()).await
    }

    /// Reads back every available blob (sha256 and every chunk digest), parses every record,
    /// and lists leftovers. With `fix`, removes temporary uploads older than an hour, objects
    /// of evicted blobs, and orphans. `progress(done, total)` is called as blobs are checked.
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the backend cannot be listed.
    pub async fn scrub(
        &self,
        fix: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<ScrubReport, MirrorError> {
        ops::scrub::scrub(self.parts(), fix, progress).await
    }
}

impl PullThrough for Mirror {
    fn pull<'a>(
        &'a self,
        host_and_path: &'a str,
        requested_by: &'static str,
    ) -> BoxFuture<'a, Result<BlobResponse, MirrorError>> {
        Box::pin(lookup::get_url(
            self.parts(),
            host_and_path,
            None,
            requested_by,
            true,
        ))
    }
}

#[cfg(test)]
mod tests;
