//! Operator work on the mirror: retention (GC), the durable-authority gate, materializing
//! candidates, re-probing upstreams for drift, and exports for Bazel's repository cache and
//! distdir. Everything here also runs without a server, from the CLI.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::Utc;
use futures::StreamExt as _;
use serde::Serialize;
use sha2::Digest as _;
use url::Url;

use super::records::{EventKind, EventRecord, Record};
use super::service::{Mirror, MirrorError, read_state};
use crate::storage::StorageKey;

/// What a GC run did (or would do, with `dry_run`).
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Blobs evicted: hex sha256, size, and why.
    pub evicted: Vec<(String, u64, String)>,
    /// Blobs kept because a registry entry or candidate references them.
    pub pinned: usize,
    /// Blobs kept because a response is reading them.
    pub in_use: usize,
    /// Bytes of unpinned blobs before and after.
    pub cached_bytes_before: u64,
    /// After.
    pub cached_bytes_after: u64,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

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

/// Export layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `content_addressable/sha256/<hex>/file` plus `id-<hex>` canonical-id markers.
    RepositoryCache,
    /// Flat files by original basename.
    Distdir,
}

/// Which blobs to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every available blob.
    All,
    /// Blobs referenced by registry entries or candidates.
    AllPinned,
    /// Blobs of the candidates.
    Candidates,
    /// The source archive of one module version.
    Module(String, String),
}

/// What an export wrote.
#[derive(Debug, Default, Serialize)]
pub struct ExportReport {
    /// Files written (and re-hashed).
    pub written: Vec<PathBuf>,
    /// Distdir name collisions: the name and the blobs that wanted it (never overwritten).
    pub collisions: Vec<(String, Vec<String>)>,
    /// Selected digests that are not in the mirror.
    pub missing: Vec<String>,
}

