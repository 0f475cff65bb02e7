//! Exports for Bazel's repository cache and distdir.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use futures::StreamExt as _;
use serde::Serialize;
use sha2::Digest as _;
use url::Url;

use crate::mirror::error::MirrorError;
use crate::mirror::parts::Parts;

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

/// Exports the selected blobs into `dir` (created if needed). Every file is re-hashed
/// after it is written.
///
/// # Errors
/// [`MirrorError`] for storage, registry or filesystem failures.
pub(in crate::mirror) async fn export(
    p: Parts<'_>,
    format: ExportFormat,
    selection: &Selection,
    dir: &Path,
) -> Result<ExportReport, MirrorError> {
    let io =
        |what: &Path, e: std::io::Error| MirrorError::Storage(format!("{}: {e}", what.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let (wanted, url_lists) = select(p, selection).await?;
    let mut report = ExportReport::default();
    let state = p.ledger.read().clone();
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
        if p.ledger.available(sha).is_none() {
            report.missing.push(sha.clone());
            continue;
        }
        match format {
            ExportFormat::RepositoryCache => {
                let entry = dir.join("content_addressable").join("sha256").join(sha);
                std::fs::create_dir_all(&entry).map_err(|e| io(&entry, e))?;
                let file = entry.join("file");
                write_verified(p, sha, &file).await?;
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
                    write_verified(p, sha, &file).await?;
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
async fn write_verified(p: Parts<'_>, sha: &str, file: &Path) -> Result<(), MirrorError> {
    let io = |e: std::io::Error| MirrorError::Storage(format!("{}: {e}", file.display()));
    let tmp = file.with_extension("gf-registry-tmp");
    {
        let mut out = std::fs::File::create(&tmp).map_err(io)?;
        let mut body = p.serve.read_blob(sha).await?.body;
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
    p: Parts<'_>,
    selection: &Selection,
) -> Result<(Vec<String>, HashMap<String, Vec<String>>), MirrorError> {
    let state = p.ledger.read().clone();
    let mut lists: HashMap<String, Vec<String>> = HashMap::new();
    // Every single URL a blob was pinned for is a canonical id (one-URL http_archive).
    for (url, pin) in &state.pins {
        lists
            .entry(pin.sha256.to_hex())
            .or_default()
            .push(url.to_string());
    }
    // The canonical ids clients named a download by (FetchBlob's `bazel.canonical_id`).
    for (sha, ids) in &state.canonical_ids {
        let list = lists.entry(sha.to_hex()).or_default();
        for id in ids {
            if !list.iter().any(|l| **l == **id) {
                list.push(id.to_string());
            }
        }
    }
    for c in &p.policy.candidates {
        if let Some(sha) = state.resolve_alias(c.integrity.algorithm().name(), &c.integrity.hex()) {
            let joined = c.urls.iter().map(Url::as_str).collect::<Vec<_>>().join(" ");
            lists.entry(sha).or_default().push(joined);
        }
    }
    let refs = p.known.references(p.ledger).await?;
    let mut wanted: Vec<String> = match selection {
        Selection::All => state
            .blobs
            .iter()
            .filter(|(_, b)| b.is_available())
            .map(|(s, _)| s.to_hex())
            .collect(),
        Selection::AllPinned => refs.keys().filter(|k| k.len() == 64).cloned().collect(),
        Selection::Candidates => p
            .policy
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

/// The last path segment of a URL, without its query: the name Bazel looks for in a distdir.
fn basename(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    let name = u.path_segments()?.next_back()?.to_owned();
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}
