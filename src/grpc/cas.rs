//! What Bazel asks its `--remote_cache` for, answered over the mirror's `cas` role: blob reads
//! (`ByteStream/Read`, `BatchReadBlobs`, `FindMissingBlobs`), writes with a `push` token
//! (`ByteStream/Write`, `BatchUpdateBlobs`), `Capabilities`, and an `ActionCache` that says
//! it is not one: build caches and the mirror are separate storage authorities by design.
//!
//! Every byte read is verified chunk by chunk as `GET /cas/...` verifies it; a written blob
//! must hash to its digest before it is stored.

use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionCacheUpdateCapabilities, ActionResult, BatchReadBlobsRequest, BatchReadBlobsResponse,
    BatchUpdateBlobsRequest, BatchUpdateBlobsResponse, CacheCapabilities, Digest,
    FindMissingBlobsRequest, FindMissingBlobsResponse, GetActionResultRequest,
    GetCapabilitiesRequest, GetChunkMappingRequest, GetChunkMappingResponse, GetTreeRequest,
    GetTreeResponse, RegisterChunkMappingRequest, RegisterChunkMappingResponse, ServerCapabilities,
    SpliceBlobRequest, SpliceBlobResponse, SplitBlobRequest, SplitBlobResponse,
    UpdateActionResultRequest, action_cache_server::ActionCache, batch_read_blobs_response,
    batch_update_blobs_response, capabilities_server::Capabilities,
    content_addressable_storage_server::ContentAddressableStorage, digest_function,
    symlink_absolute_path_strategy,
};
use bazel_remote_apis::build::bazel::semver::SemVer;
use bazel_remote_apis::google::bytestream::{
    QueryWriteStatusRequest, QueryWriteStatusResponse, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse, byte_stream_server::ByteStream,
};
use bazel_remote_apis::google::rpc;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt as _};
use sha2::Digest as _;
use tonic::{Code, Status};

use super::fetch::check_digest_function;
use super::{Caller, Door, MAX_BATCH_BYTES, READ_CHUNK_BYTES, status_of};
use crate::auth::Action;
use crate::mirror::{ByteRange, MirrorError};
use crate::registry::Integrity;

/// The sha256 of no bytes: the empty blob is always present and never stored.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A blob's address: lowercase hex sha256 and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BlobAddress {
    pub(super) sha256: String,
    pub(super) size: u64,
}

impl BlobAddress {
    fn is_empty_blob(&self) -> bool {
        self.size == 0 && self.sha256 == EMPTY_SHA256
    }

    pub(super) fn integrity(&self) -> Integrity {
        let raw = hex::decode(&self.sha256).unwrap_or_default();
        Integrity::of_digest(crate::registry::Algorithm::Sha256, raw)
    }

    fn digest(&self) -> Digest {
        Digest {
            hash: self.sha256.clone(),
            size_bytes: i64::try_from(self.size).unwrap_or(i64::MAX),
        }
    }
}

/// A digest as a request gives it; `field` names it in the error.
pub(super) fn address(digest: Option<&Digest>, field: &str) -> Result<BlobAddress, Status> {
    let d = digest.ok_or_else(|| Status::invalid_argument(format!("{field}: missing")))?;
    parse_address(&d.hash, &d.size_bytes.to_string(), field)
}

fn parse_address(hash: &str, size: &str, field: &str) -> Result<BlobAddress, Status> {
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Status::invalid_argument(format!(
            "{field}: `{hash}` is not a sha256 (64 lowercase hex characters)"
        )));
    }
    let size = size.parse::<u64>().map_err(|_| {
        Status::invalid_argument(format!("{field}: size `{size}` is not a byte count"))
    })?;
    Ok(BlobAddress {
        sha256: hash.to_owned(),
        size,
    })
}

