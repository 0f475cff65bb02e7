//! The command line: `serve`, `config check|show`, `registry check`, `mirror ...`.

mod mirror_cmd;
mod publish_cmd;
mod registry_cmd;
mod registry_sync;
mod storage_cmd;
mod token_cmd;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Inputs, LogFormat};
use crate::source::RegistrySource;

/// gf-registry: a Bazel registry and content-addressed mirror.
#[derive(Debug, Parser)]
#[command(name = "gf-registry", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the registry (and the mirror's storage roles) over HTTP.
    Serve(ServeArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work on a registry tree.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Operate the mirror: status, fetch, gc, verify-upstream, export.
    #[command(subcommand)]
    Mirror(mirror_cmd::MirrorCommand),
    /// Check the storage roles: probe, verify.
    #[command(subcommand)]
    Storage(storage_cmd::StorageCommand),
    /// Publish a module version to a running server (token from GF_REGISTRY_TOKEN or .netrc).
    Publish(publish_cmd::PublishArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Resolve and validate the configuration; exit non-zero with the reason if it is wrong.
    Check(ServeArgs),
    /// Print the effective configuration and where each value came from.
    Show(ServeArgs),
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Validate a registry tree: one line per problem (file: error|warning: what is wrong); exit
    /// 1 on an error (Bazel would fail), 0 with only warnings (irregular, Bazel accepts it).
    Check {
        /// The registry folder or git repository [default: registry.path of the configuration,
        /// `./registry` unless set].
        path: Option<PathBuf>,
        /// For a git repository: the ref to check [default: registry.ref, else the current branch].
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// TOML configuration file to take the defaults from (env GF_REGISTRY_CONFIG).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Exit 1 on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// Validate a release and write it into a local registry (directory or git repository),
    /// with no server: the same checks and the same atomic write as `publish`. The archive is
    /// stored in the mirror's storage (--data), and source.json's mirror URL points at
    /// --public-url.
    Add(Box<AddArgs>),
    /// Pin every upstream registry file that MODULE.bazel.lock files name, so they are
    /// served while the upstream is down; exit 1 when a pinned file does not have the hash a
    /// lockfile recorded, or could not be had.
    Sync(Box<registry_sync::SyncArgs>),
}

/// `registry add`: the server's flags (registry, data, policy, public URL) and the release.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    release: publish_cmd::ReleaseArgs,
}

/// Flags shared by `serve` and `config`; each is also `GF_REGISTRY_*` and a config-file key.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (env GF_REGISTRY_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080] (env GF_REGISTRY_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// How clients reach the server [default: derived from --listen] (env GF_REGISTRY_PUBLIC_URL).
    #[arg(long)]
    public_url: Option<String>,
    /// Registry tree: a directory or a git repository [default: ./registry] (env GF_REGISTRY_REGISTRY).
    #[arg(long)]
    registry: Option<String>,
    /// Git ref to serve [default: the current branch] (env GF_REGISTRY_REGISTRY_REF).
    #[arg(long)]
    registry_ref: Option<String>,
    /// Object-store root for the mirror: file:///abs, s3://bucket/prefix, ... or a path [default: ./data] (env GF_REGISTRY_DATA).
    #[arg(long)]
    data: Option<String>,
    /// Mirror policy folder [default: ./mirror-policy] (env GF_REGISTRY_MIRROR_POLICY).
    #[arg(long)]
    mirror_policy: Option<String>,
    /// PEM certificate chain: serve HTTPS and gRPC over TLS, with --tls-key (env GF_REGISTRY_TLS_CERT).
    #[arg(long)]
    tls_cert: Option<String>,
    /// PEM private key of --tls-cert (env GF_REGISTRY_TLS_KEY).
    #[arg(long)]
    tls_key: Option<String>,
    /// Log format: text or json [default: text] (env GF_REGISTRY_LOG_FORMAT).
    #[arg(long)]
    log_format: Option<String>,
    /// Upstream registry to read through, repeatable, tried in order (env GF_REGISTRY_UPSTREAMS).
    #[arg(long = "upstream")]
    upstream: Vec<String>,
}

