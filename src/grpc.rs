//! The gRPC edge, beside the HTTP one: Bazel's `--experimental_remote_downloader` door.
//!
//! Bazel sends `build.bazel.remote.asset.v1.Fetch/FetchBlob` for every download, then reads the
//! blob it names over `google.bytestream.ByteStream/Read` from its `--remote_cache`. Both are
//! served here over the mirror: a fetch goes through the same policy, first-seen pinning,
//! verification and single fill per URL as `GET /mirror/...`, and a read verifies every byte
//! as `GET /cas/...` does. The rest of what Bazel asks a remote cache is answered too:
//! `Capabilities`, `ContentAddressableStorage` and an `ActionCache` that says it is not one.
//!
//! The services share the HTTP port: the server hands a request whose `content-type` is
//! `application/grpc` to [`routes`] (see [`is_grpc`]). Each call is counted against
//! `server.max_concurrent_requests` with the HTTP requests, checks the same tokens and scopes
//! (from the `authorization` metadata), and is counted in `/metrics` by method and code.
//!
//! Like `http`, this layer parses, calls one domain method and maps the result; it never
//! reaches the storage or the upstream itself.

mod blob;
mod bytestream;
mod cache;
mod cas;
mod fetch;
mod push;

use std::net::SocketAddr;
use std::time::Instant;

use bazel_remote_apis::build::bazel::remote::asset::v1::fetch_server::FetchServer;
use bazel_remote_apis::build::bazel::remote::asset::v1::push_server::PushServer;
use bazel_remote_apis::build::bazel::remote::execution::v2::action_cache_server::ActionCacheServer;
use bazel_remote_apis::build::bazel::remote::execution::v2::capabilities_server::CapabilitiesServer;
use bazel_remote_apis::build::bazel::remote::execution::v2::content_addressable_storage_server::ContentAddressableStorageServer;
use bazel_remote_apis::google::bytestream::byte_stream_server::ByteStreamServer;
use tonic::{Code, Status};

use crate::app::AppState;
use crate::auth::{Action, AuthError, Principal};
use crate::metrics::GrpcLabels;
use crate::mirror::MirrorError;

/// The largest message this server sends or accepts: a `ByteStream` chunk or a batch (Bazel's
/// gRPC client accepts 4 MiB by default; the chunks stay well below).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// The largest total of a `BatchReadBlobs` or `BatchUpdateBlobs` request, as `Capabilities`
/// announces it: a batch must fit one message with its framing.
pub const MAX_BATCH_BYTES: usize = MAX_MESSAGE_BYTES - (64 << 10);
/// The size of the `ByteStream/Read` messages a blob is cut into.
pub const READ_CHUNK_BYTES: usize = 1 << 20;

