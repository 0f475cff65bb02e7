//! `google.bytestream.ByteStream` over the mirror's `cas` role: `Read` (with `read_offset` and
//! `read_limit`, verified as `GET /cas/...` is), and `Write` with a `push` token.

use bazel_remote_apis::google::bytestream::{
    QueryWriteStatusRequest, QueryWriteStatusResponse, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse, byte_stream_server::ByteStream,
};
use futures::stream::{BoxStream, StreamExt as _};
use tonic::Status;

use super::Door;
use super::blob::{BlobAddress, resource};
use crate::auth::Action;

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