impl ServeArgs {
    fn inputs(&self) -> Inputs {
        let mut flags = BTreeMap::new();
        let pairs: [(&'static str, &Option<String>); 9] = [
            ("listen", &self.listen),
            ("public-url", &self.public_url),
            ("registry", &self.registry),
            ("registry-ref", &self.registry_ref),
            ("data", &self.data),
            ("mirror-policy", &self.mirror_policy),
            ("log-format", &self.log_format),
            ("tls-cert", &self.tls_cert),
            ("tls-key", &self.tls_key),
        ];
        for (flag, value) in pairs {
            if let Some(v) = value {
                flags.insert(flag, v.clone());
            }
        }
        if !self.upstream.is_empty() {
            flags.insert("upstream", self.upstream.join(","));
        }
        Inputs {
            config_file: self.config.clone(),
            flags,
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("GF_REGISTRY_"))
                .collect(),
        }
    }
}

impl Cli {
    /// Runs the parsed command.
    #[must_use]
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Serve(args) => with_config(&args, serve),
            Command::Config(ConfigCommand::Check(args)) => with_config(&args, |c| {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                let source = RegistrySource::open(&c.registry, c.registry_ref.as_deref())
                    .map_err(|e| anyhow::anyhow!("registry.path: {e}"))?;
                if let Some(files) = &c.tls {
                    crate::server::Tls::load(files)?;
                }
                println!("configuration OK (registry: {})", source.describe());
                Ok(())
            }),
            Command::Mirror(cmd) => cmd.run(),
            Command::Storage(cmd) => cmd.run(),
            Command::Publish(args) => args.run(),
            Command::Token(cmd) => cmd.run(),
            Command::Config(ConfigCommand::Show(args)) => with_config(&args, |c| {
                print!("{}", c.show());
                Ok(())
            }),
            Command::Registry(RegistryCommand::Add(args)) => registry_cmd::registry_add(*args),
            Command::Registry(RegistryCommand::Sync(args)) => args.run(),
            Command::Registry(RegistryCommand::Check {
                path,
                git_ref,
                config,
                strict,
            }) => registry_cmd::check_command(path, git_ref, config, strict),
        }
    }
}

fn with_config(args: &ServeArgs, f: impl FnOnce(Config) -> anyhow::Result<()>) -> ExitCode {
    match Config::resolve(&args.inputs()) {
        Ok(config) => match f(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: configuration: {e}");
            ExitCode::from(2)
        }
    }
}

/// The runtime the one-shot commands run on; a failure to build it is reported and exits 1.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        })
}

fn init_logging(format: LogFormat) {
    init_logging_at(format, "info");
}

/// Logs to stderr in `format`, at `level` unless `RUST_LOG` says otherwise. Colour only on a
/// terminal: a file or pipe (journald, a container log, `2> file`) gets plain text, not ANSI
/// escapes.
fn init_logging_at(format: LogFormat, level: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(config.log_format);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let grace = config.shutdown_timeout;
        let running = crate::server::start(config).await?;
        // The signal handlers are in place before the line is printed: a tool that sends
        // SIGTERM as soon as it reads the line gets a graceful shutdown, not the default kill.
        let stop = shutdown_signal();
        // One stable line on stdout, for people and for tools that start the binary.
        println!("gf-registry listening on {}", running.public_url);
        stop.await;
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: finishing in-flight requests"
        );
        running.shutdown(grace).await?;
        tracing::info!("stopped");
        Ok(())
    });
    // Past the grace period nothing is waited for: requests still running (a slow client, a
    // trickling upstream) are dropped with the process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Registers the SIGINT/SIGTERM handlers now, and resolves when either signal arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt()).ok();
    let term = signal(SignalKind::terminate()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(int) => {}
            () = wait(term) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}
