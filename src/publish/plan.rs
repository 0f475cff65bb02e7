//! The entry a publish writes, and the plan that decides, on the tip of the registry source,
//! what is written: a new version, an idempotent retry, or a refusal.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::Digest as _;

use super::PublishError;
use super::acquire::Acquired;
use super::archive;
use super::entry::{self, SourceFacts};
use super::error::{rejected, source_err, task_err};
use super::model::Status;
use super::request::ValidRequest;
use crate::registry::integrity::{Algorithm, Integrity};
use crate::registry::module_file;
use crate::registry::name::ModuleName;
use crate::registry::version::ModuleVersion;
use crate::source::writer::{Change, Plan};
use crate::source::{EntryKind, SourceError, Tree};

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The entry, ready to write: files relative to the version folder.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    pub(super) name: ModuleName,
    pub(super) version: ModuleVersion,
    pub(super) files: Vec<(String, Vec<u8>)>,
    compatibility_level: i64,
    metadata: Option<super::request::MetadataSpec>,
    pub(super) archive_sha256: Option<String>,
    /// An uploaded archive, stored only once the entry is known to be accepted: file name,
    /// bytes, who asked.
    pub(super) upload: Option<(String, Arc<Vec<u8>>, String)>,
    /// Every file of the entry but `metadata.json`: registry path -> hex sha256.
    pub(super) digests: BTreeMap<String, String>,
}

/// The entry's files (`MODULE.bazel`, `source.json`, patches, overlay) and their digests.
pub(super) fn entry_of(req: &ValidRequest, acquired: Acquired) -> Result<Prepared, PublishError> {
    let integrity_of = |b: &[u8]| Integrity::of(Algorithm::Sha256, b);
    let patches: Vec<(String, Integrity)> = req
        .patches
        .iter()
        .map(|(n, b)| (n.clone(), integrity_of(b)))
        .collect();
    let overlay: Vec<(String, Integrity)> = req
        .overlay
        .iter()
        .map(|(p, b)| (p.as_str().to_owned(), integrity_of(b)))
        .collect();
    let Acquired {
        archive_sha256,
        facts_url,
        mirror_urls,
        upload,
    } = acquired;
    let facts = match (&req.git, &archive_sha256) {
        (Some((remote, commit)), _) => SourceFacts::Git { remote, commit },
        (None, Some(sha)) => SourceFacts::Archive {
            url: &facts_url,
            mirror_urls: &mirror_urls,
            integrity: &Integrity::of_digest(
                Algorithm::Sha256,
                hex::decode(sha).map_err(task_err)?,
            ),
            archive_type: req.archive_type_declared(),
        },
        (None, None) => return Err(task_err("no source")),
    };
    let source_json = entry::source_json(
        &facts,
        &req.strip_prefix,
        &patches,
        req.patch_strip,
        &overlay,
    );
    let mut files = vec![
        (
            "MODULE.bazel".to_owned(),
            req.module_bazel.as_bytes().to_vec(),
        ),
        ("source.json".to_owned(), source_json),
    ];
    for (n, b) in &req.patches {
        files.push((format!("patches/{n}"), b.clone()));
    }
    for (p, b) in &req.overlay {
        files.push((format!("overlay/{}", p.as_str()), b.clone()));
    }
    let digests = files
        .iter()
        .map(|(rel, b)| {
            (
                format!("modules/{}/{}/{rel}", req.name, req.version),
                sha256_hex(b),
            )
        })
        .collect();
    Ok(Prepared {
        name: req.name.clone(),
        version: req.version.clone(),
        files,
        compatibility_level: req.module_file.compatibility_level.unwrap_or(0),
        metadata: req.metadata.clone(),
        archive_sha256,
        upload,
        digests,
    })
}

impl ValidRequest {
    fn archive_type_declared(&self) -> Option<&'static str> {
        self.declared_archive_type.map(archive::ArchiveType::as_str)
    }
}

