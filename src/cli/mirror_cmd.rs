//! `gf-registry mirror ...`: operator commands that work with or without a running server,
//! on the same `--data`, `--mirror-policy` and `--registry` as `serve`.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::ServeArgs;
use crate::app::App;
use crate::config::LogFormat;
use crate::mirror::ops::{ExportFormat, Selection};

#[derive(Debug, Subcommand)]
pub(super) enum MirrorCommand {
    /// The durable-authority gate: each candidate is candidate, materialized or durable;
    /// exits 1 while a required candidate is not durable.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Materialize the candidates of mirror-policy/candidates.json.
    Fetch {
        /// Fetch every candidate that is not yet in the mirror.
        #[arg(long, required = true)]
        candidates: bool,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Apply retention: evict unpinned blobs by age and byte budget.
    Gc {
        /// Report what would be evicted, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Re-probe pinned URLs upstream and record drift (what is served does not change);
    /// exits 1 when a URL drifted.
    VerifyUpstream {
        /// Only URLs starting with this prefix.
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Export blobs as a Bazel repository cache or a distdir.
    Export(ExportArgs),
    /// Refetch quarantined blobs from their recorded upstream URLs; a blob is restored only
    /// if the bytes have its digest. Exits 1 when one could not be repaired.
    Repair {
        #[command(flatten)]
        args: ServeArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    /// `content_addressable/sha256/<hex>/file` plus canonical-id markers.
    RepositoryCache,
    /// Flat files by original basename.
    Distdir,
}

#[derive(Debug, Args)]
pub(super) struct ExportArgs {
    /// Layout to write.
    #[arg(long, value_enum)]
    format: FormatArg,
    /// Target folder (created if needed).
    dir: PathBuf,
    /// Every blob in the mirror.
    #[arg(long, group = "select")]
    all: bool,
    /// Blobs referenced by registry entries or candidates.
    #[arg(long, group = "select")]
    all_pinned: bool,
    /// Blobs of the candidates.
    #[arg(long, group = "select")]
    candidates: bool,
    /// The source archive of one module version, NAME@VERSION.
    #[arg(long, group = "select", value_name = "NAME@VERSION")]
    module: Option<String>,
    #[command(flatten)]
    args: ServeArgs,
}

impl MirrorCommand {
    pub(super) fn run(self) -> ExitCode {
        match self {
            Self::Status { json, args } => with_app(&args, |app| async move {
                let statuses = app.mirror.candidate_status().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&statuses)?);
                } else {
                    println!(
                        "{:<32} {:<13} {:<9} missing",
                        "candidate", "state", "required"
                    );
                    for s in &statuses {
                        println!(
                            "{:<32} {:<13} {:<9} {}",
                            s.name,
                            s.state,
                            s.required,
                            s.missing.join("; ")
                        );
                    }
                }
                let failing = statuses
                    .iter()
                    .filter(|s| s.required && s.state != "durable")
                    .count();
                if failing > 0 {
                    eprintln!("{failing} required candidate(s) not durable");
                    return Ok(ExitCode::FAILURE);
                }
                Ok(ExitCode::SUCCESS)
            }),
            Self::Fetch {
                candidates: _,
                args,
            } => with_app(&args, |app| async move {
                let tty = std::io::stderr().is_terminal();
                let mut progress = |name: &str, n: u64| {
                    if tty {
                        eprint!("\r{name}: {:.1} MiB", n as f64 / 1_048_576.0);
                        let _ = std::io::stderr().flush();
                    }
                };
                let results = app.mirror.fetch_candidates(&mut progress).await?;
                if tty {
                    eprintln!();
                }
                let mut failed = 0;
                for (name, r) in results {
                    match r {
                        Ok(sha) => println!("{name}: materialized sha256:{sha}"),
                        Err(e) => {
                            failed += 1;
                            println!("{name}: FAILED {e}");
                        }
                    }
                }
                Ok(if failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }),
            Self::Gc { dry_run, args } => with_app(&args, |app| async move {
                let r = app.mirror.gc(dry_run).await?;
                for (sha, size, why) in &r.evicted {
                    println!(
                        "{} sha256:{sha} ({size} bytes): {why}",
                        if dry_run { "would evict" } else { "evicted" }
                    );
                }
                println!(
                    "{} evicted, {} pinned kept, {} in use kept; unpinned bytes {} -> {}",
                    r.evicted.len(),
                    r.pinned,
                    r.in_use,
                    r.cached_bytes_before,
                    r.cached_bytes_after
                );
                Ok(ExitCode::SUCCESS)
            }),
            Self::VerifyUpstream { url, args } => with_app(&args, |app| async move {
                let probes = app.mirror.verify_upstream(url.as_deref()).await?;
                let mut drifted = 0;
                for p in &probes {
                    match &p.upstream {
                        Ok(actual) if *actual == p.pinned => println!("ok      {}", p.url),
                        Ok(actual) => {
                            drifted += 1;
                            println!(
                                "DRIFT   {} pinned sha256:{} upstream sha256:{actual}",
                                p.url, p.pinned
                            );
                        }
                        Err(e) => println!("error   {}: {e}", p.url),
                    }
                }
                eprintln!(
                    "{} URL(s) probed, {drifted} drifted (still serving the pinned bytes)",
                    probes.len()
                );
                Ok(if drifted == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }),
            Self::Repair { args } => with_app(&args, |app| async move {
                let repairs = app.mirror.repair().await;
                let mut failed = 0;
                for r in &repairs {
                    match &r.outcome {
                        Ok(url) => println!("repaired sha256:{} from {url}", r.sha256),
                        Err(e) => {
                            failed += 1;
                            println!("NOT repaired sha256:{}: {e}", r.sha256);
                        }
                    }
                }
                eprintln!(
                    "{} quarantined blob(s), {failed} not repaired",
                    repairs.len()
                );
                Ok(if failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }),
            Self::Export(e) => {
                let selection = match (&e.module, e.all, e.all_pinned, e.candidates) {
                    (Some(m), ..) => match m.split_once('@') {
                        Some((n, v)) => Selection::Module(n.to_owned(), v.to_owned()),
                        None => {
                            eprintln!("error: --module takes NAME@VERSION, got `{m}`");
                            return ExitCode::from(2);
                        }
                    },
                    (None, true, ..) => Selection::All,
                    (None, _, true, _) => Selection::AllPinned,
                    (None, _, _, true) => Selection::Candidates,
                    _ => {
                        eprintln!(
                            "error: choose what to export: --all, --all-pinned, --candidates or --module NAME@VERSION"
                        );
                        return ExitCode::from(2);
                    }
                };
                let format = match e.format {
                    FormatArg::RepositoryCache => ExportFormat::RepositoryCache,
                    FormatArg::Distdir => ExportFormat::Distdir,
                };
                let dir = e.dir.clone();
                with_app(&e.args, |app| async move {
                    let r = app.mirror.export(format, &selection, &dir).await?;
                    for f in &r.written {
                        println!("wrote {}", f.display());
                    }
                    for (name, owners) in &r.collisions {
                        println!("collision {name}: {} (not written)", owners.join(", "));
                    }
                    for m in &r.missing {
                        println!("missing {m} (not in the mirror)");
                    }
                    eprintln!(
                        "{} file(s) written and re-hashed, {} collision(s), {} missing",
                        r.written.len(),
                        r.collisions.len(),
                        r.missing.len()
                    );
                    Ok(if r.missing.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                })
            }
        }
    }
}

/// Builds the app (registry, storage, mirror state) and runs `f` on it.
pub(super) fn with_app<F, Fut>(args: &ServeArgs, f: F) -> ExitCode
where
    F: FnOnce(std::sync::Arc<App>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let config = match crate::config::Config::resolve(&args.inputs()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    super::init_logging_at(LogFormat::Text, "warn");
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let app = match App::build(config).await {
            Ok(a) => std::sync::Arc::new(a),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        };
        match f(app).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
