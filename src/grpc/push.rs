//! `build.bazel.remote.asset.v1.Push`: binds URLs to a blob already in the CAS, as first-seen
//! pins (scope `push`), for CI that pre-seeds the mirror.

use bazel_remote_apis::build::bazel::remote::asset::v1::{
    PushBlobRequest, PushBlobResponse, PushDirectoryRequest, PushDirectoryResponse,
    push_server::Push,
};
use tonic::Status;
use url::Url;

use super::fetch::{check_digest_function, qualifiers};
use super::{Caller, Door, status_of};
use crate::auth::Action;

impl Door {
    async fn push_blob_inner(
        &self,
        caller: Caller,
        req: PushBlobRequest,
    ) -> Result<PushBlobResponse, Status> {
        check_digest_function(req.digest_function, "digest_function")?;
        if req.uris.is_empty() {
            return Err(Status::invalid_argument(
                "uris: empty; give at least one URI to bind",
            ));
        }
        let mut urls = Vec::new();
        for (i, uri) in req.uris.iter().enumerate() {
            match Url::parse(uri) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => urls.push(url),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "uris[{i}]: `{uri}` is not an http or https URL"
                    )));
                }
            }
        }
        let q = qualifiers(&req.qualifiers)?;
        let blob = super::blob::address(req.blob_digest.as_ref(), "blob_digest")?;
        let mirror = &self.app.mirror;
        let stored = mirror.stored(&blob.integrity());
        if stored.as_ref().is_some_and(|(_, size)| *size != blob.size) {
            return Err(Status::not_found(format!(
                "blob_digest: the CAS holds {} with another size than {}",
                blob.sha256, blob.size
            )));
        }
        // The CAS must hold it (any replica's writes count); the checksum, when given, must
        // be the blob's: a push is trusted with the URLs, not with the bytes.
        if !q.checksums.is_empty()
            && !q
                .checksums
                .iter()
                .any(|c| mirror.stored(c).is_some_and(|(sha, _)| sha == blob.sha256))
        {
            return Err(Status::invalid_argument(format!(
                "checksum.sri: no value matches blob {} (or the blob is not stored)",
                blob.sha256
            )));
        }
        mirror
            .bind_urls(&urls, &blob.sha256, &caller.requested_by())
            .await
            .map_err(|e| status_of(&e))?;
        Ok(PushBlobResponse {})
    }
}

#[tonic::async_trait]
impl Push for Door {
    async fn push_blob(
        &self,
        request: tonic::Request<PushBlobRequest>,
    ) -> Result<tonic::Response<PushBlobResponse>, Status> {
        self.call("Push/PushBlob", Action::Push, request, |caller, req| {
            self.push_blob_inner(caller, req)
        })
        .await
    }

    async fn push_directory(
        &self,
        request: tonic::Request<PushDirectoryRequest>,
    ) -> Result<tonic::Response<PushDirectoryResponse>, Status> {
        self.call("Push/PushDirectory", Action::Push, request, |_, _| async {
            Err(Status::unimplemented(
                "PushDirectory is not offered: this server keeps archives as blobs (use PushBlob)",
            ))
        })
        .await
    }
}