/// Lists the files under a folder of the tree, recursively, relative to it.
fn list_files(tree: &dyn Tree, dir: &str) -> Result<Vec<String>, SourceError> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.is_empty() {
            dir.to_owned()
        } else {
            format!("{dir}/{rel}")
        };
        for e in tree.list(&full)?.unwrap_or_default() {
            let child = if rel.is_empty() {
                e.name.clone()
            } else {
                format!("{rel}/{}", e.name)
            };
            match e.kind {
                EntryKind::Dir => stack.push(child),
                _ => out.push(child),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether every file of `files` is stored under `dir` with these bytes.
fn stored_as(
    tree: &dyn Tree,
    dir: &str,
    files: &[(String, Vec<u8>)],
) -> Result<bool, PublishError> {
    for (rel, bytes) in files {
        if tree
            .read(&format!("{dir}/{rel}"))
            .map_err(source_err)?
            .as_deref()
            != Some(bytes.as_slice())
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Decides, on the tip of the source, what a publish writes. Its answer: the status and
/// `metadata.json` as it is once the plan is carried out.
pub(super) fn plan_publish(
    tree: &dyn Tree,
    p: &Prepared,
) -> Result<Plan<(Status, Vec<u8>)>, PublishError> {
    let module_dir = format!("modules/{}", p.name);
    let version_dir = format!("{module_dir}/{}", p.version);
    let meta_path = format!("{module_dir}/metadata.json");
    let metadata = tree.read(&meta_path).map_err(source_err)?;
    let listed = metadata
        .as_deref()
        .is_some_and(|m| entry::lists_version(m, p.version.as_str()));
    let mut remove_dirs = Vec::new();
    if tree.list(&version_dir).map_err(source_err)?.is_some() {
        let existing = list_files(tree, &version_dir).map_err(source_err)?;
        let mut wanted: Vec<&str> = p.files.iter().map(|(r, _)| r.as_str()).collect();
        wanted.sort_unstable();
        let differs = existing
            .iter()
            .map(String::as_str)
            .ne(wanted.iter().copied())
            || !stored_as(tree, &version_dir, &p.files)?;
        if differs && listed {
            return Err(PublishError::Conflict(format!(
                "{}@{} exists and its files differ from this request ({} stored); published versions never change: publish a new version",
                p.name,
                p.version,
                existing.join(", ")
            )));
        }
        if differs {
            // A folder metadata.json does not list was never acknowledged (a write cut off
            // between the folder and metadata.json): this publish replaces it.
            remove_dirs.push(version_dir.clone());
        } else {
            // Identical: an idempotent retry. A retry after a crash between the folder and
            // metadata.json also lists the version now.
            return Ok(
                match entry::add_version(metadata.as_deref(), p.metadata.as_ref(), &p.version)? {
                    None => Plan::Unchanged((Status::Unchanged, metadata.unwrap_or_default())),
                    Some(bytes) => Plan::Write(
                        Change {
                            remove_dirs: Vec::new(),
                            new_dirs: Vec::new(),
                            files: vec![(meta_path, bytes.clone())],
                            message: format!("List {}@{} in metadata.json\n", p.name, p.version),
                        },
                        (Status::Unchanged, bytes),
                    ),
                },
            );
        }
    }
    check_compatibility(tree, &module_dir, p)?;
    let (files, meta_after) =
        match entry::add_version(metadata.as_deref(), p.metadata.as_ref(), &p.version)? {
            Some(bytes) => (vec![(meta_path, bytes.clone())], bytes),
            None => (Vec::new(), metadata.unwrap_or_default()),
        };
    let digest = p.archive_sha256.as_deref().unwrap_or("git");
    Ok(Plan::Write(
        Change {
            remove_dirs,
            new_dirs: vec![(version_dir, p.files.clone())],
            files,
            message: format!(
                "Publish {}@{}\n\nArchive: sha256:{digest}\n",
                p.name, p.version
            ),
        },
        (Status::Created, meta_after),
    ))
}

/// `compatibility_level` must not drop below the previous version's.
fn check_compatibility(
    tree: &dyn Tree,
    module_dir: &str,
    p: &Prepared,
) -> Result<(), PublishError> {
    let previous = tree
        .list(module_dir)
        .map_err(source_err)?
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .filter_map(|e| ModuleVersion::parse(&e.name).ok())
        .filter(|v| *v < p.version)
        .max();
    let Some(prev) = previous else {
        return Ok(());
    };
    let Some(bytes) = tree
        .read(&format!("{module_dir}/{prev}/MODULE.bazel"))
        .map_err(source_err)?
    else {
        return Ok(());
    };
    let prev_level = module_file::parse(&String::from_utf8_lossy(&bytes))
        .ok()
        .and_then(|m| m.compatibility_level)
        .unwrap_or(0);
    if p.compatibility_level < prev_level {
        return Err(rejected(
            "module_bazel",
            format!(
                "compatibility_level {} is below {prev_level}, the level of the previous version {prev}",
                p.compatibility_level
            ),
        ));
    }
    Ok(())
}
