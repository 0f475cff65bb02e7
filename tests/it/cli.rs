//! The binary: config errors, config show, registry check, serve and graceful shutdown.

use std::io::Read as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::spawned::bin;
use crate::support::{Spawned, Stderr, client, copy_tree, example_registry};

/// Bound on a spawned server printing its listening line.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(60);

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn registry_check_passes_on_the_example_registry() {
    let (code, out, err) = run(bin().args(["registry", "check"]).arg(example_registry()));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("3 modules, 9 versions"), "{err}");
}

#[test]
fn registry_check_reports_one_line_per_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&example_registry(), dir.path());
    let r = dir.path();
    // 1. A patch whose bytes no longer match its integrity.
    std::fs::write(
        r.join("modules/hello_lib/1.1.0.bcr.1/patches/fix_build.patch"),
        "tampered\n",
    )
    .expect("write");
    // 2. A version folder missing from metadata.json.
    std::fs::create_dir_all(r.join("modules/hello_lib/2.0.0")).expect("mkdir");
    std::fs::write(
        r.join("modules/hello_lib/2.0.0/MODULE.bazel"),
        "module(name = \"hello_lib\", version = \"2.0.0\")\n",
    )
    .expect("write");
    std::fs::write(
        r.join("modules/hello_lib/2.0.0/source.json"),
        "{\"url\": \"https://x.example/a.tgz\", \"integrity\": \"sha256-AAAA\"}",
    )
    .expect("write");
    // 3. MODULE.bazel that names another version.
    std::fs::write(
        r.join("modules/app_toolkit/0.9.0/MODULE.bazel"),
        "module(name = \"app_toolkit\", version = \"0.9\")\n",
    )
    .expect("write");
    // 4. Versions out of Bazel order.
    let meta = r.join("modules/greet_overlay/metadata.json");
    let text = std::fs::read_to_string(&meta).expect("read").replace(
        "\"0.1.0\",\n        \"0.2.0\"",
        "\"0.2.0\",\n        \"0.1.0\"",
    );
    std::fs::write(&meta, text).expect("write");
    // 5. A symlink.
    std::os::unix::fs::symlink(
        "/etc/passwd",
        r.join("modules/greet_overlay/0.1.0/overlay/passwd"),
    )
    .expect("symlink");
    // 6. A bad module name and an overlay that escapes.
    std::fs::create_dir_all(r.join("modules/Bad_Name")).expect("mkdir");
    let sj = r.join("modules/greet_overlay/0.2.0/source.json");
    let text = std::fs::read_to_string(&sj)
        .expect("read")
        .replace("\"BUILD.bazel\":", "\"../BUILD.bazel\":");
    std::fs::write(&sj, text).expect("write");

    let (code, out, err) = run(bin().args(["registry", "check"]).arg(r));
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    let expect = [
        (
            "modules/hello_lib/1.1.0.bcr.1/patches/fix_build.patch",
            "integrity mismatch",
        ),
        ("modules/hello_lib/metadata.json", "does not list `2.0.0`"),
        ("modules/hello_lib/2.0.0/source.json", "3-byte digest"),
        (
            "modules/app_toolkit/0.9.0/MODULE.bazel",
            "does not match the folder name \"0.9.0\"",
        ),
        (
            "modules/greet_overlay/metadata.json",
            "not sorted in Bazel's order",
        ),
        ("modules/greet_overlay/0.1.0/overlay/passwd", "symlink"),
        ("modules/Bad_Name", "module name `Bad_Name` is invalid"),
        ("modules/greet_overlay/0.2.0/source.json", "`..`"),
    ];
    for (file, what) in expect {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{file}: ")) && l.contains(what)),
            "no line for {file} ({what}) in:\n{out}"
        );
    }
}