/// The blob a `ByteStream` resource names: `[{instance}/]blobs/{hash}/{size}` for a read,
/// `[{instance}/]uploads/{uuid}/blobs/{hash}/{size}[/{anything}]` for a write.
pub(super) fn resource(name: &str, write: bool) -> Result<BlobAddress, Status> {
    let parts: Vec<&str> = name.split('/').collect();
    let field = "resource_name";
    if parts.contains(&"compressed-blobs") {
        return Err(Status::invalid_argument(format!(
            "{field} `{name}`: compressed-blobs are not offered (Capabilities lists no \
             compressor); ask for blobs/{{hash}}/{{size}}"
        )));
    }
    let shape = if write {
        "[{instance}/]uploads/{uuid}/blobs/{hash}/{size}"
    } else {
        "[{instance}/]blobs/{hash}/{size}"
    };
    let found = parts.iter().enumerate().find_map(|(i, p)| {
        let ok = *p == "blobs"
            && parts.len() >= i + 3
            && (write || parts.len() == i + 3)
            && (!write || (i >= 2 && parts[i - 2] == "uploads"));
        ok.then(|| (parts[i + 1], parts[i + 2]))
    });
    let (hash, size) = found.ok_or_else(|| {
        Status::invalid_argument(format!("{field} `{name}` is not of the shape {shape}"))
    })?;
    parse_address(hash, size, field)
}

impl Door {
    /// The size of the available blob at `address`, looking at other replicas' records once
    /// before saying it is missing; `Ok(None)` when it is not there (or not at that size).
    async fn present(&self, address: &BlobAddress) -> Result<bool, Status> {
        if address.is_empty_blob() {
            return Ok(true);
        }
        let mirror = &self.app.mirror;
        let found = |m: &crate::mirror::Mirror| {
            m.stored(&address.integrity())
                .is_some_and(|(_, size)| size == address.size)
        };
        if found(mirror) {
            return Ok(true);
        }
        mirror.reload_records().await.map_err(|e| status_of(&e))?;
        Ok(found(mirror))
    }

    /// The verified bytes of `address` from `offset`, at most `limit` (0: to the end).
    async fn read_blob(
        &self,
        address: &BlobAddress,
        offset: u64,
        limit: u64,
    ) -> Result<BoxStream<'static, Result<Bytes, Status>>, Status> {
        if offset > address.size {
            return Err(Status::out_of_range(format!(
                "read_offset {offset} is past the end of the {} bytes of {}",
                address.size, address.sha256
            )));
        }
        if address.is_empty_blob() || offset == address.size {
            return Ok(stream::empty().boxed());
        }
        let range = match (offset, limit) {
            (0, 0) => None,
            (o, 0) => Some(ByteRange::From(o)),
            (o, l) => Some(ByteRange::FromTo(o, o.saturating_add(l - 1))),
        };
        let blob = self
            .app
            .mirror
            .get_digest("sha256", &address.sha256, range)
            .await
            .map_err(|e| status_of(&e))?;
        if blob.size.is_some_and(|s| s != address.size) {
            return Err(Status::not_found(format!(
                "the CAS holds {} with {} bytes, not {}",
                address.sha256,
                blob.size.unwrap_or_default(),
                address.size
            )));
        }
        let sha = address.sha256.clone();
        Ok(blob
            .body
            .flat_map(move |item| {
                let pieces: Vec<Result<Bytes, Status>> = match item {
                    Ok(mut bytes) => {
                        let mut out = Vec::with_capacity(bytes.len() / READ_CHUNK_BYTES + 1);
                        while bytes.len() > READ_CHUNK_BYTES {
                            out.push(Ok(bytes.split_to(READ_CHUNK_BYTES)));
                        }
                        out.push(Ok(bytes));
                        out
                    }
                    // Cut off: a chunk failed verification (the blob is quarantined now) or
                    // the store failed. Never an OK end after a wrong or missing byte.
                    Err(e) => vec![Err(Status::unavailable(format!(
                        "the read of {sha} was cut off: {e}"
                    )))],
                };
                stream::iter(pieces)
            })
            .boxed())
    }

    /// Stores `data` as the blob at `address` after checking it hashes to it.
    async fn store(
        &self,
        caller: &Caller,
        address: &BlobAddress,
        data: Vec<u8>,
        via: &str,
    ) -> Result<(), Status> {
        if data.len() as u64 != address.size {
            return Err(Status::invalid_argument(format!(
                "{}: {} bytes were sent, the digest says {}",
                address.sha256,
                data.len(),
                address.size
            )));
        }
        let actual = hex::encode(sha2::Sha256::digest(&data));
        if actual != address.sha256 {
            return Err(Status::invalid_argument(format!(
                "the bytes sent hash to sha256 {actual}, not to the digest {}; nothing was stored",
                address.sha256
            )));
        }
        if address.is_empty_blob() {
            return Ok(());
        }
        let label = format!("{via} by {}", caller.principal.name);
        self.app
            .mirror
            .ingest_bytes(Arc::new(data), &label, &caller.requested_by())
            .await
            .map(|_| ())
            .map_err(|e| match e {
                MirrorError::BadRequest(m) => Status::invalid_argument(m),
                e => status_of(&e),
            })
    }
}

