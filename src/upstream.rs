//! Fetching from upstream servers, safely: the only layer that talks HTTP to the outside.
//!
//! Every hop (the first request and each redirect) is checked against the caller's allow rule
//! and against the addresses the host resolves to, so a public-looking name that resolves to a
//! private, loopback, link-local or metadata address is refused (SSRF), unless the rule that
//! allowed the URL says `allow_private`. Redirects are followed by hand, only to allowed URLs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header;
use url::Url;

/// Redirect hops followed at most.
const MAX_REDIRECTS: usize = 10;

/// Why an upstream fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No allow rule covers this URL (first request or a redirect target).
    #[error("{0} is not allowed by the mirror policy")]
    NotAllowed(String),
    /// The target resolves to an address the rule does not allow.
    #[error(
        "{url} resolves to {ip}, a private, loopback, link-local or otherwise internal address"
    )]
    PrivateAddress {
        /// The URL.
        url: String,
        /// The refused address.
        ip: IpAddr,
    },
    /// The upstream answered 404 or 410.
    #[error("upstream {url} answered {status}")]
    NotFound {
        /// The URL.
        url: String,
        /// 404 or 410.
        status: u16,
    },
    /// The upstream answered another non-success status.
    #[error("upstream {url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// Too many redirects, or a redirect without a usable `Location`.
    #[error("upstream {0}: bad or too many redirects")]
    Redirect(String),
    /// Timed out connecting or reading.
    #[error("upstream {0}: timed out")]
    Timeout(String),
    /// Connection or protocol failure.
    #[error("upstream {url}: {message}")]
    Transport {
        /// The URL.
        url: String,
        /// What failed.
        message: String,
    },
}

/// The decision of an allow rule for one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// A name for the rule, recorded in provenance (the matching prefix).
    pub rule: String,
    /// Whether private and loopback targets are allowed for this rule.
    pub allow_private: bool,
}

/// A successful upstream response, body not yet read.
pub struct UpstreamResponse {
    /// The URL that finally answered (after redirects).
    pub final_url: Url,
    /// The rule that allowed the first URL.
    pub allowed: Allowed,
    /// HTTP status (200).
    pub status: u16,
    /// `Content-Length`, when the upstream sent one.
    pub content_length: Option<u64>,
    /// `ETag`, `Last-Modified`, `Content-Type`, as sent.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// The body.
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>,
}

impl std::fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("final_url", &self.final_url.as_str())
            .field("status", &self.status)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// Timeouts for upstream traffic.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    /// Connecting.
    pub connect: Duration,
    /// Waiting for headers, and between body reads.
    pub read: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
        }
    }
}

/// An HTTP client for upstreams with the address checks built in.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    strict: reqwest::Client,
    permissive: reqwest::Client,
}

/// The resolver's refusal, recognised again when reqwest hands it back.
#[derive(Debug)]
struct InternalAddress {
    host: String,
    ip: IpAddr,
}

impl std::fmt::Display for InternalAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} resolves to {}, an internal address",
            self.host, self.ip
        )
    }
}

impl std::error::Error for InternalAddress {}

/// Resolves names and drops internal addresses (for rules without `allow_private`).
#[derive(Debug)]
struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
                return Err(Box::new(InternalAddress { host, ip: bad.ip() })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

impl UpstreamClient {
    /// Builds the client.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(timeouts: UpstreamTimeouts) -> Result<Self, reqwest::Error> {
        let base = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(timeouts.connect)
                .read_timeout(timeouts.read)
                .user_agent(concat!("gf-registry/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Self {
            strict: base().dns_resolver(Arc::new(PublicOnlyResolver)).build()?,
            permissive: base().build()?,
        })
    }

    /// GETs `url`, following redirects that `allow` accepts. The body is not read.
    ///
    /// # Errors
    /// [`UpstreamError`] for refused targets, upstream statuses and transport failures.
    pub async fn get(
        &self,
        url: &Url,
        allow: &(dyn Fn(&Url) -> Option<Allowed> + Send + Sync),
    ) -> Result<UpstreamResponse, UpstreamError> {
        let first = allow(url).ok_or_else(|| UpstreamError::NotAllowed(url.to_string()))?;
        let mut current = url.clone();
        let mut rule = first.clone();
        for _ in 0..=MAX_REDIRECTS {
            check_literal_host(&current, &rule)?;
            let client = if rule.allow_private {
                &self.permissive
            } else {
                &self.strict
            };
            let resp = client
                .get(current.clone())
                .header(header::ACCEPT_ENCODING, "identity")
                .send()
                .await
                .map_err(|e| transport(&current, &e))?;
            let status = resp.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let next = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| current.join(l).ok())
                    .ok_or_else(|| UpstreamError::Redirect(current.to_string()))?;
                rule = allow(&next)
                    .ok_or_else(|| UpstreamError::NotAllowed(format!("redirect target {next}")))?;
                current = next;
                continue;
            }
            if status == 404 || status == 410 {
                return Err(UpstreamError::NotFound {
                    url: current.to_string(),
                    status,
                });
            }
            if status != 200 {
                return Err(UpstreamError::Status {
                    url: current.to_string(),
                    status,
                });
            }
            let h = resp.headers();
            let text = |name: header::HeaderName| {
                h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
            };
            if !identity_only(h) {
                // We asked for identity; a re-encoded body would not be the upstream's bytes.
                return Err(UpstreamError::Transport {
                    url: current.to_string(),
                    message: "upstream sent a Content-Encoding despite Accept-Encoding: identity"
                        .to_owned(),
                });
            }
            let final_url = current.clone();
            let body_url = current.clone();
            return Ok(UpstreamResponse {
                content_length: resp.content_length(),
                etag: text(header::ETAG),
                last_modified: text(header::LAST_MODIFIED),
                content_type: text(header::CONTENT_TYPE),
                status,
                final_url,
                allowed: first,
                body: Box::pin(
                    resp.bytes_stream()
                        .map(move |r| r.map_err(|e| transport(&body_url, &e))),
                ),
            });
        }
        Err(UpstreamError::Redirect(url.to_string()))
    }
}

