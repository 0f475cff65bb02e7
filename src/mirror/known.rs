//! Known integrity: what the registry's `source.json` files and the policy's candidates say
//! each URL must hash to, rebuilt when the registry's generation changes. The same map,
//! inverted, is what retention pins.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::MirrorError;
use super::ledger::Ledger;
use super::policy::Policy;
use crate::registry::{Integrity, Registry};

/// The URL map of one registry generation.
#[derive(Debug, Default)]
struct ByUrl {
    generation: Option<u64>,
    by_url: HashMap<String, (Integrity, Vec<String>)>,
}

/// Blobs another part of the server keeps in the mirror's store and needs kept (the upstream
/// registries' pinned files): retention treats them as referenced.
pub trait RetentionHolds: Send + Sync + std::fmt::Debug {
    /// Each held blob's hex sha256, with who holds it.
    fn held(&self) -> Vec<(String, String)>;
}

/// Known integrity of URLs: from the registry's `source.json` files and the candidates.
#[derive(Debug)]
pub(super) struct Known {
    registry: Arc<Registry>,
    policy: Arc<Policy>,
    cache: tokio::sync::Mutex<ByUrl>,
    holds: std::sync::OnceLock<Arc<dyn RetentionHolds>>,
}

impl Known {
    pub(super) fn new(registry: Arc<Registry>, policy: Arc<Policy>) -> Self {
        Self {
            registry,
            policy,
            cache: tokio::sync::Mutex::new(ByUrl::default()),
            holds: std::sync::OnceLock::new(),
        }
    }

    /// Adds `holds` to what retention keeps (once; a second call is ignored).
    pub(super) fn hold(&self, holds: Arc<dyn RetentionHolds>) {
        let _ = self.holds.set(holds);
    }

    /// The URL map, rebuilt first when the registry moved to a new generation.
    async fn current(&self) -> Result<tokio::sync::MutexGuard<'_, ByUrl>, MirrorError> {
        let mut known = self.cache.lock().await;
        if known.generation != Some(self.registry.generation()) {
            let (generation, refs) = self
                .registry
                .archive_sources()
                .await
                .map_err(|e| MirrorError::Storage(format!("reading registry sources: {e}")))?;
            let mut by_url: HashMap<String, (Integrity, Vec<String>)> = HashMap::new();
            for r in refs {
                for u in &r.urls {
                    let e = by_url
                        .entry(u.clone())
                        .or_insert_with(|| (r.integrity.clone(), Vec::new()));
                    e.1.push(format!("registry:{}@{}", r.module, r.version));
                }
            }
            for c in &self.policy.candidates {
                for u in &c.urls {
                    let e = by_url
                        .entry(u.to_string())
                        .or_insert_with(|| (c.integrity.clone(), Vec::new()));
                    e.1.push(format!("candidate:{}", c.name));
                }
            }
            known.by_url = by_url;
            known.generation = Some(generation);
        }
        Ok(known)
    }

    /// The known integrity of `url` and who names it (registry entries, candidates).
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the registry cannot be read.
    pub(super) async fn integrity(
        &self,
        url: &str,
    ) -> Result<Option<(Integrity, Vec<String>)>, MirrorError> {
        Ok(self.current().await?.by_url.get(url).cloned())
    }

    /// Every digest that a registry entry or candidate references (hex sha256 when known, or
    /// the SRI value), with its referrers: these blobs are pinned by retention.
    ///
    /// # Errors
    /// [`MirrorError::Storage`] when the registry cannot be read.
    pub(super) async fn references(
        &self,
        ledger: &Ledger,
    ) -> Result<HashMap<String, Vec<String>>, MirrorError> {
        // Refresh the URL map, then invert it by digest.
        let known = self.current().await?;
        let state = ledger.read();
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        // Also through the URL pins: a reference whose digest the mirror cannot resolve (a
        // sha512 integrity before its supplement is recorded) still pins what its URL holds.
        for (url, (_, referrers)) in &known.by_url {
            if let Some(pin) = state.pin(url) {
                out.entry(pin.sha256.to_hex())
                    .or_default()
                    .extend(referrers.iter().cloned());
            }
        }
        for (integrity, referrers) in known.by_url.values() {
            let key = match integrity.algorithm() {
                crate::registry::Algorithm::Sha256 => integrity.hex(),
                _ => state
                    .alias(integrity)
                    .unwrap_or_else(|| integrity.to_string()),
            };
            let e = out.entry(key).or_default();
            for r in referrers {
                if !e.contains(r) {
                    e.push(r.clone());
                }
            }
        }
        if let Some(holds) = self.holds.get() {
            for (sha256, holder) in holds.held() {
                let e = out.entry(sha256).or_default();
                if !e.contains(&holder) {
                    e.push(holder);
                }
            }
        }
        Ok(out)
    }
}
