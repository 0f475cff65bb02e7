//! Configuration: one typed struct, layered from defaults < TOML file < `GF_REGISTRY_*`
//! environment < command-line flags, remembering where every value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use crate::storage::{Deadlines, Location, S3Settings, StorageLayout};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// Derived from another setting.
    Derived(&'static str),
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Derived(from) => write!(f, "derived from {from}"),
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(v) => write!(f, "env {v}"),
            Self::Flag(n) => write!(f, "flag --{n}"),
        }
    }
}

/// A configuration problem, naming the key, variable, flag or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is invalid.
    #[error("{key} ({origin}): invalid value {value:?}: {message}")]
    Value {
        /// The setting's key.
        key: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// The value.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// Settings that contradict each other.
    #[error("{0}")]
    Conflict(String),
}

/// One setting: its key in the file (`section.name`), its environment variable and its flag.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// `section.name` in the TOML file.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The command-line flag, if there is one.
    pub flag: Option<&'static str>,
    /// The default, as text (`None`: unset or derived).
    pub default: Option<&'static str>,
    /// One line of documentation.
    pub doc: &'static str,
}

macro_rules! settings {
    ($($id:ident = ($key:literal, $env:literal, $flag:expr, $default:expr, $doc:literal);)*) => {
        /// Every setting, in the order `config show` prints them.
        pub const SETTINGS: &[Setting] = &[$(Setting { key: $key, env: $env, flag: $flag, default: $default, doc: $doc }),*];
        #[allow(non_camel_case_types, clippy::upper_case_acronyms, reason = "indices named after keys")]
        #[derive(Debug, Clone, Copy)]
        #[repr(usize)]
        enum Id { $($id),* }
    };
}

