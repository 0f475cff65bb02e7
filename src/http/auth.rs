//! The HTTP edge of authentication: reads the `Authorization` header, asks
//! [`AuthConfig::authorize`] and maps a refusal to `401` (with the challenges) or `403`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::auth::{Action, AuthConfig, AuthError, Principal};
use crate::publish::Actor;

/// The challenges of a `401`, one `WWW-Authenticate` header per scheme.
const CHALLENGES: [&str; 2] = [
    r#"Basic realm="gf-registry""#,
    r#"Bearer realm="gf-registry""#,
];

/// Decides whether the request with these headers may do `action`; a refusal is logged (at
/// info, without the token) and answers `401` or `403`.
pub(crate) fn authorize(
    auth: &AuthConfig,
    headers: &HeaderMap,
    certificate: Option<&crate::auth::ClientCertificate>,
    action: &Action<'_>,
) -> Result<Principal, AuthRejection> {
    auth.authorize_request(
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes()),
        "more than one Authorization header",
        certificate,
        action,
    )
    .map_err(|error| AuthRejection { error })
}

/// A refused request: `401` with `WWW-Authenticate` challenges, or `403` naming the scope needed.
#[derive(Debug)]
pub(crate) struct AuthRejection {
    error: AuthError,
}

impl AuthRejection {
    /// The answer's status.
    pub(crate) fn status(&self) -> StatusCode {
        match self.error {
            AuthError::Forbidden { .. } | AuthError::CertificateForbidden { .. } => {
                StatusCode::FORBIDDEN
            }
            AuthError::Missing
            | AuthError::Malformed(_)
            | AuthError::Unknown
            | AuthError::Expired { .. } => StatusCode::UNAUTHORIZED,
        }
    }
}

impl From<AuthRejection> for ApiError {
    fn from(rejection: AuthRejection) -> Self {
        let status = rejection.status();
        // The message is one line and never holds the token.
        let mut error = ApiError::new(status, rejection.error.to_string());
        if status == StatusCode::UNAUTHORIZED {
            for challenge in CHALLENGES {
                error = error.with_header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
        }
        error
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// Who calls a write route: the client's address and its `Authorization` headers. Extracting
/// it refuses nothing; the handler asks [`Caller::may`] once it knows the action, before it
/// looks at the body (a `401` comes before a `400`).
#[derive(Debug)]
pub(super) struct Caller {
    peer: SocketAddr,
    certificate: Option<crate::auth::ClientCertificate>,
    authorization: HeaderMap,
}

impl Caller {
    /// Checks the token for `action` and names the caller for commits and audit records.
    pub(super) fn may(&self, auth: &AuthConfig, action: &Action<'_>) -> Result<Actor, ApiError> {
        let principal = authorize(auth, &self.authorization, self.certificate.as_ref(), action)?;
        Ok(Actor {
            name: principal.name,
            address: crate::auth::client_label(self.peer.ip(), self.certificate.as_ref()),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.body_text()))?;
        let mut authorization = HeaderMap::new();
        for v in parts.headers.get_all(header::AUTHORIZATION) {
            authorization.append(header::AUTHORIZATION, v.clone());
        }
        Ok(Self {
            peer,
            certificate: parts
                .extensions
                .get::<crate::auth::ClientCertificate>()
                .cloned(),
            authorization,
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::auth::{Scope, TokenEntry, token_sha256};

    fn config(require_token_for_reads: bool) -> AuthConfig {
        let entry = |name: &str, token: &str, scope: &str| {
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(token_sha256(token), &mut sha256).unwrap();
            TokenEntry {
                name: name.to_owned(),
                sha256,
                scopes: vec![scope.parse::<Scope>().unwrap()],
                expires: None,
            }
        };
        AuthConfig {
            require_token_for_reads,
            clients: Vec::new(),
            tokens: vec![
                entry("ci", "gfr_secret1", "publish:rules_*"),
                entry("root", "gfr_secret2", "admin"),
            ],
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn reject(c: &AuthConfig, h: &[&str], a: &Action<'_>) -> AuthRejection {
        authorize(c, &headers(h), None, a).unwrap_err()
    }

    #[test]
    fn allowed() {
        let c = config(false);
        assert_eq!(
            authorize(&c, &headers(&[]), None, &Action::Read)
                .unwrap()
                .name,
            "anonymous"
        );
        assert_eq!(
            authorize(
                &c,
                &headers(&["Bearer gfr_secret1"]),
                None,
                &Action::Publish("rules_go")
            )
            .unwrap()
            .name,
            "ci"
        );
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("me:gfr_secret2")
        );
        assert_eq!(
            authorize(&c, &headers(&[&basic]), None, &Action::Admin)
                .unwrap()
                .name,
            "root"
        );
        // Open reads ignore whatever credentials come along, even unreadable ones.
        for h in [
            &["garbage"][..],
            &["Bearer nope"],
            &["Bearer a", "Bearer b"],
        ] {
            assert_eq!(
                authorize(&c, &headers(h), None, &Action::Read)
                    .unwrap()
                    .name,
                "anonymous"
            );
        }
    }

    #[tokio::test]
    async fn unauthorized_answers() {
        let c = config(true);
        let cases: [(&[&str], &str); 5] = [
            (&[], "a token is required"),
            (&["Bearer gfr_unknownsecret"], "unknown token"),
            (&["gfr_secret1"], "malformed Authorization header"),
            (
                &["Bearer gfr_secret1", "Bearer gfr_secret1"],
                "malformed Authorization header: more than one",
            ),
            (&["Digest gfr_secret1"], "malformed Authorization header"),
        ];
        for (h, want) in cases {
            let r = reject(&c, h, &Action::Read).into_response();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{h:?}");
            let challenges: Vec<_> = r
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            assert_eq!(challenges, CHALLENGES, "{h:?}");
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
            assert_eq!(
                r.headers()[header::CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
            let b = body(r).await;
            assert!(b.starts_with(want), "{h:?}: {b}");
            assert!(!b.contains("secret"), "{b}");
        }
    }

    #[tokio::test]
    async fn forbidden_answer() {
        let c = config(false);
        let r = reject(&c, &["Bearer gfr_secret1"], &Action::Publish("foo"));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = r.into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(body(r).await, "token \"ci\" lacks scope publish:foo\n");
    }

    #[test]
    fn writes_need_a_token_even_with_open_reads() {
        let c = config(false);
        for h in [&[][..], &["garbage"], &["Bearer a", "Bearer b"]] {
            assert_eq!(
                reject(&c, h, &Action::Yank("x")).status(),
                StatusCode::UNAUTHORIZED
            );
        }
    }
}
