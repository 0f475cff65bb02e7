//! Prometheus metrics: request counts and latency by matched route and status (updated per
//! request), and registry cache figures (read from the service at scrape time).

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::mirror::Mirror;
use crate::registry::{Registry, UpstreamStatus, Upstreams};

/// Labels of a served request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route pattern (`/modules/{name}/metadata.json`), or `unmatched`.
    pub route: String,
    /// The HTTP method: a standard one by name, anything else `other` (see [`method_label`]).
    pub method: &'static str,
    /// The response status.
    pub status: u16,
}

/// The label of a request method. A client may send any token as a method, and every label
/// value is a series kept and rendered at each scrape: 2,000 made-up 1 KB methods once grew
/// `/metrics` from 19 KB to 42 MB. So only the methods of RFC 9110 and PATCH keep their name.
#[must_use]
pub fn method_label(method: &str) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    STANDARD
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("other")
}

/// Labels of a served gRPC call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// `Service/Method` of a method this server offers, or `other`.
    pub method: &'static str,
    /// The gRPC status code's name (`OK`, `NOT_FOUND`, ...).
    pub code: &'static str,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;
type GrpcHistogramFamily = Family<GrpcLabels, Histogram, fn() -> Histogram>;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    grpc_calls: Family<GrpcLabels, Counter>,
    grpc_latency: GrpcHistogramFamily,
    /// The counter and histogram of fixed label sets, by slot (see [`Metrics::observe_slot`]).
    slots: [OnceLock<(Counter, Histogram)>; SLOTS],
}

/// How many fixed label sets [`Metrics::observe_slot`] keeps handles for.
pub const SLOTS: usize = 32;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~1.6 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