fn rpc_status(code: Code, message: impl Into<String>) -> rpc::Status {
    rpc::Status {
        code: code as i32,
        message: message.into(),
        details: Vec::new(),
    }
}

#[tonic::async_trait]
impl ContentAddressableStorage for Door {
    async fn find_missing_blobs(
        &self,
        request: tonic::Request<FindMissingBlobsRequest>,
    ) -> Result<tonic::Response<FindMissingBlobsResponse>, Status> {
        self.call(
            "ContentAddressableStorage/FindMissingBlobs",
            Action::Read,
            request,
            |_, req| async move {
                check_digest_function(req.digest_function, "digest_function")?;
                let mut missing = Vec::new();
                for (i, d) in req.blob_digests.iter().enumerate() {
                    let a = address(Some(d), &format!("blob_digests[{i}]"))?;
                    if !self.present(&a).await? {
                        missing.push(a.digest());
                    }
                }
                Ok(FindMissingBlobsResponse {
                    missing_blob_digests: missing,
                })
            },
        )
        .await
    }

    async fn batch_update_blobs(
        &self,
        request: tonic::Request<BatchUpdateBlobsRequest>,
    ) -> Result<tonic::Response<BatchUpdateBlobsResponse>, Status> {
        self.call(
            "ContentAddressableStorage/BatchUpdateBlobs",
            Action::Push,
            request,
            |caller, req| async move {
                check_digest_function(req.digest_function, "digest_function")?;
                let total: usize = req.requests.iter().map(|r| r.data.len()).sum();
                if total > MAX_BATCH_BYTES {
                    return Err(Status::invalid_argument(format!(
                        "requests: {total} bytes in one batch, over the {MAX_BATCH_BYTES} \
                         Capabilities announces; use ByteStream/Write"
                    )));
                }
                let mut responses = Vec::new();
                for (i, r) in req.requests.into_iter().enumerate() {
                    let field = format!("requests[{i}].digest");
                    let status = match address(r.digest.as_ref(), &field) {
                        Err(s) => rpc_status(s.code(), s.message()),
                        Ok(_) if r.compressor != 0 => rpc_status(
                            Code::InvalidArgument,
                            format!("requests[{i}].compressor: only IDENTITY is offered"),
                        ),
                        Ok(a) => match self.store(&caller, &a, r.data, "BatchUpdateBlobs").await {
                            Ok(()) => rpc_status(Code::Ok, ""),
                            Err(s) => rpc_status(s.code(), s.message()),
                        },
                    };
                    responses.push(batch_update_blobs_response::Response {
                        digest: r.digest,
                        status: Some(status),
                    });
                }
                Ok(BatchUpdateBlobsResponse { responses })
            },
        )
        .await
    }

