//! Running the server: bind, serve, poll the registry source, shut down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::Config;

mod conn;
mod steer;
mod tls;

pub use tls::Tls;

pub use conn::ConnLimits;

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
    tls_watch: Option<JoinHandle<()>>,
    workers: usize,
}

/// Builds the app and starts serving on `config.listen`.
///
/// # Errors
/// When the registry or storage cannot be opened, or the address cannot be bound.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let app = Arc::new(App::build(config).await?);
    // One listener per worker (SO_REUSEPORT: the kernel spreads connections), each served by
    // a single-threaded runtime on its own thread, as nginx runs its workers: a request runs
    // start to end on one thread. Measured with perf stat on the registry hot path: 3-16 %
    // less CPU per request than one work-stealing runtime (bench/RESULTS.md). By default one
    // worker per core (`server.workers`); on a host whose cores are busy with other work,
    // fewer workers keep a connection from waiting out its worker's lost time slices.
    let workers = app.config.workers;
    // A plain bind first: SO_REUSEPORT alone would let a second server on the same port
    // start silently and take half the connections; this makes "address in use" an error.
    let addr = std::net::TcpListener::bind(app.config.listen)
        .and_then(|l| l.local_addr())
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (--listen): {e}", app.config.listen))?;
    let first = bind_reuseport(addr)?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind_reuseport(addr)?);
    }
    // `server.grpc_listen`: gRPC on a port of its own, one listener per worker as well.
    let grpc_addr = match app.config.grpc_listen {
        None => None,
        Some(want) => Some(
            std::net::TcpListener::bind(want)
                .and_then(|l| l.local_addr())
                .map_err(|e| {
                    anyhow::anyhow!("cannot listen on {want} (server.grpc_listen): {e}")
                })?,
        ),
    };
    let mut grpc_listeners = Vec::new();
    if let Some(grpc_addr) = grpc_addr {
        for _ in 0..workers {
            grpc_listeners.push(Some(bind_reuseport(grpc_addr)?));
        }
    } else {
        grpc_listeners.resize_with(workers, || None);
    }
    // A connection goes to the worker tied to the CPU it arrived on (see `steer`).
    let cpus = steer::allowed_cpus();
    let tied = steer::by_cpu(&listeners, &cpus);
    let pin_to = match app.config.pin_workers {
        true if workers <= cpus.len() => Some(cpus),
        true => {
            tracing::warn!(
                workers,
                cpus = cpus.len(),
                "server.pin_workers: more workers than CPUs to pin them to; not pinned"
            );
            None
        }
        false => None,
    };
    let public_url = app.config.public_url_for(addr);
    let _ = app.public_url.set(public_url.clone());
    let _ = app
        .grpc_target
        .set(crate::mirror::client_config::grpc_target(
            &public_url,
            grpc_addr.map(|a| a.port()),
        ));
    let (shutdown, rx) = watch::channel(false);
    let front = crate::http::service::front(app.clone());
    let grpc = crate::grpc::routes(app.clone());
    let tls = match &app.config.tls {
        Some(files) => Some(Arc::new(Tls::load(files)?)),
        None => None,
    };
    let limits = app.config.conn_limits;
    let open = conn::counter();
    let mut threads = Vec::new();
    for (i, (listener, grpc_listener)) in listeners.into_iter().zip(grpc_listeners).enumerate() {
        let doors = match grpc_listener {
            None => conn::Doors::Both(front.clone(), grpc.clone()),
            Some(_) => conn::Doors::Http(front.clone()),
        };
        let grpc = grpc.clone();
        let tls = tls.clone();
        let serve_rx = rx.clone();
        let open = open.clone();
        let cpu = pin_to.as_ref().map(|cpus| cpus[i]);
        let thread = crate::tasks::spawn_joinable(
            format!("gf-http-{i}"),
            move || -> std::io::Result<()> {
                if let Some(cpu) = cpu
                    && let Err(e) = steer::pin_current_thread(cpu)
                {
                    tracing::warn!(cpu, error = %e, "server.pin_workers: worker not pinned");
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let http = conn::serve(
                        listener,
                        doors,
                        tls.clone(),
                        limits,
                        open.clone(),
                        serve_rx.clone(),
                    );
                    match grpc_listener {
                        None => http.await,
                        Some(l) => {
                            let l = TcpListener::from_std(l)?;
                            let grpc = conn::serve(
                                l,
                                conn::Doors::Grpc(grpc),
                                tls,
                                limits,
                                open,
                                serve_rx,
                            );
                            tokio::try_join!(http, grpc).map(|_| ())
                        }
                    }
                })
            },
        )?;
        threads.push(thread);
    }
    let serve = tokio::spawn(async move {
        crate::tasks::spawn_blocking(move || {
            for t in threads {
                t.join()
                    .map_err(|_| std::io::Error::other("an HTTP worker thread panicked"))??;
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    });
    let tls_watch = tls.map(|tls| watch_tls(tls, rx.clone()));
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
        workers,
        workers.tied_to_cpus = tied,
        workers.pinned = pin_to.is_some(),
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
        tls_watch,
        workers,
    })
}

/// Reloads the TLS files on `SIGHUP`, and when they change, until shutdown.
fn watch_tls(tls: Arc<Tls>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(tls::WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => false,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let tls = tls.clone();
            // Reading the files is blocking work.
            let _ = crate::tasks::spawn_blocking(move || tls.reload(force)).await;
        }
    })
}

/// A non-blocking listening socket with `SO_REUSEPORT`, so one per worker can share a port.
fn bind_reuseport(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let err = |e: std::io::Error| anyhow::anyhow!("cannot listen on {addr} (--listen): {e}");
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.set_reuseport(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)?.into_std().map_err(err)
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
    /// How many HTTP workers serve (`server.workers`).
    #[must_use]
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Stops accepting connections and waits up to `grace` for in-flight requests.
    ///
    /// # Errors
    /// When the server task failed, or requests were still running after `grace`.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.poll.abort();
        self.gc.abort();
        self.records.abort();
        if let Some(t) = &self.tls_watch {
            t.abort();
        }
        match tokio::time::timeout(grace, self.serve).await {
            Ok(joined) => Ok(joined??),
            Err(_) => anyhow::bail!(
                "in-flight requests did not finish within {} s",
                grace.as_secs()
            ),
        }
    }
}
