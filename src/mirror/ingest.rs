//! Ingest on behalf of publishing: a release's archive is stored and pinned before its registry
//! entry is written, so consumers never depend on the upstream staying the same.

use std::io::Write as _;

use url::Url;

use super::error::MirrorError;
use super::lookup::pinned_integrity;
use super::parts::Parts;
use super::record::{BlobRecord, EventKind, EventRecord, PinRecord, Record};
use super::verify::{CHUNK_SIZE, Hashers};
use crate::registry::{Algorithm, Integrity};

/// How long a publish waits for the backend to answer before refusing with a 503. Longer than
/// a pull-through's fail-fast check: a publisher can wait, and a distributed store that just
/// lost a node takes a few seconds to route around it.
const PUBLISH_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Stores (or finds) the archive at `url` and returns its hex sha256. A URL pinned before
/// keeps its first-seen bytes; `expected` must match what is (or gets) stored.
///
/// # Errors
/// [`MirrorError::NotFound`] when the policy allows no such upstream; upstream failures;
/// [`MirrorError::IntegrityMismatch`] when the bytes differ from `expected`.
pub(super) async fn ingest_url(
    p: Parts<'_>,
    url: &Url,
    expected: Option<&Integrity>,
    requested_by: &str,
) -> Result<String, MirrorError> {
    let pinned = || p.ledger.pin(url.as_str());
    let mut pin = pinned();
    if pin.is_none() {
        p.ledger.reload().await?;
        pin = pinned();
    }
    if let Some(sha) = &pin
        && p.ledger.available(sha).is_some()
    {
        if let Some(e) = expected {
            check_blob_integrity(p, sha, e, url).await?;
        }
        return Ok(sha.clone());
    }
    let allowed = p.policy.allows(url).ok_or_else(|| {
        MirrorError::BadRequest(format!(
            "no upstream prefix of the mirror policy allows {url}; ask the operators to add it to mirror-policy/policy.toml, or upload the archive"
        ))
    })?;
    let expected = match (&pin, expected) {
        (Some(sha), _) => Some(pinned_integrity(sha, url)?),
        (None, e) => e.cloned(),
    };
    check_ingest_allowed(p).await?;
    let stored = || pinned().is_some_and(|sha| p.ledger.available(&sha).is_some());
    let Some(fill) = p.pulls.join_or_start(
        url.clone(),
        allowed,
        expected.clone(),
        requested_by.to_owned(),
        &stored,
    ) else {
        // Stored by a fill that ended meanwhile: take the pinned blob.
        return Box::pin(ingest_url(p, url, expected.as_ref(), requested_by)).await;
    };
    fill.finished().await;
    let sha = match fill.outcome() {
        Some(Ok(record)) => record.sha256.clone(),
        Some(Err(super::pull::FillError::Superseded { .. })) => {
            // Another replica's pin won, and the fill reloaded it: take the winner's blob.
            return Box::pin(ingest_url(p, url, expected.as_ref(), requested_by)).await;
        }
        Some(Err(e)) => return Err(e.into_mirror_error(url)),
        None => {
            return Err(MirrorError::Storage(format!(
                "the fetch of {url} ended without a result"
            )));
        }
    };
    // A fill joined in flight was started with another expectation: check ours.
    if let Some(e) = &expected {
        check_blob_integrity(p, &sha, e, url).await?;
    }
    Ok(sha)
}

/// Stores uploaded bytes as a blob and returns its hex sha256.
///
/// # Errors
/// [`MirrorError::Storage`] when the backend refuses the write or ingest is refused.
pub(super) async fn ingest_bytes(
    p: Parts<'_>,
    bytes: std::sync::Arc<Vec<u8>>,
    label: &str,
    requested_by: &str,
) -> Result<String, MirrorError> {
    check_ingest_allowed(p).await?;
    let max = p.policy.max_blob_bytes;
    if bytes.len() as u64 > max {
        return Err(MirrorError::BadRequest(format!(
            "the archive is {} bytes, over the mirror's max_blob_bytes ({max})",
            bytes.len()
        )));
    }
    let blobs = p.blobs.clone();
    let data = bytes.clone();
    let (digests, spool) = crate::tasks::spawn_blocking(move || {
        let mut h = Hashers::new(&[Algorithm::Sha384, Algorithm::Sha512]);
        h.update(&data);
        let digests = h.finish();
        let spool = blobs.spool("upload")?;
        (&**spool.file()).write_all(&data)?;
        Ok::<_, std::io::Error>((digests, spool))
    })
    .await
    .map_err(|e| MirrorError::Storage(e.to_string()))?
    .map_err(|e| MirrorError::Storage(format!("spooling the upload: {e}")))?;
    let sha = digests.sha256_hex.clone();
    if p.ledger.available(&sha).is_some() {
        return Ok(sha);
    }
    let now = p.clock.now();
    let _placing = p.ledger.placement().await;
    p.blobs
        .place(&spool, &sha, bytes.len() as u64)
        .await
        .map_err(|e| MirrorError::Storage(e.to_string()))?;
    let record = BlobRecord {
        sha256: sha.clone(),
        integrity: digests.integrity.iter().map(ToString::to_string).collect(),
        size: bytes.len() as u64,
        url: None,
        fetched_at: now,
        upstream: None,
        rule: Some(format!("upload: {label}")),
        requested_by: Some(requested_by.to_owned()),
        chunk_size: CHUNK_SIZE,
        chunks: digests.chunks,
        supplement: false,
    };
    p.ledger
        .record(&Record::Blob(record))
        .await
        .map_err(|e| MirrorError::Storage(e.to_string()))?;
    Ok(sha)
}

