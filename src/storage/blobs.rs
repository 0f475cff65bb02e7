//! The write side of the `cas` role: spool files, and the placement of a verified spool at
//! its CAS key.
//!
//! Write, verify, then expose: incoming bytes go to a spool file while they are hashed, and
//! only a verified spool is placed at its final key. This is the one place that knows whether
//! the store is local: in a file store the spool lives in the store's own `tmp/` folder and
//! becomes the blob by a durable rename (no second copy); elsewhere it is uploaded to a
//! temporary key and moved into place. Either way the backend must then show the blob with
//! its size before anything records it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Storage, StorageError, StorageKey, spool_prefix};
use crate::tasks::TaskError;

/// Why a verified spool could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] StorageError),
    /// The spool could not be renamed into a local store.
    #[error("moving the spool into the cas role: {0}")]
    Move(#[source] std::io::Error),
    /// After the write, the backend does not show the blob with its size.
    #[error(
        "blob {sha256} not visible with its size after the write (backend reports {reported:?}, expected {size})"
    )]
    NotVisible {
        /// The blob's hex sha256.
        sha256: String,
        /// The size the backend reports, if any.
        reported: Option<u64>,
        /// The size written.
        size: u64,
    },
    /// The upload sent another number of bytes than the blob has.
    #[error("spool held {sent} bytes, expected {size}")]
    Short {
        /// Bytes sent.
        sent: u64,
        /// The blob's size.
        size: u64,
    },
    /// The spool file itself failed.
    #[error("spool file: {0}")]
    Spool(#[source] std::io::Error),
    /// A blocking task failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The spool was placed before (a local spool is consumed by its rename).
    #[error("spool already placed")]
    AlreadyPlaced,
}

impl PlaceError {
    /// Whether the backend is at fault (as opposed to the spool or the process).
    #[must_use]
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            Self::Backend(_) | Self::Move(_) | Self::NotVisible { .. }
        )
    }
}

/// A spool: a temporary file that every reader reads by position through one shared handle,
/// so the file can be renamed into a file store without disturbing them. Dropped unplaced,
/// the file is deleted.
#[derive(Debug)]
pub struct Spool {
    file: Arc<std::fs::File>,
    /// Present until the file is adopted by the store (or deleted with the spool).
    path: Mutex<Option<tempfile::TempPath>>,
}

impl Spool {
    /// The open file, for positioned reads and writes.
    #[must_use]
    pub fn file(&self) -> &Arc<std::fs::File> {
        &self.file
    }

    fn take_path(&self) -> Option<tempfile::TempPath> {
        self.path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn path_buf(&self) -> Option<PathBuf> {
        self.path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|p| p.to_path_buf())
    }
}

impl Storage {
    /// Where spool files and work folders go: the file store's own `tmp/` folder when the
    /// `cas` role is local (cleaned at start after a crash, and a verified spool becomes the
    /// blob by a rename instead of a second copy), else the system's temporary folder.
    ///
    /// A local `cas` role whose `tmp/` folder cannot be made is an error, not a reason to
    /// spool elsewhere: the folder refuses writes, and every fill would fail at placement.
    fn spool_dir(&self) -> std::io::Result<PathBuf> {
        match self.layout().cas.local_path() {
            Some(root) => {
                let dir = root.join("tmp");
                std::fs::create_dir_all(&dir)?;
                Ok(dir)
            }
            None => Ok(std::env::temp_dir()),
        }
    }

