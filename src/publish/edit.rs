//! Yank, unyank and deprecate: edits of a module's `metadata.json` only.

use std::collections::BTreeMap;

use chrono::Utc;

use super::PublishError;
use super::audit::AuditRecord;
use super::entry::{self, MetadataEdit};
use super::error::source_err;
use super::model::{Actor, EditKind, Published, Status};
use super::plan::sha256_hex;
use super::request::parse_coordinates;
use super::service::{Publisher, author_of, tasks_blocking};
use crate::registry::name::ModuleName;
use crate::source::Tree;
use crate::source::writer::{Change, Plan, TransactError};

impl Publisher {
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
}
