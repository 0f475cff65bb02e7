//! The upstream read-through's records: one append-only JSON object per fact in the `records`
//! role (stream `upstream`), keyed by the time of the write, so a replica on the same store
//! folds the same pins. A pin binds `upstream URL + path -> sha256`; the bytes live in the
//! `cas` role under that digest.

use std::collections::HashSet;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::storage::{Role, Storage, StorageError, StorageKey};

/// The record stream.
const STREAM: &str = "upstream";

/// How far back an incremental listing reaches before the newest record seen (a replica's
/// write may land a little after a later-keyed one).
const RELIST_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// One fact about an upstream registry file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum UpstreamRecord {
    /// An immutable file pinned on first sight: first record wins.
    Pin {
        /// The upstream registry's base URL (ending in `/`).
        upstream: String,
        /// The file's path below it.
        path: String,
        /// Hex sha256 of the pinned bytes.
        sha256: String,
        /// Their size.
        size: u64,
        /// When.
        at: DateTime<Utc>,
    },
    /// The upstream served other bytes for a pinned file; the pin still holds.
    Drift {
        /// The upstream.
        upstream: String,
        /// The path.
        path: String,
        /// What is pinned (and served).
        pinned: String,
        /// What the upstream served (stored too).
        seen: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A variant of a mutable file (`metadata.json`) as last seen.
    Metadata {
        /// The upstream.
        upstream: String,
        /// The path.
        path: String,
        /// Hex sha256 of the variant.
        sha256: String,
        /// Its size.
        size: u64,
        /// When it was seen.
        at: DateTime<Utc>,
    },
}

impl UpstreamRecord {
    /// The time of the fact.
    pub(super) fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Pin { at, .. } | Self::Drift { at, .. } | Self::Metadata { at, .. } => *at,
        }
    }
}

/// Writes and reads the records.
#[derive(Debug)]
pub(super) struct PinLog {
    storage: Storage,
    salt: u64,
    counter: AtomicU64,
    /// Keys applied so far, and the newest key time seen.
    seen: std::sync::Mutex<(HashSet<String>, Option<DateTime<Utc>>)>,
    /// One reload at a time.
    reload: tokio::sync::Mutex<()>,
}

fn key_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S%.9fZ").to_string()
}

/// The time a record key starts with.
fn time_of_key(key: &str) -> Option<DateTime<Utc>> {
    let id = key.rsplit('/').next()?;
    let t = id.split('-').next()?;
    chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%S%.9fZ")
        .ok()
        .map(|n| n.and_utc())
}

impl PinLog {
    pub(super) fn new(storage: Storage) -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Self {
            storage,
            salt: h.finish(),
            counter: AtomicU64::new(0),
            seen: std::sync::Mutex::new((HashSet::new(), None)),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    /// Appends a record under a new unique key that starts with the time of the write.
    pub(super) async fn append(&self, record: &UpstreamRecord) -> Result<(), StorageError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{:016x}-{n:010}.json", key_time(Utc::now()), self.salt);
        let key = StorageKey::Record { stream: STREAM, id };
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        self.storage.put(&key, Bytes::from(bytes)).await?;
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .insert(key.path().to_string());
        Ok(())
    }

    /// The records not applied yet (all of them on the first call), oldest first.
    pub(super) async fn fetch_new(&self) -> Result<Vec<UpstreamRecord>, StorageError> {
        let _one = self.reload.lock().await;
        let newest = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1;
        let listed = match newest {
            Some(t) => {
                let offset = format!("{STREAM}/{}", key_time(t - RELIST_WINDOW));
                self.storage
                    .list_after(Role::Records, STREAM, &offset)
                    .await?
            }
            None => self.storage.list(Role::Records, STREAM).await?,
        };
        let keys: Vec<String> = {
            let seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            listed.into_iter().filter(|k| !seen.0.contains(k)).collect()
        };
        let objects = keys
            .iter()
            .map(|k| StorageKey::Record {
                stream: STREAM,
                id: k.rsplit('/').next().unwrap_or_default().to_owned(),
            })
            .collect();
        let mut got = self.storage.get_many(objects);
        let mut out: Vec<(String, UpstreamRecord)> = Vec::new();
        while let Some((i, read)) = got.next().await {
            let Some(bytes) = read? else { continue };
            match serde_json::from_slice::<UpstreamRecord>(&bytes) {
                Ok(r) => out.push((keys[i].clone(), r)),
                Err(e) => {
                    tracing::warn!(record = %keys[i], error = %e, "unreadable upstream record skipped");
                }
            }
        }
        out.sort_by(|a, b| (a.1.at(), &a.0).cmp(&(b.1.at(), &b.0)));
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in &keys {
            seen.0.insert(k.clone());
            if let Some(t) = time_of_key(k) {
                seen.1 = Some(seen.1.map_or(t, |n| n.max(t)));
            }
        }
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_times_round_trip() {
        let t = Utc::now();
        let key = format!("upstream/{}-00ff-0000000001.json", key_time(t));
        assert_eq!(time_of_key(&key), Some(t));
    }

    #[test]
    fn records_are_tagged_json() {
        let r = UpstreamRecord::Pin {
            upstream: "https://bcr.bazel.build/".to_owned(),
            path: "modules/zlib/1.3.1/MODULE.bazel".to_owned(),
            sha256: "ab".repeat(32),
            size: 3,
            at: Utc::now(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.starts_with("{\"kind\":\"pin\""), "{text}");
        assert_eq!(serde_json::from_str::<UpstreamRecord>(&text).unwrap(), r);
    }
}
