//! The publisher: validates a release against its sources and writes its registry entry in one
//! transaction of the registry source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use sha2::Digest as _;
use url::Url;

use super::PublishError;
use super::archive::{self, ArchiveError, Limits};
use super::audit::{self, AuditRecord};
use super::entry::{self, MetadataEdit, SourceFacts};
use super::patch;
use super::request::{ArchiveSource, ValidRequest, parse_coordinates};
use crate::mirror::{Mirror, MirrorError};
use crate::registry::Registry;
use crate::registry::integrity::{Algorithm, Integrity};
use crate::registry::module_file;
use crate::registry::name::ModuleName;
use crate::registry::version::ModuleVersion;
use crate::source::writer::{Author, Change, Plan, TransactError};
use crate::source::{EntryKind, SourceError, Tree};
use crate::storage::Storage;
use crate::upstream::{Allowed, UpstreamClient, UpstreamError};

/// Settings of the publisher.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// Registries a `bazel_dep` may resolve in besides this one (base URLs).
    pub upstream_registries: Vec<Url>,
    /// Extraction caps.
    pub limits: Limits,
}

impl Default for PublisherSettings {
    fn default() -> Self {
        Self {
            upstream_registries: vec![
                #[allow(clippy::unwrap_used, reason = "a literal URL")]
                Url::parse("https://bcr.bazel.build/").unwrap(),
            ],
            limits: Limits::default(),
        }
    }
}

/// Who asks, for commits and audit records.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The token's name.
    pub name: String,
    /// The client's address.
    pub address: String,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The version was written.
    Created,
    /// The version existed with identical content.
    Unchanged,
    /// Validated only.
    DryRun,
    /// `metadata.json` was edited.
    Edited,
}

/// The answer to a publish or an edit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    /// The module.
    pub module: String,
    /// The version (publish, yank, unyank).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What happened.
    pub status: Status,
    /// The source archive's hex sha256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    /// Every file of the entry (registry path -> hex sha256).
    pub files: BTreeMap<String, String>,
    /// The registry revision written, when something was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A `metadata.json` edit request.
#[derive(Debug, Clone)]
pub enum EditKind {
    /// Yank `version` with `reason`.
    Yank {
        /// The version.
        version: String,
        /// Why.
        reason: String,
    },
    /// Take the yank of `version` back.
    Unyank {
        /// The version.
        version: String,
    },
    /// Deprecate the module (an empty reason removes the deprecation).
    Deprecate {
        /// Why.
        reason: String,
    },
}

/// The publisher.
#[derive(Debug, Clone)]
pub struct Publisher {
    registry: Arc<Registry>,
    mirror: Mirror,
    storage: Storage,
    upstream: UpstreamClient,
    settings: Arc<PublisherSettings>,
}

