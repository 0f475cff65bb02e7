//! Fetching, pinning, drift checks and reading pinned bytes back.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt as _;
use url::Url;

use super::pins::UpstreamRecord;
use super::{MAX_FILE_BYTES, UpstreamReadError, Upstreams, sha256_hex};
use crate::registry::path::FileKind;
use crate::registry::service::RegistryFile;
use crate::upstream::{Allowed, UpstreamError};

/// How long after a failure an upstream is not asked again.
const RETRY_AFTER_ERROR: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

impl Upstreams {
    /// GETs one upstream file, whole; counts the contact or the error.
    pub(super) async fn fetch_bytes(&self, i: usize, url: &str) -> Result<Bytes, UpstreamError> {
        let base = &self.bases[i];
        {
            let mut state = self.state();
            let s = state.status(base);
            // An upstream that just failed is not asked again at once: during an outage
            // (a black hole waits out the connect timeout) a pin or a stale metadata.json is
            // answered at once, and the upstream sees one attempt per second at most.
            if let (Some(err), Some(at)) = (&s.last_error, s.last_error_at)
                && s.last_contact.is_none_or(|c| c < at)
                && Utc::now() - at < RETRY_AFTER_ERROR
            {
                return Err(UpstreamError::Transport {
                    url: url.to_owned(),
                    message: format!("{err} (failed under a second ago; not retried yet)"),
                });
            }
            s.misses += 1;
        }
        let got = match &self.clones[i] {
            Some(source) => self.read_clone(source, base, url).await,
            None => self.fetch_once(base, url).await,
        };
        let mut state = self.state();
        let s = state.status(base);
        match &got {
            Ok(_) | Err(UpstreamError::NotFound { .. }) => s.last_contact = Some(Utc::now()),
            Err(e) => {
                s.errors += 1;
                s.last_error = Some(e.to_string());
                s.last_error_at = Some(Utc::now());
            }
        }
        got
    }

