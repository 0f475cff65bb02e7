//! The durable-authority gate, and materializing the candidates.

use futures::StreamExt as _;
use serde::Serialize;
use url::Url;

use crate::mirror::error::MirrorError;
use crate::mirror::parts::Parts;

/// A candidate's standing in the durable-authority gate.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateStatus {
    /// The candidate's name.
    pub name: String,
    /// `candidate`, `materialized` or `durable`.
    pub state: &'static str,
    /// Whether `mirror status` fails while it is not durable.
    pub required: bool,
    /// Its expected integrity.
    pub integrity: String,
    /// The blob, when present.
    pub sha256: Option<String>,
    /// What is missing for the next state.
    pub missing: Vec<String>,
}

/// The durable-authority gate for every candidate. Reads each present blob back from the
/// backend and re-hashes it.
///
/// # Errors
/// [`MirrorError`] when the registry fails.
pub(in crate::mirror) async fn candidate_status(
    p: Parts<'_>,
) -> Result<Vec<CandidateStatus>, MirrorError> {
    let mut out = Vec::new();
    for c in &p.policy.candidates {
        let hex = c.integrity.hex();
        let sha = p
            .ledger
            .read()
            .resolve_alias(c.integrity.algorithm().name(), &hex);
        let mut status = CandidateStatus {
            name: c.name.clone(),
            state: "candidate",
            required: c.required,
            integrity: c.integrity.to_string(),
            sha256: None,
            missing: Vec::new(),
        };
        let Some(blob) = sha.as_deref().and_then(|s| p.ledger.available(s)) else {
            status.missing.push("no blob with this integrity in the mirror (run `gf-registry mirror fetch --candidates`)".to_owned());
            out.push(status);
            continue;
        };
        let sha = blob.sha256().to_hex();
        status.sha256 = Some(sha.clone());
        match p.serve.check_blob(&sha).await.map_err(MirrorError::Storage) {
            Ok(()) => status.state = "materialized",
            Err(e) => {
                status.missing.push(format!("restore check failed: {e}"));
                out.push(status);
                continue;
            }
        }
        // Pinned: the candidate itself references the blob, so retention keeps it.
        if blob.chunk_count() == 0 && blob.size() > 0 {
            status
                .missing
                .push("provenance record lacks chunk digests".to_owned());
        }
        let uncovered: Vec<String> = c
            .urls
            .iter()
            .filter(|u| p.policy.allows(u).is_none())
            .map(Url::to_string)
            .collect();
        if !uncovered.is_empty() {
            status.missing.push(format!(
                "URLs not covered by the served downloader config: {}",
                uncovered.join(", ")
            ));
        }
        if status.missing.is_empty() {
            status.state = "durable";
        }
        out.push(status);
    }
    Ok(out)
}

/// Materializes every candidate that is not yet present, trying its URLs in order.
/// `progress` is told `(name, bytes so far)` as bytes arrive.
///
/// # Errors
/// Per-candidate failures are in the result; only registry failures are errors.
pub(in crate::mirror) async fn fetch_candidates(
    p: Parts<'_>,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<Vec<(String, Result<String, String>)>, MirrorError> {
    let mut out = Vec::new();
    for c in p.policy.candidates.clone() {
        let hex = c.integrity.hex();
        if let Some(sha) = p
            .ledger
            .read()
            .resolve_alias(c.integrity.algorithm().name(), &hex)
            && p.ledger.available(&sha).is_some()
        {
            out.push((c.name.clone(), Ok(sha)));
            continue;
        }
        let mut last_err = String::from("no URL");
        let mut done = None;
        for u in &c.urls {
            let host_and_path = u.as_str().split_once("://").map_or(u.as_str(), |(_, r)| r);
            match p.pull.pull(host_and_path, "gf-registry mirror fetch").await {
                Ok(resp) => {
                    let mut body = resp.body;
                    let mut n = 0u64;
                    let mut failed = None;
                    while let Some(chunk) = body.next().await {
                        match chunk {
                            Ok(b) => {
                                n += b.len() as u64;
                                progress(&c.name, n);
                            }
                            Err(e) => {
                                failed = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    match failed {
                        Some(e) => last_err = format!("{u}: {e}"),
                        None => {
                            done = p
                                .ledger
                                .read()
                                .resolve_alias(c.integrity.algorithm().name(), &hex);
                            break;
                        }
                    }
                }
                Err(e) => last_err = format!("{u}: {e}"),
            }
        }
        out.push((c.name.clone(), done.ok_or(last_err)));
    }
    Ok(out)
}
