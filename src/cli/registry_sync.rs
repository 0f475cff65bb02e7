//! `gf-registry registry sync --lockfile FILE...`: pins every upstream registry file the
//! lockfiles name (with or without a running server: the pins are records in the shared
//! store), and checks each against the hash Bazel recorded.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use bzlmod::lockfile::{RegistryFileHash, registry_file_hashes};
use clap::Args;

use super::ServeArgs;
use super::mirror_cmd::with_app;
use crate::registry::SyncOutcome;

/// `registry sync`: the lockfiles, and the server's flags (registry, data, upstreams).
#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    /// A `MODULE.bazel.lock` whose `registryFileHashes` to pin (repeatable).
    #[arg(long = "lockfile", required = true)]
    lockfiles: Vec<PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
}

impl SyncArgs {
    pub(super) fn run(self) -> ExitCode {
        // Every lockfile is read before anything is fetched: a bad one changes nothing.
        let mut entries: Vec<(usize, RegistryFileHash)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, path) in self.lockfiles.iter().enumerate() {
            let read = std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| registry_file_hashes(&bytes).map_err(|e| e.to_string()));
            match read {
                Ok((_, list)) if list.is_empty() => {
                    eprintln!(
                        "warning: --lockfile {}: no registryFileHashes (Bazel writes them from \
                         lockfile version 7 on); nothing to sync from it",
                        path.display()
                    );
                }
                Ok((_, list)) => {
                    for e in list {
                        if seen.insert((e.url.clone(), format!("{:?}", e.hash))) {
                            entries.push((i, e));
                        }
                    }
                }
                Err(e) => {
                    eprintln!("error: --lockfile {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
        let lockfiles = self.lockfiles;
        with_app(&self.serve, |app| async move {
            let Some(upstreams) = app.upstreams.clone() else {
                eprintln!(
                    "error: registry sync reads through upstream registries, and none is \
                     configured (registry.upstreams, --upstream URL)"
                );
                return Ok(ExitCode::from(2));
            };
            let list: Vec<RegistryFileHash> = entries.iter().map(|(_, e)| e.clone()).collect();
            let registry = app.registry.clone();
            let outcomes = upstreams
                .sync(&list, &|name| registry.holds_module(name))
                .await;
            let mut counts = Counts::default();
            for ((file, entry), outcome) in entries.iter().zip(&outcomes) {
                let where_ = format!("{}: {}", lockfiles[*file].display(), entry.url);
                match outcome {
                    SyncOutcome::Matches { fetched: true } => counts.fetched += 1,
                    SyncOutcome::Matches { fetched: false } => counts.already += 1,
                    SyncOutcome::Mismatch { recorded, pinned } => {
                        counts.problems += 1;
                        println!(
                            "{where_}: hash mismatch: the lockfile records {recorded}, the \
                             pinned file is {pinned} (Bazel would refuse it)"
                        );
                    }
                    SyncOutcome::Failed(e) => {
                        counts.problems += 1;
                        println!("{where_}: not pinned: {e}");
                    }
                    SyncOutcome::RecordedNotFound => counts.not_found += 1,
                    SyncOutcome::Internal => counts.internal += 1,
                    SyncOutcome::NotUpstream => counts.elsewhere += 1,
                }
            }
            println!(
                "{} registry files from {} lockfile(s): {} pinned now, {} already pinned, {} \
                 recorded as not found, {} held by this registry, {} not under an upstream \
                 registry; {} problem(s)",
                entries.len(),
                lockfiles.len(),
                counts.fetched,
                counts.already,
                counts.not_found,
                counts.internal,
                counts.elsewhere,
                counts.problems
            );
            Ok(if counts.problems == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        })
    }
}

#[derive(Debug, Default)]
struct Counts {
    fetched: usize,
    already: usize,
    not_found: usize,
    internal: usize,
    elsewhere: usize,
    problems: usize,
}
