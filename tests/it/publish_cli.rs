//! The publisher's command line against the real server: `gf-registry publish --tag` from a
//! git repository made by the test (a deterministic archive: publishing twice is an identical,
//! idempotent request), `--dry-run`, a tag naming another version, `registry add` offline, and
//! `token create` whose snippet grants what it says.

use std::path::Path;
use std::process::Command;

use git2::{Repository, RepositoryInitOptions, Signature};

use crate::support::publish::{PUBLISHER, PublishServer, bounded};
use crate::support::{copy_tree, example_registry, sha256_hex};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gf-registry"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run gf-registry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A module repository: MODULE.bazel, sources, `.bcr/` metadata and a patch, tagged `v{version}`.
fn module_repo(dir: &Path, name: &str, version: &str) -> Repository {
    let repo = Repository::init_opts(dir, RepositoryInitOptions::new().initial_head("main"))
        .expect("init");
    let files = [
        (
            "MODULE.bazel".to_owned(),
            format!(
                "module(name = \"{name}\", version = \"{version}\")\n\nbazel_dep(name = \"hello_lib\", version = \"1.2.0\")\n"
            ),
        ),
        ("BUILD.bazel".to_owned(), "# the library\n".to_owned()),
        ("src/lib.cc".to_owned(), "int answer() { return 41; }\n".to_owned()),
        (
            ".bcr/metadata.template.json".to_owned(),
            r#"{"homepage": "https://example.com/", "maintainers": [{"name": "Test", "email": "t@example.com"}], "repository": ["github:example/mod"], "versions": [], "yanked_versions": {}}"#.to_owned(),
        ),
        (
            ".bcr/patches/fix.patch".to_owned(),
            "--- a/src/lib.cc\n+++ b/src/lib.cc\n@@ -1 +1 @@\n-int answer() { return 41; }\n+int answer() { return 42; }\n".to_owned(),
        ),
    ];
    for (path, content) in &files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.write().expect("index write");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig =
        Signature::new("Test", "t@example.com", &git2::Time::new(1_700_000_000, 0)).expect("sig");
    let commit = repo
        .commit(Some("HEAD"), &sig, &sig, "release", &tree, &[])
        .expect("commit");
    let obj = repo.find_object(commit, None).expect("object");
    repo.tag(&format!("v{version}"), &obj, &sig, "release", false)
        .expect("tag");
    drop(tree);
    drop(obj);
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_a_tag_twice_with_the_cli() {
    bounded(async {
        let s = PublishServer::start().await;
        let module = tempfile::tempdir().expect("tempdir");
        module_repo(module.path(), "cli_mod", "1.0.0");
        let server = s.server.base.clone();
        let module_path = module.path().to_path_buf();
        let publish = move |extra: &[&str]| {
            let mut cmd = bin();
            cmd.args(["publish", "--server", &server, "--module-root"])
                .arg(&module_path)
                .args(["--tag", "v1.0.0"])
                .args(extra)
                .env("GF_REGISTRY_TOKEN", PUBLISHER)
                .env("NETRC", "/nonexistent");
            run(&mut cmd)
        };
        // A dry run validates everything (the patch applies, the dep resolves) and writes nothing.
        let before = s.snapshot();
        let (code, out, err) = tokio::task::spawn_blocking({
            let publish = publish.clone();
            move || publish(&["--dry-run"])
        })
        .await
        .expect("join");
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("\"dry_run\""), "{out}");
        assert_eq!(before, s.snapshot(), "a dry run writes nothing");

        let (code, out, err) = tokio::task::spawn_blocking({
            let publish = publish.clone();
            move || publish(&[])
        })
        .await
        .expect("join");
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("\"created\""), "{out}");
        assert!(!out.contains(PUBLISHER) && !err.contains(PUBLISHER));
        let first: serde_json::Value = serde_json::from_str(&out).expect("json answer");
        // The same tag again: the archive is built byte for byte the same, so the request is
        // identical and the server answers `unchanged` (a different archive would be a 409).
        let (code, out, err) = tokio::task::spawn_blocking(move || publish(&[]))
            .await
            .expect("join");
        assert_eq!(code, 0, "{out}{err}");
        let second: serde_json::Value = serde_json::from_str(&out).expect("json answer");
        assert_eq!(second["status"], "unchanged", "{out}");
        assert_eq!(first["archive_sha256"], second["archive_sha256"]);

        // What was written is served, the patch and metadata came from .bcr/.
        let source: serde_json::Value = s
            .server
            .get_json("/modules/cli_mod/1.0.0/source.json")
            .await;
        assert_eq!(source["strip_prefix"], "cli_mod-1.0.0");
        assert!(source["patches"]["fix.patch"].is_string(), "{source}");
        let (status, archive) = s
            .server
            .get_bytes(
                source["url"]
                    .as_str()
                    .expect("url")
                    .trim_start_matches(&s.server.base),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            Some(sha256_hex(&archive).as_str()),
            first["archive_sha256"].as_str()
        );
        let meta = s.server.get_json("/modules/cli_mod/metadata.json").await;
        assert_eq!(meta["homepage"], "https://example.com/");
        assert_eq!(meta["versions"], serde_json::json!(["1.0.0"]));
        s.server.stop().await;
    })
    .await;
}