settings! {
    LISTEN = ("server.listen", "GF_REGISTRY_LISTEN", Some("listen"), Some("127.0.0.1:8080"), "address to listen on");
    GRPC_LISTEN = ("server.grpc_listen", "GF_REGISTRY_GRPC_LISTEN", None, None, "address of a port of its own for gRPC (the Remote Asset API); default: gRPC on the listen port, told apart by content-type");
    PUBLIC_URL = ("server.public_url", "GF_REGISTRY_PUBLIC_URL", Some("public-url"), None, "how clients reach the server (default: http://LISTEN/)");
    TLS_CERT = ("server.tls_cert", "GF_REGISTRY_TLS_CERT", Some("tls-cert"), None, "PEM certificate chain: serve HTTPS and gRPC over TLS on the listen port, with server.tls_key (both reloaded on SIGHUP and when the files change; default: plain HTTP)");
    TLS_KEY = ("server.tls_key", "GF_REGISTRY_TLS_KEY", Some("tls-key"), None, "PEM private key of server.tls_cert");
    TLS_CLIENT_CA = ("server.tls_client_ca", "GF_REGISTRY_TLS_CLIENT_CA", None, None, "PEM CA certificates: a client may present a certificate, which must then chain to one of them (default: none asked for)");
    LOG_FORMAT = ("server.log_format", "GF_REGISTRY_LOG_FORMAT", Some("log-format"), Some("text"), "log format: text or json");
    ACCESS_LOG = ("server.access_log", "GF_REGISTRY_ACCESS_LOG", None, Some("true"), "one log line per request (method, path, status, bytes, duration, client, actor), in the log format");
    SHUTDOWN = ("server.shutdown_timeout_seconds", "GF_REGISTRY_SHUTDOWN_TIMEOUT_SECONDS", None, Some("30"), "how long in-flight requests may take to finish on SIGTERM");
    WORKERS = ("server.workers", "GF_REGISTRY_WORKERS", None, None, "HTTP worker threads, each with its own listener and runtime (default: one per core)");
    PIN_WORKERS = ("server.pin_workers", "GF_REGISTRY_PIN_WORKERS", None, Some("false"), "run HTTP worker i only on the i-th CPU the process may use (for hosts whose cores it has to itself)");
    MAX_CONNECTIONS = ("server.max_connections", "GF_REGISTRY_MAX_CONNECTIONS", None, Some("4096"), "open connections above which new ones get an immediate 503");
    MAX_REQUESTS = ("server.max_concurrent_requests", "GF_REGISTRY_MAX_CONCURRENT_REQUESTS", None, Some("1024"), "requests in progress above which new ones get an immediate 503");
    HEADER_TIMEOUT = ("server.header_timeout_seconds", "GF_REGISTRY_HEADER_TIMEOUT_SECONDS", None, Some("10"), "time a client has to send a request's headers (slow clients are cut off); idle connections are closed after it too");
    BODY_TIMEOUT = ("server.body_timeout_seconds", "GF_REGISTRY_BODY_TIMEOUT_SECONDS", None, Some("120"), "time a client may pause while sending a request body");
    MAX_HEADER_BYTES = ("server.max_header_bytes", "GF_REGISTRY_MAX_HEADER_BYTES", None, Some("65536"), "largest request line plus headers");
    REGISTRY = ("registry.path", "GF_REGISTRY_REGISTRY", Some("registry"), Some("./registry"), "registry tree: a directory or a git repository");
    REGISTRY_REF = ("registry.ref", "GF_REGISTRY_REGISTRY_REF", Some("registry-ref"), None, "git ref to serve (default: the current branch)");
    POLL = ("registry.poll_interval_seconds", "GF_REGISTRY_POLL_INTERVAL_SECONDS", None, Some("10"), "how often to look for new commits or folders (0: never)");
    CACHE_BYTES = ("registry.cache_capacity_bytes", "GF_REGISTRY_CACHE_CAPACITY_BYTES", None, Some("67108864"), "registry file cache size in bytes (0 disables it)");
    CACHE_TTL = ("registry.cache_ttl_seconds", "GF_REGISTRY_CACHE_TTL_SECONDS", None, Some("3600"), "how long a cached registry file may stay");
    UPSTREAMS = ("registry.upstreams", "GF_REGISTRY_UPSTREAMS", Some("upstream"), None, "upstream registries read through, in order, for modules this one does not hold (`[[registry.upstreams]] url = ...`; comma-separated; default: none)");
    UPSTREAM_TTL = ("registry.upstream_ttl_seconds", "GF_REGISTRY_UPSTREAM_TTL_SECONDS", None, Some("600"), "how long an upstream metadata.json is served before it is revalidated (pinned files are re-checked for drift as often)");
    UPSTREAM_MODULES = ("registry.upstream_modules", "GF_REGISTRY_UPSTREAM_MODULES", None, None, "which upstream modules are served: globs over module names, `!glob` denies (deny wins; with allow globs only matching modules; comma-separated; default: every module)");
    UPSTREAM_NEGATIVE_TTL = ("registry.upstream_negative_ttl_seconds", "GF_REGISTRY_UPSTREAM_NEGATIVE_TTL_SECONDS", None, Some("60"), "how long an upstream's 404 for a registry file is believed");
    DATA = ("storage.data", "GF_REGISTRY_DATA", Some("data"), Some("./data"), "object-store root of the mirror (URL or local path)");
    CAS = ("storage.cas", "GF_REGISTRY_CAS", None, None, "location of the cas role (default: DATA/cas)");
    RECORDS = ("storage.records", "GF_REGISTRY_RECORDS", None, None, "location of the records role (default: DATA/records)");
    S3_ENDPOINT = ("storage.s3_endpoint", "GF_REGISTRY_S3_ENDPOINT", None, None, "S3 endpoint URL (else AWS_ENDPOINT)");
    S3_REGION = ("storage.s3_region", "GF_REGISTRY_S3_REGION", None, None, "S3 region (else AWS_REGION)");
    S3_ALLOW_HTTP = ("storage.s3_allow_http", "GF_REGISTRY_S3_ALLOW_HTTP", None, None, "allow a plain-http S3 endpoint (else AWS_ALLOW_HTTP)");
    S3_KEY_ID = ("storage.s3_access_key_id", "GF_REGISTRY_S3_ACCESS_KEY_ID", None, None, "S3 access key id (else AWS_ACCESS_KEY_ID)");
    S3_SECRET = ("storage.s3_secret_access_key", "GF_REGISTRY_S3_SECRET_ACCESS_KEY", None, None, "S3 secret key (else AWS_SECRET_ACCESS_KEY); never printed");
    ANSWER_TIMEOUT = ("storage.answer_timeout_ms", "GF_REGISTRY_STORAGE_ANSWER_TIMEOUT_MS", None, Some("5000"), "how long a storage call waits for the backend to answer (head, put, delete, a read's or listing's first bytes) before it fails with a storage error (503)");
    STALL_TIMEOUT = ("storage.stall_timeout_ms", "GF_REGISTRY_STORAGE_STALL_TIMEOUT_MS", None, Some("10000"), "longest pause allowed inside a streamed storage read, listing or upload part; object_store's own retries end within 3 of them");
    MIRROR_POLICY = ("mirror.policy", "GF_REGISTRY_MIRROR_POLICY", Some("mirror-policy"), Some("./mirror-policy"), "mirror policy folder");
    RECORDS_REFRESH = ("mirror.records_refresh_seconds", "GF_REGISTRY_RECORDS_REFRESH_SECONDS", None, Some("10"), "how often to read records other replicas wrote (0: only on misses)");
    ALLOW_NO_GO = ("storage.allow_no_go", "GF_REGISTRY_ALLOW_NO_GO", None, Some("false"), "accept pinned ingest on a backend whose start-up probe says no-go (logged on every start)");
    GC_INTERVAL = ("mirror.gc_interval_seconds", "GF_REGISTRY_GC_INTERVAL_SECONDS", None, Some("3600"), "how often retention runs in the server (0: never; `mirror gc` runs it by hand)");
    UPSTREAM_REGISTRIES = ("publish.upstream_registries", "GF_REGISTRY_UPSTREAM_REGISTRIES", None, Some("https://bcr.bazel.build/"), "registries a published bazel_dep may resolve in besides this one (comma-separated; empty: none)");
    MAX_PUBLISH_BYTES = ("publish.max_body_bytes", "GF_REGISTRY_MAX_PUBLISH_BYTES", None, Some("268435456"), "largest publish request body (an uploaded archive is base64 in it)");
}

/// The most HTTP workers `server.workers` accepts (each is a thread with its own listener).
pub const MAX_WORKERS: usize = 256;

