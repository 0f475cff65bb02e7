//! `build.bazel.remote.asset.v1.Fetch`: an archive by its URLs, through the mirror.
//!
//! `FetchBlob` tries the request's URIs in order, each through [`Mirror::ingest_url`]: the
//! first-seen pin when the URL has one, else a pull-through that the policy must allow (one
//! upstream fetch per URL however many clients ask, over HTTP or gRPC), verified against the
//! checksum asked for. The answer names the blob in the CAS, which Bazel then reads with
//! `ByteStream/Read`.
//!
//! Failures are gRPC errors, never an `OK` whose `status` field holds the error: Bazel before
//! 8.2 (4.2.3 among them) ignores that field and would read the empty blob.
//!
//! [`Mirror::ingest_url`]: crate::mirror::Mirror::ingest_url

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::asset::v1::{
    FetchBlobRequest, FetchBlobResponse, FetchDirectoryRequest, FetchDirectoryResponse, Qualifier,
    fetch_server::Fetch,
};
use bazel_remote_apis::build::bazel::remote::execution::v2::{Digest, digest_function};
use tonic::{Code, Status};
use url::Url;

use super::{Caller, Door, status_of};
use crate::auth::Action;
use crate::mirror::MirrorError;
use crate::registry::Integrity;

/// The qualifiers `FetchBlob` understands, as parsed from a request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Qualifiers {
    /// `checksum.sri`: any one of them must match (a space-separated list is accepted).
    pub(super) checksums: Vec<Integrity>,
    /// `bazel.canonical_id`, when given.
    pub(super) canonical_id: Option<String>,
}

/// The qualifiers that carry credentials for the upstream: accepted (Bazel 4.x and 5.x send
/// `bazel.auth_headers` whenever it has credentials), never logged, recorded, echoed or used
/// as a cache key, and not forwarded to the upstream (see the module's notes in the README).
fn is_credential(name: &str) -> bool {
    name == "bazel.auth_headers"
        || name.starts_with("http_header:")
        || name.starts_with("http_header_url:")
}

/// Parses the qualifiers; an unknown one is `INVALID_ARGUMENT` naming it, as the Remote Asset
/// API asks of a server that does not take pushed qualifiers on trust.
pub(super) fn qualifiers(list: &[Qualifier]) -> Result<Qualifiers, Status> {
    let mut out = Qualifiers::default();
    let mut seen_checksum = false;
    for (i, q) in list.iter().enumerate() {
        match q.name.as_str() {
            "checksum.sri" => {
                if seen_checksum {
                    return Err(Status::invalid_argument(format!(
                        "qualifiers[{i}]: checksum.sri is given twice; give one, with the \
                         values separated by spaces"
                    )));
                }
                seen_checksum = true;
                for value in q.value.split_whitespace() {
                    let integrity = Integrity::parse(value).map_err(|e| {
                        Status::invalid_argument(format!(
                            "qualifiers[{i}] checksum.sri: `{value}` is not an SRI value: {e}"
                        ))
                    })?;
                    out.checksums.push(integrity);
                }
                if out.checksums.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "qualifiers[{i}] checksum.sri: empty; give at least one SRI value"
                    )));
                }
            }
            "bazel.canonical_id" => out.canonical_id = Some(q.value.clone()),
            name if is_credential(name) => {}
            name => {
                return Err(Status::invalid_argument(format!(
                    "qualifiers[{i}]: unsupported qualifier `{name}`; this server knows \
                     checksum.sri, bazel.canonical_id, bazel.auth_headers, http_header:NAME \
                     and http_header_url:N:NAME"
                )));
            }
        }
    }
    Ok(out)
}

/// The request's `timeout`, when it sets one.
fn timeout(req: &FetchBlobRequest) -> Result<Option<Duration>, Status> {
    let Some(t) = &req.timeout else {
        return Ok(None);
    };
    match (u64::try_from(t.seconds), u32::try_from(t.nanos)) {
        (Ok(s), Ok(n)) if s > 0 || n > 0 => Ok(Some(Duration::new(s, n))),
        (Ok(0), Ok(0)) => Ok(None),
        _ => Err(Status::invalid_argument(format!(
            "timeout: {}s {}ns is negative",
            t.seconds, t.nanos
        ))),
    }
}

/// Checks the request's `digest_function`: SHA256, or unset (which means SHA256 here).
pub(super) fn check_digest_function(value: i32, field: &str) -> Result<(), Status> {
    if value == digest_function::Value::Unknown as i32
        || value == digest_function::Value::Sha256 as i32
    {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{field}: only SHA256 ({}) is offered, not {value}",
            digest_function::Value::Sha256 as i32
        )))
    }
}

/// Why one URI gave no blob.
struct Failure {
    uri: String,
    code: Code,
    message: String,
}