fn rejected(field: &str, message: impl Into<String>) -> PublishError {
    PublishError::Rejected {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn task_err(e: impl std::fmt::Display) -> PublishError {
    PublishError::Registry(format!("internal task failed: {e}"))
}

fn source_err(e: SourceError) -> PublishError {
    match e {
        SourceError::Git { .. } | SourceError::Io { .. } => {
            PublishError::Unavailable(format!("registry source: {e}"))
        }
        SourceError::NotARegistry(_) => PublishError::Registry(e.to_string()),
    }
}

fn mirror_err(field: &str, e: MirrorError) -> PublishError {
    match e {
        MirrorError::NotFound(m) | MirrorError::BadRequest(m) => rejected(field, m),
        MirrorError::IntegrityMismatch {
            expected, actual, ..
        } => rejected(
            "source.integrity",
            format!("the archive's integrity is {actual}, not {expected}"),
        ),
        MirrorError::Upstream { message, .. } => {
            PublishError::Upstream(format!("{field}: fetching the archive: {message}"))
        }
        MirrorError::Storage(m) | MirrorError::Overloaded(m) => {
            PublishError::Unavailable(format!("the mirror cannot store the archive: {m}"))
        }
        MirrorError::RangeNotSatisfiable { .. } => PublishError::Registry(e.to_string()),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Normalizes `MODULE.bazel` for comparison: line endings and trailing whitespace.
fn normalize(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .replace("\r\n", "\n")
        .split('\n')
        .map(|l| l.trim_end().to_owned())
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// The entry, ready to write: files relative to the version folder.
#[derive(Debug, Clone)]
struct Prepared {
    name: ModuleName,
    version: ModuleVersion,
    files: Vec<(String, Vec<u8>)>,
    compatibility_level: i64,
    metadata: Option<super::request::MetadataSpec>,
    archive_sha256: Option<String>,
    /// An uploaded archive, stored only once the entry is known to be accepted: file name,
    /// bytes, who asked.
    upload: Option<(String, Arc<Vec<u8>>, String)>,
    /// Every file of the entry but `metadata.json`: registry path -> hex sha256.
    digests: BTreeMap<String, String>,
}

/// A publish's work folder. Removing it (many files, once an archive is extracted) is blocking
/// work: [`WorkDir::remove`] does it on the blocking pool, and a publish cut off before that
/// (the client went away) leaves it to the pool too.
#[derive(Debug)]
struct WorkDir(Option<tempfile::TempDir>);

impl WorkDir {
    async fn create(storage: &Storage) -> Result<Self, PublishError> {
        let storage = storage.clone();
        tasks_blocking(move || {
            storage
                .work_dir("publish")
                .map(|d| Self(Some(d)))
                .map_err(|e| PublishError::Unavailable(format!("cannot create a work folder: {e}")))
        })
        .await
    }

    fn path(&self) -> &Path {
        self.0
            .as_ref()
            .map_or_else(|| Path::new(""), tempfile::TempDir::path)
    }

    async fn remove(mut self) {
        if let Some(dir) = self.0.take()
            && let Err(e) = crate::tasks::spawn_blocking(move || drop(dir)).await
        {
            tracing::warn!(error = %e, "could not remove a publish work folder");
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            crate::tasks::spawn_blocking_detached(move || drop(dir));
        }
    }
}

impl Publisher {
    /// A publisher writing into `registry`'s source, storing archives in `mirror`.
    #[must_use]
    pub fn new(
        registry: Arc<Registry>,
        mirror: Mirror,
        storage: Storage,
        upstream: UpstreamClient,
        settings: PublisherSettings,
    ) -> Self {
        Self {
            registry,
            mirror,
            storage,
            upstream,
            settings: Arc::new(settings),
        }
    }

    /// Decodes a JSON body ([`ValidRequest::decode`]) and publishes it ([`Self::publish`]):
    /// for callers that hold the body as bytes (`registry add`).
    ///
    /// # Errors
    /// [`PublishError`] naming the field at fault; nothing is written then.
    pub async fn publish_body(
        &self,
        name: &str,
        version: &str,
        body: Vec<u8>,
        actor: &Actor,
        public_url: &str,
        dry_run: bool,
    ) -> Result<Published, PublishError> {
        let req = ValidRequest::decode(name.to_owned(), version.to_owned(), body).await?;
        self.publish(req, actor, public_url, dry_run).await
    }

    /// Publishes one validated version. `public_url` (ending in `/`) is where consumers
    /// reach this server: `source.json`'s mirror URLs point there.
    ///
    /// # Errors
    /// [`PublishError`] naming the field at fault; nothing is written then.
    pub async fn publish(
        &self,
        req: ValidRequest,
        actor: &Actor,
        public_url: &str,
        dry_run: bool,
    ) -> Result<Published, PublishError> {
        let prepared = Arc::new(self.prepare(req, actor, public_url).await?);
        let source = self.registry.source().clone();
        let mut files = prepared.digests.clone();
        if dry_run || prepared.upload.is_some() {
            // The plan on the tree served now: its refusals (409, a new module without
            // metadata, a dropping compatibility_level) come before an upload is stored.
            let (p, source) = (prepared.clone(), source.clone());
            tasks_blocking(move || {
                let tree = source.current().map_err(source_err)?;
                plan_publish(tree.as_ref(), &p).map(|_| ())
            })
            .await?;
        }
        if dry_run {
            return Ok(Published {
                module: prepared.name.to_string(),
                version: Some(prepared.version.to_string()),
                status: Status::DryRun,
                archive_sha256: prepared.archive_sha256.clone(),
                files,
                revision: None,
            });
        }
        if let Some((file_name, bytes, requested_by)) = &prepared.upload {
            let stored = self
                .mirror
                .ingest_bytes(bytes.clone(), file_name, requested_by)
                .await
                .map_err(|e| mirror_err("source.content_base64", e))?;
            if Some(&stored) != prepared.archive_sha256.as_ref() {
                return Err(task_err("the stored upload has another digest"));
            }
        }
        let author = author_of(actor);
        let p = prepared.clone();
        let ((status, metadata), revision) = tasks_blocking(move || {
            match source.transact(&author, &mut |tree| plan_publish(tree, &p)) {
                Ok(w) => Ok((w.value, w.revision)),
                Err(TransactError::Plan(e)) => Err(e),
                Err(TransactError::Source(e)) => Err(source_err(e)),
            }
        })
        .await?;
        if revision.is_some() {
            self.after_write().await;
        }
        files.insert(
            format!("modules/{}/metadata.json", prepared.name),
            sha256_hex(&metadata),
        );
        let published = Published {
            module: prepared.name.to_string(),
            version: Some(prepared.version.to_string()),
            status,
            archive_sha256: prepared.archive_sha256.clone(),
            files,
            revision,
        };
        self.audit(AuditRecord {
            action: "publish".to_owned(),
            module: published.module.clone(),
            version: published.version.clone(),
            outcome: match status {
                Status::Created => "created",
                _ => "unchanged",
            }
            .to_owned(),
            actor: actor.name.clone(),
            address: actor.address.clone(),
            at: Utc::now(),
            archive_sha256: published.archive_sha256.clone(),
            files: published.files.clone(),
            revision: published.revision.clone(),
            reason: None,
        })
        .await?;
        Ok(published)
    }

    /// Yanks, unyanks or deprecates: edits `metadata.json` only.
    ///
    /// # Errors
    /// [`PublishError`]: unknown module or version (404), yanking the latest version of a
    /// module that is not deprecated (409), an empty reason (400).
    pub async fn edit(
        &self,
        name: &str,
        kind: EditKind,
        actor: &Actor,
    ) -> Result<Published, PublishError> {
        let module = ModuleName::parse(name).map_err(|e| PublishError::Invalid {
            field: "name".to_owned(),
            message: e.to_string(),
        })?;
        if let EditKind::Yank { version, .. } | EditKind::Unyank { version } = &kind {
            parse_coordinates(name, version)?;
        }
        let path = format!("modules/{module}/metadata.json");
        let source = self.registry.source().clone();
        let author = author_of(actor);
        let k = kind.clone();
        let p = path.clone();
        let written = tasks_blocking(move || {
            let mut plan = |tree: &dyn Tree| -> Result<Plan<Vec<u8>>, PublishError> {
                let current = tree
                    .read(&p)
                    .map_err(source_err)?
                    .ok_or_else(|| PublishError::NotFound(format!("no module `{module}`")))?;
                let edit = match &k {
                    EditKind::Yank { version, reason } => MetadataEdit::Yank(version, reason),
                    EditKind::Unyank { version } => MetadataEdit::Unyank(version),
                    EditKind::Deprecate { reason } => MetadataEdit::Deprecate(reason),
                };
                Ok(match entry::edit_metadata(&current, &edit)? {
                    None => Plan::Unchanged(current),
                    Some(bytes) => {
                        let message = match &k {
                            EditKind::Yank { version, reason } => {
                                format!("Yank {module}@{version}\n\nReason: {reason}\n")
                            }
                            EditKind::Unyank { version } => format!("Unyank {module}@{version}\n"),
                            EditKind::Deprecate { reason } if reason.is_empty() => {
                                format!("Undeprecate {module}\n")
                            }
                            EditKind::Deprecate { reason } => {
                                format!("Deprecate {module}\n\nReason: {reason}\n")
                            }
                        };
                        Plan::Write(
                            Change {
                                remove_dirs: Vec::new(),
                                new_dirs: Vec::new(),
                                files: vec![(p.clone(), bytes.clone())],
                                message,
                            },
                            bytes,
                        )
                    }
                })
            };
            match source.transact(&author, &mut plan) {
                Ok(w) => Ok(w),
                Err(TransactError::Plan(e)) => Err(e),
                Err(TransactError::Source(e)) => Err(source_err(e)),
            }
        })
        .await?;
        if written.revision.is_some() {
            self.after_write().await;
        }
        let (action, version, reason) = match &kind {
            EditKind::Yank { version, reason } => {
                ("yank", Some(version.clone()), Some(reason.clone()))
            }
            EditKind::Unyank { version } => ("unyank", Some(version.clone()), None),
            EditKind::Deprecate { reason } => ("deprecate", None, Some(reason.clone())),
        };
        let files = BTreeMap::from([(path, sha256_hex(&written.value))]);
        let status = if written.revision.is_some() {
            Status::Edited
        } else {
            Status::Unchanged
        };
        self.audit(AuditRecord {
            action: action.to_owned(),
            module: name.to_owned(),
            version: version.clone(),
            outcome: if status == Status::Edited {
                "edited"
            } else {
                "unchanged"
            }
            .to_owned(),
            actor: actor.name.clone(),
            address: actor.address.clone(),
            at: Utc::now(),
            archive_sha256: None,
            files: files.clone(),
            revision: written.revision.clone(),
            reason,
        })
        .await?;
        Ok(Published {
            module: name.to_owned(),
            version,
            status,
            archive_sha256: None,
            files,
            revision: written.revision,
        })
    }

    async fn after_write(&self) {
        if let Err(e) = self.registry.refresh().await {
            tracing::warn!(error = %e, "registry refresh after a write failed; the next poll retries");
        }
    }

    async fn audit(&self, record: AuditRecord) -> Result<(), PublishError> {
        match audit::append(&self.storage, &record).await {
            Ok(_) => {
                tracing::info!(
                    audit.action = %record.action,
                    audit.module = %record.module,
                    audit.version = record.version.as_deref().unwrap_or(""),
                    audit.outcome = %record.outcome,
                    audit.actor = %record.actor,
                    audit.address = %record.address,
                    "registry action"
                );
                Ok(())
            }
            Err(e) => {
                // The entry is written (and idempotent): a retry records the audit event.
                tracing::error!(error = %e, module = %record.module, "could not append the audit record");
                Err(PublishError::Unavailable(format!(
                    "the entry was written but its audit record was not ({e}); retry the request"
                )))
            }
        }
    }

    /// Everything that needs the sources: the archive is stored (unless a dry run uploads),
    /// extracted, overlaid and patched; `MODULE.bazel` and dependencies are checked.
    async fn prepare(
        &self,
        req: ValidRequest,
        actor: &Actor,
        public_url: &str,
    ) -> Result<Prepared, PublishError> {
        // In the data folder's spool when the store is local (cleaned at start after a
        // crash), else the system's temporary folder.
        let work = WorkDir::create(&self.storage).await?;
        let checked = self.acquire_and_check(&work, req, actor, public_url).await;
        // Removing a work folder of many files takes seconds: off the HTTP worker.
        work.remove().await;
        let (req, acquired) = checked?;
        self.check_deps(&req).await?;
        // Digests of every entry file, and the entry itself: hashing up to the body's size.
        tasks_blocking(move || entry_of(&req, acquired)).await
    }

    /// Gets the archive into the work folder, then extracts, overlays, patches and compares
    /// `MODULE.bazel` there.
    async fn acquire_and_check(
        &self,
        work: &WorkDir,
        mut req: ValidRequest,
        actor: &Actor,
        public_url: &str,
    ) -> Result<(Arc<ValidRequest>, Acquired), PublishError> {
        let archive_path = work.path().join("archive");
        let mut archive_sha256 = None;
        let facts_url;
        let mut mirror_urls = Vec::new();
        let mut upload = None;
        let archive_type = req.archive.as_ref().map(|(_, t)| *t);
        match &mut req.0.archive {
            Some((ArchiveSource::Url { url, integrity }, _)) => {
                let requested_by = format!("publish by {} from {}", actor.name, actor.address);
                let sha = self
                    .mirror
                    .ingest_url(url, integrity.as_ref(), &requested_by)
                    .await
                    .map_err(|e| mirror_err("source.url", e))?;
                self.mirror
                    .copy_blob_to(&sha, &archive_path)
                    .await
                    .map_err(|e| mirror_err("source.url", e))?;
                let rest = url.as_str().split_once("://").map_or("", |(_, r)| r);
                mirror_urls.push(format!("{public_url}mirror/{rest}"));
                facts_url = url.to_string();
                archive_sha256 = Some(sha);
            }
            Some((ArchiveSource::Upload { file_name, bytes }, _)) => {
                // Stored only once everything validates (below): a refused upload leaves
                // nothing in the mirror. The bytes leave the request (no copy of a large
                // upload); hashing and writing them is blocking work.
                let bytes = Arc::new(std::mem::take(bytes));
                let (b, path) = (bytes.clone(), archive_path.clone());
                let sha = tasks_blocking(move || {
                    std::fs::write(&path, b.as_slice())
                        .map_err(|e| PublishError::Unavailable(format!("work folder: {e}")))?;
                    Ok(sha256_hex(&b))
                })
                .await?;
                facts_url = format!("{public_url}cas/sha256/{sha}/{file_name}");
                upload = Some((
                    file_name.clone(),
                    bytes,
                    format!("publish by {} from {}", actor.name, actor.address),
                ));
                archive_sha256 = Some(sha);
            }
            None => facts_url = String::new(),
        }
        let limits = self.settings.limits;
        let req = Arc::new(req);
        let r = req.clone();
        let work_dir = work.path().to_path_buf();
        // Extract, overlay, patch, compare MODULE.bazel: blocking file work.
        tasks_blocking(move || {
            if let Some(kind) = archive_type {
                return check_sources(
                    &r,
                    &archive_path,
                    kind,
                    &r.strip_prefix,
                    &work_dir.join("src"),
                    &limits,
                );
            }
            let Some((remote, commit)) = &r.git else {
                return Ok(());
            };
            // A git_repository source: its commit's tree, archived the same deterministic way
            // as `publish --tag`, goes through the same extraction and checks.
            let tar =
                crate::source::git_archive::fetch_commit_tar_gz(remote, commit, &work_dir, "tree")
                    .map_err(|e| {
                        use crate::source::git_archive::FetchError;
                        match e {
                            FetchError::NoSuchCommit { .. } => {
                                rejected("source.commit", e.to_string())
                            }
                            other => rejected("source.remote", other.to_string()),
                        }
                    })?;
            std::fs::write(&archive_path, tar)
                .map_err(|e| PublishError::Unavailable(format!("work folder: {e}")))?;
            let prefix = if r.strip_prefix.is_empty() {
                "tree".to_owned()
            } else {
                format!("tree/{}", r.strip_prefix)
            };
            check_sources(
                &r,
                &archive_path,
                archive::ArchiveType::TarGz,
                &prefix,
                &work_dir.join("src"),
                &limits,
            )
        })
        .await?;
        Ok((
            req,
            Acquired {
                archive_sha256,
                facts_url,
                mirror_urls,
                upload,
            },
        ))
    }

    /// Every non-dev `bazel_dep` must resolve here or in an upstream registry.
    async fn check_deps(&self, req: &ValidRequest) -> Result<(), PublishError> {
        let deps: Vec<(String, String)> = req
            .module_file
            .deps
            .iter()
            .filter(|d| !d.dev_dependency)
            .map(|d| (d.name.clone(), d.version.clone()))
            .collect();
        if deps.is_empty() {
            return Ok(());
        }
        let source = self.registry.source().clone();
        let d = deps.clone();
        let missing_here: Vec<(String, String)> = tasks_blocking(move || {
            let missing_in = |tree: &dyn Tree, deps: Vec<(String, String)>| {
                let mut missing = Vec::new();
                for (n, v) in deps {
                    if tree
                        .read(&format!("modules/{n}/{v}/MODULE.bazel"))
                        .map_err(source_err)?
                        .is_none()
                    {
                        missing.push((n, v));
                    }
                }
                Ok::<_, PublishError>(missing)
            };
            let missing = missing_in(source.current().map_err(source_err)?.as_ref(), d)?;
            // A git registry shared through origin: another replica may have published the
            // dependency since this one last synced.
            if !missing.is_empty() && source.sync().unwrap_or(false) {
                return missing_in(source.current().map_err(source_err)?.as_ref(), missing);
            }
            Ok(missing)
        })
        .await?;
        let mut unresolved = Vec::new();
        for (n, v) in missing_here {
            let mut why = Vec::new();
            let mut found = false;
            for reg in &self.settings.upstream_registries {
                let base = reg.as_str().trim_end_matches('/');
                let Ok(url) = Url::parse(&format!("{base}/modules/{n}/{v}/MODULE.bazel")) else {
                    continue;
                };
                // Operators configure these registries: private addresses are allowed.
                let allow = |_: &Url| {
                    Some(Allowed {
                        rule: "publish.upstream_registries".to_owned(),
                        allow_private: true,
                    })
                };
                match self.upstream.get(&url, &allow).await {
                    Ok(_) => {
                        found = true;
                        break;
                    }
                    Err(UpstreamError::NotFound { status, .. }) => {
                        why.push(format!("{base}: {status}"));
                    }
                    Err(e) => why.push(format!("{base}: {e}")),
                }
            }
            if !found {
                let where_ = if why.is_empty() {
                    "not in this registry (no upstream registries configured)".to_owned()
                } else {
                    format!("not in this registry; {}", why.join("; "))
                };
                unresolved.push(format!("{n}@{v} ({where_})"));
            }
        }
        if unresolved.is_empty() {
            Ok(())
        } else {
            Err(rejected(
                "module_bazel",
                format!("unresolved bazel_dep: {}", unresolved.join(", ")),
            ))
        }
    }
}

/// What acquiring the sources found out, for the entry.
#[derive(Debug)]
struct Acquired {
    archive_sha256: Option<String>,
    facts_url: String,
    mirror_urls: Vec<String>,
    /// An uploaded archive: file name, bytes, who asked.
    upload: Option<(String, Arc<Vec<u8>>, String)>,
}

/// The entry's files (`MODULE.bazel`, `source.json`, patches, overlay) and their digests.
fn entry_of(req: &ValidRequest, acquired: Acquired) -> Result<Prepared, PublishError> {
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

fn author_of(actor: &Actor) -> Author {
    Author {
        name: actor.name.clone(),
        email: format!("{}@gf-registry.invalid", actor.name),
    }
}

async fn tasks_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PublishError> + Send + 'static,
) -> Result<T, PublishError> {
    crate::tasks::spawn_blocking(f).await.map_err(task_err)?
}

/// Extracts the archive, lays the overlay down, applies the patches and compares the result's
/// `MODULE.bazel` with the submitted one.
fn check_sources(
    req: &ValidRequest,
    archive_path: &Path,
    kind: archive::ArchiveType,
    strip_prefix: &str,
    dest: &Path,
    limits: &Limits,
) -> Result<(), PublishError> {
    let field = match &req.archive {
        Some((ArchiveSource::Upload { .. }, _)) => "source.content_base64",
        Some(_) => "source.url",
        None => "source.commit",
    };
    archive::extract(archive_path, kind, strip_prefix, dest, limits).map_err(|e| match e {
        ArchiveError::StripPrefixNotFound { .. } | ArchiveError::InvalidStripPrefix { .. } => {
            rejected("strip_prefix", e.to_string())
        }
        ArchiveError::Io { .. } => PublishError::Unavailable(format!("extracting: {e}")),
        other => rejected(field, format!("the archive is refused: {other}")),
    })?;
    for (i, (path, bytes)) in req.overlay.iter().enumerate() {
        write_overlay(dest, path.as_str(), bytes)
            .map_err(|m| rejected(&format!("overlay[{i}].path"), m))?;
    }
    for (i, (name, content)) in req.patches.iter().enumerate() {
        patch::apply(dest, &patch::Patch { name, content }, req.patch_strip)
            .map_err(|e| rejected(&format!("patches[{i}]"), e.to_string()))?;
    }
    match std::fs::read(dest.join("MODULE.bazel")) {
        Ok(bytes) => {
            let archived = String::from_utf8_lossy(&bytes);
            let (a, s) = (normalize(&archived), normalize(&req.module_bazel));
            if a != s {
                let line = a
                    .iter()
                    .zip(&s)
                    .position(|(x, y)| x != y)
                    .unwrap_or(a.len().min(s.len()));
                return Err(rejected(
                    "module_bazel",
                    format!(
                        "differs from the MODULE.bazel in the archive (after overlay and patches) at line {}: archive has {:?}, request has {:?}",
                        line + 1,
                        a.get(line).map_or("<end of file>", String::as_str),
                        s.get(line).map_or("<end of file>", String::as_str),
                    ),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(PublishError::Unavailable(format!(
                "reading MODULE.bazel: {e}"
            )));
        }
    }
    Ok(())
}

/// Writes one overlay file under `root`, never through a symlink.
fn write_overlay(root: &Path, rel: &str, bytes: &[u8]) -> Result<(), String> {
    let mut path = PathBuf::from(root);
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "`{rel}` would be written through a symlink in the archive"
                ));
            }
            Ok(m) if i + 1 < parts.len() && !m.is_dir() => {
                return Err(format!("`{rel}`: a parent is a file in the archive"));
            }
            Ok(m) if i + 1 == parts.len() && m.is_dir() => {
                return Err(format!("`{rel}` is a folder in the archive"));
            }
            Ok(_) => {}
            Err(_) if i + 1 < parts.len() => {
                std::fs::create_dir(&path).map_err(|e| format!("`{rel}`: {e}"))?;
            }
            Err(_) => {}
        }
    }
    std::fs::write(&path, bytes).map_err(|e| format!("`{rel}`: {e}"))
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
fn plan_publish(tree: &dyn Tree, p: &Prepared) -> Result<Plan<(Status, Vec<u8>)>, PublishError> {
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