/// The longest storage deadline accepted (10 minutes): a longer one is a typo, and would
/// hold requests as long as the hang it is there to cut short.
pub const MAX_STORAGE_TIMEOUT_MS: u64 = 600_000;

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "GF_REGISTRY_CONFIG";

/// Raw inputs for one resolution: flags (by flag name) and the environment.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// `--config`.
    pub config_file: Option<PathBuf>,
    /// Flag values by flag name (without `--`).
    pub flags: BTreeMap<&'static str, String>,
    /// The environment (only `GF_REGISTRY_*` matter).
    pub env: BTreeMap<String, String>,
}

/// A value with its origin.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub origin: Origin,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected `text` or `json`".to_owned()),
        }
    }
}

/// Connection limits (from `server.*` settings).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections over all workers.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Bytes of request line and headers.
    pub max_header_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
}

/// The PEM files of TLS on the listen port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
    /// CA certificates a client certificate must chain to, when clients may present one.
    pub client_ca: Option<PathBuf>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// Listen address.
    pub listen: SocketAddr,
    /// A port of its own for gRPC (`server.grpc_listen`); `None`: gRPC on `listen`.
    pub grpc_listen: Option<SocketAddr>,
    /// Public base URL, if configured (otherwise derived from the bound address).
    pub public_url: Option<Url>,
    /// TLS on the listen port (`server.tls_cert`, `server.tls_key`, `server.tls_client_ca`).
    pub tls: Option<TlsFiles>,
    /// Log format.
    pub log_format: LogFormat,
    /// Graceful shutdown limit.
    pub shutdown_timeout: Duration,
    /// HTTP worker threads (each a single-threaded runtime on its own listener).
    pub workers: usize,
    /// Whether worker `i` runs only on the `i`-th CPU the process may use.
    pub pin_workers: bool,
    /// One log line per request (`server.access_log`).
    pub access_log: bool,
    /// Connection limits and timeouts.
    pub conn_limits: ConnLimits,
    /// Requests in progress above which new ones get a `503`.
    pub max_concurrent_requests: usize,
    /// Longest pause while a client sends a request body.
    pub body_timeout: Duration,
    /// Registry tree.
    pub registry: PathBuf,
    /// Git ref.
    pub registry_ref: Option<String>,
    /// Poll interval (zero: never).
    pub poll_interval: Duration,
    /// Registry cache capacity in bytes.
    pub cache_capacity_bytes: u64,
    /// Registry cache TTL.
    pub cache_ttl: Duration,
    /// Upstream registries read through, in order (`registry.upstreams`).
    pub upstreams: Vec<Url>,
    /// Upstreams read from a local clone of their tree (`clone` and `ref` in a
    /// `[[registry.upstreams]]` table), each naming its upstream by URL.
    pub upstream_clones: Vec<UpstreamClone>,
    /// How long an upstream `metadata.json` stays fresh.
    pub upstream_ttl: Duration,
    /// How long an upstream's 404 is believed.
    pub upstream_negative_ttl: Duration,
    /// Which upstream modules are served (`registry.upstream_modules`).
    pub upstream_modules: crate::registry::ModuleFilter,
    /// Storage roles.
    pub storage: StorageLayout,
    /// Deadlines on every storage call (`storage.answer_timeout_ms`, `storage.stall_timeout_ms`).
    pub storage_deadlines: Deadlines,
    /// Mirror policy folder.
    pub mirror_policy: PathBuf,
    /// How often retention runs in the server (zero: never).
    pub gc_interval: Duration,
    /// How often records written by other replicas are read (zero: only on misses).
    pub records_refresh: Duration,
    /// Whether pinned ingest is accepted on a backend whose start-up probe says no-go.
    pub allow_no_go: bool,
    /// Registries a published `bazel_dep` may resolve in besides this one.
    pub upstream_registries: Vec<Url>,
    /// Largest publish request body.
    pub max_publish_bytes: usize,
    /// Tokens and their scopes (`[auth]` in the config file).
    pub auth: crate::auth::AuthConfig,
    /// Every setting's textual value and origin, for `config show`.
    pub shown: Vec<(Setting, Option<String>, Origin)>,
    /// Things worth telling the operator that are not errors.
    pub warnings: Vec<String>,
}

