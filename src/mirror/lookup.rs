//! The read flows the facade delegates to: a blob by its upstream URL (the pinned blob, else
//! a pull-through when the policy allows it) and a blob by digest.
//!
//! The sequence of a miss, in order: the pin for either scheme; a reload of the records (another
//! replica may have pinned it) and the pin again; the policy's upstream prefix; the expected
//! integrity (the pin, else the registry's or a candidate's); the ingest gate; a fail-fast check
//! of the backend; the cap on fills in flight; then joining or starting the one fill of the URL.

use std::time::Duration;

use url::Url;

use super::error::MirrorError;
use super::parts::Parts;
use super::pull::FillError;
use super::response::{BlobResponse, ByteRange};
use super::state::MirrorState;
use crate::registry::Integrity;

/// How long a response for a URL with a known integrity waits for the fill to be verified
/// before it starts streaming anyway (Bazel's read timeout is 20 s).
const KNOWN_INTEGRITY_WAIT: Duration = Duration::from_secs(10);

/// The integrity a pinned hex sha256 stands for.
pub(super) fn pinned_integrity(sha: &str, url: &Url) -> Result<Integrity, MirrorError> {
    Ok(Integrity::of_digest(
        crate::registry::Algorithm::Sha256,
        hex::decode(sha)
            .map_err(|_| MirrorError::Storage(format!("corrupt pin record for {url}")))?,
    ))
}