/// The status of a fetch that no URI satisfied: `UNAVAILABLE` when an outage may be why (Bazel
/// retries it), else `DEADLINE_EXCEEDED` for a timeout, else `NOT_FOUND`; the message names
/// every URI and its reason.
fn overall(failures: &[Failure]) -> Status {
    let code = if failures.iter().any(|f| f.code == Code::Unavailable) {
        Code::Unavailable
    } else if failures.iter().any(|f| f.code == Code::DeadlineExceeded) {
        Code::DeadlineExceeded
    } else {
        Code::NotFound
    };
    let reasons: Vec<String> = failures
        .iter()
        .map(|f| format!("{}: {}", f.uri, f.message))
        .collect();
    Status::new(
        code,
        format!("no URI gave the blob; {}", reasons.join("; ")),
    )
}

impl Door {
    /// Records the request's `bazel.canonical_id` for the blob it got, for exports' `id-`
    /// markers. The blob is served either way: a failure only loses the marker.
    async fn note_canonical_id(&self, q: &Qualifiers, sha: &str, url: &Url) {
        if let Some(id) = &q.canonical_id
            && let Err(e) = self.app.mirror.note_canonical_id(sha, url, id).await
        {
            tracing::warn!(%url, error = %e, "the canonical id was not recorded");
        }
    }

    async fn fetch_blob_inner(
        &self,
        caller: Caller,
        req: FetchBlobRequest,
    ) -> Result<FetchBlobResponse, Status> {
        check_digest_function(req.digest_function, "digest_function")?;
        if req.uris.is_empty() {
            return Err(Status::invalid_argument(
                "uris: empty; give at least one URI to fetch",
            ));
        }
        let q = qualifiers(&req.qualifiers)?;
        let work = self.fetch_uris(&caller, &req, &q);
        match timeout(&req)? {
            None => work.await,
            Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no URI gave the blob within the request's timeout of {:.1} s",
                    limit.as_secs_f64()
                ))
            })?,
        }
    }

    async fn fetch_uris(
        &self,
        caller: &Caller,
        req: &FetchBlobRequest,
        q: &Qualifiers,
    ) -> Result<FetchBlobResponse, Status> {
        let mirror = &self.app.mirror;
        // A blob the CAS holds under an asked-for checksum answers at once: the CAS is
        // content-addressed and Bazel checks what it reads against the same checksum.
        for checksum in &q.checksums {
            if let Some((sha, size)) = mirror.stored(checksum) {
                if let Ok(url) = Url::parse(&req.uris[0]) {
                    self.note_canonical_id(q, &sha, &url).await;
                }
                return Ok(answer(&req.uris[0], &req.qualifiers, &sha, size));
            }
        }
        let requested_by = caller.requested_by();
        let expectations: Vec<Option<&Integrity>> = if q.checksums.is_empty() {
            vec![None]
        } else {
            q.checksums.iter().map(Some).collect()
        };
        let mut failures = Vec::new();
        for uri in &req.uris {
            let url = match Url::parse(uri) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => url,
                Ok(url) => {
                    failures.push(Failure {
                        uri: uri.clone(),
                        code: Code::NotFound,
                        message: format!(
                            "only http and https URIs are fetched, not {}:",
                            url.scheme()
                        ),
                    });
                    continue;
                }
                Err(e) => {
                    failures.push(Failure {
                        uri: uri.clone(),
                        code: Code::NotFound,
                        message: format!("not a URL: {e}"),
                    });
                    continue;
                }
            };
            for expected in &expectations {
                match mirror.ingest_url(&url, *expected, &requested_by).await {
                    Ok(sha) => {
                        let Ok(integrity) = bzlmod::Sha256Digest::parse_hex(&sha) else {
                            return Err(Status::internal(format!(
                                "the mirror named blob `{sha}`, which is not a sha256"
                            )));
                        };
                        let size = mirror.stored(&integrity.integrity()).map(|(_, s)| s);
                        let Some(size) = size else {
                            // Stored and gone again (retention, quarantine): try on.
                            failures.push(Failure {
                                uri: uri.clone(),
                                code: Code::Unavailable,
                                message: "stored, then removed before it could be named".into(),
                            });
                            continue;
                        };
                        self.note_canonical_id(q, &sha, &url).await;
                        return Ok(answer(uri, &req.qualifiers, &sha, size));
                    }
                    Err(e) => {
                        let mismatch = matches!(e, MirrorError::IntegrityMismatch { .. });
                        // A policy refusal is "not found" for this door: the URL is not one
                        // this server fetches.
                        let code = match &e {
                            MirrorError::BadRequest(_) => Code::NotFound,
                            e => status_of(e).code(),
                        };
                        failures.push(Failure {
                            uri: uri.clone(),
                            code,
                            message: e.to_string(),
                        });
                        if !mismatch {
                            break;
                        }
                    }
                }
            }
        }
        Err(overall(&failures))
    }
}

