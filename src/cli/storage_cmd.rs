//! `gf-registry storage ...`: checks of the storage roles.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Subcommand;

use super::ServeArgs;
use super::mirror_cmd::with_app;

#[derive(Debug, Subcommand)]
pub(super) enum StorageCommand {
    /// Scrub every blob (read back, sha256 and chunk digests) and every record; list leftovers
    /// (orphans, evicted blobs' objects, old temporary uploads). Exits 1 when anything is wrong.
    Verify {
        /// Remove the leftovers (temporary uploads older than an hour, orphans, evicted objects).
        #[arg(long)]
        fix: bool,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// A stop/go verdict on the backend before trusted writes go to it: read-after-write,
    /// list-after-write, overwrite and delete visibility, multipart upload, ranged reads,
    /// conditional puts (reported, not required) and a bucket-index coherence canary, with its
    /// own objects under `probe/` in each role (removed again). Exits 1 on "no-go".
    Probe {
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only the quick part (no multipart upload, fewer canaries), meant for server start.
        #[arg(long)]
        quick: bool,
        /// Limit for each backend call, in seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        #[command(flatten)]
        args: ServeArgs,
    },
}

impl StorageCommand {
    pub(super) fn run(self) -> ExitCode {
        match self {
            Self::Verify { fix, args } => with_app(&args, |app| async move {
                let tty = std::io::stderr().is_terminal();
                let mut progress = |done: usize, total: usize| {
                    if tty {
                        eprint!("\rverifying blobs: {done}/{total}");
                        let _ = std::io::stderr().flush();
                    }
                };
                let r = app.mirror.scrub(fix, &mut progress).await?;
                if tty {
                    eprintln!();
                }
                for (sha, why) in &r.blobs_bad {
                    println!("BAD blob sha256:{sha}: {why} (quarantined)");
                }
                for (path, why) in &r.records_bad {
                    println!("BAD record {path}: {why}");
                }
                for (what, list) in [
                    ("orphan", &r.orphans),
                    ("evicted-leftover", &r.evicted_leftovers),
                    ("temp-leftover", &r.temp_leftovers),
                ] {
                    for p in list {
                        let fixed = if r.removed.contains(p) {
                            " (removed)"
                        } else {
                            ""
                        };
                        println!("{what} {p}{fixed}");
                    }
                }
                println!(
                    "{} blob(s) verified, {} bad; {} record(s) read, {} bad; {} leftover(s), {} removed",
                    r.blobs_ok,
                    r.blobs_bad.len(),
                    r.records_ok,
                    r.records_bad.len(),
                    r.orphans.len() + r.evicted_leftovers.len() + r.temp_leftovers.len(),
                    r.removed.len()
                );
                Ok(if r.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }),
            Self::Probe {
                json,
                quick,
                timeout,
                args,
            } => probe(&args, json, quick, timeout),
        }
    }
}

/// `storage probe`: needs only the storage roles (no registry, no mirror state).
fn probe(args: &ServeArgs, json: bool, quick: bool, timeout: Option<u64>) -> ExitCode {
    use crate::storage::Storage;
    use crate::storage::probe::{ProbeOptions, probe};

    let config = match crate::config::Config::resolve(&args.inputs()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let storage = match Storage::open_with(config.storage, config.storage_deadlines) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut options = if quick {
        ProbeOptions::quick()
    } else {
        ProbeOptions::full()
    };
    if let Some(t) = timeout {
        options.op_timeout = std::time::Duration::from_secs(t.max(1));
    }
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = runtime.block_on(probe(&storage, &options));
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.table());
    }
    if report.is_go() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
