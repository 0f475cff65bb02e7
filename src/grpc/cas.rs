//! `ContentAddressableStorage` over the mirror's `cas` role: `FindMissingBlobs` and
//! `BatchReadBlobs`, and `BatchUpdateBlobs` with a `push` token. Trees and chunking are not
//! offered: this CAS holds downloaded archives, whole.

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    BatchReadBlobsRequest, BatchReadBlobsResponse, BatchUpdateBlobsRequest,
    BatchUpdateBlobsResponse, FindMissingBlobsRequest, FindMissingBlobsResponse,
    GetChunkMappingRequest, GetChunkMappingResponse, GetTreeRequest, GetTreeResponse,
    RegisterChunkMappingRequest, RegisterChunkMappingResponse, SpliceBlobRequest,
    SpliceBlobResponse, SplitBlobRequest, SplitBlobResponse, batch_read_blobs_response,
    batch_update_blobs_response, content_addressable_storage_server::ContentAddressableStorage,
};
use bazel_remote_apis::google::rpc;
use futures::stream::{BoxStream, StreamExt as _};
use tonic::{Code, Status};

use super::blob::{BlobAddress, address};
use super::fetch::check_digest_function;
use super::{Door, MAX_BATCH_BYTES};
use crate::auth::Action;

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
                    if !self.held(&a) {
                        missing.push(a);
                    }
                }
                // One look at other replicas' records for the whole request, not one per blob.
                if !missing.is_empty() {
                    self.reload().await?;
                    missing.retain(|a| !self.held(a));
                }
                Ok(FindMissingBlobsResponse {
                    missing_blob_digests: missing.iter().map(BlobAddress::digest).collect(),
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
