//! What the read-through knows, folded from its records and its own traffic: pins, the last
//! seen `metadata.json` variants, negative answers, and each upstream's figures.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::pins::UpstreamRecord;

/// Drift events kept per upstream for the status API.
const MAX_DRIFT_SHOWN: usize = 100;

/// A drift event, for the status API.
#[derive(Debug, Clone, Serialize)]
pub struct DriftEvent {
    /// The path below the upstream.
    pub path: String,
    /// What is pinned and served.
    pub pinned: String,
    /// What the upstream served.
    pub seen: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One upstream's figures, for `GET /api/v1/upstreams`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamStatus {
    /// The base URL.
    pub url: String,
    /// Immutable files pinned.
    pub files_pinned: usize,
    /// `metadata.json` files known.
    pub metadata_files: usize,
    /// Last successful answer (200 or 404).
    pub last_contact: Option<DateTime<Utc>>,
    /// Last failure, with its time.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Requests answered from a pin or a fresh `metadata.json`.
    pub hits: u64,
    /// Requests that asked the upstream.
    pub misses: u64,
    /// Upstream failures.
    pub errors: u64,
    /// Drift events recorded (newest last, at most 100 listed).
    pub drift_count: u64,
    /// The drift events.
    pub drift_events: Vec<DriftEvent>,
}

/// A mutable file as last seen.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) sha256: String,
    pub(super) at: DateTime<Utc>,
    /// When this process last had it from the upstream (`None`: only from the records).
    pub(super) fetched: Option<Instant>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// Full upstream URL -> pinned sha256.
    pub(super) pins: HashMap<String, String>,
    /// Full upstream URL -> last seen `metadata.json`.
    pub(super) metadata: HashMap<String, Seen>,
    /// Full upstream URL -> when its 404 was seen.
    pub(super) negative: HashMap<String, Instant>,
    /// Full upstream URL -> when its pin was last compared with the upstream.
    pub(super) checked: HashMap<String, Instant>,
    /// Checks in flight.
    pub(super) checking: HashSet<String>,
    /// Per upstream base URL.
    pub(super) status: HashMap<String, UpstreamStatus>,
}

impl State {
    pub(super) fn status(&mut self, base: &str) -> &mut UpstreamStatus {
        self.status
            .entry(base.to_owned())
            .or_insert_with(|| UpstreamStatus {
                url: base.to_owned(),
                ..UpstreamStatus::default()
            })
    }

    pub(super) fn apply(&mut self, r: UpstreamRecord) {
        match r {
            UpstreamRecord::Pin {
                upstream,
                path,
                sha256,
                ..
            } => {
                let url = format!("{upstream}{path}");
                if let std::collections::hash_map::Entry::Vacant(e) = self.pins.entry(url) {
                    e.insert(sha256);
                    self.status(&upstream).files_pinned += 1;
                }
            }
            UpstreamRecord::Drift {
                upstream,
                path,
                pinned,
                seen,
                at,
            } => {
                let s = self.status(&upstream);
                s.drift_count += 1;
                s.drift_events.push(DriftEvent {
                    path,
                    pinned,
                    seen,
                    at,
                });
                if s.drift_events.len() > MAX_DRIFT_SHOWN {
                    s.drift_events.remove(0);
                }
            }
            UpstreamRecord::Metadata {
                upstream,
                path,
                sha256,
                at,
                ..
            } => {
                let url = format!("{upstream}{path}");
                let newer = self.metadata.get(&url).is_none_or(|m| m.at <= at);
                if !self.metadata.contains_key(&url) {
                    self.status(&upstream).metadata_files += 1;
                }
                if newer {
                    self.metadata.insert(
                        url,
                        Seen {
                            sha256,
                            at,
                            fetched: None,
                        },
                    );
                }
            }
        }
    }
}
