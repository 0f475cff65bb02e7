//! The object-store facade: the mirror's blobs (`cas`) and its records (`records`), each a
//! role at its own location, chosen by URL. Nothing above this layer imports `object_store`.

mod blobs;
mod deadline;
mod key;
mod local;
mod location;
pub mod probe;

use std::sync::Arc;
use std::time::Duration;

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt as _, PutPayload,
};
use tokio::io::AsyncReadExt as _;

pub use blobs::{BlobStore, PlaceError, Spool};
pub use deadline::{DeadlineExceeded, Deadlines};
pub use key::{Role, StorageKey};
use local::file_blocks;
pub use local::spool_prefix;
pub use location::{Location, S3Settings};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A location could not be parsed or opened.
    #[error("storage location `{location}`: {message}")]
    Location {
        /// The location as configured.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// Two roles were configured at one location.
    #[error(
        "storage roles `{a}` ({a_loc}) and `{b}` ({b_loc}) share a location; give each role its own bucket or prefix"
    )]
    SharedLocation {
        /// First role.
        a: &'static str,
        /// Its location.
        a_loc: String,
        /// Second role.
        b: &'static str,
        /// Its location.
        b_loc: String,
    },
    /// The backend failed.
    #[error("storage backend ({role}): {source}")]
    Backend {
        /// The role whose backend failed.
        role: &'static str,
        /// The error.
        source: object_store::Error,
    },
    /// The backend refuses writes (a read-only or full data folder).
    #[error("storage backend ({role}) refuses writes: {message}")]
    Refused {
        /// The role.
        role: &'static str,
        /// What was refused.
        message: String,
    },
    /// The backend did not answer in time.
    #[error("storage backend ({role}) did not answer within {millis} ms ({which} deadline)")]
    Timeout {
        /// The role.
        role: &'static str,
        /// Which limit ran out: `answer`, `stall` or `probe`.
        which: &'static str,
        /// The limit.
        millis: u64,
    },
}

/// The configured locations of the storage roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageLayout {
    /// Where CAS blobs live.
    pub cas: Location,
    /// Where records live.
    pub records: Location,
    /// Settings for `s3://` locations.
    pub s3: S3Settings,
}

impl StorageLayout {
    /// Checks that no two roles share a location (equal, or one nested in the other).
    ///
    /// # Errors
    /// [`StorageError::SharedLocation`] naming both roles.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.cas.overlaps(&self.records) {
            return Err(StorageError::SharedLocation {
                a: Role::Cas.name(),
                a_loc: self.cas.to_string(),
                b: Role::Records.name(),
                b_loc: self.records.to_string(),
            });
        }
        Ok(())
    }
}

/// The storage facade.
#[derive(Debug, Clone)]
pub struct Storage {
    layout: StorageLayout,
    cas: Arc<dyn ObjectStore>,
    records: Arc<dyn ObjectStore>,
}

impl Storage {
    /// Opens every role (creating local folders), after checking the layout.
    ///
    /// # Errors
    /// [`StorageError`] for shared or unusable locations.
    pub fn open(layout: StorageLayout) -> Result<Self, StorageError> {
        Self::open_with(layout, Deadlines::default())
    }

    /// [`Storage::open`], with `deadlines` on every backend call (a backend that stops
    /// answering fails calls with [`StorageError::Timeout`] instead of holding them).
    ///
    /// # Errors
    /// [`StorageError`] for shared or unusable locations.
    pub fn open_with(layout: StorageLayout, deadlines: Deadlines) -> Result<Self, StorageError> {
        layout.validate()?;
        let wrap = |store: Arc<dyn ObjectStore>| -> Arc<dyn ObjectStore> {
            Arc::new(deadline::DeadlineStore::new(store, deadlines))
        };
        let cas = wrap(layout.cas.open(&layout.s3, deadlines)?);
        let records = wrap(layout.records.open(&layout.s3, deadlines)?);
        Ok(Self {
            layout,
            cas,
            records,
        })
    }

    /// The configured layout.
    #[must_use]
    pub fn layout(&self) -> &StorageLayout {
        &self.layout
    }

    fn store(&self, role: Role) -> &Arc<dyn ObjectStore> {
        match role {
            Role::Cas => &self.cas,
            Role::Records => &self.records,
        }
    }