#[test]
fn a_tag_naming_another_version_is_refused_before_sending() {
    let module = tempfile::tempdir().expect("tempdir");
    let repo = module_repo(module.path(), "cli_mod", "1.0.0");
    let head = repo.head().expect("head").peel_to_commit().expect("commit");
    let sig = Signature::now("Test", "t@example.com").expect("sig");
    repo.tag("v2.0.0", head.as_object(), &sig, "wrong", false)
        .expect("tag");
    // Nothing listens on port 9: a request would fail differently (exit 1).
    let (code, out, err) = run(bin()
        .args([
            "publish",
            "--server",
            "http://127.0.0.1:9/",
            "--module-root",
        ])
        .arg(module.path())
        .args(["--tag", "v2.0.0"])
        .env("GF_REGISTRY_TOKEN", "x"));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("2.0.0") && err.contains("1.0.0"), "{err}");
}

#[test]
fn registry_add_writes_the_same_entry_offline() {
    let registry = tempfile::tempdir().expect("tempdir");
    copy_tree(&example_registry(), registry.path());
    let data = tempfile::tempdir().expect("tempdir");
    let module = tempfile::tempdir().expect("tempdir");
    module_repo(module.path(), "offline_mod", "0.1.0");
    let add = |extra: &[&str]| {
        run(bin()
            .args(["registry", "add", "--registry"])
            .arg(registry.path())
            .arg("--data")
            .arg(data.path())
            .args(["--mirror-policy", "/nonexistent-policy"])
            .args(["--public-url", "https://registry.example.com/"])
            .arg("--module-root")
            .arg(module.path())
            .args(["--tag", "v0.1.0"])
            .args(extra)
            .env("GF_REGISTRY_UPSTREAM_REGISTRIES", ""))
    };
    let (code, out, err) = add(&["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!registry.path().join("modules/offline_mod").exists());
    let (code, out, err) = add(&[]);
    assert_eq!(code, 0, "{out}{err}");
    let source = std::fs::read_to_string(
        registry
            .path()
            .join("modules/offline_mod/0.1.0/source.json"),
    )
    .expect("source.json");
    assert!(
        source.contains("https://registry.example.com/cas/sha256/"),
        "{source}"
    );
    let (code, out, err) = run(bin().args(["registry", "check"]).arg(registry.path()));
    assert_eq!(code, 0, "{out}{err}");
    // Again: unchanged, exit 0.
    let (code, out, err) = add(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"unchanged\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_token_works_with_its_snippet() {
    let (code, out, err) = run(bin().args([
        "token",
        "create",
        "--scope",
        "publish:tok_*",
        "--name",
        "ci-bot",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let token = out.lines().next().expect("token line").trim().to_owned();
    let snippet: String = out.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(!snippet.contains(&token), "the snippet holds only the hash");
    assert!(snippet.contains(&sha256_hex(token.as_bytes())), "{snippet}");
    let registry = tempfile::tempdir().expect("tempdir");
    copy_tree(&example_registry(), registry.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[publish]\nupstream_registries = []\n{snippet}\n"),
    )
    .expect("config");
    let data = dir.path().join("data");
    let server = crate::support::TestServer::start_exact(
        &[
            ("registry", registry.path().to_str().expect("utf-8")),
            ("data", data.to_str().expect("utf-8")),
        ],
        Some(&config),
        &[],
    )
    .await;
    let body = crate::support::publish::upload_body("tok_mod", "1.0.0", "");
    let allowed = server
        .client
        .post(format!("{}/api/v1/modules/tok_mod/1.0.0", server.base))
        .basic_auth("anyone", Some(&token))
        .json(&body)
        .send()
        .await
        .expect("publish");
    assert_eq!(allowed.status(), 201);
    let other = crate::support::publish::upload_body("other_mod", "1.0.0", "");
    let refused = server
        .client
        .post(format!("{}/api/v1/modules/other_mod/1.0.0", server.base))
        .bearer_auth(&token)
        .json(&other)
        .send()
        .await
        .expect("publish");
    assert_eq!(refused.status(), 403);
    let text = refused.text().await.expect("body");
    assert!(
        text.contains("publish:other_mod") && text.contains("ci-bot"),
        "{text}"
    );
    server.stop().await;
}

/// A `git_repository` source is fetched (from a local remote) and checked like an archive: the
/// patch must apply and MODULE.bazel must match; a missing commit or a remote this build
/// cannot fetch is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_repository_source_is_fetched_and_checked() {
    bounded(async {
        let s = PublishServer::start().await;
        let module = tempfile::tempdir().expect("tempdir");
        let repo = module_repo(module.path(), "git_src_mod", "1.0.0");
        let commit = repo
            .head()
            .expect("head")
            .peel_to_commit()
            .expect("commit")
            .id()
            .to_string();
        let mb = std::fs::read_to_string(module.path().join("MODULE.bazel")).expect("MODULE");
        let patch = std::fs::read_to_string(module.path().join(".bcr/patches/fix.patch"))
            .expect("patch");
        let body = |remote: &str, commit: &str| {
            serde_json::json!({
                "module_bazel": mb,
                "source": {"type": "git_repository", "remote": remote, "commit": commit},
                "patches": [{"name": "fix.patch", "content": patch}],
                "patch_strip": 1,
                "metadata": {"homepage": "https://example.com/", "maintainers": [{"name": "T"}], "repository": []},
            })
        };
        let remote = format!("file://{}", module.path().display());
        let (status, text) = s
            .publish("git_src_mod", "1.0.0", &body(&remote, &"0".repeat(40)))
            .await;
        assert_eq!(status, 422, "{text}");
        assert!(text.starts_with("source.commit"), "{text}");
        let (status, text) = s
            .publish(
                "git_src_mod",
                "1.0.0",
                &body("https://github.com/example/x.git", &commit),
            )
            .await;
        assert_eq!(status, 422, "{text}");
        assert!(text.starts_with("source.remote"), "{text}");
        let mut bad = body(&remote, &commit);
        bad["patches"][0]["content"] = serde_json::json!(patch.replace("41", "40"));
        let (status, text) = s.publish("git_src_mod", "1.0.0", &bad).await;
        assert_eq!(status, 422, "{text}");
        assert!(text.starts_with("patches[0]"), "{text}");
        let (status, text) = s.publish("git_src_mod", "1.0.0", &body(&remote, &commit)).await;
        assert_eq!(status, 201, "{text}");
        let source = s
            .server
            .get_json("/modules/git_src_mod/1.0.0/source.json")
            .await;
        assert_eq!(source["type"], "git_repository");
        assert_eq!(source["commit"], commit.as_str());
        assert!(source["patches"]["fix.patch"].is_string(), "{source}");
        s.server.stop().await;
    })
    .await;
}
