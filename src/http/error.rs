//! The one mapping from domain errors to HTTP answers.

use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::mirror::MirrorError;
use crate::publish::PublishError;
use crate::registry::path::PathError;
use crate::registry::{RegistryError, UpstreamReadError};

/// An error answer: a status and a one-line message that names what is at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Headers the answer carries besides its content type and cache control
    /// (`WWW-Authenticate`, `Retry-After`, `Content-Range`).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An answer with this status and message.
    #[must_use]
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// The same answer with one more header (appended: a name may repeat).
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The answer's status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A plain 404.
    #[must_use]
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("not found: {what}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Registry clients parse bodies as JSON or Starlark; a short text line can never be
        // mistaken for a file, and the status is what Bazel acts on.
        let mut response = (
            self.status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            format!("{}\n", self.message),
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound => Self::new(StatusCode::NOT_FOUND, "not found"),
            other => {
                tracing::error!(error = %other, "registry read failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error reading the registry",
                )
            }
        }
    }
}

impl From<UpstreamReadError> for ApiError {
    fn from(e: UpstreamReadError) -> Self {
        match e {
            UpstreamReadError::NotFound => Self::new(StatusCode::NOT_FOUND, "not found"),
            // Never a 404: Bazel would record "not found" in the lockfile and trust it.
            UpstreamReadError::Unavailable(reason) => {
                tracing::warn!(%reason, "upstream registry read failed");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, reason)
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
            }
        }
    }
}

impl From<MirrorError> for ApiError {
    fn from(e: MirrorError) -> Self {
        let status = match &e {
            MirrorError::NotFound(_) => StatusCode::NOT_FOUND,
            MirrorError::BadRequest(_) => StatusCode::BAD_REQUEST,
            MirrorError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            MirrorError::Upstream { timeout: true, .. } => StatusCode::GATEWAY_TIMEOUT,
            MirrorError::Upstream { .. } | MirrorError::IntegrityMismatch { .. } => {
                StatusCode::BAD_GATEWAY
            }
            MirrorError::PinConflict { .. } => StatusCode::CONFLICT,
            MirrorError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            MirrorError::Storage(_) => {
                tracing::error!(error = %e, "mirror storage failure");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let retry_after = match &e {
            MirrorError::Overloaded(_) => Some("1"),
            // A backend that stopped answering takes longer to come back than a full queue.
            MirrorError::Storage(_) => Some("5"),
            _ => None,
        };
        let error = Self::new(status, e.to_string());
        // Like the other caps' 503s: Bazel and other clients retry after it.
        match retry_after {
            Some(secs) => error.with_header(header::RETRY_AFTER, HeaderValue::from_static(secs)),
            None => error,
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        let status = match &e {
            PublishError::Invalid { .. } => StatusCode::BAD_REQUEST,
            PublishError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            PublishError::NotFound(_) => StatusCode::NOT_FOUND,
            PublishError::Conflict(_) => StatusCode::CONFLICT,
            PublishError::Upstream(_) => StatusCode::BAD_GATEWAY,
            PublishError::Unavailable(_) => {
                tracing::error!(error = %e, "publishing: backend unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
            PublishError::Registry(_) => {
                tracing::error!(error = %e, "publishing failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let unavailable = matches!(e, PublishError::Unavailable(_));
        let error = Self::new(status, e.to_string());
        if unavailable {
            error.with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
        } else {
            error
        }
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::Invalid(m) => Self::new(StatusCode::BAD_REQUEST, m),
            PathError::NotRegistryPath => Self::new(StatusCode::NOT_FOUND, "not found"),
            PathError::NoSuchName(m) => Self::new(StatusCode::NOT_FOUND, format!("not found: {m}")),
        }
    }
}

/// Everything no route matched: a plain 404 (never a redirect, never a page).
pub(super) async fn fallback(uri: Uri) -> ApiError {
    // Parse anyway, so traversal probes get a 400 that says why.
    match crate::registry::RegistryPath::parse(uri.path()) {
        Err(PathError::Invalid(m)) => ApiError::new(StatusCode::BAD_REQUEST, m),
        _ => ApiError::not_found(uri.path()),
    }
}