    pub(super) async fn fetch_once(&self, base: &str, url: &str) -> Result<Bytes, UpstreamError> {
        let parsed = Url::parse(url).map_err(|e| UpstreamError::Transport {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        // Operator configuration: the upstream's own URLs (and redirects below it) are
        // allowed, loopback and private addresses included.
        let base_owned = base.to_owned();
        let allow = move |u: &Url| {
            u.as_str().starts_with(&base_owned).then(|| Allowed {
                rule: format!("registry.upstreams {base_owned}"),
                allow_private: true,
            })
        };
        let resp = self.fetch.fetch(&parsed, &allow).await?;
        let mut body = resp.body;
        let mut out = Vec::with_capacity(resp.content_length.unwrap_or(0).min(1 << 20) as usize);
        while let Some(piece) = body.next().await {
            let piece = piece?;
            if out.len() + piece.len() > MAX_FILE_BYTES {
                return Err(UpstreamError::Transport {
                    url: url.to_owned(),
                    message: format!("larger than {MAX_FILE_BYTES} bytes"),
                });
            }
            out.extend_from_slice(&piece);
        }
        Ok(Bytes::from(out))
    }

    pub(super) async fn stash_put(
        &self,
        bytes: &Bytes,
        url: &str,
    ) -> Result<String, UpstreamReadError> {
        self.stash
            .put(bytes.clone(), url.to_owned())
            .await
            .map_err(|e| UpstreamReadError::Unavailable(format!("storing {url}: {e}")))
    }

    pub(super) async fn write_record(
        &self,
        record: &UpstreamRecord,
    ) -> Result<(), UpstreamReadError> {
        self.log
            .append(record)
            .await
            .map_err(|e| UpstreamReadError::Unavailable(format!("recording an upstream pin: {e}")))
    }

    /// Pins bytes seen for the first time (unless a pin appeared meanwhile: then that wins).
    pub(super) async fn pin_new(
        self: &Arc<Self>,
        i: usize,
        rel: &str,
        bytes: Bytes,
        kind: FileKind,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        let base = &self.bases[i];
        let url = format!("{base}{rel}");
        let sha = sha256_hex(&bytes);
        self.stash_put(&bytes, &url).await?;
        let existing = self.state().pins.get(&url).cloned();
        if let Some(pinned) = existing {
            if pinned != sha {
                self.record_drift(i, rel, &pinned, &sha).await;
            }
            return self.serve_blob(i, &url, &pinned, kind).await;
        }
        let record = UpstreamRecord::Pin {
            upstream: base.clone(),
            path: rel.to_owned(),
            sha256: sha.clone(),
            size: bytes.len() as u64,
            at: Utc::now(),
        };
        self.write_record(&record).await?;
        {
            let mut state = self.state();
            state.apply(record);
            state.checked.insert(url, Instant::now());
        }
        self.memory.insert(sha.clone(), bytes.clone());
        Ok(Arc::new(RegistryFile {
            bytes,
            sha256_hex: sha,
            kind,
        }))
    }

    pub(super) async fn record_drift(&self, i: usize, rel: &str, pinned: &str, seen: &str) {
        let base = &self.bases[i];
        let known = self
            .state()
            .status(base)
            .drift_events
            .iter()
            .any(|d| d.path == rel && d.pinned == pinned && d.seen == seen);
        if known {
            return;
        }
        tracing::warn!(
            upstream = %base,
            path = %rel,
            pinned = %pinned,
            seen = %seen,
            "upstream registry drift: the upstream now serves other bytes for a pinned file; serving the pin"
        );
        let record = UpstreamRecord::Drift {
            upstream: base.clone(),
            path: rel.to_owned(),
            pinned: pinned.to_owned(),
            seen: seen.to_owned(),
            at: Utc::now(),
        };
        if let Err(e) = self.log.append(&record).await {
            tracing::error!(error = %e, "could not record an upstream drift event");
        }
        self.state().apply(record);
    }

    /// The pinned bytes `sha` of `url`, from memory or the stash; a blob gone from the stash
    /// is fetched again and accepted only with the pinned digest.
    pub(super) async fn serve_blob(
        &self,
        i: usize,
        url: &str,
        sha: &str,
        kind: FileKind,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        let file = |bytes: Bytes| {
            Arc::new(RegistryFile {
                bytes,
                sha256_hex: sha.to_owned(),
                kind,
            })
        };
        if let Some(bytes) = self.memory.get(sha) {
            return Ok(file(bytes));
        }
        let stored = self.stash.get(sha.to_owned()).await.map_err(|e| {
            UpstreamReadError::Unavailable(format!("reading the pin of {url}: {e}"))
        })?;
        let bytes = match stored {
            Some(b) => b,
            None => {
                let b = self.fetch_bytes(i, url).await.map_err(|e| {
                    UpstreamReadError::Unavailable(format!(
                        "the pinned blob {sha} of {url} is not available and the upstream failed: {e}"
                    ))
                })?;
                if sha256_hex(&b) != sha {
                    return Err(UpstreamReadError::Unavailable(format!(
                        "the pinned blob {sha} of {url} is not available and the upstream now serves other bytes"
                    )));
                }
                self.stash_put(&b, url).await?;
                b
            }
        };
        self.memory.insert(sha.to_owned(), bytes.clone());
        Ok(file(bytes))
    }

    /// After the TTL, compares a pin with the upstream in the background (drift detection).
    pub(super) fn maybe_check(self: &Arc<Self>, i: usize, url: String, sha: String) {
        {
            let mut state = self.state();
            let due = match state.checked.get(&url) {
                Some(t) => t.elapsed() >= self.settings.ttl,
                None => {
                    // Pinned before this process started: check one TTL from now.
                    state.checked.insert(url.clone(), Instant::now());
                    false
                }
            };
            if !due || !state.checking.insert(url.clone()) {
                return;
            }
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let rel = url
                .strip_prefix(this.bases[i].as_str())
                .unwrap_or_default()
                .to_owned();
            match this.fetch_bytes(i, &url).await {
                Ok(bytes) => {
                    let seen = sha256_hex(&bytes);
                    if seen != sha {
                        match this.stash_put(&bytes, &url).await {
                            Ok(_) => this.record_drift(i, &rel, &sha, &seen).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "could not store a drifted variant")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, url = %url, "could not re-check an upstream pin");
                }
            }
            let mut state = this.state();
            state.checking.remove(&url);
            state.checked.insert(url, Instant::now());
        });
    }
}
