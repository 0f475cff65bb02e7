//! Publishing into a git registry shared by two replicas: each serves its own bare clone of
//! one `origin` repository and pushes every publish there; a push that loses a race fetches
//! and plans again. Both replicas share one data folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::build::RepoBuilder;
use git2::{Oid, Repository, RepositoryInitOptions, Signature};
use serde_json::{Value, json};

use crate::support::publish::{
    ADMIN, PUBLISHER, TEST_TIMEOUT, audit_records, bounded, config_file, upload_body,
};
use crate::support::{TestServer, copy_tree, example_registry, path_str};

const MODULE: &str = "git_mod";
/// The URL both replicas are reached at.
const PUBLIC_URL: &str = "http://gf-registry.test/";

/// An `origin` bare repository seeded with the example registry, two bare clones of it, a
/// shared data folder, a mirror policy and a config file, all in one temp dir.
struct Fixture {
    dir: tempfile::TempDir,
    /// The commit `origin` started at.
    seed: Oid,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("seed");
        let repo = Repository::init_opts(&work, RepositoryInitOptions::new().initial_head("main"))
            .expect("init");
        copy_tree(&example_registry(), &work);
        let mut index = repo.index().expect("index");
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .expect("add");
        index.write().expect("write index");
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("find tree");
        let sig = Signature::now("seed", "seed@example.com").expect("sig");
        let seed = repo
            .commit(
                Some("HEAD"),
                &sig,
                &sig,
                "Import the example registry",
                &tree,
                &[],
            )
            .expect("commit");
        let origin = dir.path().join("origin.git");
        RepoBuilder::new()
            .bare(true)
            .clone(path_str(&work), &origin)
            .expect("bare origin");
        for replica in ["a.git", "b.git"] {
            let clone = RepoBuilder::new()
                .bare(true)
                .clone(path_str(&origin), &dir.path().join(replica))
                .expect("bare replica clone");
            let remote = clone.find_remote("origin").expect("origin remote");
            assert_eq!(remote.url().ok(), Some(path_str(&origin)));
        }
        for sub in ["data", "policy"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        config_file(dir.path(), "", "");
        Self { dir, seed }
    }

    fn origin(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A replica serving its clone's `refs/heads/main`, with the shared data folder.
    async fn replica(&self, clone: &str) -> TestServer {
        self.replica_on(clone, path_str(&self.data()), &[]).await
    }

    /// A replica over the data location `data` (a folder or an `s3://` URL) with `env`.
    async fn replica_on(&self, clone: &str, data: &str, env: &[(&str, &str)]) -> TestServer {
        let registry = self.dir.path().join(clone);
        let policy = self.dir.path().join("policy");
        let mut all = vec![("GF_REGISTRY_POLL_INTERVAL_SECONDS", "0")];
        all.extend_from_slice(env);
        TestServer::start_exact(
            &[
                ("registry", path_str(&registry)),
                ("registry-ref", "refs/heads/main"),
                ("data", data),
                ("mirror-policy", path_str(&policy)),
                // Replicas behind one load balancer: one public URL, so an entry written
                // through either replica is the same bytes.
                ("public-url", PUBLIC_URL),
            ],
            Some(&self.dir.path().join("config.toml")),
            &all,
        )
        .await
    }

    /// The commits on origin's `main` since the seed, oldest first: (id, author, message,
    /// parent count).
    fn commits(&self) -> Vec<(String, String, String, usize)> {
        let repo = Repository::open_bare(self.origin()).expect("open origin");
        let tip = repo.refname_to_id("refs/heads/main").expect("main");
        let mut walk = repo.revwalk().expect("revwalk");
        walk.push(tip).expect("push");
        walk.hide(self.seed).expect("hide");
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)
            .expect("sort");
        walk.map(|id| {
            let c = repo.find_commit(id.expect("id")).expect("commit");
            (
                c.id().to_string(),
                c.author().name().expect("utf-8").to_owned(),
                c.message().expect("utf-8").to_owned(),
                c.parent_count(),
            )
        })
        .collect()
    }