#[test]
fn registry_check_catches_what_bazel_would_choke_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real");
    copy_tree(&example_registry(), &real);
    // Duplicate keys (Gson refuses them) and a URL scheme Bazel cannot fetch.
    let sj = real.join("modules/hello_lib/1.2.0/source.json");
    let text = std::fs::read_to_string(&sj).expect("read");
    let text = text
        .replacen("\"url\": \"https://", "\"url\": \"gs://", 1)
        .replacen("{", "{\n    \"strip_prefix\": \"x\",", 1);
    std::fs::write(&sj, text).expect("write");
    // A symlink below a root that is itself reached through a symlink.
    std::os::unix::fs::symlink("/etc/passwd", real.join("modules/hello_lib/1.2.0/evil"))
        .expect("symlink");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink root");
    let (code, out, err) = run(bin().args(["registry", "check"]).arg(&link));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "modules/hello_lib/1.2.0/source.json: error: is not valid JSON: duplicate key `strip_prefix`"
        ),
        "{out}"
    );
    assert!(
        out.contains("modules/hello_lib/1.2.0/evil: warning: is a symlink"),
        "{out}"
    );
    std::fs::remove_file(real.join("modules/hello_lib/1.2.0/evil")).expect("rm");
    let text = std::fs::read_to_string(&sj).expect("read").replacen(
        "    \"strip_prefix\": \"x\",\n",
        "",
        1,
    );
    std::fs::write(&sj, text).expect("write");
    let (code, out, _) = run(bin().args(["registry", "check"]).arg(&link));
    assert_eq!(code, 1);
    assert!(out.contains("`url` \"gs://"), "{out}");
    // Without a PATH, the configured registry is checked.
    let (code, out, err) = run(bin()
        .args(["registry", "check"])
        .env("GF_REGISTRY_REGISTRY", &link));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&link.display().to_string()), "{err}");
}

