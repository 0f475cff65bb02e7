//! Acquiring a release's sources into a work folder: an upload, an archive URL through the
//! mirror, or a git commit archived as `publish --tag` does; then the checks of
//! [`super::check`] on them.

use std::path::Path;
use std::sync::Arc;

use super::PublishError;
use super::archive;
use super::check::check_sources;
use super::error::{mirror_err, rejected};
use super::model::Actor;
use super::plan::sha256_hex;
use super::request::{ArchiveSource, ValidRequest};
use super::service::{Publisher, tasks_blocking};
use crate::storage::Storage;

/// A publish's work folder. Removing it (many files, once an archive is extracted) is blocking
/// work: [`WorkDir::remove`] does it on the blocking pool, and a publish cut off before that
/// (the client went away) leaves it to the pool too.
#[derive(Debug)]
pub(super) struct WorkDir(Option<tempfile::TempDir>);

impl WorkDir {
    pub(super) async fn create(storage: &Storage) -> Result<Self, PublishError> {
        let storage = storage.clone();
        tasks_blocking(move || {
            storage
                .work_dir("publish")
                .map(|d| Self(Some(d)))
                .map_err(|e| PublishError::Unavailable(format!("cannot create a work folder: {e}")))
        })
        .await
    }

    pub(super) fn path(&self) -> &Path {
        self.0
            .as_ref()
            .map_or_else(|| Path::new(""), tempfile::TempDir::path)
    }

    pub(super) async fn remove(mut self) {
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

/// What acquiring the sources found out, for the entry.
#[derive(Debug)]
pub(super) struct Acquired {
    pub(super) archive_sha256: Option<String>,
    pub(super) facts_url: String,
    pub(super) mirror_urls: Vec<String>,
    /// An uploaded archive: file name, bytes, who asked.
    pub(super) upload: Option<(String, Arc<Vec<u8>>, String)>,
}

impl Publisher {
    /// Gets the archive into the work folder, then extracts, overlays, patches and compares
    /// `MODULE.bazel` there.
    pub(super) async fn acquire_and_check(
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
            let tar = crate::release::fetch_commit_tar_gz(remote, commit, &work_dir, "tree")
                .map_err(|e| {
                    use crate::release::FetchError;
                    match e {
                        FetchError::NoSuchCommit { .. } => rejected("source.commit", e.to_string()),
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
}
