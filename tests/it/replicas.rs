//! The server over a live Garage (S3): two replicas sharing one bucket, and the whole backend
//! going away and coming back.

use crate::support::Garage;
use crate::support::Upstream;
use crate::support::{TestServer, example_registry, sha256_hex};

/// A server over `s3://BUCKET/{prefix}` through Garage node 0, with a policy allowing `upstream`.
async fn server_on(
    garage: &Garage,
    prefix: &str,
    policy: &std::path::Path,
    env: &[(&str, &str)],
) -> TestServer {
    let data = garage.data_url(prefix);
    let owned: Vec<(&str, String)> = garage.env().into_iter().collect();
    let mut all: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(env);
    all.push(("GF_REGISTRY_GC_INTERVAL_SECONDS", "0"));
    TestServer::start_with_env(
        &example_registry(),
        &[
            ("data", data.as_str()),
            ("mirror-policy", policy.to_str().expect("utf8")),
        ],
        &all,
    )
    .await
}

async fn get_ok(server: &TestServer, path: &str) -> Vec<u8> {
    let resp = server.get(path).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.bytes().await.expect("body").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_bucket() {
    let Some(garage) = Garage::single() else {
        return;
    };
    let upstream = Upstream::start().await;
    let (a, b) = (vec![1u8; 300_000], vec![2u8; 200_000]);
    upstream.serve_bytes("/a.tar.gz", a.clone());
    upstream.serve_bytes("/b.tar.gz", b.clone());
    upstream.serve_bytes("/a-again.tar.gz", a.clone());
    let policy = upstream.policy_dir();
    // Replica A reads other replicas' records only on misses; B also every second.
    let one = server_on(
        &garage,
        "gf",
        policy.path(),
        &[("GF_REGISTRY_RECORDS_REFRESH_SECONDS", "0")],
    )
    .await;
    let two = server_on(
        &garage,
        "gf",
        policy.path(),
        &[("GF_REGISTRY_RECORDS_REFRESH_SECONDS", "1")],
    )
    .await;
    let url = |p: &str| format!("/mirror/{}{p}", upstream.host());

    assert_eq!(get_ok(&one, &url("/a.tar.gz")).await, a);
    // Pinned through replica one: a hit on replica two, with no upstream fetch.
    assert_eq!(get_ok(&two, &url("/a.tar.gz")).await, a);
    assert_eq!(upstream.gets("/a.tar.gz"), 1);
    assert_eq!(get_ok(&two, &url("/b.tar.gz")).await, b);
    assert_eq!(
        get_ok(&one, &format!("/cas/sha256/{}", sha256_hex(&b))).await,
        b,
        "a /cas miss reads the records first"
    );
    assert_eq!(get_ok(&one, &url("/b.tar.gz")).await, b);
    assert_eq!(upstream.gets("/b.tar.gz"), 1);
    // The same bytes under another URL, through replica one: provenance on replica two lists
    // both URLs once it has read the new pin (it reads every second).
    assert_eq!(get_ok(&one, &url("/a-again.tar.gz")).await, a);
    let want = [upstream.url("/a.tar.gz"), upstream.url("/a-again.tar.gz")];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let info: serde_json::Value = two
            .get(&format!("/api/v1/blobs/{}", sha256_hex(&a)))
            .await
            .json()
            .await
            .expect("json");
        let urls: Vec<String> = info["urls"]
            .as_array()
            .expect("urls")
            .iter()
            .map(|u| u.as_str().unwrap_or_default().to_owned())
            .collect();
        if want.iter().all(|w| urls.contains(w)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica two never saw both URLs: {urls:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The pins agree: the same ETag through both replicas.
    for p in ["/a.tar.gz", "/b.tar.gz"] {
        let e1 = one.head(&url(p)).await.headers()["etag"].clone();
        let e2 = two.head(&url(p)).await.headers()["etag"].clone();
        assert_eq!(e1, e2, "{p}");
    }
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_goes_away_and_comes_back() {
    let Some(mut garage) = Garage::single() else {
        return;
    };
    let upstream = Upstream::start().await;
    let a = vec![7u8; 500_000];
    upstream.serve_bytes("/a.tar.gz", a.clone());
    upstream.serve_bytes("/new.tar.gz", vec![8u8; 1000]);
    let policy = upstream.policy_dir();
    let server = server_on(&garage, "gf", policy.path(), &[]).await;
    let url = |p: &str| format!("/mirror/{}{p}", upstream.host());
    assert_eq!(get_ok(&server, &url("/a.tar.gz")).await, a);
    let registry_file = "/modules/hello_lib/1.2.0/MODULE.bazel";
    assert_eq!(server.get(registry_file).await.status(), 200);

    garage.stop_all();
    // Registry reads do not need the object store.
    assert_eq!(server.get(registry_file).await.status(), 200);
    // Blob reads and writes fail with a 503 before any byte: never a 200 with missing bytes.
    for path in [
        url("/a.tar.gz"),
        format!("/cas/sha256/{}", sha256_hex(&a)),
        url("/new.tar.gz"),
    ] {
        let resp = server.get(&path).await;
        assert_eq!(resp.status(), 503, "{path}");
    }
    assert_eq!(server.get("/readyz").await.status(), 503);
    assert_eq!(
        upstream.gets("/new.tar.gz"),
        0,
        "nothing is fetched that could not be stored"
    );

    garage.restart_all();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.get("/readyz").await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready again within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(get_ok(&server, &url("/a.tar.gz")).await, a);
    assert_eq!(get_ok(&server, &url("/new.tar.gz")).await, vec![8u8; 1000]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_down_during_a_fill_loses_nothing() {
    let Some(mut garage) = Garage::cluster() else {
        return;
    };
    let upstream = Upstream::start().await;
    let slow: Vec<u8> = (0..4u32 << 20).map(|i| (i % 241) as u8).collect();
    upstream.set(
        "/slow.tar.gz",
        crate::support::Answer::Slow {
            bytes: slow.clone().into(),
            chunk: 64 << 10,
            delay: std::time::Duration::from_millis(15),
        },
    );
    upstream.serve_bytes("/later.tar.gz", vec![3u8; 100_000]);
    let policy = upstream.policy_dir();
    let server = server_on(&garage, "gf", policy.path(), &[]).await;
    let url = |p: &str| format!("/mirror/{}{p}", upstream.host());

    // Stop one of the three nodes while the fill is streaming (quorum 2 still holds).
    let fill = {
        let client = server.client.clone();
        let target = server.url(&url("/slow.tar.gz"));
        tokio::spawn(async move {
            client
                .get(target)
                .send()
                .await
                .expect("send")
                .bytes()
                .await
                .expect("body")
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    garage.stop_node(2);
    assert_eq!(
        fill.await.expect("join"),
        slow,
        "the fill completed while a node was down"
    );
    assert_eq!(
        get_ok(&server, &url("/later.tar.gz")).await,
        vec![3u8; 100_000]
    );

    // Back up: everything acknowledged is there, also when read through the node that was down.
    garage.restart_node(2);
    let storage = garage.storage_via(2, "gf");
    for bytes in [&slow, &vec![3u8; 100_000]] {
        let key = gf_registry::storage::StorageKey::blob("sha256", &sha256_hex(bytes));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match storage.get(&key).await {
                Ok(Some(got)) if got.as_ref() == bytes.as_slice() => break,
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "blob not readable through node 2: {:?}",
                    other.map(|o| o.map(|b| b.len()))
                ),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    assert_eq!(
        get_ok(&server, &format!("/cas/sha256/{}", sha256_hex(&slow))).await,
        slow
    );
    server.stop().await;
}

/// Publishing while one node of the 3-node cluster is down: the upload is stored in Garage, the
/// entry and its audit record are written, and after the node returns the archive is readable
/// through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_with_a_cluster_node_down_loses_nothing() {
    use base64::Engine as _;
    let Some(mut garage) = Garage::cluster() else {
        return;
    };
    let registry = tempfile::tempdir().expect("tempdir");
    crate::support::copy_tree(&example_registry(), registry.path());
    let config_dir = tempfile::tempdir().expect("tempdir");
    let token = "gfr_replicas_publisher";
    let config = config_dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[publish]\nupstream_registries = []\n[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"publish:*\"]\n",
            sha256_hex(token.as_bytes())
        ),
    )
    .expect("config");
    let data = garage.data_url("gf");
    let mut env: Vec<(&str, String)> = garage.env().into_iter().collect();
    env.push(("GF_REGISTRY_CONFIG", config.display().to_string()));
    env.push(("GF_REGISTRY_GC_INTERVAL_SECONDS", "0".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server =
        TestServer::start_with_env(registry.path(), &[("data", data.as_str())], &env).await;

    garage.stop_node(1);
    let module = "module(name = \"quorum_mod\", version = \"1.0.0\")\n";
    let archive = crate::support::publish::tar_gz(
        "quorum_mod-1.0.0",
        &[("MODULE.bazel", module), ("BUILD.bazel", "")],
    );
    let body = serde_json::json!({
        "module_bazel": module,
        "source": {"type": "upload", "file_name": "quorum_mod-1.0.0.tar.gz",
                   "content_base64": base64::engine::general_purpose::STANDARD.encode(&archive)},
        "strip_prefix": "quorum_mod-1.0.0",
        "metadata": {"homepage": "https://example.com/", "maintainers": [{"name": "T"}], "repository": []},
    });
    let resp = server
        .client
        .post(server.url("/api/v1/modules/quorum_mod/1.0.0"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("publish");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 201, "{text}");
    assert_eq!(
        get_ok(&server, "/modules/quorum_mod/1.0.0/MODULE.bazel").await,
        module.as_bytes()
    );

    garage.restart_node(1);
    let storage = garage.storage_via(1, "gf");
    let key = gf_registry::storage::StorageKey::blob("sha256", &sha256_hex(&archive));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match storage.get(&key).await {
            Ok(Some(got)) if got.as_ref() == archive.as_slice() => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "archive not readable through node 1: {:?}",
                other.map(|o| o.map(|b| b.len()))
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (audit, bad) = gf_registry::publish::audit::read_all(&storage)
        .await
        .expect("audit records");
    assert_eq!(bad, 0);
    assert!(
        audit
            .iter()
            .any(|r| r.module == "quorum_mod" && r.outcome == "created" && r.actor == "ci"),
        "{audit:?}"
    );
    server.stop().await;
}
