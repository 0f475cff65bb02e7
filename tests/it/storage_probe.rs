//! `storage probe`: "go" on memory, file, Garage (single node, and a 3-node cluster with a
//! node down) and Azurite, conditional puts reported as measured, probe objects cleaned up; the binary
//! prints a table or JSON and exits 1 on "no-go". The "no-go" on a listing that loses objects
//! is a unit test in `src/storage/probe.rs` (the fault is an object-store wrapper: no real
//! backend here produces it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gf_registry::storage::probe::{Outcome, ProbeOptions, ProbeReport, probe};
use gf_registry::storage::{Location, Role, S3Settings, Storage, StorageLayout};

use crate::support::Garage;

fn open(root: &str, s3: S3Settings) -> Storage {
    let root = Location::parse(root).expect("location");
    Storage::open(StorageLayout {
        cas: root.join("cas"),
        records: root.join("records"),
        s3,
    })
    .expect("open")
}

async fn assert_go_and_clean(s: &Storage, report: &ProbeReport) {
    assert!(report.is_go(), "{}", report.table());
    for role in [Role::Cas, Role::Records] {
        for name in [
            "reachable",
            "read-after-write",
            "list-after-write",
            "overwrite-visibility",
            "delete-visibility",
            "multipart-upload",
            "ranged-read",
            "index-coherence",
        ] {
            let c = report.check(role, name).expect("check present");
            assert_eq!(c.outcome, Outcome::Pass, "{}", report.table());
        }
        assert!(
            s.list(role, "probe").await.expect("list").is_empty(),
            "probe objects left in {}",
            role.name()
        );
    }
    assert!(report.roles.iter().all(|r| r.left_behind.is_empty()));
}

#[tokio::test]
async fn go_on_memory_with_conditional_puts_enforced() {
    let s = open("memory:///probe-test", S3Settings::default());
    let report = probe(&s, &ProbeOptions::full()).await;
    assert_go_and_clean(&s, &report).await;
    for role in [Role::Cas, Role::Records] {
        for name in ["conditional-create", "conditional-update"] {
            let c = report.check(role, name).expect("check");
            assert_eq!(c.outcome, Outcome::Enforced, "{}", report.table());
        }
    }
}

#[tokio::test]
async fn go_on_file_and_nothing_is_left_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(
        &format!("file://{}", dir.path().display()),
        S3Settings::default(),
    );
    let report = probe(&s, &ProbeOptions::full()).await;
    assert_go_and_clean(&s, &report).await;
    // A local folder enforces create-only puts (hard link) and has no ETag updates.
    let c = report
        .check(Role::Cas, "conditional-create")
        .expect("check");
    assert_eq!(c.outcome, Outcome::Enforced, "{}", report.table());
    let c = report
        .check(Role::Cas, "conditional-update")
        .expect("check");
    assert_eq!(c.outcome, Outcome::Unsupported, "{}", report.table());
    let mut left: Vec<String> = Vec::new();
    for role in ["cas", "records"] {
        for entry in std::fs::read_dir(dir.path().join(role)).expect("read_dir") {
            left.push(entry.expect("entry").path().display().to_string());
        }
    }
    assert!(left.is_empty(), "left on disk: {left:?}");
}

/// Measured on Garage 2.5.0: a PutObject with `If-None-Match: *` over an existing object, and
/// one with `If-Match` carrying a stale ETag, both succeed and replace the object. The probe
/// reports this (informational); the verdict is still "go" because the design does not rely
/// on conditional puts.
#[tokio::test]
async fn go_on_garage_with_conditional_puts_not_enforced() {
    let Some(g) = Garage::single() else { return };
    let s = g.storage("probe-test");
    let t = Instant::now();
    let report = probe(&s, &ProbeOptions::full()).await;
    eprintln!("{}", report.table());
    eprintln!("probe on garage took {:?}", t.elapsed());
    assert_go_and_clean(&s, &report).await;
    for role in [Role::Cas, Role::Records] {
        let c = report.check(role, "conditional-create").expect("check");
        assert_eq!(c.outcome, Outcome::NotEnforced, "{}", report.table());
        assert!(c.detail.contains("replaced"), "{}", c.detail);
        let c = report.check(role, "conditional-update").expect("check");
        assert_eq!(c.outcome, Outcome::NotEnforced, "{}", report.table());
        assert!(c.detail.contains("replaced"), "{}", c.detail);
    }
    assert!(report.table().contains("verdict: GO"));
}

