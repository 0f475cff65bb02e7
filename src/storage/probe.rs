//! `storage probe`: a stop/go verdict on a backend before trusted writes go to it.
//!
//! The probe proves, with its own uniquely named objects under `probe/{run}/` in each role
//! (removed again at the end), that the backend keeps what it is given: read-after-write,
//! list-after-write, overwrite and delete visibility, multipart upload (nothing visible before
//! completion or after an abort), ranged reads, and a **bucket-index coherence canary**:
//! objects readable by key but missing from a listing (or a role root that stops listing while
//! its objects are readable) are a "no-go", with the keys as evidence. Whether conditional
//! create (`If-None-Match: *`) and conditional update (`If-Match`) are enforced is measured and
//! reported, never required: the design does not rely on conditional puts.
//!
//! Every backend call is bounded by [`ProbeOptions::op_timeout`], so a dead backend gives a
//! "no-go" in bounded time instead of a hang.

use std::time::{Duration, Instant};

use super::{Role, Storage};

mod checks;
mod report;

use checks::probe_store;
use report::millis;
pub use report::{Check, Outcome, ProbeReport, RoleReport, Verdict};

/// The prefix, in every role, under which the probe writes its objects.
pub const PROBE_PREFIX: &str = "probe";

/// What the probe does and how long it waits.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Run the multipart checks (a 5 MiB part and a small last part, plus an aborted upload).
    pub multipart: bool,
    /// How many canary objects the index-coherence check writes and looks for in listings.
    pub canary_objects: usize,
    /// Limit for each backend call.
    pub op_timeout: Duration,
    /// How long a listing may lag behind writes and deletes before it counts as wrong.
    pub settle: Duration,
}

impl ProbeOptions {
    /// Every check (a few seconds on a healthy backend).
    #[must_use]
    pub fn full() -> Self {
        Self {
            multipart: true,
            canary_objects: 32,
            op_timeout: Duration::from_secs(30),
            settle: Duration::from_secs(3),
        }
    }

    /// The quick part, for a server start: no multipart upload, fewer canaries.
    #[must_use]
    pub fn quick() -> Self {
        Self {
            multipart: false,
            canary_objects: 8,
            op_timeout: Duration::from_secs(10),
            settle: Duration::from_secs(1),
        }
    }
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self::full()
    }
}

/// Probes every role of `storage` and returns the verdict with the evidence. Never fails:
/// an unreachable backend is a "no-go".
pub async fn probe(storage: &Storage, options: &ProbeOptions) -> ProbeReport {
    let started = Instant::now();
    let run = run_id();
    let mut roles = Vec::new();
    for (role, location) in [
        (Role::Cas, &storage.layout.cas),
        (Role::Records, &storage.layout.records),
    ] {
        let report = probe_store(
            storage.store(role).clone(),
            role.name(),
            location.to_string(),
            &run,
            options,
        )
        .await;
        // Local folders keep their (now empty) directories; remove those we made.
        if let Some(dir) = location.local_path() {
            let base = dir.join(PROBE_PREFIX);
            for d in [base.join(&run).join("canary"), base.join(&run), base] {
                let _ = std::fs::remove_dir(d);
            }
        }
        roles.push(report);
    }
    let failed = roles
        .iter()
        .flat_map(|r| &r.checks)
        .any(|c| c.required && c.outcome == Outcome::Fail);
    ProbeReport {
        verdict: if failed { Verdict::NoGo } else { Verdict::Go },
        run,
        millis: millis(started.elapsed()),
        roles,
    }
}