/// Copies a stored blob, verified chunk by chunk, into `dest`.
///
/// # Errors
/// [`MirrorError`] when the blob is missing or does not verify.
pub(super) async fn copy_blob_to(
    p: Parts<'_>,
    sha256: &str,
    dest: &std::path::Path,
) -> Result<u64, MirrorError> {
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let resp = p.serve.read_blob(sha256).await?;
    let mut body = resp.body;
    let mut f = tokio::fs::File::create(dest)
        .await
        .map_err(|e| MirrorError::Storage(format!("{}: {e}", dest.display())))?;
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| MirrorError::Storage(format!("reading blob {sha256}: {e}")))?;
        n += chunk.len() as u64;
        f.write_all(&chunk)
            .await
            .map_err(|e| MirrorError::Storage(format!("{}: {e}", dest.display())))?;
    }
    f.flush()
        .await
        .map_err(|e| MirrorError::Storage(format!("{}: {e}", dest.display())))?;
    Ok(n)
}

async fn check_ingest_allowed(p: Parts<'_>) -> Result<(), MirrorError> {
    if let Some(reason) = p.ledger.ingest_refused() {
        return Err(MirrorError::Storage(format!(
            "trusted writes are refused: {reason} (set storage.allow_no_go = true to override)"
        )));
    }
    p.blobs
        .storage()
        .check(PUBLISH_CHECK_TIMEOUT)
        .await
        .map_err(|e| MirrorError::Storage(e.to_string()))
}

/// Checks that the stored blob `sha256` has the integrity `expected`, hashing it again
/// when its records do not carry that algorithm.
async fn check_blob_integrity(
    p: Parts<'_>,
    sha256: &str,
    expected: &Integrity,
    url: &Url,
) -> Result<(), MirrorError> {
    let want = expected.to_string();
    let recorded = p
        .ledger
        .available(sha256)
        .map(|b| b.integrity())
        .unwrap_or_default();
    let same_algo = recorded
        .iter()
        .find(|i| i.starts_with(&format!("{}-", expected.algorithm().name())))
        .cloned();
    let actual = match same_algo {
        Some(a) => a,
        None => {
            // Hashed as it streams, never held whole in memory.
            use futures::StreamExt as _;
            let mut body = p.serve.read_blob(sha256).await?.body;
            let mut hashers = Hashers::new(&[expected.algorithm()]);
            while let Some(c) = body.next().await {
                hashers.update(
                    &c.map_err(|e| MirrorError::Storage(format!("reading blob {sha256}: {e}")))?,
                );
            }
            hashers
                .finish()
                .integrity
                .into_iter()
                .find(|i| i.algorithm() == expected.algorithm())
                .map(|i| i.to_string())
                .unwrap_or_default()
        }
    };
    if actual == want {
        Ok(())
    } else {
        Err(MirrorError::IntegrityMismatch {
            url: url.to_string(),
            expected: want,
            actual,
        })
    }
}

/// Binds `urls` to the stored blob `sha256` as first-seen pins, as if each had been fetched
/// and had those bytes (the Remote Asset API's `Push.PushBlob`, for CI that pre-seeds the
/// mirror). Nothing is written when any URL is already pinned to another blob; a URL pinned
/// to this one is left as it is. Returns how many pins were written.
///
/// # Errors
/// [`MirrorError::NotFound`] when the blob is not stored; [`MirrorError::PinConflict`];
/// [`MirrorError::Storage`].
pub(super) async fn bind_urls(
    p: Parts<'_>,
    urls: &[Url],
    sha256: &str,
    requested_by: &str,
) -> Result<usize, MirrorError> {
    // Other replicas' blobs and pins first: a pin written elsewhere wins over this one.
    p.ledger.reload().await?;
    if p.ledger.available(sha256).is_none() {
        return Err(MirrorError::NotFound(format!(
            "no blob {sha256} in the CAS: write it first (ByteStream/Write or BatchUpdateBlobs)"
        )));
    }
    let mut new = Vec::new();
    for url in urls {
        match p.ledger.pin(url.as_str()) {
            Some(pinned) if pinned == sha256 => {}
            Some(pinned) => {
                return Err(MirrorError::PinConflict {
                    url: url.to_string(),
                    pinned,
                });
            }
            None => new.push(url),
        }
    }
    check_ingest_allowed(p).await?;
    for url in &new {
        p.ledger
            .record(&Record::Pin(PinRecord {
                url: url.to_string(),
                sha256: sha256.to_owned(),
                at: p.clock.now(),
            }))
            .await?;
        tracing::info!(%url, sha256, requested_by, "URL bound to a pushed blob");
    }
    Ok(new.len())
}

/// Records that a client named stored blob `sha256`'s download from `url` by canonical id
/// `id` (once per blob and id), so exports write the repository cache's `id-` marker for it.
///
/// # Errors
/// [`MirrorError::Storage`] when the record cannot be written.
pub(super) async fn note_canonical_id(
    p: Parts<'_>,
    sha256: &str,
    url: &Url,
    id: &str,
) -> Result<(), MirrorError> {
    if id.is_empty()
        || p.ledger
            .read()
            .canonical_ids(sha256)
            .iter()
            .any(|k| **k == *id)
    {
        return Ok(());
    }
    p.ledger
        .record(&Record::Event(EventRecord {
            event: EventKind::CanonicalId,
            sha256: sha256.to_owned(),
            url: Some(url.to_string()),
            at: p.clock.now(),
            detail: id.to_owned(),
        }))
        .await?;
    Ok(())
}
