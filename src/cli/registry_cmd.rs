//! `registry check` and `registry add`: validating a registry tree, and writing a release into
//! a local registry with no server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{AddArgs, runtime};
use crate::config::{Config, Inputs};
use crate::registry::check::{Severity, check_registry};
use crate::source::RegistrySource;

/// `registry check`: the registry folder or repository defaults to the configuration's.
pub(super) fn check_command(
    path: Option<PathBuf>,
    git_ref: Option<String>,
    config: Option<PathBuf>,
    strict: bool,
) -> ExitCode {
    let inputs = Inputs {
        config_file: config,
        flags: BTreeMap::new(),
        env: std::env::vars()
            .filter(|(k, _)| k.starts_with("GF_REGISTRY_"))
            .collect(),
    };
    let (path, git_ref) = match (path, Config::resolve(&inputs)) {
        (Some(p), _) => (p, git_ref),
        (None, Ok(c)) => (c.registry, git_ref.or(c.registry_ref)),
        (None, Err(e)) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    registry_check(&path, git_ref.as_deref(), strict)
}

pub(super) fn registry_add(args: AddArgs) -> ExitCode {
    let dry_run = args.release.dry_run;
    let request = match args.release.request() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let config = match Config::resolve(&args.serve.inputs()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        let public_url = config.public_url_for(config.listen);
        let app = crate::app::App::build(config).await?;
        let body = serde_json::to_vec(&request.body)?;
        let actor = crate::publish::Actor {
            name: std::env::var("USER").unwrap_or_else(|_| "registry-add".to_owned()),
            address: "local".to_owned(),
        };
        let published = app
            .publisher
            .publish_body(
                &request.name,
                &request.version,
                body,
                &actor,
                &public_url,
                dry_run,
            )
            .await?;
        Ok::<_, anyhow::Error>(published)
    });
    match result {
        Ok(p) => {
            println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
            let status = serde_json::to_value(p.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            eprintln!(
                "{}@{}: {status}",
                p.module,
                p.version.as_deref().unwrap_or("")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn registry_check(path: &std::path::Path, git_ref: Option<&str>, strict: bool) -> ExitCode {
    let result = RegistrySource::open(path, git_ref)
        .and_then(|s| s.current())
        .and_then(|tree| check_registry(tree.as_ref()));
    match result {
        Ok(report) => {
            for p in &report.problems {
                println!("{p}");
            }
            let (errors, warnings) = (
                report.count(Severity::Error),
                report.count(Severity::Warning),
            );
            let by_rule: Vec<String> = report
                .by_rule(Severity::Warning)
                .iter()
                .map(|(rule, n)| format!("{rule} {n}"))
                .collect();
            eprintln!(
                "{}: {} modules, {} versions, {} files checked, {errors} error(s), {warnings} warning(s){}",
                path.display(),
                report.modules,
                report.versions,
                report.files,
                if by_rule.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", by_rule.join(", "))
                }
            );
            if errors == 0 && (warnings == 0 || !strict) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