/// The answer naming blob `sha` of `size` bytes, fetched for `uri`. The qualifiers are echoed
/// without the ones that carry credentials.
fn answer(uri: &str, qualifiers: &[Qualifier], sha: &str, size: u64) -> FetchBlobResponse {
    FetchBlobResponse {
        status: None,
        uri: uri.to_owned(),
        qualifiers: qualifiers
            .iter()
            .filter(|q| !is_credential(&q.name))
            .cloned()
            .collect(),
        expires_at: None,
        blob_digest: Some(Digest {
            hash: sha.to_owned(),
            size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        }),
        digest_function: digest_function::Value::Sha256 as i32,
    }
}

#[tonic::async_trait]
impl Fetch for Door {
    async fn fetch_blob(
        &self,
        request: tonic::Request<FetchBlobRequest>,
    ) -> Result<tonic::Response<FetchBlobResponse>, Status> {
        self.call("Fetch/FetchBlob", Action::Read, request, |caller, req| {
            self.fetch_blob_inner(caller, req)
        })
        .await
    }

    async fn fetch_directory(
        &self,
        request: tonic::Request<FetchDirectoryRequest>,
    ) -> Result<tonic::Response<FetchDirectoryResponse>, Status> {
        self.call(
            "Fetch/FetchDirectory",
            Action::Read,
            request,
            |_, _| async {
                Err(Status::unimplemented(
                    "FetchDirectory is not offered: this server keeps archives as blobs \
                     (Bazel never calls it; use FetchBlob)",
                ))
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, value: &str) -> Qualifier {
        Qualifier {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    const SRI_A: &str = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    const SRI_B: &str = "sha384-OLBgp1GsljhM2TJ+sbHjaiH9txEUvgdDTAzHv2P24donTt6/529l+9Ua0vFImLlb";

    #[test]
    fn checksum_lists_and_bazels_qualifiers_are_accepted() {
        let parsed = qualifiers(&[
            q("checksum.sri", &format!("{SRI_A}  {SRI_B}")),
            q("bazel.canonical_id", "id-1"),
            q(
                "bazel.auth_headers",
                r#"{"https://x/": {"Authorization": ["t"]}}"#,
            ),
            q("http_header:Authorization", "Bearer t"),
            q("http_header_url:0:Authorization", "Bearer t"),
        ])
        .expect("accepted");
        assert_eq!(parsed.checksums.len(), 2);
        assert_eq!(parsed.checksums[0].to_string(), SRI_A);
        assert_eq!(parsed.checksums[1].to_string(), SRI_B);
        assert_eq!(parsed.canonical_id.as_deref(), Some("id-1"));
    }

    #[test]
    fn an_unknown_or_bad_qualifier_is_named() {
        let e = qualifiers(&[q("checksum.sri", SRI_A), q("resource_type", "x")]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("qualifiers[1]"), "{}", e.message());
        assert!(e.message().contains("`resource_type`"), "{}", e.message());

        let e = qualifiers(&[q("checksum.sri", "sha256-nope")]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("`sha256-nope`"), "{}", e.message());

        let e = qualifiers(&[q("checksum.sri", "  ")]).unwrap_err();
        assert!(e.message().contains("empty"), "{}", e.message());

        let e = qualifiers(&[q("checksum.sri", SRI_A), q("checksum.sri", SRI_A)]).unwrap_err();
        assert!(e.message().contains("twice"), "{}", e.message());
    }

    #[test]
    fn credentials_are_never_echoed() {
        let a = answer(
            "https://x/a.tgz",
            &[
                q("checksum.sri", SRI_A),
                q("http_header:Authorization", "t"),
            ],
            "ab",
            3,
        );
        assert_eq!(a.qualifiers, vec![q("checksum.sri", SRI_A)]);
        assert_eq!(a.blob_digest.expect("digest").size_bytes, 3);
    }

    #[test]
    fn the_overall_code_prefers_what_bazel_retries() {
        let f = |code| Failure {
            uri: "u".into(),
            code,
            message: "m".into(),
        };
        assert_eq!(overall(&[f(Code::NotFound)]).code(), Code::NotFound);
        assert_eq!(
            overall(&[f(Code::NotFound), f(Code::Unavailable)]).code(),
            Code::Unavailable
        );
        assert_eq!(
            overall(&[f(Code::DeadlineExceeded), f(Code::NotFound)]).code(),
            Code::DeadlineExceeded
        );
        assert!(overall(&[f(Code::NotFound)]).message().contains("u: m"));
    }

    #[test]
    fn only_sha256_is_offered() {
        assert!(check_digest_function(0, "f").is_ok());
        assert!(check_digest_function(1, "f").is_ok());
        let e = check_digest_function(4, "digest_function").unwrap_err();
        assert!(
            e.message().starts_with("digest_function:"),
            "{}",
            e.message()
        );
    }
}
