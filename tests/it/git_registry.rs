//! The registry read path over a git repository: the committed tree of a ref, switched
//! atomically to new commits.

use std::path::Path;
use std::time::{Duration, Instant};

use git2::{Oid, Repository, RepositoryInitOptions, Signature};

use crate::support::{TestServer, copy_tree, example_registry, files_under, sha256_hex};

/// A git repository in a temp dir whose working tree starts as the example registry.
struct GitRegistry {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl GitRegistry {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_opts(
            dir.path(),
            RepositoryInitOptions::new().initial_head("main"),
        )
        .expect("init");
        copy_tree(&example_registry(), dir.path());
        let me = Self { dir, repo };
        me.commit("import the example registry");
        me
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Commits the whole working tree on the current branch.
    fn commit(&self, message: &str) -> Oid {
        let mut index = self.repo.index().expect("index");
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .expect("add");
        index.update_all(["*"], None).expect("update");
        index.write().expect("write index");
        let tree = self
            .repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("find tree");
        let sig = Signature::now("test", "test@example.com").expect("sig");
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<_> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .expect("commit")
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    /// Adds hello_lib 1.3.0 (MODULE.bazel, source.json, metadata entry) and commits it.
    fn add_hello_lib_1_3_0(&self) -> Oid {
        self.write(
            "modules/hello_lib/1.3.0/MODULE.bazel",
            "module(name = \"hello_lib\", version = \"1.3.0\", compatibility_level = 1)\n",
        );
        let source =
            std::fs::read_to_string(self.path().join("modules/hello_lib/1.2.0/source.json"))
                .expect("read");
        self.write(
            "modules/hello_lib/1.3.0/source.json",
            &source.replace("1.2.0", "1.3.0"),
        );
        let meta = std::fs::read_to_string(self.path().join("modules/hello_lib/metadata.json"))
            .expect("read");
        self.write(
            "modules/hello_lib/metadata.json",
            &meta.replace("\"1.2.0\"\n", "\"1.2.0\",\n        \"1.3.0\"\n"),
        );
        self.commit("hello_lib 1.3.0")
    }

    fn set_branch(&self, oid: Oid) {
        self.repo
            .reference("refs/heads/main", oid, true, "test: move main")
            .expect("move ref");
    }
}

#[tokio::test]
async fn serves_the_committed_tree_byte_for_byte() {
    let git = GitRegistry::new();
    let server = TestServer::start(git.path(), &[]).await;
    let root = example_registry();
    for rel in files_under(&root) {
        let want = std::fs::read(root.join(&rel)).expect("read");
        let resp = server.get(&format!("/{rel}")).await;
        assert_eq!(resp.status(), 200, "{rel}");
        assert_eq!(
            resp.headers()["etag"].to_str().expect("etag"),
            format!("\"{}\"", sha256_hex(&want)),
            "{rel}"
        );
        assert_eq!(resp.bytes().await.expect("body"), want, "{rel}");
    }
    // The working tree is not what is served: an uncommitted edit stays invisible.
    git.write(
        "modules/hello_lib/1.2.0/MODULE.bazel",
        "module(name = \"tampered\")\n",
    );
    let refreshed = server.post("/admin/registry/refresh").await;
    assert_eq!(refreshed.status(), 200);
    let served = server
        .get("/modules/hello_lib/1.2.0/MODULE.bazel")
        .await
        .bytes()
        .await
        .expect("body");
    assert_eq!(
        served,
        std::fs::read(root.join("modules/hello_lib/1.2.0/MODULE.bazel")).expect("read")
    );
    assert_eq!(server.get("/.git/config").await.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn refresh_switches_to_the_new_commit() {
    let git = GitRegistry::new();
    let server = TestServer::start_with_env(
        git.path(),
        &[],
        &[("GF_REGISTRY_POLL_INTERVAL_SECONDS", "0")],
    )
    .await;
    let path = "/modules/hello_lib/1.3.0/MODULE.bazel";
    assert_eq!(server.get(path).await.status(), 404);
    let old_meta = server
        .get("/modules/hello_lib/metadata.json")
        .await
        .bytes()
        .await
        .expect("body");
    let new = git.add_hello_lib_1_3_0();
    // Nothing changes before a refresh (polling is off).
    assert_eq!(server.get(path).await.status(), 404);
    let resp = server.post("/admin/registry/refresh").await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["switched"], true);
    assert_eq!(body["current"], new.to_string());
    assert_eq!(server.get(path).await.status(), 200);
    let new_meta = server
        .get("/modules/hello_lib/metadata.json")
        .await
        .text()
        .await
        .expect("text");
    assert_ne!(new_meta.as_bytes(), &old_meta[..]);
    assert!(new_meta.contains("\"1.3.0\""));
    // A second refresh with nothing new does not switch.
    let again: serde_json::Value = server
        .post("/admin/registry/refresh")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["switched"], false);
    server.stop().await;
}

#[tokio::test]
async fn polling_picks_up_new_commits() {
    let git = GitRegistry::new();
    let server = TestServer::start_with_env(
        git.path(),
        &[],
        &[("GF_REGISTRY_POLL_INTERVAL_SECONDS", "1")],
    )
    .await;
    let path = "/modules/hello_lib/1.3.0/source.json";
    assert_eq!(server.get(path).await.status(), 404);
    git.add_hello_lib_1_3_0();
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.get(path).await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "new commit not picked up within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn serves_the_configured_ref() {
    let git = GitRegistry::new();
    let first = git
        .repo
        .head()
        .expect("head")
        .peel_to_commit()
        .expect("commit")
        .id();
    git.repo
        .tag_lightweight(
            "v1",
            &git.repo.find_object(first, None).expect("obj"),
            false,
        )
        .expect("tag");
    git.add_hello_lib_1_3_0();
    let server = TestServer::start(git.path(), &[("registry-ref", "v1")]).await;
    assert_eq!(
        server
            .get("/modules/hello_lib/1.3.0/MODULE.bazel")
            .await
            .status(),
        404
    );
    assert_eq!(
        server
            .get("/modules/hello_lib/1.2.0/MODULE.bazel")
            .await
            .status(),
        200
    );
    server.stop().await;
    let server = TestServer::start(git.path(), &[("registry-ref", &first.to_string())]).await;
    assert_eq!(
        server
            .get("/modules/hello_lib/1.3.0/MODULE.bazel")
            .await
            .status(),
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bad_ref_is_refused_at_start() {
    let git = GitRegistry::new();
    let config = gf_registry::config::Config::resolve(&gf_registry::config::Inputs {
        config_file: None,
        flags: [
            ("listen", "127.0.0.1:0".to_owned()),
            ("registry", git.path().display().to_string()),
            ("registry-ref", "no-such-branch".to_owned()),
            (
                "data",
                tempfile::tempdir()
                    .expect("tmp")
                    .path()
                    .join("d")
                    .display()
                    .to_string(),
            ),
        ]
        .into_iter()
        .collect(),
        env: Default::default(),
    })
    .expect("config");
    let err = gf_registry::server::start(config)
        .await
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("no-such-branch"), "{err}");
}

/// While the branch flips between two commits and the server refreshes, every answer is
/// complete and belongs to one of the two commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_is_atomic_under_load() {
    let git = GitRegistry::new();
    let a = git
        .repo
        .head()
        .expect("head")
        .peel_to_commit()
        .expect("commit")
        .id();
    let b = git.add_hello_lib_1_3_0();
    let meta_a = {
        git.set_branch(a);
        let blob = git
            .repo
            .revparse_single("main:modules/hello_lib/metadata.json")
            .expect("blob");
        blob.as_blob().expect("blob").content().to_vec()
    };
    let meta_b = {
        let blob = git.repo.find_commit(b).expect("b").tree().expect("tree");
        let entry = blob
            .get_path(Path::new("modules/hello_lib/metadata.json"))
            .expect("entry");
        git.repo
            .find_blob(entry.id())
            .expect("blob")
            .content()
            .to_vec()
    };
    assert_ne!(meta_a, meta_b);
    let server = TestServer::start_with_env(
        git.path(),
        &[],
        &[("GF_REGISTRY_POLL_INTERVAL_SECONDS", "0")],
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let client = server.client.clone();
        let url = server.url("/modules/hello_lib/metadata.json");
        let stop = stop.clone();
        let (ma, mb) = (meta_a.clone(), meta_b.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = (0u32, 0u32);
            // Bounded: at most 500 requests per reader.
            for _ in 0..500 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let resp = client.get(&url).send().await.expect("send");
                assert_eq!(resp.status(), 200);
                let body = resp.bytes().await.expect("body");
                if body == ma {
                    seen.0 += 1;
                } else if body == mb {
                    seen.1 += 1;
                } else {
                    panic!("a response matched neither commit: {body:?}");
                }
            }
            seen
        }));
    }
    for i in 0..20 {
        git.set_branch(if i % 2 == 0 { b } else { a });
        let resp = server.post("/admin/registry/refresh").await;
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = (0, 0);
    for r in readers {
        let (x, y) = r.await.expect("reader");
        total.0 += x;
        total.1 += y;
    }
    assert!(
        total.0 > 0 && total.1 > 0,
        "both commits were served: {total:?}"
    );
    // The last flip (i = 19) left `a` in place.
    let last = server
        .get("/modules/hello_lib/metadata.json")
        .await
        .bytes()
        .await
        .expect("body");
    assert_eq!(last, meta_a);
    server.stop().await;
}
