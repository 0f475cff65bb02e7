//! The application state shared by every handler.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::mirror::Mirror;
use crate::mirror::policy::Policy;
use crate::publish::{Publisher, PublisherSettings};
use crate::registry::{BlobStash, CacheSettings, Registry, UpstreamSettings, Upstreams};
use crate::source::RegistrySource;
use crate::storage::Storage;
use crate::upstream::{UpstreamClient, UpstreamTimeouts};

/// Everything a request may need.
#[derive(Debug)]
pub struct App {
    /// The effective configuration.
    pub config: Config,
    /// The registry read path.
    pub registry: Arc<Registry>,
    /// The object-store roles.
    pub storage: Storage,
    /// The content-addressed mirror.
    pub mirror: Mirror,
    /// Publishing, yanking and deprecation.
    pub publisher: Publisher,
    /// The read-through of upstream registries, when `registry.upstreams` are configured.
    pub upstreams: Option<Arc<Upstreams>>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The public base URL (ending in `/`), known once the listener is bound.
    pub public_url: std::sync::OnceLock<String>,
    /// The gRPC target clients are told (`grpc://HOST:PORT`, `grpcs://` with TLS), known once
    /// the listeners are bound.
    pub grpc_target: std::sync::OnceLock<String>,
    /// Requests in progress (the edge middleware's load-shedding count).
    pub in_flight: std::sync::atomic::AtomicUsize,
}

/// The state handlers extract.
pub type AppState = Arc<App>;