    async fn batch_read_blobs(
        &self,
        request: tonic::Request<BatchReadBlobsRequest>,
    ) -> Result<tonic::Response<BatchReadBlobsResponse>, Status> {
        self.call(
            "ContentAddressableStorage/BatchReadBlobs",
            Action::Read,
            request,
            |_, req| async move {
                check_digest_function(req.digest_function, "digest_function")?;
                let mut addresses = Vec::new();
                for (i, d) in req.digests.iter().enumerate() {
                    addresses.push(address(Some(d), &format!("digests[{i}]"))?);
                }
                let total: u64 = addresses.iter().map(|a| a.size).sum();
                if total > MAX_BATCH_BYTES as u64 {
                    return Err(Status::invalid_argument(format!(
                        "digests: {total} bytes in one batch, over the {MAX_BATCH_BYTES} \
                         Capabilities announces; use ByteStream/Read"
                    )));
                }
                let mut responses = Vec::new();
                for a in addresses {
                    let read = async {
                        let mut body = self.read_blob(&a, 0, 0).await?;
                        let mut data = Vec::with_capacity(usize::try_from(a.size).unwrap_or(0));
                        while let Some(piece) = body.next().await {
                            data.extend_from_slice(&piece?);
                        }
                        Ok::<_, Status>(data)
                    };
                    let (data, status) = match read.await {
                        Ok(data) => (data, rpc_status(Code::Ok, "")),
                        Err(s) => (Vec::new(), rpc_status(s.code(), s.message())),
                    };
                    responses.push(batch_read_blobs_response::Response {
                        digest: Some(a.digest()),
                        data,
                        compressor: 0,
                        status: Some(status),
                    });
                }
                Ok(BatchReadBlobsResponse { responses })
            },
        )
        .await
    }

    type GetTreeStream = BoxStream<'static, Result<GetTreeResponse, Status>>;

    async fn get_tree(
        &self,
        request: tonic::Request<GetTreeRequest>,
    ) -> Result<tonic::Response<Self::GetTreeStream>, Status> {
        self.call(
            "ContentAddressableStorage/GetTree",
            Action::Read,
            request,
            |_, _| async { Err(not_offered("GetTree")) },
        )
        .await
    }

    async fn split_blob(
        &self,
        request: tonic::Request<SplitBlobRequest>,
    ) -> Result<tonic::Response<SplitBlobResponse>, Status> {
        self.call(
            "ContentAddressableStorage/SplitBlob",
            Action::Read,
            request,
            |_, _| async { Err(not_offered("SplitBlob")) },
        )
        .await
    }

    async fn splice_blob(
        &self,
        request: tonic::Request<SpliceBlobRequest>,
    ) -> Result<tonic::Response<SpliceBlobResponse>, Status> {
        self.call(
            "ContentAddressableStorage/SpliceBlob",
            Action::Push,
            request,
            |_, _| async { Err(not_offered("SpliceBlob")) },
        )
        .await
    }

    type GetChunkMappingStream = BoxStream<'static, Result<GetChunkMappingResponse, Status>>;

    async fn get_chunk_mapping(
        &self,
        request: tonic::Request<GetChunkMappingRequest>,
    ) -> Result<tonic::Response<Self::GetChunkMappingStream>, Status> {
        self.call(
            "ContentAddressableStorage/GetChunkMapping",
            Action::Read,
            request,
            |_, _| async { Err(not_offered("GetChunkMapping")) },
        )
        .await
    }

    async fn register_chunk_mapping(
        &self,
        request: tonic::Request<tonic::Streaming<RegisterChunkMappingRequest>>,
    ) -> Result<tonic::Response<RegisterChunkMappingResponse>, Status> {
        self.call(
            "ContentAddressableStorage/RegisterChunkMapping",
            Action::Push,
            request,
            |_, _| async { Err(not_offered("RegisterChunkMapping")) },
        )
        .await
    }
}

/// `UNIMPLEMENTED` for a CAS method that holds directory trees or chunked blobs: this CAS holds
/// downloads, whole.
fn not_offered(method: &str) -> Status {
    Status::unimplemented(format!(
        "{method} is not offered: this CAS holds downloaded archives, whole (Capabilities \
         announces neither trees nor chunking)"
    ))
}

#[tonic::async_trait]
impl ByteStream for Door {
    type ReadStream = BoxStream<'static, Result<ReadResponse, Status>>;

