//! `registry sync --lockfile`: pins every upstream registry file a lockfile names, ahead of
//! need, and compares the pinned bytes with the hash Bazel recorded. After a sync the server
//! answers every one of those files while the upstream is down.

use std::sync::Arc;

use bzlmod::Sha256Digest;
use bzlmod::lockfile::{RecordedHash, RegistryFileHash};
use futures::StreamExt as _;

use super::{UpstreamReadError, Upstreams};
use crate::registry::path::RegistryPath;

/// Files synced at once (each is one small upstream request at most).
const PARALLEL: usize = 8;

/// What became of one lockfile entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Pinned, and the pinned bytes have the recorded hash; `fetched` when this sync asked the
    /// upstream (it was not pinned before).
    Matches {
        /// Whether the upstream was asked.
        fetched: bool,
    },
    /// Pinned, but the pinned bytes are not the ones the lockfile recorded: Bazel would fail
    /// with a hash mismatch (the upstream edited the file, or the lockfile was tampered with).
    Mismatch {
        /// The sha256 the lockfile recorded.
        recorded: String,
        /// The sha256 of the pinned bytes.
        pinned: String,
    },
    /// The file could not be had (the upstream failed, or answered 404 for a hashed file).
    Failed(String),
    /// Recorded as `"not found"`: nothing to pin.
    RecordedNotFound,
    /// A module the internal registry holds: served from it, never read upstream.
    Internal,
    /// Not under a configured upstream registry, or not a registry path there.
    NotUpstream,
}

impl SyncOutcome {
    /// Whether this outcome fails the sync (exit 1).
    #[must_use]
    pub fn is_problem(&self) -> bool {
        matches!(self, Self::Mismatch { .. } | Self::Failed(_))
    }
}

impl Upstreams {
    /// The upstream whose base URL `url` starts with (scheme included), and the path inside it.
    #[must_use]
    pub fn locate<'a>(&self, url: &'a str) -> Option<(usize, &'a str)> {
        self.bases
            .iter()
            .enumerate()
            .find_map(|(i, base)| url.strip_prefix(base.as_str()).map(|rel| (i, rel)))
    }

    /// Syncs `entries`; `internal` says whether the internal registry holds a module name.
    /// Outcomes come in the entries' order.
    pub async fn sync(
        self: &Arc<Self>,
        entries: &[RegistryFileHash],
        internal: &(dyn Fn(&str) -> bool + Sync),
    ) -> Vec<SyncOutcome> {
        futures::stream::iter(entries)
            .map(|entry| self.sync_one(entry, internal))
            .buffered(PARALLEL)
            .collect()
            .await
    }

    async fn sync_one(
        self: &Arc<Self>,
        entry: &RegistryFileHash,
        internal: &(dyn Fn(&str) -> bool + Sync),
    ) -> SyncOutcome {
        let Some((index, rel)) = self.locate(&entry.url) else {
            return SyncOutcome::NotUpstream;
        };
        let Ok(path) = RegistryPath::parse(&format!("/{rel}")) else {
            return SyncOutcome::NotUpstream;
        };
        if path.module().is_some_and(|m| internal(m.as_str())) {
            return SyncOutcome::Internal;
        }
        let RecordedHash::Sha256(recorded) = &entry.hash else {
            return SyncOutcome::RecordedNotFound;
        };
        let fetched = self.pinned(&path.tree_path(), Some(index)).is_none();
        match self.get_from(index, &path).await {
            Ok(file) => {
                let pinned = file.sha256_hex.clone();
                if Sha256Digest::parse_hex(&pinned).is_ok_and(|p| p == *recorded) {
                    SyncOutcome::Matches { fetched }
                } else {
                    SyncOutcome::Mismatch {
                        recorded: recorded.to_hex(),
                        pinned,
                    }
                }
            }
            Err(UpstreamReadError::NotFound) => SyncOutcome::Failed(
                "the upstream has no such file (404), but the lockfile recorded its hash"
                    .to_owned(),
            ),
            Err(UpstreamReadError::Unavailable(e)) => SyncOutcome::Failed(e),
        }
    }
}
