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
        }
    }
}