impl Mirror {
    /// Applies retention: unpinned blobs not read for `cached_max_age` are evicted, then the
    /// least recently read until the unpinned bytes fit `cached_max_bytes`. Pinned blobs and
    /// blobs being read are never removed.
    ///
    /// # Errors
    /// [`MirrorError`] when the registry or storage fails.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport, MirrorError> {
        let refs = self.references().await?;
        let retention = self.policy().retention;
        let now = Utc::now();
        let max_age =
            chrono::Duration::from_std(retention.cached_max_age).unwrap_or(chrono::TimeDelta::MAX);
        let readers: Vec<String> = self
            .inner()
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        let mut cached: Vec<(chrono::DateTime<Utc>, String, u64)> = Vec::new();
        // Under the read lock rather than on a copy of the state: this runs in the server,
        // and a copy of every blob's state would stay as resident memory after it.
        for b in read_state(self.inner()).blobs.values() {
            if !b.is_available() {
                continue;
            }
            let sha = b.sha256().to_hex();
            if refs.contains_key(&sha) {
                report.pinned += 1;
            } else if readers.contains(&sha) {
                report.in_use += 1;
            } else {
                cached.push((b.last_access, sha, b.size()));
            }
        }
        report.cached_bytes_before = cached.iter().map(|c| c.2).sum();
        cached.sort();
        let mut total = report.cached_bytes_before;
        for (last, sha, size) in cached {
            let reason = if now - last > max_age {
                format!("not read since {last}")
            } else if total > retention.cached_max_bytes {
                format!(
                    "over the cached byte budget ({} bytes)",
                    retention.cached_max_bytes
                )
            } else {
                continue;
            };
            total -= size;
            report.evicted.push((sha, size, reason));
        }
        report.cached_bytes_after = total;
        if !dry_run {
            for (sha, _, reason) in &report.evicted {
                self.evict(sha, reason).await?;
            }
        }
        Ok(report)
    }

    async fn evict(&self, sha: &str, reason: &str) -> Result<(), MirrorError> {
        // Never between a fill placing a blob and recording it.
        let _placement = self.inner().placement.lock().await;
        // Re-check under the lock: read now, or pinned meanwhile.
        let in_use = self
            .inner()
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(sha);
        if in_use || self.references().await?.contains_key(sha) {
            return Ok(());
        }
        // Record first: a blob marked evicted whose object lingers is only wasted space, while
        // the reverse would be a blob the state calls available but cannot serve.
        let event = Record::Event(EventRecord {
            event: EventKind::Evict,
            sha256: sha.to_owned(),
            url: None,
            at: Utc::now(),
            detail: reason.to_owned(),
        });
        self.inner().record(&event).await?;
        self.inner()
            .storage
            .delete(&StorageKey::blob("sha256", sha))
            .await?;
        tracing::info!(blob.sha256 = %sha, reason, "evicted");
        Ok(())
    }

    /// The durable-authority gate for every candidate. Reads each present blob back from the
    /// backend and re-hashes it.
    ///
    /// # Errors
    /// [`MirrorError`] when the registry fails.
    pub async fn candidate_status(&self) -> Result<Vec<CandidateStatus>, MirrorError> {
        let mut out = Vec::new();
        for c in &self.policy().candidates {
            let hex = c.integrity.hex();
            let sha = self
                .state()
                .resolve_alias(c.integrity.algorithm().name(), &hex);
            let mut status = CandidateStatus {
                name: c.name.clone(),
                state: "candidate",
                required: c.required,
                integrity: c.integrity.to_string(),
                sha256: None,
                missing: Vec::new(),
            };
            let Some(blob) = sha.as_deref().and_then(|s| self.available(s)) else {
                status.missing.push("no blob with this integrity in the mirror (run `gf-registry mirror fetch --candidates`)".to_owned());
                out.push(status);
                continue;
            };
            let sha = blob.sha256().to_hex();
            status.sha256 = Some(sha.clone());
            match self.restore_check(&sha).await {
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
                .filter(|u| self.policy().allows(u).is_none())
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

    /// Reads a blob back from the backend and checks its sha256 and every chunk.
    async fn restore_check(&self, sha256: &str) -> Result<(), MirrorError> {
        self.check_blob(sha256).await.map_err(MirrorError::Storage)
    }

    /// Materializes every candidate that is not yet present, trying its URLs in order.
    /// `progress` is told `(name, bytes so far)` as bytes arrive.
    ///
    /// # Errors
    /// Per-candidate failures are in the result; only registry failures are errors.
    pub async fn fetch_candidates(
        &self,
        progress: &mut dyn FnMut(&str, u64),
    ) -> Result<Vec<(String, Result<String, String>)>, MirrorError> {
        let mut out = Vec::new();
        for c in self.policy().candidates.clone() {
            let hex = c.integrity.hex();
            if let Some(sha) = self
                .state()
                .resolve_alias(c.integrity.algorithm().name(), &hex)
                && self.available(&sha).is_some()
            {
                out.push((c.name.clone(), Ok(sha)));
                continue;
            }
            let mut last_err = String::from("no URL");
            let mut done = None;
            for u in &c.urls {
                let host_and_path = u.as_str().split_once("://").map_or(u.as_str(), |(_, r)| r);
                match self
                    .get_url(host_and_path, None, "gf-registry mirror fetch", true)
                    .await
                {
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
                                done = self
                                    .state()
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

    /// Re-probes every pinned URL (or those starting with `filter`): fetches the upstream,
    /// hashes it, and records drift as an event. What is served does not change.
    ///
    /// # Errors
    /// [`MirrorError`] when a drift record cannot be written.
    pub async fn verify_upstream(&self, filter: Option<&str>) -> Result<Vec<Probe>, MirrorError> {
        let pins: BTreeMap<String, String> = self
            .state()
            .pins
            .iter()
            .filter(|(u, _)| filter.is_none_or(|f| u.starts_with(f)))
            .map(|(u, p)| (u.to_string(), p.sha256.to_hex()))
            .collect();
        let mut out = Vec::new();
        for (url, pinned) in pins {
            let upstream = self.hash_upstream(&url).await;
            if let Ok(actual) = &upstream
                && *actual != pinned
            {
                let event = Record::Event(EventRecord {
                    event: EventKind::Drift,
                    sha256: pinned.clone(),
                    url: Some(url.clone()),
                    at: Utc::now(),
                    detail: format!("upstream now serves sha256 {actual}"),
                });
                self.inner().record(&event).await?;
            }
            out.push(Probe {
                url,
                pinned,
                upstream,
            });
        }
        Ok(out)
    }

    async fn hash_upstream(&self, url: &str) -> Result<String, String> {
        let url = Url::parse(url).map_err(|e| e.to_string())?;
        let policy = self.policy();
        let allow = |u: &Url| policy.allows(u);
        let mut resp = self
            .inner()
            .upstream
            .get(&url, &allow)
            .await
            .map_err(|e| e.to_string())?;
        let mut h = sha2::Sha256::new();
        while let Some(chunk) = resp.body.next().await {
            h.update(&chunk.map_err(|e| e.to_string())?);
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Exports the selected blobs into `dir` (created if needed). Every file is re-hashed
    /// after it is written.
    ///
    /// # Errors
    /// [`MirrorError`] for storage, registry or filesystem failures.
    pub async fn export(
        &self,
        format: ExportFormat,
        selection: &Selection,
        dir: &Path,
    ) -> Result<ExportReport, MirrorError> {
        let io = |what: &Path, e: std::io::Error| {
            MirrorError::Storage(format!("{}: {e}", what.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let (wanted, url_lists) = self.select(selection).await?;
        let mut report = ExportReport::default();
        let state = self.state();
        // Distdir: decide names first, so collisions are reported, never resolved by overwriting.
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for sha in &wanted {
            if let Some(b) = state.blob(sha) {
                for u in b.urls() {
                    if let Some(name) = basename(u) {
                        let e = by_name.entry(name).or_default();
                        if !e.contains(sha) {
                            e.push(sha.clone());
                        }
                    }
                }
            }
        }
        for sha in &wanted {
            if self.available(sha).is_none() {
                report.missing.push(sha.clone());
                continue;
            }
            match format {
                ExportFormat::RepositoryCache => {
                    let entry = dir.join("content_addressable").join("sha256").join(sha);
                    std::fs::create_dir_all(&entry).map_err(|e| io(&entry, e))?;
                    let file = entry.join("file");
                    self.write_verified(sha, &file).await?;
                    report.written.push(file);
                    for list in url_lists.get(sha).into_iter().flatten() {
                        let id = hex::encode(sha2::Sha256::digest(list.as_bytes()));
                        let marker = entry.join(format!("id-{id}"));
                        std::fs::write(&marker, b"").map_err(|e| io(&marker, e))?;
                    }
                }
                ExportFormat::Distdir => {
                    for (name, owners) in &by_name {
                        if !owners.contains(sha) {
                            continue;
                        }
                        if owners.len() > 1 {
                            continue; // reported below
                        }
                        let file = dir.join(name);
                        if file.exists() {
                            let existing = std::fs::read(&file).map_err(|e| io(&file, e))?;
                            if hex::encode(sha2::Sha256::digest(&existing)) != *sha {
                                report.collisions.push((
                                    name.clone(),
                                    vec![
                                        sha.clone(),
                                        "(a different file already in the folder)".to_owned(),
                                    ],
                                ));
                            }
                            continue;
                        }
                        self.write_verified(sha, &file).await?;
                        report.written.push(file);
                    }
                }
            }
        }
        if format == ExportFormat::Distdir {
            report
                .collisions
                .extend(by_name.into_iter().filter(|(_, o)| o.len() > 1));
        }
        Ok(report)
    }

    /// Writes a blob to `file` through a temporary name, then re-reads and re-hashes it.
    async fn write_verified(&self, sha: &str, file: &Path) -> Result<(), MirrorError> {
        let io = |e: std::io::Error| MirrorError::Storage(format!("{}: {e}", file.display()));
        let tmp = file.with_extension("gf-registry-tmp");
        {
            let mut out = std::fs::File::create(&tmp).map_err(io)?;
            let mut body = self.read_blob(sha).await?.body;
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk.map_err(io)?).map_err(io)?;
            }
            out.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, file).map_err(io)?;
        let written = std::fs::read(file).map_err(io)?;
        let got = hex::encode(sha2::Sha256::digest(&written));
        if got != sha {
            return Err(MirrorError::Storage(format!(
                "{} re-hashed to {got}, expected {sha}",
                file.display()
            )));
        }
        Ok(())
    }

    /// The selected digests, and for each the URL lists whose canonical ids to mark.
    async fn select(
        &self,
        selection: &Selection,
    ) -> Result<(Vec<String>, HashMap<String, Vec<String>>), MirrorError> {
        let state = self.state();
        let mut lists: HashMap<String, Vec<String>> = HashMap::new();
        // Every single URL a blob was pinned for is a canonical id (one-URL http_archive).
        for (url, pin) in &state.pins {
            lists
                .entry(pin.sha256.to_hex())
                .or_default()
                .push(url.to_string());
        }
        for c in &self.policy().candidates {
            if let Some(sha) =
                state.resolve_alias(c.integrity.algorithm().name(), &c.integrity.hex())
            {
                let joined = c.urls.iter().map(Url::as_str).collect::<Vec<_>>().join(" ");
                lists.entry(sha).or_default().push(joined);
            }
        }
        let refs = self.references().await?;
        let mut wanted: Vec<String> = match selection {
            Selection::All => state
                .blobs
                .iter()
                .filter(|(_, b)| b.is_available())
                .map(|(s, _)| s.to_hex())
                .collect(),
            Selection::AllPinned => refs.keys().filter(|k| k.len() == 64).cloned().collect(),
            Selection::Candidates => self
                .policy()
                .candidates
                .iter()
                .map(|c| {
                    state
                        .resolve_alias(c.integrity.algorithm().name(), &c.integrity.hex())
                        .unwrap_or_else(|| c.integrity.to_string())
                })
                .collect(),
            Selection::Module(name, version) => {
                let tag = format!("registry:{name}@{version}");
                let found: Vec<String> = refs
                    .iter()
                    .filter(|(_, r)| r.contains(&tag))
                    .map(|(k, _)| k.clone())
                    .collect();
                if found.is_empty() {
                    return Err(MirrorError::NotFound(format!(
                        "{name}@{version} has no archive source in the registry"
                    )));
                }
                found
            }
        };
        wanted.sort();
        wanted.dedup();
        Ok((wanted, lists))
    }
}

/// The last path segment of a URL, without its query: the name Bazel looks for in a distdir.
fn basename(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    let name = u.path_segments()?.next_back()?.to_owned();
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// What `mirror repair` did for one quarantined blob.
#[derive(Debug, Clone, Serialize)]
pub struct Repair {
    /// The blob.
    pub sha256: String,
    /// The URL it was restored from, or why it could not be.
    pub outcome: Result<String, String>,
}

impl Mirror {
    /// Refetches every quarantined blob from the upstream URLs recorded for it, and restores
    /// it only if the bytes have its digest (the fill verifies against the pin). Per-blob
    /// failures are in the result.
    pub async fn repair(&self) -> Vec<Repair> {
        let quarantined: Vec<(String, Vec<String>)> = self
            .state()
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
                let result = match self
                    .get_url(host_and_path, None, "gf-registry mirror repair", true)
                    .await
                {
                    Ok(resp) => drain(resp.body).await,
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) if self.available(&sha).is_some() => {
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
}

async fn drain(
    mut body: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
) -> Result<(), String> {
    while let Some(chunk) = body.next().await {
        chunk.map_err(|e| e.to_string())?;
    }
    Ok(())
}