#[test]
fn config_errors_name_the_key_variable_or_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gf.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\nlsten = 1\n").expect("write");
    let (code, _, err) = run(bin().args(["config", "check", "--config"]).arg(&file));
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown key `server.lsten`") && err.contains("gf.toml"),
        "{err}"
    );

    let (code, _, err) = run(bin().args(["config", "check", "--listen", "nowhere"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("server.listen") && err.contains("--listen"),
        "{err}"
    );

    for (var, bad) in [
        ("GF_REGISTRY_WORKERS", "0"),
        ("GF_REGISTRY_WORKERS", "257"),
        ("GF_REGISTRY_WORKERS", "many"),
        ("GF_REGISTRY_PIN_WORKERS", "yes"),
    ] {
        let (code, _, err) = run(bin().args(["config", "check"]).env(var, bad));
        assert_eq!(code, 2, "{var}={bad}: {err}");
        assert!(err.contains(var), "{var}={bad}: {err}");
    }

    let (code, _, err) = run(bin()
        .args(["config", "check"])
        .env("GF_REGISTRY_DATA", "ftp://x/y"));
    assert_eq!(code, 2);
    assert!(
        err.contains("GF_REGISTRY_DATA") && err.contains("unsupported scheme"),
        "{err}"
    );

    let (code, _, err) = run(bin()
        .args(["config", "check"])
        .env("GF_REGISTRY_CAS", "s3://b/p")
        .env("GF_REGISTRY_RECORDS", "s3://b/p/records"));
    assert_eq!(code, 2);
    assert!(err.contains("`cas`") && err.contains("`records`"), "{err}");

    let (code, _, err) = run(bin()
        .args(["config", "check", "--registry"])
        .arg(dir.path().join("missing")));
    assert_ne!(code, 0);
    assert!(err.contains("missing"), "{err}");

    let (code, _, err) = run(bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--registry"])
        .arg(example_registry())
        .arg("--data")
        .arg(example_registry().join("data")));
    assert_eq!(
        code, 2,
        "a storage role inside the registry is refused: {err}"
    );
    assert!(err.contains("registry"), "{err}");
}

#[test]
fn config_show_says_where_each_value_came_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gf.toml");
    std::fs::write(&file, "[registry]\npoll_interval_seconds = 7\n").expect("write");
    let (code, out, err) = run(bin()
        .args(["config", "show", "--config"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:9999"])
        .env("GF_REGISTRY_LOG_FORMAT", "json"));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("server.listen = \"127.0.0.1:9999\"  # flag --listen"),
        "{out}"
    );
    assert!(
        out.contains("server.log_format = \"json\"  # env GF_REGISTRY_LOG_FORMAT"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "registry.poll_interval_seconds = \"7\"  # file {}",
            file.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "server.public_url = \"http://127.0.0.1:9999/\"  # derived from server.listen"
        ),
        "{out}"
    );
    assert!(
        out.contains("storage.cas = ") && out.contains("# derived from storage.data"),
        "{out}"
    );
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    assert!(
        out.contains(&format!(
            "server.workers = \"{cores}\"  # derived from the cores available"
        )),
        "{out}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
    let (code, out, err) = run(bin()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["config", "check", "--config"])
        .arg(&example));
    assert_eq!(code, 0, "{out}{err}");
}

/// Starts `serve` on port 0 over `registry` and `data`.
fn serve(registry: &Path, data: &Path) -> Spawned {
    let mut cmd = bin();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--registry"])
        .arg(registry)
        .arg("--data")
        .arg(data);
    Spawned::spawn(&mut cmd, Stderr::Collect, SPAWN_TIMEOUT)
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    // A registry with one large overlay file, so a slow reader keeps a response in flight.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&example_registry(), dir.path());
    let big: Vec<u8> = (0..32u32 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(
        dir.path()
            .join("modules/greet_overlay/0.2.0/overlay/big.bin"),
        &big,
    )
    .expect("write");
    let data = tempfile::tempdir().expect("tempdir");
    let mut served = serve(dir.path(), data.path());

    let addr = served.addr();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    use std::io::Write as _;
    write!(stream, "GET /modules/greet_overlay/0.2.0/overlay/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut first = [0u8; 4096];
    let n = stream.read(&mut first).expect("first bytes");
    assert!(n > 0);
    // The response has started; now ask the server to stop.
    served.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("rest of the response");
    let mut all = first[..n].to_vec();
    all.extend_from_slice(&rest);
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    assert_eq!(
        all.len() - split,
        big.len(),
        "the in-flight response completed"
    );
    assert!(all[split..] == big[..], "with the right bytes");
    let status = served.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    // New connections are refused once it has stopped.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn serve_runs_on_defaults_from_a_fresh_folder() {
    // `serve` with no flags at all, from a folder holding only a copy of the registry.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&example_registry(), &dir.path().join("registry"));
    let mut served = Spawned::spawn(
        bin()
            .current_dir(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"]),
        Stderr::Null,
        SPAWN_TIMEOUT,
    );
    let base = served.base.clone();
    let client = client::plain();
    let ready = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let r = client
        .get(format!("{base}/modules/hello_lib/1.2.0/MODULE.bazel"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert!(
        dir.path().join("data/cas").is_dir() && dir.path().join("data/records").is_dir(),
        "data roles created on start"
    );
    served.signal("INT");
    assert!(served.wait_exit(Duration::from_secs(20)).success());
}

#[tokio::test]
async fn a_second_server_on_a_busy_port_is_refused() {
    // The workers share their port with SO_REUSEPORT; a second server must still not join it.
    let first = crate::support::TestServer::start(&example_registry(), &[]).await;
    let data = tempfile::tempdir().expect("tempdir");
    let addr = first.addr().to_string();
    let mut cmd = bin();
    cmd.args(["serve", "--listen", &addr, "--registry"])
        .arg(example_registry())
        .arg("--data")
        .arg(data.path());
    let (code, _, err) = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .expect("join");
    assert_ne!(code, 0);
    assert!(err.contains("--listen") && err.contains("in use"), "{err}");
    first.stop().await;
}

#[test]
fn logs_are_json_lines_with_the_flag() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut served = Spawned::spawn(
        bin()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--registry",
            ])
            .arg(example_registry())
            .arg("--data")
            .arg(data.path()),
        Stderr::Collect,
        SPAWN_TIMEOUT,
    );
    let line = &served.first_line;
    assert!(line.starts_with("gf-registry listening on "), "{line}");
    served.signal("TERM");
    assert!(served.wait_exit(Duration::from_secs(20)).success());
    let err = served.stderr_text();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{l}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("\"gf-registry serving\"")),
        "{err}"
    );
}