/// The client's address: the server puts it into each gRPC request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Whether `req` is a gRPC call (`content-type: application/grpc`, with or without a
/// `+proto` suffix), which goes to [`routes`] instead of the HTTP router.
#[must_use]
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Every gRPC service of the server, as one tower service.
#[must_use]
pub fn routes(app: AppState) -> tonic::service::Routes {
    let door = Door { app };
    let max = MAX_MESSAGE_BYTES;
    tonic::service::Routes::new(
        FetchServer::new(door.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
    .add_service(PushServer::new(door.clone()))
    .add_service(
        ByteStreamServer::new(door.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
    .add_service(
        ContentAddressableStorageServer::new(door.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
    .add_service(CapabilitiesServer::new(door.clone()))
    .add_service(ActionCacheServer::new(door))
    .prepare()
}

/// The state every service shares; each service's trait is implemented on it.
#[derive(Debug, Clone)]
struct Door {
    app: AppState,
}

impl Door {
    /// Runs one call: admission, the token check, then `work`; counts the answer in the
    /// metrics under `method`.
    async fn call<T, R, F, Fut>(
        &self,
        method: &'static str,
        action: Action<'static>,
        request: tonic::Request<T>,
        work: F,
    ) -> Result<tonic::Response<R>, Status>
    where
        F: FnOnce(Caller, T) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let start = Instant::now();
        let result = async {
            let _in_flight = self.app.admit().ok_or_else(|| {
                Status::unavailable(
                    "server.max_concurrent_requests calls are already in progress; retry shortly",
                )
            })?;
            let peer = request.extensions().get::<Peer>().map(|p| p.0);
            let certificate = request
                .extensions()
                .get::<crate::auth::ClientCertificate>()
                .cloned();
            let principal =
                authorize(&self.app, request.metadata(), certificate.as_ref(), &action)?;
            let caller = Caller {
                principal,
                peer,
                certificate,
            };
            work(caller, request.into_inner()).await
        }
        .await;
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        self.app.metrics.observe_grpc(
            GrpcLabels {
                method,
                code: code_name(code),
            },
            start.elapsed().as_secs_f64(),
        );
        result.map(tonic::Response::new)
    }
}

/// Who made a call.
#[derive(Debug, Clone)]
struct Caller {
    principal: Principal,
    peer: Option<SocketAddr>,
    certificate: Option<crate::auth::ClientCertificate>,
}

impl Caller {
    /// How provenance records name the caller, as over HTTP: the client address, and the
    /// verified client certificate's subject when it showed one.
    fn requested_by(&self) -> String {
        self.peer.map_or_else(
            || "unknown".to_owned(),
            |p| crate::auth::client_label(p.ip(), self.certificate.as_ref()),
        )
    }
}

/// Decides whether a call with this metadata may do `action`, with the HTTP side's rules:
/// Bearer or Basic in `authorization`, open reads unless `require_token_for_reads`.
fn authorize(
    app: &AppState,
    metadata: &tonic::metadata::MetadataMap,
    certificate: Option<&crate::auth::ClientCertificate>,
    action: &Action<'_>,
) -> Result<Principal, Status> {
    let result = app.config.auth.authorize_request(
        metadata
            .get_all("authorization")
            .iter()
            .map(|v| v.as_bytes()),
        "more than one authorization metadata entry",
        certificate,
        action,
    );
    result.map_err(|error| match error {
        AuthError::Forbidden { .. } | AuthError::CertificateForbidden { .. } => {
            Status::permission_denied(error.to_string())
        }
        _ => Status::unauthenticated(error.to_string()),
    })
}

/// The status of a mirror failure on a read of the CAS.
fn status_of(e: &MirrorError) -> Status {
    let message = e.to_string();
    match e {
        MirrorError::NotFound(_) | MirrorError::IntegrityMismatch { .. } => {
            Status::not_found(message)
        }
        MirrorError::BadRequest(_) => Status::invalid_argument(message),
        MirrorError::RangeNotSatisfiable { .. } => Status::out_of_range(message),
        MirrorError::PinConflict { .. } => Status::already_exists(message),
        MirrorError::Upstream { timeout: true, .. } => Status::deadline_exceeded(message),
        MirrorError::Upstream { .. } | MirrorError::Storage(_) | MirrorError::Overloaded(_) => {
            Status::unavailable(message)
        }
    }
}

/// The name of a status code, as the metrics label it (bounded: the seventeen codes).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_is_told_apart_by_content_type() {
        let req = |ct: Option<&str>| {
            let mut b = http::Request::builder();
            if let Some(ct) = ct {
                b = b.header(http::header::CONTENT_TYPE, ct);
            }
            b.body(()).expect("request")
        };
        assert!(is_grpc(&req(Some("application/grpc"))));
        assert!(is_grpc(&req(Some("application/grpc+proto"))));
        assert!(!is_grpc(&req(Some("application/json"))));
        assert!(!is_grpc(&req(None)));
    }

    #[test]
    fn mirror_failures_map_to_the_codes_bazel_reacts_to() {
        let cases = [
            (MirrorError::NotFound("x".into()), Code::NotFound),
            (MirrorError::BadRequest("x".into()), Code::InvalidArgument),
            (
                MirrorError::Upstream {
                    message: "x".into(),
                    timeout: true,
                },
                Code::DeadlineExceeded,
            ),
            (
                MirrorError::Upstream {
                    message: "x".into(),
                    timeout: false,
                },
                Code::Unavailable,
            ),
            (MirrorError::Storage("x".into()), Code::Unavailable),
            (MirrorError::Overloaded("x".into()), Code::Unavailable),
            (
                MirrorError::RangeNotSatisfiable { size: 3 },
                Code::OutOfRange,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(status_of(&e).code(), code, "{e:?}");
        }
    }
}
