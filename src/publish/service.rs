//! The publisher: validates a release against its sources and writes its registry entry in one
//! transaction of the registry source.
//!
//! Publishing runs in steps, each in a file of its own: the archive is acquired and checked
//! ([`super::acquire`], [`super::check`]), the dependencies resolved ([`super::deps`]), and the
//! entry planned ([`super::plan`]) and written here; edits of `metadata.json` are
//! [`super::edit`].

use std::sync::Arc;

use chrono::Utc;

use super::PublishError;
use super::acquire::WorkDir;
use super::audit::{self, AuditRecord};
use super::error::{mirror_err, source_err, task_err};
use super::model::{Actor, Published, PublisherSettings, Status};
use super::plan::{Prepared, entry_of, plan_publish, sha256_hex};
use super::request::ValidRequest;
use crate::mirror::Mirror;
use crate::registry::Registry;
use crate::source::writer::{Author, TransactError};
use crate::storage::Storage;
use crate::upstream::UpstreamClient;

/// The publisher.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub(super) registry: Arc<Registry>,
    pub(super) mirror: Mirror,
    pub(super) storage: Storage,
    pub(super) upstream: UpstreamClient,
    pub(super) settings: Arc<PublisherSettings>,
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

    pub(super) async fn after_write(&self) {
        if let Err(e) = self.registry.refresh().await {
            tracing::warn!(error = %e, "registry refresh after a write failed; the next poll retries");
        }
    }

    pub(super) async fn audit(&self, record: AuditRecord) -> Result<(), PublishError> {
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
}

pub(super) fn author_of(actor: &Actor) -> Author {
    Author {
        name: actor.name.clone(),
        email: format!("{}@gf-registry.invalid", actor.name),
    }
}

pub(super) async fn tasks_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PublishError> + Send + 'static,
) -> Result<T, PublishError> {
    crate::tasks::spawn_blocking(f).await.map_err(task_err)?
}