/// Counts a request in progress (HTTP or gRPC) while it lives; see [`App::admit`].
#[derive(Debug)]
pub struct InFlight<'a> {
    counter: &'a std::sync::atomic::AtomicUsize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl App {
    /// Counts a request in progress while the returned guard lives, or refuses it (`None`)
    /// when `server.max_concurrent_requests` are already in progress. One count for both
    /// edges, HTTP and gRPC.
    #[must_use]
    pub fn admit(&self) -> Option<InFlight<'_>> {
        let count = self
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let guard = InFlight {
            counter: &self.in_flight,
        };
        (count <= self.config.max_concurrent_requests).then_some(guard)
    }

    /// Opens the registry source and the storage roles, and loads the first snapshot.
    ///
    /// # Errors
    /// When the registry cannot be read or a storage location cannot be opened.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let storage = Storage::open_with(config.storage.clone(), config.storage_deadlines)?;
        {
            let storage = storage.clone();
            let removed =
                crate::tasks::spawn_blocking(move || storage.clean_local_leftovers()).await?;
            if removed > 0 {
                tracing::info!(
                    removed,
                    "removed spool files and staging files a killed process left"
                );
            }
        }
        let source = {
            let path = config.registry.clone();
            let git_ref = config.registry_ref.clone();
            crate::tasks::spawn_blocking(move || RegistrySource::open(&path, git_ref.as_deref()))
                .await??
        };
        {
            let source = source.clone();
            match crate::tasks::spawn_blocking(move || source.clean_leftovers()).await? {
                Ok(true) => {
                    tracing::info!("removed the staging folder an interrupted registry write left")
                }
                Ok(false) => {}
                // A read-only registry folder serves fine; publishing will report it.
                Err(e) => {
                    tracing::warn!(error = %e, "could not clean the registry's staging folder")
                }
            }
        }
        let registry = Arc::new(
            Registry::load(
                source,
                CacheSettings {
                    capacity_bytes: config.cache_capacity_bytes,
                    ttl: config.cache_ttl,
                },
            )
            .await?,
        );
        let policy = Policy::load(&config.mirror_policy)
            .map_err(|e| anyhow::anyhow!("mirror.policy: {e}"))?;
        let upstream = UpstreamClient::new(UpstreamTimeouts::default())?;
        let mirror =
            Mirror::load(storage.clone(), policy, registry.clone(), upstream.clone()).await?;
        let upstreams = if config.upstreams.is_empty() {
            None
        } else {
            let mut clones = Vec::new();
            for c in &config.upstream_clones {
                let (path, git_ref) = (c.path.clone(), c.git_ref.clone());
                let source = crate::tasks::spawn_blocking(move || {
                    RegistrySource::open(&path, git_ref.as_deref())
                })
                .await?
                .map_err(|e| {
                    anyhow::anyhow!(
                        "registry.upstreams: the clone of {} at {}: {e}",
                        c.url,
                        c.path.display()
                    )
                })?;
                tracing::info!(upstream = %c.url, clone = %source.describe(), "upstream read from a local clone");
                clones.push((c.url.clone(), source));
            }
            Some(Arc::new(
                Upstreams::load(
                    UpstreamSettings {
                        urls: config.upstreams.clone(),
                        ttl: config.upstream_ttl,
                        negative_ttl: config.upstream_negative_ttl,
                        modules: config.upstream_modules.clone(),
                        clones,
                    },
                    storage.clone(),
                    Arc::new(upstream.clone()),
                    Arc::new(MirrorStash(mirror.clone())),
                )
                .await?,
            ))
        };
        if let Some(up) = &upstreams {
            // Retention must never evict a pinned upstream file: with the upstream down or
            // drifted, it could not be had again.
            mirror.hold(Arc::new(UpstreamHolds(up.clone())));
        }
        let publisher = Publisher::new(
            registry.clone(),
            mirror.clone(),
            storage.clone(),
            upstream,
            PublisherSettings {
                upstream_registries: config.upstream_registries.clone(),
                ..PublisherSettings::default()
            },
        );
        // The quick probe: a backend that loses objects from listings or does not show what
        // was written must not receive trusted writes (reads still work).
        let report =
            crate::storage::probe::probe(&storage, &crate::storage::probe::ProbeOptions::quick())
                .await;
        if !report.is_go() {
            let evidence: Vec<String> = report
                .failures()
                .map(|(role, c)| format!("{role}: {}", c.name))
                .collect();
            let reason = format!(
                "the storage backend failed its start-up probe ({})",
                evidence.join(", ")
            );
            if config.allow_no_go {
                tracing::warn!(%reason, "storage.allow_no_go is set: accepting pinned ingest anyway");
            } else {
                tracing::error!(%reason, "pull-through refused; run `gf-registry storage probe` for the evidence");
                mirror.refuse_ingest(Some(reason));
            }
        }
        let metrics = Metrics::new(registry.clone(), mirror.clone(), upstreams.clone());
        Ok(Self {
            config,
            registry,
            storage,
            mirror,
            publisher,
            upstreams,
            metrics,
            public_url: std::sync::OnceLock::new(),
            grpc_target: std::sync::OnceLock::new(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The public base URL, ending in `/`.
    #[must_use]
    pub fn public_url(&self) -> String {
        self.public_url
            .get()
            .cloned()
            .unwrap_or_else(|| self.config.public_url_for(self.config.listen))
    }

    /// The gRPC target clients are told: `grpc://` (`grpcs://` with TLS) and the public URL's
    /// host, with the gRPC port when it has its own.
    #[must_use]
    pub fn grpc_target(&self) -> String {
        self.grpc_target
            .get()
            .cloned()
            .unwrap_or_else(|| crate::mirror::client_config::grpc_target(&self.public_url(), None))
    }

    /// Whether every backend answers: the storage roles list within a short limit, and the
    /// `cas` role takes a new spool file (a read-only or full folder still answers reads).
    ///
    /// # Errors
    /// The first backend failure.
    pub async fn check_ready(&self) -> Result<(), crate::storage::StorageError> {
        let limit = Duration::from_secs(2);
        self.storage.check(limit).await?;
        self.storage.check_writable(limit).await
    }
}

/// The upstream read-through's pins, as retention holds.
#[derive(Debug)]
struct UpstreamHolds(Arc<Upstreams>);

impl crate::mirror::RetentionHolds for UpstreamHolds {
    fn held(&self) -> Vec<(String, String)> {
        self.0.held()
    }
}

/// The mirror's `cas` role holds the upstream read-through's pinned files: each is a blob with
/// provenance, reachable by digest (`/cas/sha256/HEX`) and read back verified.
#[derive(Debug)]
struct MirrorStash(Mirror);

impl BlobStash for MirrorStash {
    fn put(
        &self,
        bytes: bytes::Bytes,
        label: String,
    ) -> futures::future::BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            self.0
                .ingest_bytes(Arc::new(bytes.to_vec()), &label, "registry.upstreams")
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn get(
        &self,
        sha256: String,
    ) -> futures::future::BoxFuture<'_, Result<Option<bytes::Bytes>, String>> {
        use futures::StreamExt as _;
        Box::pin(async move {
            let mut blob = match self.0.read_blob(&sha256).await {
                Ok(b) => b,
                Err(crate::mirror::MirrorError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let mut out = Vec::new();
            while let Some(piece) = blob.body.next().await {
                out.extend_from_slice(&piece.map_err(|e| e.to_string())?);
            }
            Ok(Some(bytes::Bytes::from(out)))
        })
    }
}
