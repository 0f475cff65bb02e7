//! The access log: one line per request, written when the response's last byte has been handed
//! to the connection (or the client went away first), in the server's log format (JSON with
//! `--log-format json`). Off with `server.access_log = false`. Query values are left out.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::Request;
use axum::response::Response;

/// The name of whoever made a write request, for the access log: handlers that know it put it
/// in the response's extensions.
#[derive(Debug, Clone)]
pub(super) struct LoggedActor(pub(super) String);

/// A request on its way to its access-log line.
#[derive(Debug)]
pub(super) struct Access {
    start: Instant,
    method: String,
    path: String,
    query: Option<String>,
    client: SocketAddr,
}

impl Access {
    /// Notes what the log line needs of the request, as it arrives.
    pub(super) fn start<B>(req: &Request<B>, client: SocketAddr) -> Self {
        Self {
            start: Instant::now(),
            method: req.method().as_str().to_owned(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(redacted),
            client,
        }
    }

    /// The response, whose body writes the line when it is done.
    pub(super) fn finish(self, response: Response) -> Response {
        let (mut parts, body) = response.into_parts();
        let actor = parts
            .extensions
            .remove::<LoggedActor>()
            .map_or_else(|| "-".to_owned(), |a| a.0);
        let logged = Logged {
            inner: body,
            bytes: 0,
            ended: false,
            line: Some(Line {
                access: self,
                status: parts.status.as_u16(),
                actor,
            }),
        };
        Response::from_parts(parts, Body::new(logged))
    }
}

/// A query with its values left out (`a=…&b=…`): clients put tokens in queries too
/// (`?access_token=`), and a log must never hold one.
fn redacted(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) => format!("{key}=…"),
            None => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Debug)]
struct Line {
    access: Access,
    status: u16,
    actor: String,
}

/// A response body that counts its bytes and writes the access-log line when dropped.
struct Logged {
    inner: Body,
    bytes: u64,
    ended: bool,
    line: Option<Line>,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let Some(line) = self.line.take() else {
            return;
        };
        let complete = self.ended || self.inner.is_end_stream();
        tracing::info!(
            target: "gf_registry::access",
            method = %line.access.method,
            path = %line.access.path,
            query = line.access.query.as_deref(),
            status = line.status,
            bytes = self.bytes,
            duration_ms = line.access.start.elapsed().as_secs_f64() * 1000.0,
            client = %line.access.client.ip(),
            actor = %line.actor,
            complete,
            "request"
        );
    }
}
