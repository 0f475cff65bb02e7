//! Audit records: one append-only record per publish, yank, unyank or deprecation, in the
//! records role (stream `audit`), never rewritten.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage::{Role, Storage, StorageError, StorageKey};

/// The records stream audit records live in.
pub const STREAM: &str = "audit";

/// One action on the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// `publish`, `yank`, `unyank` or `deprecate`.
    pub action: String,
    /// The module.
    pub module: String,
    /// The version, for version actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `created`, `unchanged` (an idempotent retry) or `edited`.
    pub outcome: String,
    /// The token's name.
    pub actor: String,
    /// The client's address.
    pub address: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The source archive's hex sha256, for a publish of an archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    /// Files written and their hex sha256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// The registry revision written (a git commit, or `directory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// A reason (yank, deprecation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Appends `record` under a new key that starts with its time.
///
/// # Errors
/// [`StorageError`] when the backend refuses the write.
pub async fn append(storage: &Storage, record: &AuditRecord) -> Result<String, StorageError> {
    let mut nonce = [0u8; 8];
    // A failure of the OS generator leaves zeros: the time and pid still make the key unique
    // within this process's nanosecond clock.
    let _ = getrandom::fill(&mut nonce);
    let id = format!(
        "{}-{:08x}-{}.json",
        record.at.format("%Y%m%dT%H%M%S%.9fZ"),
        std::process::id(),
        hex::encode(nonce)
    );
    let key = StorageKey::Record { stream: STREAM, id };
    let bytes = serde_json::to_vec(record).unwrap_or_default();
    storage.put(&key, Bytes::from(bytes)).await?;
    Ok(key.path().to_string())
}

/// Every audit record, oldest first (unreadable ones are skipped and counted).
///
/// # Errors
/// [`StorageError`] when listing or reading fails.
pub async fn read_all(storage: &Storage) -> Result<(Vec<AuditRecord>, usize), StorageError> {
    let mut out = Vec::new();
    let mut bad = 0;
    for name in storage.list(Role::Records, STREAM).await? {
        let key = StorageKey::Record {
            stream: STREAM,
            id: name.rsplit('/').next().unwrap_or(&name).to_owned(),
        };
        match storage.get(&key).await? {
            Some(b) => match serde_json::from_slice(&b) {
                Ok(r) => out.push(r),
                Err(_) => bad += 1,
            },
            None => bad += 1,
        }
    }
    out.sort_by_key(|r: &AuditRecord| r.at);
    Ok((out, bad))
}
