//! Running the server: bind, serve, poll the registry source, shut down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::Config;

/// A server that is accepting connections.
#[derive(Debug)]
pub struct Running {
    /// The bound address (the real port when `:0` was asked for).
    pub addr: SocketAddr,
    /// The public base URL, ending in `/`.
    pub public_url: String,
    /// The application state.
    pub app: Arc<App>,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<std::io::Result<()>>,
    poll: JoinHandle<()>,
    gc: JoinHandle<()>,
    records: JoinHandle<()>,
}

/// Builds the app and starts serving on `config.listen`.
///
/// # Errors
/// When the registry or storage cannot be opened, or the address cannot be bound.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let app = Arc::new(App::build(config).await?);
    let listener = TcpListener::bind(app.config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (--listen): {e}", app.config.listen))?;
    let addr = listener.local_addr()?;
    let public_url = app.config.public_url_for(addr);
    let _ = app.public_url.set(public_url.clone());
    let (shutdown, rx) = watch::channel(false);
    let router = crate::http::router(app.clone());
    let mut serve_rx = rx.clone();
    let serve = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = serve_rx.wait_for(|stop| *stop).await;
        })
        .await
    });
    let poll_app = app.clone();
    let poll = every(app.config.poll_interval, rx.clone(), move || {
        let app = poll_app.clone();
        async move {
            if let Err(e) = app.registry.refresh().await {
                tracing::warn!(error = %e, "registry poll failed; still serving the previous snapshot");
            }
        }
    });
    let gc_app = app.clone();
    let gc = every(app.config.gc_interval, rx.clone(), move || {
        let app = gc_app.clone();
        async move {
            match app.mirror.gc(false).await {
                Ok(r) if !r.evicted.is_empty() => {
                    tracing::info!(
                        evicted = r.evicted.len(),
                        cached_bytes = r.cached_bytes_after,
                        "retention ran"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention failed"),
            }
        }
    });
    let records_app = app.clone();
    let records = every(app.config.records_refresh, rx.clone(), move || {
        let app = records_app.clone();
        async move {
            if let Err(e) = app.mirror.reload_records().await {
                tracing::warn!(error = %e, "reading other replicas' records failed");
            }
        }
    });
    tracing::info!(
        listen = %addr,
        public_url = %public_url,
        registry = %app.registry.describe(),
        registry.revision = %app.registry.revision(),
        registry.modules = app.registry.module_count(),
        storage.cas = %app.storage.layout().cas,
        storage.records = %app.storage.layout().records,
        "gf-registry serving"
    );
    Ok(Running {
        addr,
        public_url,
        app,
        shutdown,
        serve,
        poll,
        gc,
        records,
    })
}

/// Runs `job` every `interval` (never when it is zero) until shutdown.
fn every<F, Fut>(
    interval: std::time::Duration,
    mut stop: watch::Receiver<bool>,
    job: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        if interval.is_zero() {
            return;
        }
        loop {
            let stopped = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => true,
                () = tokio::time::sleep(interval) => false,
            };
            if stopped {
                return;
            }
            job().await;
        }
    })
}

impl Running {
    /// Stops accepting connections and waits up to `grace` for in-flight requests.
    ///
    /// # Errors
    /// When the server task failed, or requests were still running after `grace`.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.poll.abort();
        self.gc.abort();
        self.records.abort();
        match tokio::time::timeout(grace, self.serve).await {
            Ok(joined) => Ok(joined??),
            Err(_) => anyhow::bail!(
                "in-flight requests did not finish within {} s",
                grace.as_secs()
            ),
        }
    }
}
