//! `mirror repair`: restoring quarantined blobs from their upstreams.

use futures::StreamExt as _;
use serde::Serialize;

use crate::mirror::parts::Parts;

/// What `mirror repair` did for one quarantined blob.
#[derive(Debug, Clone, Serialize)]
pub struct Repair {
    /// The blob.
    pub sha256: String,
    /// The URL it was restored from, or why it could not be.
    pub outcome: Result<String, String>,
}

/// Refetches every quarantined blob from the upstream URLs recorded for it, and restores
/// it only if the bytes have its digest (the fill verifies against the pin). Per-blob
/// failures are in the result.
pub(in crate::mirror) async fn repair(p: Parts<'_>) -> Vec<Repair> {
    let quarantined: Vec<(String, Vec<String>)> = p
        .ledger
        .read()
        .blobs
        .iter()
        .filter(|(_, b)| b.quarantined && !b.evicted)
        .map(|(s, b)| (s.to_hex(), b.urls().map(str::to_owned).collect()))
        .collect();
    let mut out = Vec::new();
    for (sha, urls) in quarantined {
        let mut outcome = Err("no upstream URL is recorded for it".to_owned());
        for url in urls {
            let host_and_path = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
            let result = match p
                .pull
                .pull(host_and_path, "gf-registry mirror repair")
                .await
            {
                Ok(resp) => drain(resp.body).await,
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) if p.ledger.available(&sha).is_some() => {
                    outcome = Ok(url);
                    break;
                }
                Ok(()) => {
                    outcome = Err(format!(
                        "{url}: fetched, but the blob is still not available"
                    ))
                }
                Err(e) => outcome = Err(format!("{url}: {e}")),
            }
        }
        out.push(Repair {
            sha256: sha,
            outcome,
        });
    }
    out
}

async fn drain(
    mut body: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
) -> Result<(), String> {
    while let Some(chunk) = body.next().await {
        chunk.map_err(|e| e.to_string())?;
    }
    Ok(())
}