    async fn read(
        &self,
        request: tonic::Request<ReadRequest>,
    ) -> Result<tonic::Response<Self::ReadStream>, Status> {
        self.call(
            "ByteStream/Read",
            Action::Read,
            request,
            |_, req| async move {
                let a = resource(&req.resource_name, false)?;
                let offset = u64::try_from(req.read_offset).map_err(|_| {
                    Status::out_of_range(format!("read_offset: {} is negative", req.read_offset))
                })?;
                let limit = u64::try_from(req.read_limit).map_err(|_| {
                    Status::invalid_argument(format!("read_limit: {} is negative", req.read_limit))
                })?;
                if !a.is_empty_blob() && !self.present(&a).await? {
                    return Err(Status::not_found(format!(
                        "no blob {}/{} in the CAS (FetchBlob stores archives there)",
                        a.sha256, a.size
                    )));
                }
                let body = self.read_blob(&a, offset, limit).await?;
                Ok(body
                    .map(|piece| {
                        piece.map(|data| ReadResponse {
                            data: data.to_vec(),
                        })
                    })
                    .boxed())
            },
        )
        .await
    }

    async fn write(
        &self,
        request: tonic::Request<tonic::Streaming<WriteRequest>>,
    ) -> Result<tonic::Response<WriteResponse>, Status> {
        self.call(
            "ByteStream/Write",
            Action::Push,
            request,
            |caller, mut messages| async move {
                let mut target: Option<BlobAddress> = None;
                let mut data = Vec::new();
                let max = self.app.mirror.policy().max_blob_bytes;
                loop {
                    let Some(msg) = messages.message().await? else {
                        return Err(Status::invalid_argument(
                            "the stream ended before a message with finish_write",
                        ));
                    };
                    if target.is_none() {
                        let a = resource(&msg.resource_name, true)?;
                        if a.size > max {
                            return Err(Status::invalid_argument(format!(
                                "resource_name: {} bytes, over the mirror's max_blob_bytes ({max})",
                                a.size
                            )));
                        }
                        if self.present(&a).await? {
                            // Already stored: the spec lets the write end here.
                            return Ok(WriteResponse {
                                committed_size: i64::try_from(a.size).unwrap_or(i64::MAX),
                            });
                        }
                        data.reserve(usize::try_from(a.size).unwrap_or(0));
                        target = Some(a);
                    }
                    let Some(a) = &target else {
                        unreachable!("set above")
                    };
                    if u64::try_from(msg.write_offset).ok() != Some(data.len() as u64) {
                        return Err(Status::invalid_argument(format!(
                            "write_offset: {} where {} bytes were received; writes here are \
                             not resumable, start again from 0",
                            msg.write_offset,
                            data.len()
                        )));
                    }
                    if data.len() as u64 + msg.data.len() as u64 > a.size {
                        return Err(Status::invalid_argument(format!(
                            "more bytes than the {} of resource_name",
                            a.size
                        )));
                    }
                    data.extend_from_slice(&msg.data);
                    if msg.finish_write {
                        let committed = data.len();
                        self.store(&caller, a, data, "ByteStream/Write").await?;
                        return Ok(WriteResponse {
                            committed_size: i64::try_from(committed).unwrap_or(i64::MAX),
                        });
                    }
                }
            },
        )
        .await
    }