    fn backend(role: Role) -> impl Fn(object_store::Error) -> StorageError + Send + 'static {
        move |source| match deadline::exceeded(&source) {
            Some(d) => StorageError::Timeout {
                role: role.name(),
                which: d.which,
                millis: d.millis,
            },
            None => StorageError::Backend {
                role: role.name(),
                source,
            },
        }
    }

    /// Writes an object atomically (no reader sees a partial object).
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub async fn put(&self, key: &StorageKey, bytes: Bytes) -> Result<(), StorageError> {
        let role = key.role();
        self.store(role)
            .put(&key.path(), PutPayload::from_bytes(bytes))
            .await
            .map_err(Self::backend(role))?;
        Ok(())
    }

    /// Reads a whole object; `None` when absent.
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub async fn get(&self, key: &StorageKey) -> Result<Option<Bytes>, StorageError> {
        let role = key.role();
        match self.store(role).get(&key.path()).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(Self::backend(role))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Self::backend(role)(e)),
        }
    }

    /// Reads the objects at `keys` (all of one role), in any order, each answered with its
    /// index in `keys` (`None` when absent). From a local folder a few blocking tasks read
    /// the files; elsewhere, 16 requests at a time.
    #[must_use]
    pub fn get_many(
        &self,
        keys: Vec<StorageKey>,
    ) -> BoxStream<'static, (usize, Result<Option<Bytes>, StorageError>)> {
        let local = keys
            .first()
            .is_some_and(|k| self.local_path_of(k).is_some());
        if local {
            return local::read_files(self.clone(), keys);
        }
        let storage = self.clone();
        futures::stream::iter(keys.into_iter().enumerate())
            .map(move |(i, key)| {
                let storage = storage.clone();
                async move { (i, storage.get(&key).await) }
            })
            .buffer_unordered(16)
            .boxed()
    }

    /// Size of an object; `None` when absent.
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub async fn size(&self, key: &StorageKey) -> Result<Option<u64>, StorageError> {
        let role = key.role();
        match self.store(role).head(&key.path()).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Self::backend(role)(e)),
        }
    }

    /// Deletes an object; deleting an absent object succeeds.
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        let role = key.role();
        match self.store(role).delete(&key.path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Self::backend(role)(e)),
        }
    }

    /// Lists the object paths of a role under a `/`-separated prefix, sorted.
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub async fn list(&self, role: Role, prefix: &str) -> Result<Vec<String>, StorageError> {
        Ok(self
            .list_meta(role, prefix)
            .await?
            .into_iter()
            .map(|(path, _, _)| path)
            .collect())
    }

    /// Lists the object paths of a role under `prefix` that sort after `offset` (a full path),
    /// sorted: only what is new since a previous listing, when keys start with their time.
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub async fn list_after(
        &self,
        role: Role,
        prefix: &str,
        offset: &str,
    ) -> Result<Vec<String>, StorageError> {
        let prefix = ObjectPath::from(prefix);
        let listing = self
            .store(role)
            .list_with_offset(Some(&prefix), &ObjectPath::from(offset));
        Ok(Self::collect(role, listing)
            .await?
            .into_iter()
            .map(|(path, _, _)| path)
            .collect())
    }

    /// Lists the objects of a role under a prefix with their size and last modification time,
    /// sorted by path.
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub async fn list_meta(
        &self,
        role: Role,
        prefix: &str,
    ) -> Result<Vec<(String, u64, chrono::DateTime<chrono::Utc>)>, StorageError> {
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        Self::collect(role, self.store(role).list(prefix.as_ref())).await
    }

    async fn collect(
        role: Role,
        listing: BoxStream<'static, object_store::Result<object_store::ObjectMeta>>,
    ) -> Result<Vec<(String, u64, chrono::DateTime<chrono::Utc>)>, StorageError> {
        let mut out: Vec<_> = listing
            .map_ok(|m| (m.location.to_string(), m.size, m.last_modified))
            .try_collect()
            .await
            .map_err(Self::backend(role))?;
        out.sort();
        Ok(out)
    }

    /// Uploads a local file to `key` (no reader sees a partial object): in one put up to
    /// 10 MiB, in parts above; returns the number of bytes written. On failure (a read error,
    /// a part or the completion past its deadline) the upload is aborted; an abort that fails
    /// too is only logged: the parts of an aborted upload are never visible as an object.
    ///
    /// # Errors
    /// [`StorageError::Backend`] or [`StorageError::Timeout`], or an I/O error reading the
    /// file.
    pub async fn put_file(&self, key: &StorageKey, file: &Path) -> Result<u64, StorageError> {
        const PART: usize = 10 << 20;
        let role = key.role();
        let io = |e: std::io::Error| StorageError::Backend {
            role: role.name(),
            source: object_store::Error::Generic {
                store: "local spool",
                source: Box::new(e),
            },
        };
        let mut reader = tokio::fs::File::open(file).await.map_err(io)?;
        let meta = reader.metadata().await.map_err(io)?;
        let len = meta.len();
        // A regular file of known, small size goes up in one put; anything else (larger, or a
        // pipe whose size is not known until its end) in parts.
        if meta.is_file() && len <= PART as u64 {
            let mut all = Vec::with_capacity(usize::try_from(len).unwrap_or(PART));
            reader.read_to_end(&mut all).await.map_err(io)?;
            let total = all.len() as u64;
            self.put(key, Bytes::from(all)).await?;
            return Ok(total);
        }
        let upload = self
            .store(role)
            .put_multipart(&key.path())
            .await
            .map_err(Self::backend(role))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let failed = loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => n,
                Err(e) => break Some(io(e)),
            };
            if let Err(e) = writer.wait_for_capacity(4).await {
                break Some(Self::backend(role)(e));
            }
            writer.write(&buf[..n]);
            total += n as u64;
        };
        if let Some(e) = failed {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, key = %key.path(), "aborting an upload failed");
            }
            return Err(e);
        }
        // `finish` aborts the upload itself when a part or the completion fails.
        writer.finish().await.map_err(Self::backend(role))?;
        Ok(total)
    }

    /// Moves an object within one role (atomic on a filesystem; copy then delete elsewhere).
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub async fn rename(&self, from: &StorageKey, to: &StorageKey) -> Result<(), StorageError> {
        let role = to.role();
        debug_assert_eq!(from.role(), role, "rename within one role");
        self.store(role)
            .rename(&from.path(), &to.path())
            .await
            .map_err(Self::backend(role))
    }

    /// Streams bytes `range` of an object; `None` when absent.
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub async fn get_range(
        &self,
        key: &StorageKey,
        range: Range<u64>,
    ) -> Result<Option<BoxStream<'static, Result<Bytes, StorageError>>>, StorageError> {
        Ok(self.get_range_sized(key, range).await?.map(|(_, s)| s))
    }

    /// [`Storage::get_range`], with the whole object's size as the backend reports it in the
    /// same answer (no second request): a reader of a content-addressed object can tell an
    /// object that grew or shrank from the one it recorded, which the range alone hides.
    ///
    /// # Errors
    /// [`StorageError::Backend`].
    pub async fn get_range_sized(
        &self,
        key: &StorageKey,
        range: Range<u64>,
    ) -> Result<Option<(u64, BoxStream<'static, Result<Bytes, StorageError>>)>, StorageError> {
        let role = key.role();
        let opts = GetOptions::default().with_range(Some(GetRange::Bounded(range)));
        match self.store(role).get_opts(&key.path(), opts).await {
            // object_store streams local files 8 KiB per blocking-thread hop; read them in
            // 1 MiB blocks instead (one hop per verification chunk).
            Ok(GetResult {
                payload: GetResultPayload::File(file, _),
                range,
                meta,
                ..
            }) => Ok(Some((meta.size, file_blocks(file, range, role)))),
            Ok(r) => {
                let size = r.meta.size;
                Ok(Some((
                    size,
                    r.into_stream().map_err(Self::backend(role)).boxed(),
                )))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Self::backend(role)(e)),
        }
    }

    /// Checks that every role's backend answers within `timeout`: a `HEAD` of a key that
    /// need not exist must come back as found or not found, not as an error.
    ///
    /// # Errors
    /// [`StorageError`] for the first role that fails.
    pub async fn check(&self, timeout: Duration) -> Result<(), StorageError> {
        let probe_key = ObjectPath::from("readiness-probe");
        for role in [Role::Cas, Role::Records] {
            let probe = self.store(role).head(&probe_key);
            match tokio::time::timeout(timeout, probe).await {
                Ok(Ok(_) | Err(object_store::Error::NotFound { .. })) => {}
                Ok(Err(e)) => return Err(Self::backend(role)(e)),
                Err(_) => {
                    return Err(StorageError::Timeout {
                        role: role.name(),
                        which: "probe",
                        millis: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Storage {
        Storage::open(StorageLayout {
            cas: Location::parse("memory:///cas").unwrap(),
            records: Location::parse("memory:///records").unwrap(),
            s3: S3Settings::default(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn put_get_list_delete_on_memory() {
        let s = memory();
        let blob = StorageKey::blob("sha256", &"ab".repeat(32));
        s.put(&blob, Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(s.get(&blob).await.unwrap().as_deref(), Some(&b"x"[..]));
        assert_eq!(s.size(&blob).await.unwrap(), Some(1));
        assert_eq!(
            s.list(Role::Cas, "sha256").await.unwrap(),
            [blob.path().to_string()]
        );
        // Roles are apart: the records role does not see the blob.
        assert!(s.list(Role::Records, "").await.unwrap().is_empty());
        s.delete(&blob).await.unwrap();
        assert_eq!(s.get(&blob).await.unwrap(), None);
        s.delete(&blob).await.unwrap();
        s.check(Duration::from_secs(1)).await.unwrap();
    }

    #[test]
    fn shared_locations_are_refused() {
        let same = StorageLayout {
            cas: Location::parse("s3://bucket/gf").unwrap(),
            records: Location::parse("s3://bucket/gf/").unwrap(),
            s3: S3Settings::default(),
        };
        let err = same.validate().unwrap_err().to_string();
        assert!(err.contains("`cas`") && err.contains("`records`"), "{err}");
        let nested = StorageLayout {
            cas: Location::parse("s3://bucket/gf").unwrap(),
            records: Location::parse("s3://bucket/gf/records").unwrap(),
            s3: S3Settings::default(),
        };
        assert!(nested.validate().is_err());
        let apart = StorageLayout {
            cas: Location::parse("s3://bucket/gf/cas").unwrap(),
            records: Location::parse("s3://bucket/gf/cas-records").unwrap(),
            s3: S3Settings::default(),
        };
        apart.validate().unwrap();
        let buckets = StorageLayout {
            cas: Location::parse("s3://a/x").unwrap(),
            records: Location::parse("s3://b/x").unwrap(),
            s3: S3Settings::default(),
        };
        buckets.validate().unwrap();
    }
}
