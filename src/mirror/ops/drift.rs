//! Re-probing pinned URLs for drift: what the upstream serves now, recorded as events.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use serde::Serialize;
use sha2::Digest as _;
use url::Url;

use crate::mirror::error::MirrorError;
use crate::mirror::parts::Parts;
use crate::mirror::record::{EventKind, EventRecord, Record};

/// Drift found by re-probing a pinned URL.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// The URL.
    pub url: String,
    /// The pinned digest.
    pub pinned: String,
    /// What the upstream serves now (hex sha256), or the error.
    pub upstream: Result<String, String>,
}

/// Re-probes every pinned URL (or those starting with `filter`): fetches the upstream,
/// hashes it, and records drift as an event. What is served does not change.
///
/// # Errors
/// [`MirrorError`] when a drift record cannot be written.
pub(in crate::mirror) async fn verify_upstream(
    p: Parts<'_>,
    filter: Option<&str>,
) -> Result<Vec<Probe>, MirrorError> {
    let pins: BTreeMap<String, String> = p
        .ledger
        .read()
        .pins
        .iter()
        .filter(|(u, _)| filter.is_none_or(|f| u.starts_with(f)))
        .map(|(u, p)| (u.to_string(), p.sha256.to_hex()))
        .collect();
    let mut out = Vec::new();
    for (url, pinned) in pins {
        let upstream = hash_upstream(p, &url).await;
        if let Ok(actual) = &upstream
            && *actual != pinned
        {
            let event = Record::Event(EventRecord {
                event: EventKind::Drift,
                sha256: pinned.clone(),
                url: Some(url.clone()),
                at: p.clock.now(),
                detail: format!("upstream now serves sha256 {actual}"),
            });
            p.ledger.record(&event).await?;
        }
        out.push(Probe {
            url,
            pinned,
            upstream,
        });
    }
    Ok(out)
}

async fn hash_upstream(p: Parts<'_>, url: &str) -> Result<String, String> {
    let url = Url::parse(url).map_err(|e| e.to_string())?;
    let policy = p.policy;
    let allow = |u: &Url| policy.allows(u);
    let mut resp = p
        .pulls
        .upstream()
        .fetch(&url, &allow)
        .await
        .map_err(|e| e.to_string())?;
    let mut h = sha2::Sha256::new();
    while let Some(chunk) = resp.body.next().await {
        h.update(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(hex::encode(h.finalize()))
}
