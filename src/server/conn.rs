//! The accept loop of one worker: connection limits and timeouts that keep slow or hostile
//! clients from holding the server.
//!
//! - a client must send a request's headers within `header_timeout` (slowloris), or the
//!   connection is closed; an idle keep-alive connection counts as one waiting for headers;
//! - request headers are capped at `max_header_bytes`, HTTP/2 streams per connection at
//!   `max_streams_per_connection`;
//! - above `max_connections` open connections (over all workers), a new connection gets an
//!   immediate `503` with `Retry-After` and is closed, instead of waiting unanswered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

pub use crate::config::ConnLimits;

/// Counts open connections while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 42\r\n\r\ntoo many open connections; retry shortly\r\n";

/// Serves `listener` until `stop` turns true, then waits for open connections to finish.
pub(super) async fn serve(
    listener: TcpListener,
    app: crate::app::AppState,
    router: Router,
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
        let router = router.clone();
        let app = app.clone();
        // Registry files the cache holds are answered before routing (the hot path of
        // every Bazel resolution); everything else goes through the router.
        let service = tower::service_fn(move |mut req: axum::http::Request<Incoming>| {
            let answer = crate::http::cached_file(&app, &req).ok_or_else(|| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req.map(Body::new))
            });
            async move {
                match answer {
                    Ok(response) => Ok::<_, std::convert::Infallible>(response),
                    Err(routed) => routed.await,
                }
            }
        });
        let service = TowerToHyperService::new(service);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
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
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::trace!(peer = %peer, error = %e, "connection ended with an error");
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
