//! The read paths of [`Upstreams`]: pinned (immutable) files and revalidated (mutable) ones,
//! over all upstreams in order or, through the transparent door, over one.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::pins::UpstreamRecord;
use super::{MAX_NEGATIVE, UpstreamReadError, Upstreams, sha256_hex};
use crate::registry::path::FileKind;
use crate::registry::service::RegistryFile;
use crate::upstream::UpstreamError;

impl Upstreams {
    pub(super) fn pinned(&self, rel: &str, only: Option<usize>) -> Option<(usize, String, String)> {
        let state = self.state();
        self.asked(only).find_map(|(i, b)| {
            let url = format!("{b}{rel}");
            state.pins.get(&url).map(|sha| (i, url, sha.clone()))
        })
    }

    fn all_negative(&self, rel: &str, only: Option<usize>) -> bool {
        let state = self.state();
        self.asked(only).all(|(_, b)| {
            state
                .negative
                .get(&format!("{b}{rel}"))
                .is_some_and(|t| t.elapsed() < self.settings.negative_ttl)
        })
    }

    pub(super) async fn get_pinned(
        self: &Arc<Self>,
        rel: &str,
        kind: FileKind,
        only: Option<usize>,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        let mut pinned = self.pinned(rel, only);
        if pinned.is_none() && !self.all_negative(rel, only) {
            // Another replica may have pinned it.
            self.reload().await;
            pinned = self.pinned(rel, only);
        }
        if let Some((i, url, sha)) = pinned {
            self.state().status(&self.bases[i]).hits += 1;
            let file = self.serve_blob(i, &url, &sha, kind).await?;
            self.maybe_check(i, url, sha);
            return Ok(file);
        }
        for (i, base) in self.asked(only) {
            let url = format!("{base}{rel}");
            if self.is_negative(&url) {
                continue;
            }
            match self.fetch_bytes(i, &url).await {
                Ok(bytes) => return self.pin_new(i, rel, bytes, kind).await,
                Err(UpstreamError::NotFound { .. }) => {
                    self.note_not_found(url);
                }
                Err(e) => {
                    return Err(UpstreamReadError::Unavailable(format!(
                        "upstream registry {base} failed for {rel}, which was never pinned: {e}"
                    )));
                }
            }
        }
        Err(UpstreamReadError::NotFound)
    }

    /// Remembers an upstream's 404 for `url`; expired answers are dropped when many are held
    /// (the names asked for are the clients' choice).
    fn note_not_found(&self, url: String) {
        let mut state = self.state();
        if state.negative.len() >= MAX_NEGATIVE {
            let ttl = self.settings.negative_ttl;
            state.negative.retain(|_, t| t.elapsed() < ttl);
            if state.negative.len() >= MAX_NEGATIVE {
                state.negative.clear();
            }
        }
        state.negative.insert(url, Instant::now());
    }

    fn is_negative(&self, url: &str) -> bool {
        self.state()
            .negative
            .get(url)
            .is_some_and(|t| t.elapsed() < self.settings.negative_ttl)
    }

    pub(super) async fn get_mutable(
        self: &Arc<Self>,
        rel: &str,
        kind: FileKind,
        only: Option<usize>,
    ) -> Result<Arc<RegistryFile>, UpstreamReadError> {
        let known_anywhere = {
            let state = self.state();
            self.asked(only)
                .any(|(_, b)| state.metadata.contains_key(&format!("{b}{rel}")))
        };
        if !known_anywhere && !self.all_negative(rel, only) {
            self.reload().await;
        }
        for (i, base) in self.asked(only) {
            let url = format!("{base}{rel}");
            let known = self.state().metadata.get(&url).cloned();
            if let Some(seen) = &known
                && seen
                    .fetched
                    .is_some_and(|f| f.elapsed() < self.settings.ttl)
            {
                self.state().status(base).hits += 1;
                return self.serve_blob(i, &url, &seen.sha256, kind).await;
            }
            if self.is_negative(&url) {
                continue;
            }
            match self.fetch_bytes(i, &url).await {
                Ok(bytes) => {
                    let sha = sha256_hex(&bytes);
                    if known.as_ref().is_none_or(|k| k.sha256 != sha) {
                        self.stash_put(&bytes, &url).await?;
                        let record = UpstreamRecord::Metadata {
                            upstream: base.clone(),
                            path: rel.to_owned(),
                            sha256: sha.clone(),
                            size: bytes.len() as u64,
                            at: Utc::now(),
                        };
                        self.write_record(&record).await?;
                        self.state().apply(record);
                    }
                    if let Some(m) = self.state().metadata.get_mut(&url) {
                        m.fetched = Some(Instant::now());
                    }
                    self.memory.insert(sha.clone(), bytes.clone());
                    return Ok(Arc::new(RegistryFile {
                        bytes,
                        sha256_hex: sha,
                        kind,
                    }));
                }
                Err(UpstreamError::NotFound { .. }) => {
                    self.note_not_found(url);
                }
                Err(e) => match known {
                    Some(seen) => {
                        let age = Utc::now() - seen.at;
                        tracing::warn!(
                            upstream = %base,
                            path = %rel,
                            age_seconds = age.num_seconds(),
                            error = %e,
                            "upstream registry unreachable: serving metadata.json as last seen"
                        );
                        return self.serve_blob(i, &url, &seen.sha256, kind).await;
                    }
                    None => {
                        return Err(UpstreamReadError::Unavailable(format!(
                            "upstream registry {base} failed for {rel}, never seen before: {e}"
                        )));
                    }
                },
            }
        }
        Err(UpstreamReadError::NotFound)
    }
}
