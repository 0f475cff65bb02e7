//! A blob's provenance and state, as the API shows it.

use serde::Serialize;

use crate::mirror::error::MirrorError;
use crate::mirror::parts::Parts;
use crate::mirror::record::{BlobRecord, EventRecord};

/// A blob's provenance and state, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct BlobInfo {
    /// Hex sha256.
    pub sha256: String,
    /// The latest provenance record.
    pub record: BlobRecord,
    /// Every URL it was served or pinned for.
    pub urls: Vec<String>,
    /// `pinned` (referenced by a registry entry or candidate) or `cached`.
    pub retention: &'static str,
    /// Registry entries and candidates that reference it.
    pub referenced_by: Vec<String>,
    /// Whether it failed verification.
    pub quarantined: bool,
    /// Whether retention removed it.
    pub evicted: bool,
    /// Last recorded read.
    pub last_access: chrono::DateTime<chrono::Utc>,
    /// Drift events of URLs pinned to it.
    pub drift: Vec<EventRecord>,
    /// The canonical ids clients named its download by (`bazel.canonical_id` of a
    /// `FetchBlob`); exports mark each in a repository cache.
    pub canonical_ids: Vec<String>,
}

/// Provenance and state of a blob, for the API.
///
/// # Errors
/// [`MirrorError::NotFound`] for unknown blobs.
pub(in crate::mirror) async fn provenance(
    p: Parts<'_>,
    sha256: &str,
) -> Result<BlobInfo, MirrorError> {
    let sha = sha256.to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(MirrorError::BadRequest(format!(
            "`{sha256}` is not a sha256 digest (64 hex characters)"
        )));
    }
    let refs = p.known.references(p.ledger).await?;
    let state = p.ledger.read();
    let blob = state
        .blob(&sha)
        .ok_or_else(|| MirrorError::NotFound(format!("no blob sha256:{sha} in the mirror")))?;
    let referenced_by = refs.get(&sha).cloned().unwrap_or_default();
    Ok(BlobInfo {
        sha256: sha.clone(),
        record: blob.record(),
        urls: blob.urls().map(str::to_owned).collect(),
        retention: if referenced_by.is_empty() {
            "cached"
        } else {
            "pinned"
        },
        referenced_by,
        quarantined: blob.quarantined,
        evicted: blob.evicted,
        last_access: blob.last_access,
        drift: state
            .drift
            .iter()
            .filter(|d| d.sha256 == sha)
            .cloned()
            .collect(),
        canonical_ids: state
            .canonical_ids(&sha)
            .iter()
            .map(|id| id.to_string())
            .collect(),
    })
}
