//! The mirror's parts, borrowed: what the flows (`lookup`, `ingest`) and the operations
//! (`ops/*`) work on.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::mirror::clock::Clock;
use crate::mirror::error::MirrorError;
use crate::mirror::known::Known;
use crate::mirror::ledger::Ledger;
use crate::mirror::policy::Policy;
use crate::mirror::pull::Pulls;
use crate::mirror::response::BlobResponse;
use crate::mirror::serve::Serve;
use crate::storage::BlobStore;

/// A pull-through by upstream URL (the facade's `get_url` for a GET), for the operations
/// that fetch (candidates, repair).
pub(super) trait PullThrough: Sync {
    /// Serves `SCHEME://{host_and_path}`, fetching it when the policy allows.
    fn pull<'a>(
        &'a self,
        host_and_path: &'a str,
        requested_by: &'static str,
    ) -> BoxFuture<'a, Result<BlobResponse, MirrorError>>;
}

/// The mirror's parts, for one operation.
#[derive(Clone, Copy)]
pub(super) struct Parts<'a> {
    pub(super) ledger: &'a Ledger,
    pub(super) blobs: &'a BlobStore,
    pub(super) serve: &'a Arc<Serve>,
    pub(super) known: &'a Known,
    pub(super) pulls: &'a Arc<Pulls>,
    pub(super) policy: &'a Policy,
    pub(super) clock: &'a dyn Clock,
    pub(super) pull: &'a dyn PullThrough,
}