impl Metrics {
    /// Registers every metric; `registry`, `mirror` and `upstreams` feed their figures at
    /// scrape time.
    #[must_use]
    pub fn new(registry: Arc<Registry>, mirror: Mirror, upstreams: Option<Arc<Upstreams>>) -> Self {
        let mut reg = prometheus_client::registry::Registry::with_prefix("gf_registry");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        reg.register(
            "http_requests",
            "HTTP requests served, by matched route, method and status",
            requests.clone(),
        );
        reg.register(
            "http_request_duration_seconds",
            "Time to produce the response head, by matched route, method and status",
            latency.clone(),
        );
        let grpc_calls = Family::<GrpcLabels, Counter>::default();
        let grpc_latency: GrpcHistogramFamily = Family::new_with_constructor(latency_histogram);
        reg.register(
            "grpc_calls",
            "gRPC calls served, by method and status code",
            grpc_calls.clone(),
        );
        reg.register(
            "grpc_call_duration_seconds",
            "Time to produce a gRPC call's answer (the first message of a stream), by method and status code",
            grpc_latency.clone(),
        );
        reg.register_collector(Box::new(CacheCollector(registry)));
        reg.register_collector(Box::new(MirrorCollector(mirror)));
        if let Some(upstreams) = upstreams {
            reg.register_collector(Box::new(UpstreamCollector(upstreams)));
        }
        Self {
            registry: reg,
            requests,
            latency,
            grpc_calls,
            grpc_latency,
            slots: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Records one request.
    pub fn observe(&self, labels: RequestLabels, seconds: f64) {
        self.latency.get_or_create(&labels).observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    /// Records one gRPC call.
    pub fn observe_grpc(&self, labels: GrpcLabels, seconds: f64) {
        self.grpc_latency.get_or_create(&labels).observe(seconds);
        self.grpc_calls.get_or_create(&labels).inc();
    }

    /// Records one request whose labels the caller has numbered: `slot` (below [`SLOTS`]) must
    /// always stand for the same labels, which `labels` makes only on the slot's first use.
    /// Later requests skip making the labels and looking them up, the two costs of
    /// [`Metrics::observe`] on a hot path. A slot out of range falls back to it.
    pub fn observe_slot(&self, slot: usize, labels: impl FnOnce() -> RequestLabels, seconds: f64) {
        let Some(cell) = self.slots.get(slot) else {
            self.observe(labels(), seconds);
            return;
        };
        let (requests, latency) = cell.get_or_init(|| {
            let labels = labels();
            (
                self.requests.get_or_create(&labels).clone(),
                self.latency.get_or_create(&labels).clone(),
            )
        });
        latency.observe(seconds);
        requests.inc();
    }

    /// Renders the OpenMetrics text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Writes one constant counter, with or without the cache label.
fn encode_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
    labels: Option<&CacheLabels>,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let mut metric = encoder.encode_descriptor(name, help, None, c.metric_type())?;
    match labels {
        Some(l) => c.encode(metric.encode_family(l)?),
        None => c.encode(metric),
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

#[derive(Debug)]
struct CacheCollector(Arc<Registry>);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.0.cache_stats();
        let (hits, misses, entries, bytes) = (
            stats.hits,
            stats.misses,
            stats.entries,
            stats.weighted_bytes,
        );
        let labels = CacheLabels {
            cache: "registry_files",
        };
        let counters = [
            ("cache_hits", "Lookups answered from a named cache", hits),
            (
                "cache_misses",
                "Lookups not answered from a named cache",
                misses,
            ),
            (
                "cache_loads",
                "Loads from the source (concurrent misses of one key share a load)",
                stats.loads,
            ),
        ];
        for (name, help, value) in counters {
            encode_counter(&mut encoder, name, help, value, Some(&labels))?;
        }
        let gauges = [
            ("cache_entries", "Entries in a named cache", entries),
            ("cache_weighted_bytes", "Bytes held by a named cache", bytes),
            (
                "registry_modules",
                "Modules in the served registry snapshot",
                self.0.module_count() as u64,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let mut family = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MirrorCollector(Mirror);

impl Collector for MirrorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.0.stats();
        let counters = [
            (
                "mirror_hits",
                "Blobs served from the store",
                s.hits.load(Relaxed),
            ),
            (
                "mirror_upstream_fetches",
                "Upstream fetches started by pull-through",
                s.upstream_fetches.load(Relaxed),
            ),
            (
                "mirror_fills_stored",
                "Pull-throughs that completed, verified and were stored",
                s.fills_stored.load(Relaxed),
            ),
            (
                "mirror_fills_failed",
                "Pull-throughs that failed (nothing stored)",
                s.fills_failed.load(Relaxed),
            ),
            (
                "mirror_integrity_failures",
                "Stored blobs that failed verification on read (quarantined)",
                s.integrity_failures.load(Relaxed),
            ),
            (
                "mirror_served_bytes",
                "Body bytes served from the store",
                s.bytes_served.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            encode_counter(&mut encoder, name, help, value, None)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    /// The upstream registry's base URL: operator configuration, so the series are bounded.
    upstream: String,
}

#[derive(Debug)]
struct UpstreamCollector(Arc<Upstreams>);

/// A metric's name, help and how to read it off an upstream's status.
type Figure<T> = (&'static str, &'static str, fn(&UpstreamStatus) -> T);

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let statuses = self.0.status();
        let counters: [Figure<u64>; 4] = [
            (
                "upstream_registry_hits",
                "Registry requests answered from a pin or a fresh metadata.json, by upstream",
                |s| s.hits,
            ),
            (
                "upstream_registry_misses",
                "Registry requests that asked the upstream, by upstream",
                |s| s.misses,
            ),
            (
                "upstream_registry_errors",
                "Upstream registry failures (timeouts, refused, 5xx), by upstream",
                |s| s.errors,
            ),
            (
                "upstream_registry_drift_events",
                "Pinned upstream files whose upstream bytes changed, by upstream",
                |s| s.drift_count,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for s in &statuses {
                let labels = UpstreamLabels {
                    upstream: s.url.clone(),
                };
                ConstCounter::new(value(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        let gauges: [Figure<usize>; 2] = [
            (
                "upstream_registry_files_pinned",
                "Immutable upstream registry files pinned, by upstream",
                |s| s.files_pinned,
            ),
            (
                "upstream_registry_metadata_files",
                "Upstream metadata.json files known, by upstream",
                |s| s.metadata_files,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for s in &statuses {
                let labels = UpstreamLabels {
                    upstream: s.url.clone(),
                };
                ConstGauge::new(i64::try_from(value(s)).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