    async fn query_write_status(
        &self,
        request: tonic::Request<QueryWriteStatusRequest>,
    ) -> Result<tonic::Response<QueryWriteStatusResponse>, Status> {
        self.call(
            "ByteStream/QueryWriteStatus",
            Action::Push,
            request,
            |_, req| async move {
                let a = resource(&req.resource_name, true)?;
                if self.present(&a).await? {
                    return Ok(QueryWriteStatusResponse {
                        committed_size: i64::try_from(a.size).unwrap_or(i64::MAX),
                        complete: true,
                    });
                }
                Err(Status::not_found(
                    "no write of that resource is held: writes here are not resumable, \
                     start again from offset 0",
                ))
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl Capabilities for Door {
    async fn get_capabilities(
        &self,
        request: tonic::Request<GetCapabilitiesRequest>,
    ) -> Result<tonic::Response<ServerCapabilities>, Status> {
        let max_blob = self.app.mirror.policy().max_blob_bytes;
        self.call(
            "Capabilities/GetCapabilities",
            Action::Read,
            request,
            |_, _| async move {
                let semver = |minor| SemVer {
                    major: 2,
                    minor,
                    patch: 0,
                    prerelease: String::new(),
                };
                Ok(ServerCapabilities {
                    cache_capabilities: Some(CacheCapabilities {
                        digest_functions: vec![digest_function::Value::Sha256 as i32],
                        action_cache_update_capabilities: Some(ActionCacheUpdateCapabilities {
                            update_enabled: false,
                        }),
                        max_batch_total_size_bytes: MAX_BATCH_BYTES as i64,
                        symlink_absolute_path_strategy:
                            symlink_absolute_path_strategy::Value::Disallowed as i32,
                        max_cas_blob_size_bytes: i64::try_from(max_blob).unwrap_or(i64::MAX),
                        ..CacheCapabilities::default()
                    }),
                    execution_capabilities: None,
                    deprecated_api_version: None,
                    low_api_version: Some(semver(0)),
                    high_api_version: Some(semver(3)),
                })
            },
        )
        .await
    }
}

/// Why the action cache answers nothing: one sentence for both of its methods.
const NOT_AN_ACTION_CACHE: &str = "gf-registry is not an action cache: it serves downloads \
     (the Remote Asset API) and their blobs, and keeps build results out of the mirror's trust, \
     retention and eviction rules; point --remote_cache at a build cache to share action \
     results, or pass --noremote_upload_local_results";

#[tonic::async_trait]
impl ActionCache for Door {
    async fn get_action_result(
        &self,
        request: tonic::Request<GetActionResultRequest>,
    ) -> Result<tonic::Response<ActionResult>, Status> {
        self.call(
            "ActionCache/GetActionResult",
            Action::Read,
            request,
            |_, _| async { Err(Status::not_found(NOT_AN_ACTION_CACHE)) },
        )
        .await
    }

    async fn update_action_result(
        &self,
        request: tonic::Request<UpdateActionResultRequest>,
    ) -> Result<tonic::Response<ActionResult>, Status> {
        self.call(
            "ActionCache/UpdateActionResult",
            Action::Read,
            request,
            |_, _| async { Err(Status::permission_denied(NOT_AN_ACTION_CACHE)) },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn read_resources_name_a_blob() {
        for name in [
            format!("blobs/{H}/3"),
            format!("main/blobs/{H}/3"),
            format!("a/b/blobs/{H}/3"),
        ] {
            let a = resource(&name, false).expect(&name);
            assert_eq!((a.sha256.as_str(), a.size), (H, 3));
        }
    }

    #[test]
    fn write_resources_name_an_upload() {
        for name in [
            format!("uploads/u-1/blobs/{H}/3"),
            format!("main/uploads/u-1/blobs/{H}/3"),
            format!("uploads/u-1/blobs/{H}/3/some/metadata"),
        ] {
            let a = resource(&name, true).expect(&name);
            assert_eq!((a.sha256.as_str(), a.size), (H, 3));
        }
        assert!(resource(&format!("blobs/{H}/3"), true).is_err());
    }

    #[test]
    fn bad_resources_are_named() {
        for (name, needle) in [
            (format!("blobs/{H}"), "is not of the shape"),
            (format!("blobs/{H}/3/extra"), "is not of the shape"),
            (format!("blobs/{}/3", H.to_uppercase()), "not a sha256"),
            ("blobs/abc/3".to_owned(), "not a sha256"),
            (format!("blobs/{H}/-1"), "not a byte count"),
            (format!("compressed-blobs/zstd/{H}/3"), "compressed-blobs"),
        ] {
            let e = resource(&name, false).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{name}");
            assert!(e.message().contains("resource_name"), "{}", e.message());
            assert!(e.message().contains(needle), "{name}: {}", e.message());
        }
    }

    #[test]
    fn digests_name_their_field() {
        let e = address(None, "digests[2]").unwrap_err();
        assert_eq!(e.message(), "digests[2]: missing");
        let d = Digest {
            hash: H.to_owned(),
            size_bytes: -4,
        };
        let e = address(Some(&d), "blob_digests[0]").unwrap_err();
        assert!(
            e.message().starts_with("blob_digests[0]: size"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn the_empty_blob_is_known() {
        let a = parse_address(EMPTY_SHA256, "0", "f").expect("empty");
        assert!(a.is_empty_blob());
        assert_eq!(a.integrity().hex(), EMPTY_SHA256);
    }
}