    /// A file at origin's `main`.
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let repo = Repository::open_bare(self.origin()).expect("open origin");
        let tree = repo
            .find_reference("refs/heads/main")
            .expect("main")
            .peel_to_tree()
            .expect("tree");
        let entry = tree.get_path(Path::new(path)).ok()?;
        let blob = entry
            .to_object(&repo)
            .expect("object")
            .peel_to_blob()
            .ok()?;
        Some(blob.content().to_vec())
    }

    /// Paths the last commit on origin's `main` changed.
    fn last_change(&self) -> Vec<String> {
        let repo = Repository::open_bare(self.origin()).expect("open origin");
        let tip = repo
            .find_reference("refs/heads/main")
            .expect("main")
            .peel_to_commit()
            .expect("commit");
        let parent = tip.parent(0).expect("parent");
        let diff = repo
            .diff_tree_to_tree(
                Some(&parent.tree().expect("tree")),
                Some(&tip.tree().expect("tree")),
                None,
            )
            .expect("diff");
        diff.deltas()
            .map(|d| {
                d.new_file()
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn refresh(server: &TestServer) {
    let resp = server
        .client
        .post(server.url("/admin/registry/refresh"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("refresh");
    assert_eq!(resp.status(), 200, "refresh");
}

/// What one publish sent and got back.
type Published = BTreeMap<String, (Value, Value)>;

/// Versions in Bazel order (all numeric here).
fn bazel_order(published: &Published) -> Vec<String> {
    let mut order: Vec<String> = published.keys().cloned().collect();
    order.sort_by_key(|v| {
        v.split('.')
            .map(|p| p.parse::<u32>().expect("numeric"))
            .collect::<Vec<_>>()
    });
    order
}

/// Origin holds exactly one commit per publish since the seed, by the token's name, with the
/// message `Publish NAME@VERSION\n\nArchive: sha256:HEX`, the commit each answer named; its
/// `metadata.json` lists every version in Bazel order.
fn check_origin(fx: &Fixture, published: &Published) {
    let commits = fx.commits();
    let firsts: Vec<&str> = commits
        .iter()
        .map(|c| c.2.lines().next().unwrap_or(""))
        .collect();
    for (version, (_, answer)) in published {
        let message = format!(
            "Publish {MODULE}@{version}\n\nArchive: sha256:{}",
            answer["archive_sha256"].as_str().expect("sha")
        );
        let found: Vec<_> = commits
            .iter()
            .filter(|(_, _, m, _)| m.starts_with(&format!("Publish {MODULE}@{version}\n")))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{version} (answered {}): one commit on origin's main; has {firsts:#?}",
            answer["revision"]
        );
        let (id, author, msg, parents) = found[0];
        assert_eq!(author, "publisher", "{version}");
        assert!(msg.starts_with(&message), "{version}: {msg}");
        assert_eq!(*parents, 1, "{version}: linear history");
        assert_eq!(
            answer["revision"],
            json!(id),
            "{version}: the answer names the commit"
        );
    }
    assert_eq!(commits.len(), published.len(), "{firsts:#?}");
    let meta: Value = serde_json::from_slice(
        &fx.read(&format!("modules/{MODULE}/metadata.json"))
            .expect("metadata"),
    )
    .expect("json");
    assert_eq!(meta["versions"], json!(bazel_order(published)));
}

/// After a refresh, `server` serves origin's `metadata.json` and every published version.
async fn check_served(fx: &Fixture, server: &TestServer, published: &Published) {
    refresh(server).await;
    let (status, served) = server
        .get_bytes(&format!("/modules/{MODULE}/metadata.json"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        Some(served),
        fx.read(&format!("modules/{MODULE}/metadata.json")),
        "{}",
        server.base
    );
    for (version, (body, _)) in published {
        let (status, bytes) = server
            .get_bytes(&format!("/modules/{MODULE}/{version}/MODULE.bazel"))
            .await;
        assert_eq!(status, 200, "{version} at {}", server.base);
        assert_eq!(bytes, body["module_bazel"].as_str().expect("mb").as_bytes());
    }
}

/// Publishes `versions` all at once, the i-th through `replicas[i % len]`; each must be `201`.
async fn publish_at_once(replicas: &[&TestServer], versions: &[String], published: &mut Published) {
    let bodies: Vec<Value> = versions
        .iter()
        .map(|v| upload_body(MODULE, v, ""))
        .collect();
    let results = tokio::time::timeout(
        TEST_TIMEOUT / 4,
        futures::future::join_all(
            versions
                .iter()
                .zip(&bodies)
                .enumerate()
                .map(|(i, (v, body))| replicas[i % replicas.len()].publish(MODULE, v, body)),
        ),
    )
    .await
    .expect("the concurrent publishes finish in time");
    for ((version, body), (status, text)) in versions.iter().zip(bodies).zip(results) {
        assert_eq!(status, 201, "{version}: {text}");
        published.insert(version.clone(), (body, parse(&text)));
    }
}

/// Two replicas, one origin: publishes alternate between them; retries, conflicts and a yank
/// go through the replica that did not write the version. Every write is one commit on
/// origin and both replicas serve it after a refresh.
#[tokio::test]
async fn two_replicas_publish_alternately_into_one_origin() {
    bounded(async {
        let fx = Fixture::new();
        let a = fx.replica("a.git").await;
        let b = fx.replica("b.git").await;
        let replicas = [&a, &b];
        let mut published = Published::new();
        // The first creates the module (and metadata.json) through A; B adds to it.
        for i in 0..6 {
            let version = format!("1.{i}.0");
            let body = upload_body(MODULE, &version, "");
            let (status, text) = replicas[i % 2].publish(MODULE, &version, &body).await;
            assert_eq!(status, 201, "{version} through replica {}: {text}", i % 2);
            published.insert(version, (body, parse(&text)));
        }
        check_origin(&fx, &published);
        for r in replicas {
            check_served(&fx, r, &published).await;
        }

        // A retry through the other replica is idempotent; other content is a conflict.
        let commits = fx.commits().len();
        let (body, _) = &published["1.0.0"];
        let (status, text) = b.publish(MODULE, "1.0.0", body).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(parse(&text)["status"], "unchanged");
        let (status, text) = b
            .publish(MODULE, "1.0.0", &upload_body(MODULE, "1.0.0", "# other\n"))
            .await;
        assert_eq!(status, 409, "{text}");
        // Refused content commits nothing either.
        let (status, text) = b
            .publish(
                MODULE,
                "1.9.0",
                &upload_body(
                    MODULE,
                    "1.9.0",
                    "bazel_dep(name = \"nope\", version = \"1\")\n",
                ),
            )
            .await;
        assert_eq!(status, 422, "{text}");
        assert_eq!(fx.commits().len(), commits, "nothing was committed");

        // A yank through replica B (A wrote 1.0.0) is one commit that edits metadata.json.
        let (status, text) = b
            .post_json(
                &format!("/api/v1/modules/{MODULE}/1.0.0/yank"),
                &json!({"reason": "broken build"}),
                Some(PUBLISHER),
            )
            .await;
        assert_eq!(status, 200, "{text}");
        let all = fx.commits();
        assert_eq!(all.len(), commits + 1);
        let (id, author, message, _) = all.last().expect("yank commit");
        assert_eq!(author, "publisher");
        assert!(
            message.starts_with(&format!("Yank {MODULE}@1.0.0\n")),
            "{message}"
        );
        assert_eq!(parse(&text)["revision"], json!(id));
        assert_eq!(
            fx.last_change(),
            [format!("modules/{MODULE}/metadata.json")]
        );
        // And A's next publish builds on it.
        let version = "1.6.0".to_owned();
        let body = upload_body(MODULE, &version, "");
        let (status, text) = a.publish(MODULE, &version, &body).await;
        assert_eq!(status, 201, "{text}");
        published.insert(version, (body, parse(&text)));
        let order = bazel_order(&published);
        for r in replicas {
            refresh(r).await;
            let meta = r
                .get_json(&format!("/modules/{MODULE}/metadata.json"))
                .await;
            assert_eq!(meta["yanked_versions"], json!({"1.0.0": "broken build"}));
            assert_eq!(meta["versions"], json!(order), "the yank lost no version");
            check_served(&fx, r, &published).await;
        }

        // One audit record per write, in the shared records role.
        let audit = audit_records(&fx.data().join("records"));
        let count = |action: &str, outcome: &str| {
            audit
                .iter()
                .filter(|r| r["action"] == action && r["outcome"] == outcome)
                .count()
        };
        assert_eq!(count("publish", "created"), published.len(), "{audit:#?}");
        assert_eq!(count("publish", "unchanged"), 1, "{audit:#?}");
        assert_eq!(count("yank", "edited"), 1, "{audit:#?}");
        a.stop().await;
        b.stop().await;
    })
    .await;
}

/// A version written through replica A is in the registry: a publish through replica B that
/// depends on it resolves, as B's own transaction would see it (it syncs with origin first).
#[tokio::test]
async fn a_dependency_written_through_the_other_replica_resolves() {
    bounded(async {
        let fx = Fixture::new();
        let a = fx.replica("a.git").await;
        let b = fx.replica("b.git").await;
        let (status, text) = a
            .publish(MODULE, "1.0.0", &upload_body(MODULE, "1.0.0", ""))
            .await;
        assert_eq!(status, 201, "{text}");
        let dep = format!("bazel_dep(name = \"{MODULE}\", version = \"1.0.0\")\n");
        let (status, text) = b
            .publish("git_user", "1.0.0", &upload_body("git_user", "1.0.0", &dep))
            .await;
        assert_eq!(status, 201, "{text}");
        a.stop().await;
        b.stop().await;
    })
    .await;
}

/// Eight publishes at once, split over two replicas, in several rounds: every one answered
/// `201` must be a commit on origin, and none may fail on a lost race.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_through_two_replicas_lose_nothing() {
    bounded(async {
        let fx = Fixture::new();
        let a = fx.replica("a.git").await;
        let b = fx.replica("b.git").await;
        let mut published = Published::new();
        let body = upload_body(MODULE, "1.0.0", "");
        let (status, text) = a.publish(MODULE, "1.0.0", &body).await;
        assert_eq!(status, 201, "{text}");
        published.insert("1.0.0".to_owned(), (body, parse(&text)));
        for round in 2..8 {
            let versions: Vec<String> = (0..8).map(|i| format!("{round}.{i}.0")).collect();
            publish_at_once(&[&a, &b], &versions, &mut published).await;
            check_origin(&fx, &published);
        }
        check_served(&fx, &a, &published).await;
        check_served(&fx, &b, &published).await;
        a.stop().await;
        b.stop().await;
    })
    .await;
}

/// One replica with an `origin`: its concurrent publishes queue on its write lock, but each
/// write's registry refresh syncs with origin outside that lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_through_one_replica_with_an_origin_lose_nothing() {
    bounded(async {
        let fx = Fixture::new();
        let a = fx.replica("a.git").await;
        let mut published = Published::new();
        let body = upload_body(MODULE, "1.0.0", "");
        let (status, text) = a.publish(MODULE, "1.0.0", &body).await;
        assert_eq!(status, 201, "{text}");
        published.insert("1.0.0".to_owned(), (body, parse(&text)));
        for round in 2..12 {
            let versions: Vec<String> = (0..16).map(|i| format!("{round}.{i}.0")).collect();
            publish_at_once(&[&a], &versions, &mut published).await;
            check_origin(&fx, &published);
        }
        check_served(&fx, &a, &published).await;
        a.stop().await;
    })
    .await;
}

/// Issue 5's two replicas for real: one Garage bucket and one git origin. Publishes alternate
/// between the replicas (archives stored in Garage), mirror fills go through both, and each
/// replica then serves every version and every blob, with one upstream fetch per URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_garage_bucket_and_one_origin() {
    let Some(garage) = crate::support::Garage::single() else {
        return;
    };
    bounded(async {
        let fx = Fixture::new();
        let upstream = crate::support::Upstream::start().await;
        std::fs::write(
            fx.dir.path().join("policy/policy.toml"),
            format!(
                "[[upstream]]\nprefix = \"{}/\"\nallow_private = true\n",
                upstream.origin()
            ),
        )
        .expect("policy");
        let data = garage.data_url("gf");
        let env: Vec<(&str, String)> = garage.env().into_iter().collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = fx.replica_on("a.git", &data, &env).await;
        let b = fx.replica_on("b.git", &data, &env).await;
        let replicas = [&a, &b];
        let mut published = Published::new();
        for i in 0..4 {
            let version = format!("2.{i}.0");
            let body = upload_body(MODULE, &version, "");
            let (status, text) = replicas[i % 2].publish(MODULE, &version, &body).await;
            assert_eq!(status, 201, "{version} through replica {}: {text}", i % 2);
            published.insert(version, (body, parse(&text)));
        }
        let blobs: Vec<(String, Vec<u8>)> = (0..4u8)
            .map(|i| {
                (
                    format!("/fill-{i}.tar.gz"),
                    vec![i; 100_000 + usize::from(i)],
                )
            })
            .collect();
        for (path, bytes) in &blobs {
            upstream.serve_bytes(path, bytes.clone());
        }
        // Each URL filled through one replica, then read through the other.
        for (i, (path, bytes)) in blobs.iter().enumerate() {
            let url = format!("/mirror/{}{path}", upstream.host());
            for r in [replicas[i % 2], replicas[(i + 1) % 2]] {
                let (status, got) = r.get_bytes(&url).await;
                assert_eq!(status, 200, "{url} at {}", r.base);
                assert_eq!(&got, bytes);
            }
            assert_eq!(
                upstream.gets(path),
                1,
                "{path}: one upstream fetch for both replicas"
            );
        }
        check_origin(&fx, &published);
        for r in replicas {
            check_served(&fx, r, &published).await;
            for (_, answer) in published.values() {
                let sha = answer["archive_sha256"].as_str().expect("sha");
                let (status, _) = r.get_bytes(&format!("/cas/sha256/{sha}")).await;
                assert_eq!(status, 200, "archive {sha} at {}", r.base);
            }
            for (path, bytes) in &blobs {
                let sha = crate::support::sha256_hex(bytes);
                let info = r.get_json(&format!("/api/v1/blobs/{sha}")).await;
                let url = format!("{}{path}", upstream.origin());
                assert!(
                    info["urls"]
                        .as_array()
                        .is_some_and(|u| u.iter().any(|x| x == url.as_str())),
                    "provenance of {path} at {}: {info}",
                    r.base
                );
            }
        }
        a.stop().await;
        b.stop().await;
    })
    .await;
}