/// Whether every `Content-Encoding` a response carries is `identity`: every header line and
/// every comma-separated item of each (empty items are allowed by the list syntax and mean
/// nothing). Absent is identity. A value that is not text counts as an encoding: one
/// `identity` line followed by a `gzip` line still means gzip bytes.
fn identity_only(headers: &reqwest::header::HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .all(|item| item.eq_ignore_ascii_case("identity"))
        })
    })
}

/// The upstream seam: a GET that follows the redirects `allow` accepts, body not yet read.
/// [`UpstreamClient`] is the real one; tests substitute a double.
pub trait Fetch: Send + Sync + std::fmt::Debug {
    /// GETs `url` (see [`UpstreamClient::get`]).
    ///
    /// # Errors
    /// [`UpstreamError`] for refused targets, upstream statuses and transport failures.
    fn fetch<'a>(
        &'a self,
        url: &'a Url,
        allow: &'a (dyn Fn(&Url) -> Option<Allowed> + Send + Sync),
    ) -> futures::future::BoxFuture<'a, Result<UpstreamResponse, UpstreamError>>;
}

impl Fetch for UpstreamClient {
    fn fetch<'a>(
        &'a self,
        url: &'a Url,
        allow: &'a (dyn Fn(&Url) -> Option<Allowed> + Send + Sync),
    ) -> futures::future::BoxFuture<'a, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(self.get(url, allow))
    }
}

/// An upstream double for unit tests: scripted answers per URL, a count of the fetches
/// started, and a gate that holds every answer until it is opened.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use url::Url;

    use super::{Allowed, Fetch, UpstreamError, UpstreamResponse};

    /// What the double answers for one URL.
    #[derive(Debug, Clone)]
    pub(crate) enum Answer {
        /// 200 with these bytes, sent in pieces of at most `piece` bytes.
        Body { bytes: Bytes, piece: usize },
        /// This status, as the real client reports it (404/410: not found).
        Status(u16),
    }

    /// The double.
    #[derive(Debug)]
    pub(crate) struct TestUpstream {
        answers: Mutex<HashMap<String, Answer>>,
        fetches: AtomicUsize,
        gate: tokio::sync::watch::Sender<bool>,
    }

    impl TestUpstream {
        /// A double with no answers and the gate open.
        pub(crate) fn new() -> Self {
            Self {
                answers: Mutex::new(HashMap::new()),
                fetches: AtomicUsize::new(0),
                gate: tokio::sync::watch::channel(true).0,
            }
        }

        /// Answers `url` with `answer` from now on.
        pub(crate) fn answer(&self, url: &str, answer: Answer) {
            self.answers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(url.to_owned(), answer);
        }

        /// Holds every answer (`false`) or lets them through (`true`).
        pub(crate) fn set_gate(&self, open: bool) {
            self.gate.send_replace(open);
        }

        /// Fetches started so far.
        pub(crate) fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    impl Fetch for TestUpstream {
        fn fetch<'a>(
            &'a self,
            url: &'a Url,
            allow: &'a (dyn Fn(&Url) -> Option<Allowed> + Send + Sync),
        ) -> futures::future::BoxFuture<'a, Result<UpstreamResponse, UpstreamError>> {
            Box::pin(async move {
                self.fetches.fetch_add(1, Ordering::SeqCst);
                let allowed =
                    allow(url).ok_or_else(|| UpstreamError::NotAllowed(url.to_string()))?;
                let mut gate = self.gate.subscribe();
                let _ = gate.wait_for(|open| *open).await;
                let answer = self
                    .answers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(url.as_str())
                    .cloned()
                    .unwrap_or(Answer::Status(404));
                match answer {
                    Answer::Status(status @ (404 | 410)) => Err(UpstreamError::NotFound {
                        url: url.to_string(),
                        status,
                    }),
                    Answer::Status(status) => Err(UpstreamError::Status {
                        url: url.to_string(),
                        status,
                    }),
                    Answer::Body { bytes, piece } => {
                        let pieces: Vec<Result<Bytes, UpstreamError>> = (0..bytes.len())
                            .step_by(piece.max(1))
                            .map(|i| Ok(bytes.slice(i..(i + piece.max(1)).min(bytes.len()))))
                            .collect();
                        Ok(UpstreamResponse {
                            final_url: url.clone(),
                            allowed,
                            status: 200,
                            content_length: Some(bytes.len() as u64),
                            etag: None,
                            last_modified: None,
                            content_type: None,
                            body: Box::pin(futures::stream::iter(pieces)),
                        })
                    }
                }
            })
        }
    }
}

