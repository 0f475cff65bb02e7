//! Dependencies of a release: every non-dev `bazel_dep` must resolve in this registry or in
//! an upstream registry (over HTTP).

use url::Url;

use super::PublishError;
use super::error::{rejected, source_err};
use super::request::ValidRequest;
use super::service::{Publisher, tasks_blocking};
use crate::source::Tree;
use crate::upstream::{Allowed, UpstreamError};

impl Publisher {
    /// Every non-dev `bazel_dep` must resolve here or in an upstream registry.
    pub(super) async fn check_deps(&self, req: &ValidRequest) -> Result<(), PublishError> {
        let deps: Vec<(String, String)> = req
            .module_file
            .deps
            .iter()
            .filter(|d| !d.dev_dependency)
            .map(|d| (d.name.clone(), d.version.clone()))
            .collect();
        if deps.is_empty() {
            return Ok(());
        }
        let source = self.registry.source().clone();
        let d = deps.clone();
        let missing_here: Vec<(String, String)> = tasks_blocking(move || {
            let missing_in = |tree: &dyn Tree, deps: Vec<(String, String)>| {
                let mut missing = Vec::new();
                for (n, v) in deps {
                    if tree
                        .read(&format!("modules/{n}/{v}/MODULE.bazel"))
                        .map_err(source_err)?
                        .is_none()
                    {
                        missing.push((n, v));
                    }
                }
                Ok::<_, PublishError>(missing)
            };
            let missing = missing_in(source.current().map_err(source_err)?.as_ref(), d)?;
            // A git registry shared through origin: another replica may have published the
            // dependency since this one last synced.
            if !missing.is_empty() && source.sync().unwrap_or(false) {
                return missing_in(source.current().map_err(source_err)?.as_ref(), missing);
            }
            Ok(missing)
        })
        .await?;
        let mut unresolved = Vec::new();
        for (n, v) in missing_here {
            let mut why = Vec::new();
            let mut found = false;
            for reg in &self.settings.upstream_registries {
                let base = reg.as_str().trim_end_matches('/');
                let Ok(url) = Url::parse(&format!("{base}/modules/{n}/{v}/MODULE.bazel")) else {
                    continue;
                };
                // Operators configure these registries: private addresses are allowed.
                let allow = |_: &Url| {
                    Some(Allowed {
                        rule: "publish.upstream_registries".to_owned(),
                        allow_private: true,
                    })
                };
                match self.upstream.get(&url, &allow).await {
                    Ok(_) => {
                        found = true;
                        break;
                    }
                    Err(UpstreamError::NotFound { status, .. }) => {
                        why.push(format!("{base}: {status}"));
                    }
                    Err(e) => why.push(format!("{base}: {e}")),
                }
            }
            if !found {
                let where_ = if why.is_empty() {
                    "not in this registry (no upstream registries configured)".to_owned()
                } else {
                    format!("not in this registry; {}", why.join("; "))
                };
                unresolved.push(format!("{n}@{v} ({where_})"));
            }
        }
        if unresolved.is_empty() {
            Ok(())
        } else {
            Err(rejected(
                "module_bazel",
                format!("unresolved bazel_dep: {}", unresolved.join(", ")),
            ))
        }
    }
}