    /// Checks within `timeout` that a spool file can be created (and removes it again): a
    /// read-only or full data folder answers reads and listings, yet refuses every fill.
    ///
    /// # Errors
    /// [`StorageError::Refused`] when the file cannot be created, [`StorageError::Timeout`]
    /// when the file system does not answer in time.
    pub async fn check_writable(&self, timeout: std::time::Duration) -> Result<(), StorageError> {
        let storage = self.clone();
        let probe = crate::tasks::spawn_blocking(move || storage.spool("ready").map(drop));
        let refused = |message: String| StorageError::Refused {
            role: super::Role::Cas.name(),
            message,
        };
        match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(refused(format!("cannot create a spool file: {e}"))),
            Ok(Err(e)) => Err(refused(e.to_string())),
            Err(_) => Err(StorageError::Timeout {
                role: super::Role::Cas.name(),
                which: "probe",
                millis: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Creates a spool file of `kind` (`fill`, `upload`), named for this process (see
    /// [`spool_prefix`]). Blocking (a file is created).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn spool(&self, kind: &str) -> std::io::Result<Spool> {
        let dir = self.spool_dir()?;
        let (file, path) = tempfile::Builder::new()
            .prefix(&spool_prefix(kind))
            .tempfile_in(&dir)?
            .into_parts();
        Ok(Spool {
            file: Arc::new(file),
            path: Mutex::new(Some(path)),
        })
    }

    /// Creates a work folder of `kind` (`publish`) beside the spool files. Blocking.
    ///
    /// # Errors
    /// When the folder cannot be created.
    pub fn work_dir(&self, kind: &str) -> std::io::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(&spool_prefix(kind))
            .tempdir_in(self.spool_dir()?)
    }
}

/// The `cas` role, seen as blobs.
#[derive(Debug, Clone)]
pub struct BlobStore {
    storage: Storage,
}

impl BlobStore {
    /// The blobs of `storage`'s `cas` role.
    #[must_use]
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    /// The whole storage facade (reads, checks, records).
    #[must_use]
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Creates a spool file of `kind` (see [`Storage::spool`]).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn spool(&self, kind: &str) -> std::io::Result<Spool> {
        self.storage.spool(kind)
    }

    /// Puts the verified `spool` at the CAS key of `sha256_hex` and checks that the backend
    /// shows it with `size` bytes: a durable rename inside a file store, otherwise an upload
    /// to a temporary key moved into place (the temporary object is removed on any failure).
    ///
    /// # Errors
    /// [`PlaceError`]; [`PlaceError::is_storage`] tells backend failures apart.
    pub async fn place(
        &self,
        spool: &Spool,
        sha256_hex: &str,
        size: u64,
    ) -> Result<(), PlaceError> {
        let key = StorageKey::blob("sha256", sha256_hex);
        let file = spool.file.clone();
        crate::tasks::spawn_blocking(move || file.sync_data())
            .await?
            .map_err(PlaceError::Spool)?;
        if let Some(dest) = self.storage.local_path_of(&key) {
            let temp = spool.take_path().ok_or(PlaceError::AlreadyPlaced)?;
            persist_local(temp, dest).await?;
        } else {
            let path = spool.path_buf().ok_or(PlaceError::AlreadyPlaced)?;
            self.upload_and_move(&path, &key, sha256_hex, size).await?;
        }
        self.check_visible(&key, sha256_hex, size).await
    }

    /// Uploads a verified spool file to a temporary key and moves it to `key`; the temporary
    /// object is removed on any failure.
    async fn upload_and_move(
        &self,
        path: &std::path::Path,
        key: &StorageKey,
        sha256_hex: &str,
        size: u64,
    ) -> Result<(), PlaceError> {
        let storage = &self.storage;
        let tmp = StorageKey::Temp {
            id: format!(
                "{sha256_hex}-{}",
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ),
        };
        let sent = storage.put_file(&tmp, path).await?;
        if sent != size {
            let _ = storage.delete(&tmp).await;
            return Err(PlaceError::Short { sent, size });
        }
        if let Err(e) = storage.rename(&tmp, key).await {
            let _ = storage.delete(&tmp).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Checks that the backend shows `key` with `size` bytes after a write.
    async fn check_visible(
        &self,
        key: &StorageKey,
        sha256_hex: &str,
        size: u64,
    ) -> Result<(), PlaceError> {
        match self.storage.size(key).await? {
            Some(n) if n == size => Ok(()),
            reported => Err(PlaceError::NotVisible {
                sha256: sha256_hex.to_owned(),
                reported,
                size,
            }),
        }
    }
}

/// Moves a verified spool file to its blob file in a local store: a rename, made durable.
async fn persist_local(temp: tempfile::TempPath, dest: PathBuf) -> Result<(), PlaceError> {
    crate::tasks::spawn_blocking(move || -> std::io::Result<()> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        temp.persist(&dest).map_err(|e| e.error)?;
        // Make the rename itself durable.
        if let Some(parent) = dest.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })
    .await?
    .map_err(PlaceError::Move)
}