fn transport(url: &Url, e: &reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        return UpstreamError::Timeout(url.to_string());
    }
    // Surface the resolver's refusal as what it is.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(internal) = s.downcast_ref::<InternalAddress>() {
            return UpstreamError::PrivateAddress {
                url: url.to_string(),
                ip: internal.ip,
            };
        }
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    UpstreamError::Transport {
        url: url.to_string(),
        message: msg,
    }
}

/// Refuses literal internal addresses (names are checked by the resolver).
fn check_literal_host(url: &Url, rule: &Allowed) -> Result<(), UpstreamError> {
    if rule.allow_private {
        return Ok(());
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(d)) if is_localhost_name(d) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => return Ok(()),
    };
    if is_internal(ip) {
        return Err(UpstreamError::PrivateAddress {
            url: url.to_string(),
            ip,
        });
    }
    Ok(())
}

fn is_localhost_name(d: &str) -> bool {
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    d == "localhost" || d.ends_with(".localhost")
}

/// Whether an address is loopback, private, link-local (cloud metadata), CGNAT, unspecified,
/// multicast, broadcast, reserved, or an IPv6 form that embeds one of those.
#[must_use]
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed IPv4 addresses.
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
                return is_internal_v4(Ipv4Addr::new(
                    (seg[6] >> 8) as u8,
                    seg[6] as u8,
                    (seg[7] >> 8) as u8,
                    seg[7] as u8,
                ));
            }
            if seg[0] == 0x2002 {
                return is_internal_v4(Ipv4Addr::new(
                    (seg[1] >> 8) as u8,
                    seg[1] as u8,
                    (seg[2] >> 8) as u8,
                    seg[2] as u8,
                ));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)
                || (seg[0] == 0 && seg[1] == 0 && seg[2] == 0 && seg[3] == 0 && seg[4] == 0 && seg[5] == 0) // IPv4-compatible ::a.b.c.d
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header map with one `Content-Encoding` line per value, in order.
    fn encodings(lines: &[&[u8]]) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        for line in lines {
            h.append(
                header::CONTENT_ENCODING,
                header::HeaderValue::from_bytes(line).expect("header value"),
            );
        }
        h
    }

    #[test]
    fn only_identity_in_every_content_encoding_line_and_item_passes() {
        let accepted: &[&[&[u8]]] = &[
            &[],
            &[b"identity"],
            &[b"IDENTITY"],
            &[b" Identity "],
            &[b"identity, identity"],
            &[b"identity", b"identity"],
            &[b"identity,,"],
            &[b""],
        ];
        for lines in accepted {
            assert!(identity_only(&encodings(lines)), "{lines:?}");
        }
        let refused: &[&[&[u8]]] = &[
            &[b"gzip"],
            &[b"identity", b"gzip"],
            &[b"gzip", b"identity"],
            &[b"identity", b"", b"br"],
            &[b"identity, gzip"],
            &[b"identity,gzip"],
            &[b"gzip, identity"],
            &[b"GZIP"],
            &[b" x-gzip "],
            &[b"identity;q=1"],
            &[b"identity deflate"],
            &[b"identity", b"identity, zstd"],
            &[b"identit\xc3\xa9"],
        ];
        for lines in refused {
            assert!(!identity_only(&encodings(lines)), "{lines:?}");
        }
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "140.82.112.3", "2606:4700::1111", "1.1.1.1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn literal_hosts_in_every_spelling_are_refused() {
        let strict = Allowed {
            rule: "x".to_owned(),
            allow_private: false,
        };
        // The URL parser normalizes decimal, hex and octal IPv4 spellings.
        for u in [
            "http://127.0.0.1/x",
            "http://2130706433/x",
            "http://0x7f000001/x",
            "http://0177.0.0.1/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/x",
            "http://LOCALHOST./x",
        ] {
            let url = Url::parse(u).unwrap();
            assert!(check_literal_host(&url, &strict).is_err(), "{u} ({url})");
        }
        let permissive = Allowed {
            rule: "x".to_owned(),
            allow_private: true,
        };
        assert!(
            check_literal_host(&Url::parse("http://127.0.0.1/x").unwrap(), &permissive).is_ok()
        );
    }
}
