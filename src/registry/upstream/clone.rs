//! Upstreams read from a local clone of their tree (the BCR's own advice for mirroring is to
//! clone it): a directory as it is on disk, or a git repository at the commit its ref points
//! to when the file is asked for, so an operator's `git fetch` is seen at once. The
//! upstream's URL stays its identity, and every pinning rule applies as over HTTP: a file
//! changed in the clone is drift, a file removed from it stays served from its pin.

use bytes::Bytes;

use super::{MAX_FILE_BYTES, Upstreams};
use crate::source::RegistrySource;
use crate::upstream::UpstreamError;

impl Upstreams {
    /// Reads `url` (under `base`) from `source`; an absent file is the upstream's 404.
    pub(super) async fn read_clone(
        &self,
        source: &RegistrySource,
        base: &str,
        url: &str,
    ) -> Result<Bytes, UpstreamError> {
        let failed = |message: String| UpstreamError::Transport {
            url: url.to_owned(),
            message,
        };
        let rel = url
            .strip_prefix(base)
            .ok_or_else(|| failed(format!("not under {base}")))?
            .to_owned();
        let source = source.clone();
        let what = source.describe();
        let read = crate::tasks::spawn_blocking(move || source.current()?.read(&rel))
            .await
            .map_err(|e| failed(format!("reading the clone ({what}): {e}")))?;
        match read {
            Ok(Some(bytes)) if bytes.len() > MAX_FILE_BYTES => {
                Err(failed(format!("larger than {MAX_FILE_BYTES} bytes")))
            }
            Ok(Some(bytes)) => Ok(Bytes::from(bytes)),
            Ok(None) => Err(UpstreamError::NotFound {
                url: url.to_owned(),
                status: 404,
            }),
            Err(e) => Err(failed(format!("reading the clone ({what}): {e}"))),
        }
    }
}
