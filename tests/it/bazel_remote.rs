//! Real Bazel (Debian's 4.2.3) through the gRPC door: `--experimental_remote_downloader` and
//! `--remote_cache` both on the server's HTTP port (plain and TLS), with the lines `GET /bazel/bazelrc`
//! advises. The workspace, the upstream double and the bounded Bazel runs are
//! `bazel_client.rs`'s.

use crate::bazel_client::{
    ARCHIVES, Bazel, CHANGED, bazel_or_skip, fixture_archive, one_hit_per_archive, original_files,
    outage_then_change, write_policy,
};
use crate::support::certs::TestCerts;
use crate::support::{TestServer, Upstream, example_registry, path_str, sha256_hex};

/// The gRPC lines of the server's `.bazelrc` advice, as flags (they are commented out there:
/// the downloader config is the default door).
async fn advised_grpc_flags(server: &TestServer) -> Vec<String> {
    let rc = server
        .get("/bazel/bazelrc")
        .await
        .text()
        .await
        .expect("bazelrc");
    let flags: Vec<String> = rc
        .lines()
        .filter_map(|l| l.strip_prefix("# common "))
        .filter(|f| {
            f.starts_with("--experimental_remote_downloader=")
                || f.starts_with("--remote_cache=")
                || *f == "--noremote_upload_local_results"
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(flags.len(), 3, "the gRPC door's three lines:\n{rc}");
    let grpc = format!("grpc://{}", server.addr());
    assert_eq!(flags[0], format!("--experimental_remote_downloader={grpc}"));
    assert_eq!(flags[1], format!("--remote_cache={grpc}"));
    flags
}

/// The issue's flow over gRPC: a cold build pulls each archive once; the mirror alone serves a
/// build with the upstream down and Bazel's caches gone; a changed upstream still yields the
/// pinned original; a wrong `sha256` in the WORKSPACE fails with the mirror's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bazel_builds_through_the_remote_asset_api() {
    let Some(bin) = bazel_or_skip() else { return };
    let mut upstream = Upstream::start_with_files(original_files()).await;
    let work = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(work.path(), &upstream);
    let server =
        TestServer::start(&example_registry(), &[("mirror-policy", path_str(&policy))]).await;
    let flags = advised_grpc_flags(&server).await;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let bazel = Bazel::new(bin, &upstream.origin());

    // Capabilities say truthfully that action results cannot be written here; Bazel 4.2.3
    // then refuses to start a build that would upload them (newer Bazel warns instead), and
    // names the flag. The advice carries it.
    let refused = bazel.build(&flags[..2]);
    assert!(!refused.success(), "{}", refused.tail());
    assert!(
        refused.log.contains(
            "--remote_upload_local_results is set, but the current account is not authorized"
        ),
        "{}",
        refused.tail()
    );
    assert_eq!(upstream.total_requests(), 0);

    // a. Cold: each archive comes from the upstream once, through FetchBlob and ByteStream.
    bazel
        .build(&flags)
        .assert_ok("build through the Remote Asset API");
    bazel.assert_original_output();
    assert_eq!(
        upstream.hits_by_path(),
        one_hit_per_archive(),
        "one upstream GET per archive"
    );
    let metrics = server.get("/metrics").await.text().await.expect("metrics");
    let fetched = metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"gf_registry_grpc_calls_total{method="Fetch/FetchBlob",code="OK"}"#)
        })
        .unwrap_or_else(|| panic!("FetchBlob was called:\n{metrics}"));
    assert!(
        fetched.ends_with(&format!(" {}", ARCHIVES.len())),
        "one FetchBlob per archive: {fetched}"
    );
    assert!(
        metrics.contains(r#"method="ByteStream/Read",code="OK""#),
        "Bazel read the blobs over ByteStream:\n{metrics}"
    );

    // b, c. Upstream down, then back with other bytes at one URL.
    outage_then_change(&bazel, &mut upstream, &flags).await;

    // d. A wrong sha256 in the WORKSPACE: the build fails, and says why.
    let workspace = bazel.ws().join("WORKSPACE");
    let text = std::fs::read_to_string(&workspace).expect("read WORKSPACE");
    let right = sha256_hex(&fixture_archive(CHANGED));
    let wrong = sha256_hex(b"not the archive");
    std::fs::write(&workspace, text.replace(&right, &wrong)).expect("write WORKSPACE");
    bazel.forget_downloads();
    let out = bazel.build(&flags);
    assert!(!out.success(), "a wrong sha256 must fail:\n{}", out.tail());
    assert!(
        out.log.contains("do not match the known integrity"),
        "the mirror's reason reaches the user:\n{}",
        out.tail()
    );

    drop(bazel);
    server.stop().await;
    upstream.stop().await;
}

/// TLS with a real client: Bazel 4.2.3's downloader (the JDK's HTTP client) builds through
/// a downloader-config rewrite to `https://`, trusting the test CA through a JVM trust store.
///
/// `grpcs://` cannot be tried with this Bazel: Debian's 4.2.3 crashes while it sets up any gRPC
/// TLS channel, before a byte is sent ("Failed to init TLS infrastructure: JDK provider does
/// not support ALPN protocol": its netty does not see JDK 17's ALPN), so gRPC over TLS is
/// tested with tonic's client in `tls.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bazel_builds_through_the_mirror_over_https() {
    let Some(bin) = bazel_or_skip() else { return };
    let mut upstream = Upstream::start_with_files(original_files()).await;
    let work = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(work.path(), &upstream);
    let certs = TestCerts::new(work.path(), "gf-registry test server");
    let server = TestServer::start(
        &example_registry(),
        &[
            ("mirror-policy", path_str(&policy)),
            ("tls-cert", path_str(&certs.cert)),
            ("tls-key", path_str(&certs.key)),
        ],
    )
    .await;
    let cfg = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "10", "--cacert"])
        .arg(&certs.ca)
        .arg(format!("https://{}/bazel/downloader.cfg", server.addr()))
        .output()
        .expect("curl downloader.cfg");
    assert!(
        cfg.status.success(),
        "{}",
        String::from_utf8_lossy(&cfg.stderr)
    );
    let cfg = String::from_utf8(cfg.stdout).expect("utf-8");
    assert!(
        cfg.contains(&format!("https://{}/mirror/", server.addr())),
        "{cfg}"
    );
    let mut bazel = Bazel::new(bin, &upstream.origin());
    bazel.trust_ca(&certs.ca);
    let flag = bazel.write_downloader_config(&cfg);
    bazel
        .build(&[&flag])
        .assert_ok("build through the mirror over HTTPS");
    bazel.assert_original_output();
    assert_eq!(upstream.hits_by_path(), one_hit_per_archive());

    drop(bazel);
    server.stop().await;
    upstream.stop().await;
}
