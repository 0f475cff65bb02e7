//! TLS on the listen port, with curl as the client: HTTPS over HTTP/1.1 and HTTP/2 (ALPN),
//! the certificate reloaded when its files change (a broken replacement keeps the old one),
//! gRPC over TLS with tonic's client (Debian's Bazel 4.2.3 cannot make a gRPC TLS channel; see
//! `bazel_remote.rs`), and the settings' errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2::GetCapabilitiesRequest;
use bazel_remote_apis::build::bazel::remote::execution::v2::capabilities_client::CapabilitiesClient;
use gf_registry::config::{Config, Inputs};

use crate::support::certs::TestCerts;
use crate::support::{TestServer, Upstream, example_registry, path_str};

/// Bound on waiting for a reload to show.
const RELOAD_WAIT: Duration = Duration::from_secs(20);

/// `curl` with the test CA: (exit success, `%{http_code} %{http_version}`, stderr).
fn curl(ca: &Path, args: &[&str], url: &str) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{http_version}", "--cacert"])
        .arg(ca)
        .args(args)
        .arg(url)
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn subject_of(ca: &Path, url: &str) -> String {
    let (_, _, log) = curl(ca, &[], url);
    log.lines()
        .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject: "))
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_h2_share_the_port_and_the_certificate_reloads() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::new(dir.path(), "first");
        let server = TestServer::start(
            &example_registry(),
            &[
                ("tls-cert", path_str(&certs.cert)),
                ("tls-key", path_str(&certs.key)),
            ],
        )
        .await;
        let port = server.addr().port();
        let base = format!("https://127.0.0.1:{port}");
        assert_eq!(server.running().public_url, format!("{base}/"));
        let url = format!("{base}/bazel_registry.json");

        let (ok, got, log) = curl(&certs.ca, &["--http1.1"], &url);
        assert!(ok && got == "200 1.1", "{got}\n{log}");
        let (ok, got, log) = curl(&certs.ca, &["--http2"], &url);
        assert!(ok && got == "200 2", "{got}\n{log}");
        assert!(log.contains("ALPN: server accepted h2"), "{log}");
        // Plain HTTP to the TLS port gets no answer.
        let (_, got, _) = curl(&certs.ca, &[], &format!("http://127.0.0.1:{port}/readyz"));
        assert!(!got.starts_with("200"), "{got}");
        // The advice names the TLS doors.
        let rc = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&certs.ca)
            .arg(format!("{base}/bazel/bazelrc"))
            .output()
            .expect("curl bazelrc");
        let rc = String::from_utf8_lossy(&rc.stdout);
        assert!(
            rc.contains(&format!("--remote_cache=grpcs://127.0.0.1:{port}\n")),
            "{rc}"
        );

        // gRPC over TLS on the same port (h2 by ALPN).
        let pem = std::fs::read(&certs.ca).expect("read CA");
        let channel = tonic::transport::Channel::from_shared(base.clone())
            .expect("endpoint")
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                    .domain_name("127.0.0.1"),
            )
            .expect("TLS config")
            .connect()
            .await
            .expect("gRPC over TLS connects");
        let caps = CapabilitiesClient::new(channel.clone())
            .get_capabilities(GetCapabilitiesRequest::default())
            .await
            .expect("GetCapabilities over TLS")
            .into_inner();
        assert!(caps.cache_capabilities.is_some());

        // A new certificate is picked up when its files change; connections go on.
        assert_eq!(subject_of(&certs.ca, &url), "CN=first");
        certs.issue("second");
        let start = Instant::now();
        while subject_of(&certs.ca, &url) != "CN=second" {
            assert!(
                start.elapsed() < RELOAD_WAIT,
                "the new certificate is served within {RELOAD_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // A broken replacement keeps the certificate in force.
        std::fs::write(&certs.cert, "not a certificate\n").expect("break the cert");
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(subject_of(&certs.ca, &url), "CN=second");
        let (ok, got, _) = curl(&certs.ca, &[], &url);
        assert!(ok && got == "200 2", "{got}");
        // The gRPC connection opened before both changes still answers.
        CapabilitiesClient::new(channel)
            .get_capabilities(GetCapabilitiesRequest::default())
            .await
            .expect("the connection from before the reload still works");
        server.stop().await;
    })
    .await
    .expect("within the test's bound");
}

