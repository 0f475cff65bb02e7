//! Storage locations: object-store URLs (`file://`, `memory://`, `s3://`, `gs://`, `az://`)
//! or plain local paths.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use super::{Deadlines, StorageError};

/// Settings for object-store locations beyond the standard environment variables (`AWS_*`,
/// `AZURE_*`, `GOOGLE_*`, which object_store reads itself): object_store configuration keys of
/// the location's backend, such as `endpoint`, `region`, `allow_http`, `access_key_id`,
/// `secret_access_key` for `s3://`, or `account_name`, `access_key`, `endpoint` for `az://`.
/// A key the backend does not know is an error naming it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// `(key, value)` pairs, applied after the environment.
    pub options: Vec<(String, String)>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("S3Settings").field("keys", &keys).finish()
    }
}

/// A normalized storage location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    url: Url,
}

const SCHEMES: &[&str] = &["file", "memory", "s3", "gs", "az", "azure", "abfs", "abfss"];

impl Location {
    /// Parses a URL, or a plain path (relative paths resolve against the working directory).
    ///
    /// # Errors
    /// [`StorageError::Location`] for unknown schemes, relative `file://` paths and the like.
    pub fn parse(s: &str) -> Result<Self, StorageError> {
        let err = |message: &str| StorageError::Location {
            location: s.to_owned(),
            message: message.to_owned(),
        };
        if s.is_empty() {
            return Err(err("is empty"));
        }
        let url = if s.contains("://") {
            let url = Url::parse(s).map_err(|e| err(&format!("not a URL: {e}")))?;
            if !SCHEMES.contains(&url.scheme()) {
                return Err(err(
                    "unsupported scheme; use file://, memory://, s3://, gs:// or az://",
                ));
            }
            if matches!(url.scheme(), "s3" | "gs") && url.host_str().is_none_or(str::is_empty) {
                return Err(err("names no bucket"));
            }
            if url.scheme() == "file"
                && url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(err("file:// URLs take an absolute path: file:///abs/path"));
            }
            url
        } else {
            let path =
                std::path::absolute(s).map_err(|e| err(&format!("cannot resolve path: {e}")))?;
            Url::from_directory_path(&path).map_err(|()| err("cannot be made into a file URL"))?
        };
        Ok(Self::from_url(url))
    }

    fn from_url(mut url: Url) -> Self {
        let trimmed = url.path().trim_end_matches('/').to_owned();
        url.set_path(&trimmed);
        url.set_query(None);
        url.set_fragment(None);
        Self { url }
    }

    /// A location one level below this one.
    #[must_use]
    pub fn join(&self, segment: &str) -> Self {
        let mut url = self.url.clone();
        let path = format!("{}/{segment}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        Self::from_url(url)
    }

    /// The local folder, for `file://` locations.
    #[must_use]
    pub fn local_path(&self) -> Option<PathBuf> {
        if self.url.scheme() == "file" {
            let mut u = self.url.clone();
            u.set_host(None).ok()?;
            u.to_file_path()
                .ok()
                .or_else(|| Some(PathBuf::from(self.url.path())))
        } else {
            None
        }
    }

    fn segments(&self) -> Vec<&str> {
        self.url
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Whether two locations are the same or one is nested in the other.
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        if self.url.scheme() != other.url.scheme() || self.url.host_str() != other.url.host_str() {
            return false;
        }
        let (a, b) = (self.segments(), other.segments());
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    }

    /// Whether this location overlaps a local folder (for keeping roles off the registry).
    #[must_use]
    pub fn overlaps_dir(&self, dir: &Path) -> bool {
        let Some(mine) = self.local_path() else {
            return false;
        };
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let (a, b) = (canon(&mine), canon(dir));
        a.starts_with(&b) || b.starts_with(&a)
    }

    /// Opens the object store for this location, rooted at it. A cloud client connects
    /// within the answer deadline, gives up on a read that pauses for the stall deadline, and
    /// retries (3 times) only within 3 stall deadlines, not object_store's 3 minutes.
    ///
    /// # Errors
    /// [`StorageError::Location`] when the backend cannot be configured (or a local folder
    /// cannot be created).
    pub fn open(
        &self,
        s3: &S3Settings,
        deadlines: Deadlines,
    ) -> Result<Arc<dyn ObjectStore>, StorageError> {
        let err = |e: &dyn fmt::Display| StorageError::Location {
            location: self.to_string(),
            message: e.to_string(),
        };
        let prefix = self.url.path().trim_start_matches('/').to_owned();
        let bucket_url = {
            let mut u = self.url.clone();
            u.set_path("");
            u.to_string()
        };
        let client = ClientOptions::new()
            .with_connect_timeout(deadlines.answer)
            .with_read_timeout(deadlines.stall);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: deadlines.stall / 4,
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: deadlines.stall * 3,
        };
        let store: Arc<dyn ObjectStore> = match self.url.scheme() {
            "file" => {
                let dir = self.local_path().ok_or_else(|| err(&"not a local path"))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| err(&format!("cannot create {}: {e}", dir.display())))?;
                return Ok(Arc::new(
                    LocalFileSystem::new_with_prefix(&dir).map_err(|e| err(&e))?,
                ));
            }
            "memory" => return Ok(Arc::new(InMemory::new())),
            "s3" => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_url(&bucket_url)
                    .with_client_options(client)
                    .with_retry(retry);
                for (key, value) in &s3.options {
                    let key: AmazonS3ConfigKey = key.parse().map_err(|e| err(&e))?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(builder.build().map_err(|e| err(&e))?)
            }
            "gs" => {
                let mut builder = GoogleCloudStorageBuilder::from_env()
                    .with_url(&bucket_url)
                    .with_client_options(client)
                    .with_retry(retry);
                for (key, value) in &s3.options {
                    let key: GoogleConfigKey = key.parse().map_err(|e| err(&e))?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(builder.build().map_err(|e| err(&e))?)
            }
            _ => {
                let mut builder = MicrosoftAzureBuilder::from_env()
                    .with_url(&bucket_url)
                    .with_client_options(client)
                    .with_retry(retry);
                for (key, value) in &s3.options {
                    let key: AzureConfigKey = key.parse().map_err(|e| err(&e))?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(builder.build().map_err(|e| err(&e))?)
            }
        };
        if prefix.is_empty() {
            Ok(store)
        } else {
            Ok(Arc::new(PrefixStore::new(store, prefix.as_str())))
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(
            Location::parse("s3://b/p/").unwrap().to_string(),
            "s3://b/p"
        );
        assert_eq!(
            Location::parse("s3://b/p").unwrap().join("cas").to_string(),
            "s3://b/p/cas"
        );
        assert_eq!(
            Location::parse("memory://")
                .unwrap()
                .join("cas")
                .to_string(),
            "memory:///cas"
        );
        let local = Location::parse("/tmp/x/").unwrap();
        assert_eq!(local.to_string(), "file:///tmp/x");
        assert_eq!(local.local_path().unwrap(), PathBuf::from("/tmp/x"));
        assert!(Location::parse("ftp://x/y").is_err());
        assert!(Location::parse("s3:///nobucket").is_err());
        assert!(Location::parse("").is_err());
    }

    #[test]
    fn cloud_backends_configure_without_network() {
        for url in [
            "s3://bucket/prefix",
            "gs://bucket/prefix",
            "az://container/prefix",
        ] {
            let loc = Location::parse(url).unwrap();
            // Builders only fail on missing mandatory settings; azure needs an account name.
            if url.starts_with("az") {
                continue;
            }
            loc.open(&S3Settings::default(), Deadlines::default())
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }
}