#[tokio::test]
async fn go_on_a_garage_cluster_with_one_node_down() {
    let Some(mut g) = Garage::cluster() else {
        return;
    };
    g.stop_node(2);
    let s = g.storage_via(0, "probe-test");
    let report = probe(&s, &ProbeOptions::full()).await;
    assert_go_and_clean(&s, &report).await;
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// Runs `gf-registry args...` in `cwd` with only `env` set among GF_REGISTRY_* / AWS_*,
/// bounded; returns (exit code, stdout, stderr).
fn run_bin(cwd: &Path, args: &[&str], env: &[(&'static str, String)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gf-registry"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GF_REGISTRY_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(cwd);
    crate::support::spawned::output_within(&mut c, Duration::from_secs(120))
}

#[test]
fn the_binary_says_go_on_garage_as_json_and_as_a_table() {
    let Some(g) = Garage::single() else { return };
    let cwd = tempfile::tempdir().expect("tempdir");
    let data = g.data_url("cli");
    let (code, out, err) = run_bin(
        cwd.path(),
        &["storage", "probe", "--json", "--data", &data],
        &g.env(),
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(json["verdict"], "go", "{out}");
    assert_eq!(json["roles"][0]["role"], "cas");
    assert_eq!(
        json["roles"][0]["location"],
        format!("{}/cas", data).as_str()
    );
    let cond = json["roles"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "conditional-create")
        .expect("conditional-create");
    assert_eq!(cond["outcome"], "not-enforced", "{out}");
    assert_eq!(cond["required"], false);

    let (code, out, err) = run_bin(
        cwd.path(),
        &["storage", "probe", "--quick", "--data", &data],
        &g.env_via(0),
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("verdict: GO"), "{out}");
    assert!(out.contains("index-coherence"), "{out}");
    assert!(out.contains("not enforced (info)"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("multipart-upload") && l.contains("skipped")),
        "{out}"
    );
    assert!(!out.contains(&g.secret), "the secret is never printed");
    assert_eq!(g.endpoint(), g.endpoint_of(0));
}

/// Azure through Azurite: "go", and Azurite enforces conditional puts (`If-None-Match: *` and
/// `If-Match`), as Azure does. Once in process with the options an operator writes, once
/// through the binary with only the environment object_store reads for the emulator.
#[tokio::test]
async fn go_on_azurite_with_conditional_puts_enforced() {
    let Some(a) = crate::support::azurite::Azurite::start() else {
        return;
    };
    let s = open(
        &a.data_url("probe-test"),
        S3Settings {
            options: a.options(),
        },
    );
    let report = probe(&s, &ProbeOptions::full()).await;
    eprintln!("{}", report.table());
    assert_go_and_clean(&s, &report).await;
    for role in [Role::Cas, Role::Records] {
        for name in ["conditional-create", "conditional-update"] {
            let c = report.check(role, name).expect("check");
            assert_eq!(c.outcome, Outcome::Enforced, "{}", report.table());
        }
    }

    let cwd = tempfile::tempdir().expect("tempdir");
    let data = a.data_url("cli");
    let env = [
        ("AZURE_STORAGE_USE_EMULATOR", "true".to_owned()),
        ("AZURITE_BLOB_STORAGE_URL", a.origin()),
        ("AZURE_ALLOW_HTTP", "true".to_owned()),
    ];
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_bin(
            cwd.path(),
            &["storage", "probe", "--quick", "--data", &data],
            &env,
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("verdict: GO"), "{out}");
    assert!(!out.contains(crate::support::azurite::ACCOUNT_KEY), "{out}");
}

#[test]
fn the_binary_says_no_go_with_the_reason_on_an_unreachable_backend() {
    let cwd = tempfile::tempdir().expect("tempdir");
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let env = [
        (
            "GF_REGISTRY_S3_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("GF_REGISTRY_S3_REGION", "garage".to_owned()),
        ("GF_REGISTRY_S3_ALLOW_HTTP", "true".to_owned()),
        ("GF_REGISTRY_S3_ACCESS_KEY_ID", "GK0".to_owned()),
        ("GF_REGISTRY_S3_SECRET_ACCESS_KEY", "0".repeat(64)),
    ];
    let t = Instant::now();
    let (code, out, err) = run_bin(
        cwd.path(),
        &[
            "storage",
            "probe",
            "--json",
            "--timeout",
            "1",
            "--data",
            "s3://nowhere/gf",
        ],
        &env,
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(json["verdict"], "no-go");
    let reachable = &json["roles"][0]["checks"][0];
    assert_eq!(reachable["name"], "reachable");
    assert_eq!(reachable["outcome"], "fail");
    assert!(
        reachable["detail"]
            .as_str()
            .is_some_and(|d| d.contains("backend error")),
        "{reachable}"
    );
}

#[test]
fn the_binary_says_go_on_a_local_folder() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = run_bin(cwd.path(), &["storage", "probe", "--data", "./data"], &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("verdict: GO"), "{out}");
    assert!(
        !cwd.path().join("data/cas/probe").exists(),
        "probe folder left behind"
    );
}