impl Config {
    /// Resolves the configuration from its inputs.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key, variable, flag or file at fault.
    pub fn resolve(inputs: &Inputs) -> Result<Self, ConfigError> {
        // Unknown GF_REGISTRY_* variables are warned about, not refused: Kubernetes injects
        // GF_REGISTRY_PORT, GF_REGISTRY_SERVICE_HOST, ... for a Service named gf-registry.
        let mut warnings: Vec<String> = inputs
            .env
            .keys()
            .filter(|var| {
                var.starts_with("GF_REGISTRY_")
                    && *var != CONFIG_ENV
                    && !SETTINGS.iter().any(|s| s.env == *var)
            })
            .map(|var| format!("ignoring unknown environment variable {var}"))
            .collect();
        // An empty variable counts as unset.
        let env: BTreeMap<&str, &str> = inputs
            .env
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let config_file = inputs
            .config_file
            .clone()
            .or_else(|| env.get(CONFIG_ENV).map(PathBuf::from));
        let (file, auth_table, clones) = match &config_file {
            Some(p) => read_file(p)?,
            None => (BTreeMap::new(), None, Vec::new()),
        };
        let auth = match &auth_table {
            Some(t) => {
                crate::auth::AuthConfig::from_toml(t).map_err(|message| ConfigError::File {
                    path: config_file.clone().unwrap_or_default(),
                    message,
                })?
            }
            None => crate::auth::AuthConfig::default(),
        };
        let layered: Vec<(Setting, Option<String>, Origin)> = SETTINGS
            .iter()
            .map(|s| {
                let (value, origin) = if let Some(v) = s.flag.and_then(|f| inputs.flags.get(f)) {
                    (Some(v.clone()), Origin::Flag(s.flag.unwrap_or_default()))
                } else if let Some(v) = env.get(s.env) {
                    (Some((*v).to_owned()), Origin::Env(s.env))
                } else if let Some(v) = file.get(s.key) {
                    (
                        Some(v.clone()),
                        Origin::File(config_file.clone().unwrap_or_default()),
                    )
                } else {
                    (s.default.map(str::to_owned), Origin::Default)
                };
                (*s, value, origin)
            })
            .collect();
        let r = Resolver { layered: &layered };

        let data = r
            .parse(Id::DATA, Location::parse)?
            .ok_or_else(|| missing(Id::DATA))?;
        let cas = r
            .parse(Id::CAS, Location::parse)?
            .unwrap_or_else(|| data.join("cas"));
        let records = r
            .parse(Id::RECORDS, Location::parse)?
            .unwrap_or_else(|| data.join("records"));
        let mut s3 = S3Settings::default();
        for (id, key) in [
            (Id::S3_ENDPOINT, "endpoint"),
            (Id::S3_REGION, "region"),
            (Id::S3_ALLOW_HTTP, "allow_http"),
            (Id::S3_KEY_ID, "access_key_id"),
            (Id::S3_SECRET, "secret_access_key"),
        ] {
            if let Some(v) = r.parse(id, |s| Ok::<_, String>(s.to_owned()))? {
                s3.options.push((key.to_owned(), v));
            }
        }
        let storage = StorageLayout { cas, records, s3 };
        let millis = |id| {
            r.parse(id, |s| match s.parse::<u64>() {
                Ok(n) if (1..=MAX_STORAGE_TIMEOUT_MS).contains(&n) => Ok(Duration::from_millis(n)),
                Ok(_) => Err(format!(
                    "must be between 1 and {MAX_STORAGE_TIMEOUT_MS} (milliseconds)"
                )),
                Err(e) => Err(e.to_string()),
            })
        };
        let defaults = Deadlines::default();
        let storage_deadlines = Deadlines {
            answer: millis(Id::ANSWER_TIMEOUT)?.unwrap_or(defaults.answer),
            stall: millis(Id::STALL_TIMEOUT)?.unwrap_or(defaults.stall),
        };
        storage
            .validate()
            .map_err(|e| ConfigError::Conflict(e.to_string()))?;
        let registry: PathBuf = r
            .parse(Id::REGISTRY, |s| Ok::<_, String>(PathBuf::from(s)))?
            .ok_or_else(|| missing(Id::REGISTRY))?;
        for (role, loc) in [("cas", &storage.cas), ("records", &storage.records)] {
            if loc.overlaps_dir(&registry) {
                return Err(ConfigError::Conflict(format!(
                    "storage role `{role}` ({loc}) and the registry ({}) share a location; keep them apart",
                    registry.display()
                )));
            }
        }
        let public_url = r.parse(Id::PUBLIC_URL, |s| {
            let u = Url::parse(s).map_err(|e| e.to_string())?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err("must be an http:// or https:// URL".to_owned());
            }
            Ok(u)
        })?;
        let secs = |id| r.parse(id, |s| s.parse::<u64>().map_err(|e| e.to_string()));
        let flag = |id| {
            r.parse(id, |s| {
                s.parse::<bool>()
                    .map_err(|_| "expected true or false".to_owned())
            })
        };
        let mut shown = layered.clone();
        // The secret stays out of `config show` and of Debug output.
        if let Some(secret) = shown[Id::S3_SECRET as usize].1.as_mut() {
            *secret = "(set, not shown)".to_owned();
        }
        if public_url.is_none() {
            shown[Id::PUBLIC_URL as usize].2 = Origin::Derived("server.listen");
        }
        if shown[Id::WORKERS as usize].1.is_none() {
            shown[Id::WORKERS as usize].2 = Origin::Derived("the cores available");
        }
        let workers = r
            .parse(Id::WORKERS, |s| match s.parse::<usize>() {
                Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
                Ok(_) => Err(format!("must be between 1 and {MAX_WORKERS}")),
                Err(e) => Err(e.to_string()),
            })?
            .unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
        let upstreams: Vec<Url> = r.parse(Id::UPSTREAMS, url_list)?.unwrap_or_default();
        let mut upstream_clones = Vec::new();
        for clone in clones {
            // The upstream list may come from a variable or a flag instead of the file: a
            // clone applies to the upstream of its URL, if configured.
            if upstreams.iter().any(|u| same_base(u, &clone.url)) {
                upstream_clones.push(clone);
            } else {
                warnings.push(format!(
                    "registry.upstreams: the clone {} names {}, which is not a configured \
                     upstream; it is not used",
                    clone.path.display(),
                    clone.url
                ));
            }
        }
        let upstream_registries = match r.parse(Id::UPSTREAM_REGISTRIES, url_list)? {
            // Published bazel_deps resolve where the read-through reads, when it is set.
            Some(_)
                if matches!(layered[Id::UPSTREAM_REGISTRIES as usize].2, Origin::Default)
                    && !upstreams.is_empty() =>
            {
                upstreams.clone()
            }
            v => v.unwrap_or_default(),
        };
        let path = |s: &str| Ok::<_, String>(PathBuf::from(s));
        let tls = match (
            r.parse(Id::TLS_CERT, path)?,
            r.parse(Id::TLS_KEY, path)?,
            r.parse(Id::TLS_CLIENT_CA, path)?,
        ) {
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (None, None, None) => None,
            (Some(_), None, _) => {
                return Err(ConfigError::Conflict(
                    "server.tls_cert is set without server.tls_key (--tls-key)".to_owned(),
                ));
            }
            (None, Some(_), _) => {
                return Err(ConfigError::Conflict(
                    "server.tls_key is set without server.tls_cert (--tls-cert)".to_owned(),
                ));
            }
            (None, None, Some(_)) => {
                return Err(ConfigError::Conflict(
                    "server.tls_client_ca is set without server.tls_cert and server.tls_key"
                        .to_owned(),
                ));
            }
        };
        Ok(Self {
            config_file,
            tls,
            listen: r
                .parse(Id::LISTEN, |s| {
                    s.parse::<SocketAddr>()
                        .map_err(|e| format!("{e} (expected IP:PORT)"))
                })?
                .ok_or_else(|| missing(Id::LISTEN))?,
            grpc_listen: r.parse(Id::GRPC_LISTEN, |s| {
                s.parse::<SocketAddr>()
                    .map_err(|e| format!("{e} (expected IP:PORT)"))
            })?,
            public_url,
            log_format: r
                .parse(Id::LOG_FORMAT, LogFormat::from_str)?
                .unwrap_or(LogFormat::Text),
            shutdown_timeout: Duration::from_secs(secs(Id::SHUTDOWN)?.unwrap_or(30)),
            workers,
            pin_workers: flag(Id::PIN_WORKERS)?.unwrap_or(false),
            access_log: flag(Id::ACCESS_LOG)?.unwrap_or(true),
            conn_limits: ConnLimits {
                max_connections: usize::try_from(secs(Id::MAX_CONNECTIONS)?.unwrap_or(4096))
                    .unwrap_or(usize::MAX)
                    .max(1),
                header_timeout: Duration::from_secs(secs(Id::HEADER_TIMEOUT)?.unwrap_or(10).max(1)),
                max_header_bytes: usize::try_from(secs(Id::MAX_HEADER_BYTES)?.unwrap_or(65536))
                    .unwrap_or(usize::MAX),
                max_streams_per_connection: 100,
            },
            max_concurrent_requests: usize::try_from(secs(Id::MAX_REQUESTS)?.unwrap_or(1024))
                .unwrap_or(usize::MAX)
                .max(1),
            body_timeout: Duration::from_secs(secs(Id::BODY_TIMEOUT)?.unwrap_or(120).max(1)),
            registry,
            registry_ref: r.parse(Id::REGISTRY_REF, |s| {
                if s.is_empty() {
                    Err("is empty".to_owned())
                } else {
                    Ok(s.to_owned())
                }
            })?,
            poll_interval: Duration::from_secs(secs(Id::POLL)?.unwrap_or(10)),
            cache_capacity_bytes: secs(Id::CACHE_BYTES)?.unwrap_or(0),
            cache_ttl: Duration::from_secs(secs(Id::CACHE_TTL)?.unwrap_or(3600).max(1)),
            upstream_ttl: Duration::from_secs(secs(Id::UPSTREAM_TTL)?.unwrap_or(600)),
            upstream_negative_ttl: Duration::from_secs(
                secs(Id::UPSTREAM_NEGATIVE_TTL)?.unwrap_or(60),
            ),
            upstreams,
            upstream_clones,
            upstream_modules: r
                .parse(Id::UPSTREAM_MODULES, crate::registry::ModuleFilter::parse)?
                .unwrap_or_default(),
            storage,
            storage_deadlines,
            mirror_policy: r
                .parse(Id::MIRROR_POLICY, |s| Ok::<_, String>(PathBuf::from(s)))?
                .ok_or_else(|| missing(Id::MIRROR_POLICY))?,
            gc_interval: Duration::from_secs(secs(Id::GC_INTERVAL)?.unwrap_or(3600)),
            records_refresh: Duration::from_secs(secs(Id::RECORDS_REFRESH)?.unwrap_or(10)),
            allow_no_go: flag(Id::ALLOW_NO_GO)?.unwrap_or(false),
            upstream_registries,
            max_publish_bytes: r
                .parse(Id::MAX_PUBLISH_BYTES, |s| {
                    s.parse::<usize>().map_err(|e| e.to_string())
                })?
                .unwrap_or(256 << 20),
            auth,
            shown,
            warnings,
        })
    }

    /// The effective configuration as `key = value  # origin` lines.
    #[must_use]
    pub fn show(&self) -> String {
        let mut out = String::new();
        for w in &self.warnings {
            out.push_str(&format!("# warning: {w}\n"));
        }
        if let Some(p) = &self.config_file {
            out.push_str(&format!("# config file: {}\n", p.display()));
        }
        for (s, value, origin) in &self.shown {
            let value = match (s.key, value) {
                ("server.public_url", None) => format!("{:?}", self.public_url_for(self.listen)),
                ("server.workers", None) => format!("\"{}\"", self.workers),
                ("storage.cas", None) => format!("{:?}", self.storage.cas.to_string()),
                ("storage.records", None) => format!("{:?}", self.storage.records.to_string()),
                (_, Some(v)) => format!("{v:?}"),
                (_, None) => "(unset)".to_owned(),
            };
            let origin = match (s.key, value.as_str()) {
                ("storage.cas" | "storage.records", _) if matches!(origin, Origin::Default) => {
                    Origin::Derived("storage.data").to_string()
                }
                _ => origin.to_string(),
            };
            out.push_str(&format!(
                "{} = {value}  # {origin}; env {}{}\n",
                s.key,
                s.env,
                s.flag.map(|f| format!(", flag --{f}")).unwrap_or_default()
            ));
        }
        // The upstreams read from a local clone (file only: `clone`, `ref` in a table).
        for c in &self.upstream_clones {
            out.push_str(&format!(
                "# registry.upstreams {}: read from the clone {}{}\n",
                c.url,
                c.path.display(),
                c.git_ref
                    .as_deref()
                    .map(|r| format!(" at ref {r}"))
                    .unwrap_or_default()
            ));
        }
        out
    }

    /// The public base URL (always ending in `/`), derived from `bound` when not configured.
    #[must_use]
    pub fn public_url_for(&self, bound: SocketAddr) -> String {
        let s = match &self.public_url {
            Some(u) => u.to_string(),
            None if self.tls.is_some() => format!("https://{bound}/"),
            None => format!("http://{bound}/"),
        };
        if s.ends_with('/') { s } else { format!("{s}/") }
    }
}