fn resolve(flags: &[(&'static str, &str)]) -> Result<Config, String> {
    let mut f: BTreeMap<&'static str, String> = BTreeMap::new();
    f.insert("listen", "127.0.0.1:0".to_owned());
    for (k, v) in flags {
        f.insert(k, (*v).to_owned());
    }
    Config::resolve(&Inputs {
        config_file: None,
        flags: f,
        env: BTreeMap::new(),
    })
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_errors_name_the_setting_and_the_file() {
    let e = resolve(&[("tls-cert", "/x/cert.pem")]).unwrap_err();
    assert!(
        e.contains("server.tls_key") && e.contains("--tls-key"),
        "{e}"
    );
    let e = resolve(&[("tls-key", "/x/key.pem")]).unwrap_err();
    assert!(e.contains("server.tls_cert"), "{e}");

    let dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::new(dir.path(), "first");
    let other = tempfile::tempdir().expect("tempdir");
    let other_certs = TestCerts::new(other.path(), "other");
    let data = tempfile::tempdir().expect("tempdir");
    let registry = example_registry();
    for (cert, key, needle) in [
        (
            certs.cert.clone(),
            dir.path().join("absent.pem"),
            "server.tls_key",
        ),
        (
            certs.ca.clone(),
            other_certs.key.clone(),
            "does not go with",
        ),
        (
            dir.path().join("ext.cnf"),
            certs.key.clone(),
            "no PEM certificate",
        ),
    ] {
        let config = resolve(&[
            ("tls-cert", path_str(&cert)),
            ("tls-key", path_str(&key)),
            ("registry", path_str(&registry)),
            ("data", path_str(data.path())),
        ])
        .expect("config resolves; the files are read at start");
        let e = gf_registry::server::start(config)
            .await
            .expect_err("a bad TLS file stops the start")
            .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

/// With `server.tls_client_ca`, a client may show a certificate from that CA: its subject is
/// recorded as who asked (provenance), one from another CA is refused at the handshake, and a
/// client without one is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_client_certificate_names_who_asked() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::new(dir.path(), "server");
        let (client, client_key) = certs.issue_client("ci-runner");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = TestCerts::new(other_dir.path(), "other");
        let (stranger, stranger_key) = other.issue_client("stranger");
        let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let upstream =
            Upstream::start_with_files([("/m/a.tar.gz".to_owned(), bytes.clone())]).await;
        let policy = upstream.policy_dir();
        let server = TestServer::start_with_env(
            &example_registry(),
            &[
                ("tls-cert", path_str(&certs.cert)),
                ("tls-key", path_str(&certs.key)),
                ("mirror-policy", path_str(policy.path())),
            ],
            &[("GF_REGISTRY_TLS_CLIENT_CA", path_str(&certs.ca))],
        )
        .await;
        let base = format!("https://127.0.0.1:{}", server.addr().port());
        let archive = format!("{base}/mirror/{}/m/a.tar.gz", upstream.host());
        let with_cert = |cert: &Path, key: &Path| {
            vec![
                "--cert".to_owned(),
                cert.display().to_string(),
                "--key".to_owned(),
                key.display().to_string(),
            ]
        };
        let args = with_cert(&client, &client_key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, got, log) = curl(&certs.ca, &args, &archive);
        assert!(ok && got.starts_with("200"), "{got}\n{log}");
        let info = Command::new("curl")
            .args(["-fsS", "--max-time", "10", "--cacert"])
            .arg(&certs.ca)
            .arg(format!(
                "{base}/api/v1/blobs/{}",
                crate::support::sha256_hex(&bytes)
            ))
            .output()
            .expect("curl provenance");
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("JSON");
        assert_eq!(
            info["record"]["requested_by"], "127.0.0.1 (certificate CN=ci-runner)",
            "{info}"
        );

        let args = with_cert(&stranger, &stranger_key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, got, _) = curl(&certs.ca, &args, &format!("{base}/readyz"));
        assert!(
            !ok && !got.starts_with("200"),
            "a certificate from another CA: {got}"
        );
        let (ok, got, log) = curl(&certs.ca, &[], &format!("{base}/readyz"));
        assert!(ok && got.starts_with("200"), "no certificate: {got}\n{log}");
        server.stop().await;
    })
    .await
    .expect("within the test's bound");
}

/// `[[auth.clients]]` maps a verified certificate's subject to scopes, as a token's: reads
/// that need a token pass with the certificate alone, and an admin call passes or is refused
/// by the entry's scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_map_to_scopes() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::new(dir.path(), "server");
        let (admin, admin_key) = certs.issue_client("ops");
        let (pusher, pusher_key) = certs.issue_client("ci");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\ntls_client_ca = {:?}\n[auth]\nrequire_token_for_reads = true\n\
                 [[auth.clients]]\nsubject = \"CN=ops\"\nname = \"ops\"\nscopes = [\"admin\"]\n\
                 [[auth.clients]]\nsubject = \"CN=ci\"\nname = \"ci\"\nscopes = [\"push\"]\n",
                path_str(&certs.ca)
            ),
        )
        .expect("config");
        let data = tempfile::tempdir().expect("tempdir");
        let registry = example_registry();
        let server = TestServer::start_exact(
            &[
                ("registry", path_str(&registry)),
                ("data", path_str(data.path())),
                ("tls-cert", path_str(&certs.cert)),
                ("tls-key", path_str(&certs.key)),
            ],
            Some(&config),
            &[],
        )
        .await;
        let base = format!("https://127.0.0.1:{}", server.addr().port());
        let cert_args = |cert: &Path, key: &Path| {
            vec![
                "--cert".to_owned(),
                cert.display().to_string(),
                "--key".to_owned(),
                key.display().to_string(),
            ]
        };
        let ops = cert_args(&admin, &admin_key);
        let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
        let ci = cert_args(&pusher, &pusher_key);
        let ci: Vec<&str> = ci.iter().map(String::as_str).collect();
        let read = format!("{base}/bazel_registry.json");
        let (_, got, _) = curl(&certs.ca, &[], &read);
        assert!(got.starts_with("401"), "no certificate, no token: {got}");
        let (_, got, _) = curl(&certs.ca, &ci, &read);
        assert!(
            got.starts_with("200"),
            "a configured certificate reads: {got}"
        );
        let refresh = format!("{base}/admin/registry/refresh");
        let post = |extra: &[&str]| {
            let mut args = vec!["-X", "POST"];
            args.extend_from_slice(extra);
            curl(&certs.ca, &args, &refresh).1
        };
        assert!(post(&ops).starts_with("200"), "admin scope: {}", post(&ops));
        assert!(
            post(&ci).starts_with("403"),
            "push scope only: {}",
            post(&ci)
        );
        server.stop().await;
    })
    .await
    .expect("within the test's bound");
}