fn run_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!(
        "{}-{:08x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        h.finish() & 0xffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutResult,
    };

    use std::future::Future;
    use std::sync::Arc;

    use futures::{StreamExt as _, TryStreamExt as _};
    use object_store::path::Path as ObjectPath;
    use object_store::{ObjectStore, PutOptions, PutPayload};

    use super::*;
    use crate::storage::{Location, S3Settings, StorageLayout};

    type Fut<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

    /// A store whose listings lose every object whose key ends in `drop`, as a bucket index
    /// that lost entries would: the objects stay readable by key.
    #[derive(Debug)]
    struct LossyListing {
        inner: InMemory,
        drop: &'static [&'static str],
    }

    impl std::fmt::Display for LossyListing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("LossyListing")
        }
    }

    impl LossyListing {
        fn lost(&self, p: &ObjectPath) -> bool {
            let s = p.to_string();
            self.drop.iter().any(|d| s.ends_with(d))
        }
    }

    // `object_store`'s trait is written with `async_trait`; these are its expanded signatures.
    impl ObjectStore for LossyListing {
        fn put_opts<'a, 'b, 't>(
            &'a self,
            location: &'b ObjectPath,
            payload: PutPayload,
            opts: PutOptions,
        ) -> Fut<'t, PutResult>
        where
            'a: 't,
            'b: 't,
            Self: 't,
        {
            self.inner.put_opts(location, payload, opts)
        }

        fn put_multipart_opts<'a, 'b, 't>(
            &'a self,
            location: &'b ObjectPath,
            opts: PutMultipartOptions,
        ) -> Fut<'t, Box<dyn MultipartUpload>>
        where
            'a: 't,
            'b: 't,
            Self: 't,
        {
            self.inner.put_multipart_opts(location, opts)
        }

        fn get_opts<'a, 'b, 't>(
            &'a self,
            location: &'b ObjectPath,
            options: GetOptions,
        ) -> Fut<'t, GetResult>
        where
            'a: 't,
            'b: 't,
            Self: 't,
        {
            self.inner.get_opts(location, options)
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<ObjectPath>>,
        ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            let drop = self.drop;
            self.inner
                .list(prefix)
                .try_filter(move |m| {
                    let s = m.location.to_string();
                    futures::future::ready(!drop.iter().any(|d| s.ends_with(d)))
                })
                .boxed()
        }

        fn list_with_delimiter<'a, 'b, 't>(
            &'a self,
            prefix: Option<&'b ObjectPath>,
        ) -> Fut<'t, ListResult>
        where
            'a: 't,
            'b: 't,
            Self: 't,
        {
            Box::pin(async move {
                let mut r = self.inner.list_with_delimiter(prefix).await?;
                r.objects.retain(|m| !self.lost(&m.location));
                r.common_prefixes.retain(|p| !self.lost(p));
                Ok(r)
            })
        }

        fn copy_opts<'a, 'b, 'c, 't>(
            &'a self,
            from: &'b ObjectPath,
            to: &'c ObjectPath,
            options: CopyOptions,
        ) -> Fut<'t, ()>
        where
            'a: 't,
            'b: 't,
            'c: 't,
            Self: 't,
        {
            self.inner.copy_opts(from, to, options)
        }
    }

    fn storage_with(cas: Arc<dyn ObjectStore>) -> Storage {
        Storage {
            layout: StorageLayout {
                cas: Location::parse("memory:///cas").unwrap(),
                records: Location::parse("memory:///records").unwrap(),
                s3: S3Settings::default(),
            },
            cas,
            records: Arc::new(InMemory::new()),
        }
    }

    fn fast() -> ProbeOptions {
        ProbeOptions {
            settle: Duration::from_millis(300),
            ..ProbeOptions::full()
        }
    }

    #[tokio::test]
    async fn go_on_memory_and_everything_is_cleaned_up() {
        let s = storage_with(Arc::new(InMemory::new()));
        let report = probe(&s, &fast()).await;
        assert!(report.is_go(), "{}", report.table());
        for role in [Role::Cas, Role::Records] {
            assert!(s.list(role, PROBE_PREFIX).await.unwrap().is_empty());
            let c = report.check(role, "conditional-create").unwrap();
            assert_eq!(c.outcome, Outcome::Enforced, "{}", report.table());
            let c = report.check(role, "conditional-update").unwrap();
            assert_eq!(c.outcome, Outcome::Enforced, "{}", report.table());
        }
        let table = report.table();
        assert!(table.contains("verdict: GO"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["verdict"], "go");
        assert_eq!(json["roles"][0]["checks"][0]["name"], "reachable");
    }

    #[tokio::test]
    async fn a_listing_that_loses_objects_is_a_no_go_with_the_keys() {
        let lossy = LossyListing {
            inner: InMemory::new(),
            drop: &["canary/0003", "canary/0011"],
        };
        let s = storage_with(Arc::new(lossy));
        let report = probe(&s, &fast()).await;
        assert!(!report.is_go(), "{}", report.table());
        let failed: Vec<_> = report.failures().map(|(r, c)| (r, c.name)).collect();
        assert_eq!(failed, [("cas", "index-coherence")], "{}", report.table());
        let c = report.check(Role::Cas, "index-coherence").unwrap();
        assert_eq!(c.evidence.len(), 2, "{:?}", c.evidence);
        assert!(
            c.evidence[0].contains("canary/0003") && c.evidence[0].contains("missing"),
            "{:?}",
            c.evidence
        );
        assert!(c.evidence[1].contains("canary/0011"), "{:?}", c.evidence);
        // The records role is fine.
        assert_eq!(
            report
                .check(Role::Records, "index-coherence")
                .unwrap()
                .outcome,
            Outcome::Pass
        );
        let table = report.table();
        assert!(table.contains("verdict: NO-GO"), "{table}");
        assert!(table.contains("canary/0011"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["verdict"], "no-go");
    }

    #[tokio::test]
    async fn a_root_listing_without_the_probe_prefix_is_a_no_go() {
        // Every object is lost from listings (the whole index is gone).
        let lossy = LossyListing {
            inner: InMemory::new(),
            drop: &[""],
        };
        let s = storage_with(Arc::new(lossy));
        let report = probe(&s, &ProbeOptions::quick()).await;
        assert!(!report.is_go(), "{}", report.table());
        let c = report.check(Role::Cas, "list-after-write").unwrap();
        assert_eq!(c.outcome, Outcome::Fail);
        let c = report.check(Role::Cas, "index-coherence").unwrap();
        assert_eq!(c.outcome, Outcome::Fail);
        assert!(
            c.evidence.iter().filter(|e| e.contains("missing")).count() >= 8,
            "{:?}",
            c.evidence
        );
        assert!(
            c.evidence
                .iter()
                .any(|e| e.starts_with("`probe/") && e.contains("the role's root")),
            "{:?}",
            c.evidence
        );
        eprintln!("{}", report.table());
    }

    #[tokio::test]
    async fn an_unreachable_backend_is_a_no_go_in_bounded_time() {
        let s = Storage::open(StorageLayout {
            cas: Location::parse("s3://nobucket/cas").unwrap(),
            records: Location::parse("s3://nobucket/records").unwrap(),
            s3: S3Settings {
                options: vec![
                    ("endpoint".into(), "http://127.0.0.1:9".into()),
                    ("region".into(), "garage".into()),
                    ("allow_http".into(), "true".into()),
                    ("access_key_id".into(), "x".into()),
                    ("secret_access_key".into(), "y".into()),
                ],
            },
        })
        .unwrap();
        let opts = ProbeOptions {
            op_timeout: Duration::from_millis(500),
            ..ProbeOptions::quick()
        };
        let t = Instant::now();
        let report = probe(&s, &opts).await;
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(!report.is_go());
        let c = report.check(Role::Cas, "reachable").unwrap();
        assert_eq!(c.outcome, Outcome::Fail);
        assert_eq!(
            report.check(Role::Cas, "index-coherence").unwrap().outcome,
            Outcome::Skipped
        );
    }
}