/// Serves the archive whose upstream URL is `SCHEME://{host_and_path}`: the pinned blob
/// when there is one, otherwise a pull-through when the policy allows it.
///
/// # Errors
/// [`MirrorError`] for misses that may not be fetched, upstream failures and the like.
pub(super) async fn get_url(
    p: Parts<'_>,
    host_and_path: &str,
    range: Option<ByteRange>,
    requested_by: &str,
    fetch: bool,
) -> Result<BlobResponse, MirrorError> {
    let policy = p.policy;
    let candidates = ["https", "http"].map(|s| format!("{s}://{host_and_path}"));
    // A pin for either scheme is served, whatever the policy says now.
    let find_pin = |state: &MirrorState| {
        candidates
            .iter()
            .filter_map(|u| Url::parse(u).ok())
            .find_map(|u| state.pin(u.as_str()).map(|p| p.sha256.to_hex()))
    };
    let mut pinned = find_pin(&p.ledger.read());
    if pinned.is_none() {
        // Another replica may have pinned it: look at the records before any upstream fetch.
        p.ledger.reload().await?;
        pinned = find_pin(&p.ledger.read());
    }
    if let Some(sha) = &pinned
        && let Some(blob) = p.ledger.readable(sha)
    {
        match p.serve.serve_blob(blob, range).await {
            Ok(r) => return Ok(r),
            // The object is gone or damaged (now quarantined): fetch it again below, and
            // accept only the pinned bytes.
            Err(MirrorError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if !fetch {
        return Err(MirrorError::NotFound(
            "not in the mirror (HEAD does not fetch from the upstream; GET does)".to_owned(),
        ));
    }
    let Some((url, allowed)) = policy.upstream_for(host_and_path) else {
        return Err(MirrorError::NotFound(format!(
            "not in the mirror, and no upstream prefix of the mirror policy allows https://{host_and_path} or http://{host_and_path}"
        )));
    };
    // What the bytes must hash to: the first-seen pin, else a registry or candidate value.
    let expected = match &pinned {
        Some(sha) => Some(pinned_integrity(sha, &url)?),
        None => p.known.integrity(url.as_str()).await?.map(|(i, _)| i),
    };
    if let Some(reason) = p.ledger.ingest_refused() {
        return Err(MirrorError::Storage(format!(
            "pull-through is refused: {reason} (reads of stored blobs still work; set storage.allow_no_go = true to override)"
        )));
    }
    // A fill writes to the store: fail with a 503 before any byte is promised when the
    // backend is not answering, rather than cut a transfer off at its end.
    p.blobs
        .storage()
        .check(Duration::from_secs(2))
        .await
        .map_err(|e| MirrorError::Storage(format!("not fetching {url}: {e}")))?;
    if p.pulls.is_full(url.as_str()) {
        return Err(MirrorError::Overloaded(format!(
            "{} upstream fetches are already running; retry shortly",
            super::pull::Pulls::max_concurrent()
        )));
    }
    let stored = || {
        let pin = find_pin(&p.ledger.read());
        pin.is_some_and(|sha| p.ledger.available(&sha).is_some())
    };
    let Some(fill) = p.pulls.join_or_start(
        url.clone(),
        allowed,
        expected.clone(),
        requested_by.to_owned(),
        &stored,
    ) else {
        // Stored by a fill that ended meanwhile: serve the pinned blob.
        return Box::pin(get_url(p, host_and_path, range, requested_by, fetch)).await;
    };
    if expected.is_some() || fill.is_settling() {
        // With a known digest, answer 502 rather than stream bytes that will be refused,
        // when the verdict comes in time. A first fill that is settling its pin has all its
        // bytes: wait for the verdict too rather than stream a transfer it may withdraw.
        let _ = tokio::time::timeout(KNOWN_INTEGRITY_WAIT, fill.finished()).await;
    }
    match fill.wait_for_head().await {
        Err(FillError::Superseded { .. }) => {
            // Another replica's pin won, and the fill reloaded it: serve the winner's bytes.
            // The retry finds that pin, so it never comes back here.
            Box::pin(get_url(p, host_and_path, range, requested_by, fetch)).await
        }
        Ok(size) => {
            if let Some(Ok(record)) = fill.outcome() {
                // Already stored: serve it like a hit (ranges included).
                if let Some(blob) = p.ledger.readable(&record.sha256) {
                    return p.serve.serve_blob(blob, range).await;
                }
            }
            Ok(BlobResponse {
                sha256: None,
                size,
                range: None,
                body: fill.stream(),
            })
        }
        Err(e) => Err(e.into_mirror_error(&url)),
    }
}

/// Serves a blob by digest (`sha256`, `sha384` or `sha512`, lowercase hex).
///
/// # Errors
/// [`MirrorError::NotFound`] when no available blob has that digest.
pub(super) async fn get_digest(
    p: Parts<'_>,
    algorithm: &str,
    hex_digest: &str,
    range: Option<ByteRange>,
) -> Result<BlobResponse, MirrorError> {
    let algo = crate::registry::Algorithm::from_name(algorithm).ok_or_else(|| {
        MirrorError::BadRequest(format!(
            "unknown digest algorithm `{algorithm}`; use sha256, sha384 or sha512"
        ))
    })?;
    if hex_digest.len() != algo.digest_len() * 2
        || !hex_digest.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(MirrorError::BadRequest(format!(
            "`{hex_digest}` is not a {algorithm} digest ({} hex characters)",
            algo.digest_len() * 2
        )));
    }
    let lookup = || {
        let sha = p.ledger.read().resolve_alias(algorithm, hex_digest);
        sha.and_then(|s| p.ledger.readable(&s))
    };
    let mut found = lookup();
    if found.is_none() {
        // Before a 404: another replica may have stored it.
        p.ledger.reload().await?;
        found = lookup();
    }
    let blob = found.ok_or_else(|| {
        MirrorError::NotFound(format!("no blob {algorithm}:{hex_digest} in the mirror"))
    })?;
    p.serve.serve_blob(blob, range).await
}

/// The available blob whose digest is `integrity` (its sha256, or a sha384 or sha512 its
/// records carry): its hex sha256 and size. Reads memory only.
pub(super) fn stored(p: Parts<'_>, integrity: &Integrity) -> Option<(String, u64)> {
    let state = p.ledger.read();
    let sha = match integrity.algorithm() {
        crate::registry::Algorithm::Sha256 => integrity.hex(),
        _ => state.alias(integrity)?,
    };
    let size = state.blob(&sha).filter(|b| b.is_available())?.size();
    Some((sha, size))
}
