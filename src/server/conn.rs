//! The accept loop of one worker: connection limits and timeouts that keep slow or hostile
//! clients from holding the server.
//!
//! - a client must send a request's headers within `header_timeout` (slowloris), or the
//!   connection is closed; and a connection with no request in progress (a new one that has
//!   sent nothing yet, or an idle keep-alive one, HTTP/1 or HTTP/2) is closed once it has been
//!   idle for `header_timeout` (see [`Activity`]);
//! - request headers are capped at `max_header_bytes`, HTTP/2 streams per connection at
//!   `max_streams_per_connection`;
//! - above `max_connections` open connections (over all workers), a new connection gets an
//!   immediate `503` with `Retry-After` and is closed, instead of waiting unanswered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::config::ConnLimits;

/// Counts open connections while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one connection is doing, for closing it when idle. hyper's own header timeout starts
/// at the first byte of a request, so a client that connects and sends nothing, or keeps a
/// connection open after its last answer, would hold it forever: `server.max_connections` such
/// connections (one unprivileged client can open 4,096) lock every other client out with
/// `503`. A connection is busy from the moment a request reaches the service until the last
/// byte of its response body is handed to hyper (the body is dropped then), so a long download
/// or a slow handler is never cut; idle, it gets `header_timeout` to start the next request.
struct Activity {
    /// Requests whose response is not complete yet.
    busy: AtomicUsize,
    /// When the connection last became idle, in milliseconds after `opened`.
    idle_since_ms: AtomicU64,
    opened: Instant,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            opened: Instant::now(),
        })
    }

    /// Resolves once the connection has been idle for `timeout`. It wakes at most once per
    /// `timeout` (no work per request beyond two atomic updates and a clock read).
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let deadline = if self.busy.load(Ordering::Acquire) > 0 {
                Instant::now() + timeout
            } else {
                let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
                let deadline = self.opened + since + timeout;
                if Instant::now() >= deadline {
                    return;
                }
                deadline
            };
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// Marks its connection busy while it lives; it travels with the response body.
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // The idle time first, then the count: whoever sees the count at zero sees the time
        // this request ended, never an older one.
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy until hyper drops it (sent, or abandoned).
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = <Body as hyper::body::Body>::Data;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 42\r\n\r\ntoo many open connections; retry shortly\r\n";

/// What a listener serves: HTTP and gRPC (told apart by content type), or one of them
/// (`server.grpc_listen` gives gRPC a port of its own).
#[derive(Debug, Clone)]
pub(super) enum Doors {
    Both(crate::http::service::Front, tonic::service::Routes),
    Http(crate::http::service::Front),
    Grpc(tonic::service::Routes),
}

/// [`Doors`] for one connection.
#[derive(Clone)]
enum ConnDoors {
    Both(
        crate::http::service::PreRouting<axum::Router>,
        tonic::service::Routes,
    ),
    Http(crate::http::service::PreRouting<axum::Router>),
    Grpc(tonic::service::Routes),
}

impl Doors {
    fn connection(&self, peer: std::net::SocketAddr) -> ConnDoors {
        match self {
            Self::Both(front, grpc) => ConnDoors::Both(front.connection(peer), grpc.clone()),
            Self::Http(front) => ConnDoors::Http(front.connection(peer)),
            Self::Grpc(grpc) => ConnDoors::Grpc(grpc.clone()),
        }
    }
}

/// Serves `listener` until `stop` turns true, then waits for open connections to finish.
pub(super) async fn serve(
    listener: TcpListener,
    doors: Doors,
    tls: Option<Arc<super::Tls>>,
    limits: ConnLimits,
    open: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        if open.fetch_add(1, Ordering::Relaxed) >= limits.max_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            if tls.is_some() {
                // A plain-text 503 means nothing inside TLS: closing says "try later".
                drop(stream);
                continue;
            }
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    stream.write_all(BUSY).await?;
                    stream.shutdown().await?;
                    // Read what the client sent, so closing does not reset the connection
                    // before it has read the answer.
                    let mut sink = [0u8; 4096];
                    while stream.read(&mut sink).await? > 0 {}
                    Ok::<_, std::io::Error>(())
                })
                .await;
            });
            continue;
        }
        let guard = Open(open.clone());
        let _ = stream.set_nodelay(true);
        let conn_doors = doors.connection(peer);
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            // The verified client certificate's subject, from the handshake.
            let (io, certificate) = match acceptor {
                None => (tokio_util::either::Either::Left(stream), None),
                // The handshake gets the header timeout too: a client that connects and
                // says nothing is closed as on plain HTTP.
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => {
                            let certificate = super::tls::client_certificate(tls.get_ref().1);
                            (tokio_util::either::Either::Right(tls), certificate)
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let mut conn_doors = conn_doors;
            let activity = Activity::new();
            let tracked = activity.clone();
            // gRPC calls (`content-type: application/grpc`) go to the gRPC services, and
            // everything on a gRPC-only port. Registry files the cache holds are answered before
            // routing (the hot path of every Bazel resolution); everything else goes through the
            // router.
            let service = tower::service_fn(move |mut req: axum::http::Request<Incoming>| {
                let busy = Busy::enter(&tracked);
                if let Some(c) = &certificate {
                    req.extensions_mut().insert(c.clone());
                }
                let to_grpc = match &conn_doors {
                    ConnDoors::Both(..) => crate::grpc::is_grpc(&req),
                    ConnDoors::Http(_) => false,
                    ConnDoors::Grpc(_) => true,
                };
                let response = match &mut conn_doors {
                    ConnDoors::Both(http, _) | ConnDoors::Http(http) if !to_grpc => {
                        Either::Right(tower::Service::call(http, req))
                    }
                    ConnDoors::Both(_, grpc) | ConnDoors::Grpc(grpc) => {
                        req.extensions_mut().insert(crate::grpc::Peer(peer));
                        Either::Left(futures::FutureExt::map(
                            tower::Service::call(grpc, req),
                            |answer| answer.map(|response| response.map(Body::new)),
                        ))
                    }
                    ConnDoors::Http(http) => Either::Right(tower::Service::call(http, req)),
                };
                async move {
                    let response = match response.await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    Ok::<_, std::convert::Infallible>(
                        response.map(|inner| Tracked { inner, _busy: busy }),
                    )
                }
            });
            let service = TowerToHyperService::new(service);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.max_streams_per_connection)
                // Bazel sends every gRPC call over one connection: let a stream's window
                // grow with the bandwidth-delay product instead of capping a blob at 64 KiB
                // in flight.
                .adaptive_window(true)
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            tokio::select! {
                ended = watcher.watch(conn) => {
                    if let Err(e) = ended {
                        tracing::trace!(peer = %peer, error = %e, "connection ended with an error");
                    }
                }
                // Nothing in progress, so nothing is cut short: closing is all there is to do.
                () = activity.idle_for(limits.header_timeout) => {
                    tracing::debug!(peer = %peer, "idle connection closed");
                }
            }
            drop(guard);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The open-connection counter shared by all workers.
pub(super) fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}