/// A comma-separated list of http(s) URLs.
fn url_list(s: &str) -> Result<Vec<Url>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let u = Url::parse(p).map_err(|e| format!("`{p}`: {e}"))?;
            if matches!(u.scheme(), "http" | "https") {
                Ok(u)
            } else {
                Err(format!("`{p}` is not an http(s) URL"))
            }
        })
        .collect()
}

fn missing(id: Id) -> ConfigError {
    let s = SETTINGS[id as usize];
    ConfigError::Value {
        key: s.key,
        origin: Origin::Default,
        value: String::new(),
        message: "must be set".to_owned(),
    }
}

struct Resolver<'a> {
    layered: &'a [(Setting, Option<String>, Origin)],
}

impl Resolver<'_> {
    fn parse<T, E: fmt::Display>(
        &self,
        id: Id,
        f: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ConfigError> {
        let (setting, value, origin) = &self.layered[id as usize];
        match value {
            None => Ok(None),
            Some(v) => f(v).map(Some).map_err(|e| ConfigError::Value {
                key: setting.key,
                origin: origin.clone(),
                value: v.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// The settings of a config file (`section.key -> value text`), its `[auth]` table and the
/// local clones of `[[registry.upstreams]]`.
type FileSettings = (
    BTreeMap<&'static str, String>,
    Option<toml::Value>,
    Vec<UpstreamClone>,
);

/// An upstream registry read from a local clone of its tree (a directory, or a git repository
/// at `git_ref`), keeping its URL as its identity (lockfile keys, pins, the transparent door).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamClone {
    /// The upstream's public URL.
    pub url: Url,
    /// The clone: a directory or a git repository.
    pub path: PathBuf,
    /// For a git clone: the ref to read (default: its current branch).
    pub git_ref: Option<String>,
}

/// Whether two upstream URLs name one registry (a trailing `/` aside).
fn same_base(a: &Url, b: &Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

/// Reads the TOML file into `section.key -> value text`, refusing unknown keys; the `[auth]`
/// table (tokens) is returned whole.
fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let err = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(e.to_string().trim().to_owned()))?;
    let mut out = BTreeMap::new();
    let mut auth = None;
    let mut clones = Vec::new();
    for (section, body) in &table {
        if section == "auth" {
            auth = Some(body.clone());
            continue;
        }
        let toml::Value::Table(body) = body else {
            return Err(err(format!(
                "unknown key `{section}` (settings live in sections: [server], [registry], [storage], [mirror], [publish], [auth])"
            )));
        };
        for (name, value) in body {
            let full = format!("{section}.{name}");
            let setting = SETTINGS
                .iter()
                .find(|s| s.key == full)
                .ok_or_else(|| err(format!("unknown key `{full}`")))?;
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                // `[[registry.upstreams]] url = "..."`: one table per upstream, in order.
                toml::Value::Array(items)
                    if full == "registry.upstreams" && items.iter().all(toml::Value::is_table) =>
                {
                    upstream_tables(items, &mut clones)
                        .map_err(|m| err(format!("`{full}`: {m}")))?
                }
                toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                other => {
                    return Err(err(format!(
                        "key `{full}` must be a string or an integer, not {}",
                        other.type_str()
                    )));
                }
            };
            out.insert(setting.key, text);
        }
    }
    Ok((out, auth, clones))
}

/// The URLs of `[[registry.upstreams]]` tables, comma-joined; their `clone` and `ref` go to
/// `clones`.
fn upstream_tables(
    items: &[toml::Value],
    clones: &mut Vec<UpstreamClone>,
) -> Result<String, String> {
    let mut urls = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let Some(table) = item.as_table() else {
            return Err("each entry must be a table with a `url`".to_owned());
        };
        for key in table.keys() {
            if !matches!(key.as_str(), "url" | "clone" | "ref") {
                return Err(format!(
                    "entry {}: unknown key `{key}` (an upstream has `url`, and optionally \
                     `clone` and `ref`)",
                    n + 1
                ));
            }
        }
        let text = |key: &str| match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "entry {}: `{key}` must be a string, not {}",
                n + 1,
                other.type_str()
            )),
        };
        let url = match text("url")? {
            Some(u) if !u.contains(',') => u,
            Some(u) => return Err(format!("`{u}` must not contain a comma")),
            None => return Err(format!("entry {}: needs `url = \"https://...\"`", n + 1)),
        };
        match (text("clone")?, text("ref")?) {
            (Some(path), git_ref) => {
                let parsed = Url::parse(&url).map_err(|e| format!("`{url}`: {e}"))?;
                clones.push(UpstreamClone {
                    url: parsed,
                    path: PathBuf::from(path),
                    git_ref,
                });
            }
            (None, Some(_)) => {
                return Err(format!(
                    "entry {}: `ref` needs `clone` (the git clone it names a ref of)",
                    n + 1
                ));
            }
            (None, None) => {}
        }
        urls.push(url);
    }
    Ok(urls.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(flags: &[(&'static str, &str)], env: &[(&str, &str)]) -> Inputs {
        Inputs {
            config_file: None,
            flags: flags.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn defaults() {
        let c = Config::resolve(&inputs(&[], &[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.storage.cas.to_string().ends_with("/data/cas"));
        assert!(c.storage.records.to_string().ends_with("/data/records"));
        assert_eq!(c.public_url_for(c.listen), "http://127.0.0.1:8080/");
        assert!(
            c.show()
                .contains("server.listen = \"127.0.0.1:8080\"  # default")
        );
    }

    #[test]
    fn storage_deadlines_from_file_and_env_and_refused_when_absurd() {
        let c = Config::resolve(&inputs(&[], &[])).unwrap();
        assert_eq!(c.storage_deadlines, Deadlines::default());
        assert_eq!(c.storage_deadlines.answer, Duration::from_millis(5000));
        assert_eq!(c.storage_deadlines.stall, Duration::from_millis(10_000));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gf.toml");
        std::fs::write(
            &file,
            "[storage]\nanswer_timeout_ms = 1500\nstall_timeout_ms = 2500\n",
        )
        .unwrap();
        let mut i = inputs(&[], &[]);
        i.config_file = Some(file.clone());
        let c = Config::resolve(&i).unwrap();
        assert_eq!(c.storage_deadlines.answer, Duration::from_millis(1500));
        assert_eq!(c.storage_deadlines.stall, Duration::from_millis(2500));
        assert!(
            c.show().contains("storage.answer_timeout_ms = "),
            "{}",
            c.show()
        );
        i.env.insert(
            "GF_REGISTRY_STORAGE_STALL_TIMEOUT_MS".to_owned(),
            "700".to_owned(),
        );
        let c = Config::resolve(&i).unwrap();
        assert_eq!(c.storage_deadlines.answer, Duration::from_millis(1500));
        assert_eq!(c.storage_deadlines.stall, Duration::from_millis(700));
        for (var, key) in [
            (
                "GF_REGISTRY_STORAGE_ANSWER_TIMEOUT_MS",
                "storage.answer_timeout_ms",
            ),
            (
                "GF_REGISTRY_STORAGE_STALL_TIMEOUT_MS",
                "storage.stall_timeout_ms",
            ),
        ] {
            for bad in ["0", "600001", "-1", "5s"] {
                let e = Config::resolve(&inputs(&[], &[(var, bad)]))
                    .unwrap_err()
                    .to_string();
                assert!(e.contains(key), "{var}={bad}: {e}");
            }
        }
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1\"\nlog_format = \"json\"\n[registry]\npoll_interval_seconds = 5\n").unwrap();
        let mut i = inputs(
            &[("listen", "127.0.0.1:3")],
            &[
                ("GF_REGISTRY_LISTEN", "127.0.0.1:2"),
                ("GF_REGISTRY_LOG_FORMAT", "text"),
            ],
        );
        i.config_file = Some(file.clone());
        let c = Config::resolve(&i).unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.poll_interval, Duration::from_secs(5));
        let shown = c.show();
        assert!(shown.contains("# flag --listen"), "{shown}");
        assert!(shown.contains("# env GF_REGISTRY_LOG_FORMAT"), "{shown}");
        assert!(
            shown.contains(&format!("# file {}", file.display())),
            "{shown}"
        );
    }

    #[test]
    fn s3_settings_are_passed_on_and_the_secret_never_shown() {
        let c = Config::resolve(&inputs(
            &[("data", "s3://bucket/gf")],
            &[
                ("GF_REGISTRY_S3_ENDPOINT", "http://127.0.0.1:3900"),
                ("GF_REGISTRY_S3_SECRET_ACCESS_KEY", "hunter2"),
            ],
        ))
        .unwrap();
        assert_eq!(c.storage.cas.to_string(), "s3://bucket/gf/cas");
        assert!(
            c.storage
                .s3
                .options
                .contains(&("endpoint".to_owned(), "http://127.0.0.1:3900".to_owned()))
        );
        assert!(
            c.storage
                .s3
                .options
                .contains(&("secret_access_key".to_owned(), "hunter2".to_owned()))
        );
        let shown = c.show();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("storage.s3_secret_access_key = \"(set, not shown)\""),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn errors_name_their_source() {
        let e = Config::resolve(&inputs(&[("listen", "nope")], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen") && e.contains("--listen"), "{e}");
        let c = Config::resolve(&inputs(
            &[],
            &[("GF_REGISTRY_LISTNE", "x"), ("GF_REGISTRY_PUBLIC_URL", "")],
        ))
        .unwrap();
        assert_eq!(
            c.warnings,
            ["ignoring unknown environment variable GF_REGISTRY_LISTNE"]
        );
        assert!(c.public_url.is_none(), "an empty variable is unset");
        let e = Config::resolve(&inputs(
            &[],
            &[
                ("GF_REGISTRY_CAS", "s3://b/x"),
                ("GF_REGISTRY_RECORDS", "s3://b/x"),
            ],
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`cas`") && e.contains("`records`"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\nlisten_addr = \"x\"\n").unwrap();
        let mut i = inputs(&[], &[]);
        i.config_file = Some(file);
        let e = Config::resolve(&i).unwrap_err().to_string();
        assert!(e.contains("unknown key `server.listen_addr`"), "{e}");
    }

    #[test]
    fn upstreams_from_file_env_and_flag() {
        let c = Config::resolve(&inputs(&[], &[])).unwrap();
        assert!(c.upstreams.is_empty(), "no upstreams by default");
        assert_eq!(c.upstream_ttl, Duration::from_secs(600));
        assert_eq!(c.upstream_negative_ttl, Duration::from_secs(60));
        assert_eq!(
            c.upstream_registries[0].as_str(),
            "https://bcr.bazel.build/"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[[registry.upstreams]]\nurl = \"https://a.example/\"\n[[registry.upstreams]]\nurl = \"http://127.0.0.1:9/r/\"\n",
        )
        .unwrap();
        let mut i = inputs(&[], &[]);
        i.config_file = Some(file.clone());
        let c = Config::resolve(&i).unwrap();
        let urls: Vec<&str> = c.upstreams.iter().map(Url::as_str).collect();
        assert_eq!(urls, ["https://a.example/", "http://127.0.0.1:9/r/"]);
        assert_eq!(
            c.upstream_registries, c.upstreams,
            "publishing follows the upstreams"
        );
        let c = Config::resolve(&inputs(
            &[("upstream", "https://b.example/")],
            &[(
                "GF_REGISTRY_UPSTREAMS",
                "https://c.example/,https://d.example/",
            )],
        ))
        .unwrap();
        assert_eq!(c.upstreams.len(), 1);
        let c = Config::resolve(&inputs(
            &[],
            &[(
                "GF_REGISTRY_UPSTREAMS",
                "https://c.example/, https://d.example/",
            )],
        ))
        .unwrap();
        assert_eq!(c.upstreams.len(), 2);
        std::fs::write(
            &file,
            "[[registry.upstreams]]\nurl = \"https://a.example/\"\nclone = \"/srv/bcr\"\nref = \"main\"\n",
        )
        .unwrap();
        let c = Config::resolve(&i).unwrap();
        assert_eq!(c.upstream_clones.len(), 1);
        assert_eq!(c.upstream_clones[0].path, PathBuf::from("/srv/bcr"));
        assert_eq!(c.upstream_clones[0].git_ref.as_deref(), Some("main"));
        let shown = c.show();
        assert!(
            shown.contains(
                "# registry.upstreams https://a.example/: read from the clone /srv/bcr at ref main\n"
            ),
            "{shown}"
        );
        for (bad, says) in [
            ("ref = \"main\"\n", "`ref` needs `clone`"),
            ("clone = 1\n", "`clone` must be a string"),
            ("mirror = \"x\"\n", "unknown key `mirror`"),
        ] {
            std::fs::write(
                &file,
                format!("[[registry.upstreams]]\nurl = \"https://a.example/\"\n{bad}"),
            )
            .unwrap();
            let e = Config::resolve(&i).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("registry.upstreams"), "{e}");
        }
        let c = Config::resolve(&inputs(
            &[],
            &[("GF_REGISTRY_UPSTREAM_MODULES", "rules_*,!rules_evil")],
        ))
        .unwrap();
        assert!(c.upstream_modules.serves("rules_cc") && !c.upstream_modules.serves("rules_evil"));
        let e = Config::resolve(&inputs(&[], &[("GF_REGISTRY_UPSTREAMS", "ftp://x/")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("registry.upstreams"), "{e}");
    }
}
