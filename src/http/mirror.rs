//! Mirror routes: archives by upstream URL, blobs by digest, client configuration, provenance.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{CasAddress, MirrorTarget, Ranged};
use super::registry::file_response;
use crate::app::AppState;
use crate::mirror::client_config;
use crate::mirror::{BlobResponse, ByteRange, MirrorError};
use crate::registry::RegistryPath;

/// `GET|HEAD /mirror/{host}/{path...}[?query]`: an archive by its upstream URL, or, under a
/// configured upstream registry, a registry file (the transparent door).
pub(super) async fn get_mirror_url(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    MirrorTarget(target): MirrorTarget,
    ranged: Ranged,
    headers: HeaderMap,
    certificate: Option<axum::Extension<crate::auth::ClientCertificate>>,
) -> Response {
    if let Some(answer) = transparent_door(&app, &target, &headers).await {
        return answer.unwrap_or_else(IntoResponse::into_response);
    }
    let client = crate::auth::client_label(peer.ip(), certificate.as_ref().map(|c| &c.0));
    let read = method != Method::HEAD;
    let blob = with_if_range(&ranged, |range| {
        app.mirror.get_url(&target, range, &client, read)
    })
    .await;
    blob.map_or_else(error_response, blob_response)
}

/// The transparent door: a team keeps `--registry=https://bcr.bazel.build/` and rewrites its
/// host to `/mirror/`. A registry path under a configured upstream gets the registry's
/// semantics (pinned on first sight, the upstream's exact bytes, `ETag` and `If-None-Match`),
/// from that upstream only, since Bazel keys its lockfile by that URL. A module name the
/// internal registry holds is a 404 here (Bazel then asks the next registry, ours), so an
/// upstream module cannot shadow it. `None`: not a registry file of an upstream; the mirror's
/// archive semantics apply.
async fn transparent_door(
    app: &AppState,
    target: &str,
    headers: &HeaderMap,
) -> Option<Result<Response, ApiError>> {
    let upstreams = app.upstreams.as_ref()?;
    if target.contains('?') {
        return None;
    }
    let (index, rel) = upstreams.transparent(target)?;
    let path = RegistryPath::parse(&format!("/{rel}")).ok()?;
    if let Some(module) = path.module()
        && app.registry.holds_module(module.as_str())
    {
        return Some(Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "not found: module `{module}` is held by this registry, so it is never read \
                 from {upstream} (ask {ours}/ for it)",
                upstream = upstreams.bases()[index],
                ours = app.public_url().trim_end_matches('/'),
            ),
        )));
    }
    Some(
        upstreams
            .get_from(index, &path)
            .await
            .map(|file| file_response(&file, headers.get(header::IF_NONE_MATCH)))
            .map_err(ApiError::from),
    )
}

/// `GET|HEAD /cas/{algorithm}/{hex}` and `/cas/{algorithm}/{hex}/{basename}`.
pub(super) async fn get_cas_blob(
    State(app): State<AppState>,
    address: CasAddress,
    ranged: Ranged,
) -> Response {
    let blob = with_if_range(&ranged, |range| {
        app.mirror
            .get_digest(&address.algorithm, &address.hex, range)
    })
    .await;
    blob.map_or_else(error_response, blob_response)
}

/// Gets a blob with the requested range, unless an `If-Range` condition does not hold for the
/// blob found: then, as RFC 9110 §13.1.5 says, the range is ignored and the whole blob is
/// sent. The blob's ETag is known only once it is found, so a failed condition asks again
/// without the range (the first answer's body is dropped unread).
async fn with_if_range<F, Fut>(ranged: &Ranged, get: F) -> Result<BlobResponse, MirrorError>
where
    F: Fn(Option<ByteRange>) -> Fut,
    Fut: std::future::Future<Output = Result<BlobResponse, MirrorError>>,
{
    if !ranged.is_conditional() {
        return get(ranged.range).await;
    }
    match get(ranged.range).await {
        Ok(blob) if ranged.applies_to(blob.sha256.as_deref()) => Ok(blob),
        Ok(_) | Err(MirrorError::RangeNotSatisfiable { .. }) => get(None).await,
        Err(e) => Err(e),
    }
}

/// `GET /api/v1/blobs/{sha256}`: provenance and state of a blob.
pub(super) async fn get_blob_provenance(
    State(app): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(app.mirror.provenance(&sha256).await?))
}

/// `GET /api/v1/mirror/status`: the durable-authority gate; 200 when every required candidate
/// is durable, 503 otherwise (the body lists every candidate either way).
pub(super) async fn get_mirror_status(State(app): State<AppState>) -> Result<Response, ApiError> {
    let statuses = app.mirror.candidate_status().await?;
    let ok = statuses.iter().all(|s| !s.required || s.state == "durable");
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(serde_json::json!({ "ok": ok, "candidates": statuses })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct DownloaderQuery {
    #[serde(default)]
    strict: Option<String>,
}

/// `GET /bazel/downloader.cfg[?strict=1]`.
pub(super) async fn get_downloader_cfg(
    State(app): State<AppState>,
    Query(q): Query<DownloaderQuery>,
) -> impl IntoResponse {
    let strict = q
        .strict
        .as_deref()
        .is_some_and(|v| matches!(v, "1" | "true" | "yes"));
    let body = client_config::downloader_config(
        app.mirror.policy(),
        &upstream_bases(&app),
        &app.public_url(),
        strict,
    );
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The configured upstream registries' base URLs, in order (none without a read-through).
fn upstream_bases(app: &AppState) -> Vec<String> {
    app.upstreams
        .as_ref()
        .map(|u| u.bases().to_vec())
        .unwrap_or_default()
}

/// `GET /bazel/bazelrc`.
pub(super) async fn get_bazelrc(State(app): State<AppState>) -> impl IntoResponse {
    let body = client_config::bazelrc(&app.public_url(), &app.grpc_target(), &upstream_bases(&app));
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// Errors as [`ApiError`] does, plus `Content-Range: bytes */SIZE` on a 416.
fn error_response(e: MirrorError) -> Response {
    let size = match &e {
        MirrorError::RangeNotSatisfiable { size } => Some(*size),
        _ => None,
    };
    let mut error = ApiError::from(e);
    if let Some(size) = size
        && let Ok(v) = header::HeaderValue::from_str(&format!("bytes */{size}"))
    {
        error = error.with_header(header::CONTENT_RANGE, v);
    }
    error.into_response()
}

fn blob_response(blob: BlobResponse) -> Response {
    let mut b = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(sha) = &blob.sha256 {
        b = b
            .header(header::ETAG, format!("\"{sha}\""))
            .header(header::ACCEPT_RANGES, "bytes");
    }
    match (blob.range, blob.size) {
        (Some((start, end)), Some(size)) => {
            b = b
                .status(StatusCode::PARTIAL_CONTENT)
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{size}", end - 1),
                )
                .header(header::CONTENT_LENGTH, end - start);
        }
        (_, Some(size)) => b = b.header(header::CONTENT_LENGTH, size),
        (_, None) => {}
    }
    b.body(Body::from_stream(blob.body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
