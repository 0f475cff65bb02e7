//! What the operations work on: the mirror's parts, borrowed.

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
pub(in crate::mirror) trait PullThrough: Sync {
    /// Serves `SCHEME://{host_and_path}`, fetching it when the policy allows.
    fn pull<'a>(
        &'a self,
        host_and_path: &'a str,
        requested_by: &'static str,
    ) -> BoxFuture<'a, Result<BlobResponse, MirrorError>>;
}

/// The mirror's parts, for one operation.
#[derive(Clone, Copy)]
pub(in crate::mirror) struct Parts<'a> {
    pub(in crate::mirror) ledger: &'a Ledger,
    pub(in crate::mirror) blobs: &'a BlobStore,
    pub(in crate::mirror) serve: &'a Arc<Serve>,
    pub(in crate::mirror) known: &'a Known,
    pub(in crate::mirror) pulls: &'a Pulls,
    pub(in crate::mirror) policy: &'a Policy,
    pub(in crate::mirror) clock: &'a dyn Clock,
    pub(in crate::mirror) pull: &'a dyn PullThrough,
}
