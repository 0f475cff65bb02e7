//! The real binary as a child process: `gf-registry serve --listen 127.0.0.1:0`, its base URL
//! read from the first stdout line. For the CLI, signal, deploy, crash, soak and hostile tests.
//! The process is killed when the value is dropped (also on panic); every wait is bounded.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The line `serve` prints once it listens, before its base URL.
const LISTENING: &str = "gf-registry listening on ";

/// The binary under test, with the developer's `GF_REGISTRY_*` variables removed.
pub(crate) fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gf-registry"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GF_REGISTRY_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Where a spawned server's stderr goes.
#[derive(Debug, Clone)]
pub(crate) enum Stderr {
    /// Read into memory by a thread; see [`Spawned::stderr_text`].
    Collect,
    /// Appended to this file (created when missing).
    AppendTo(PathBuf),
    /// Written to this file, truncated first.
    File(PathBuf),
    /// Discarded.
    Null,
}

/// A running `gf-registry serve`; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub(crate) struct Spawned {
    child: Option<Child>,
    /// Its process id.
    pub(crate) pid: u32,
    /// `http://127.0.0.1:PORT`, no trailing `/`.
    pub(crate) base: String,
    /// The first line it printed on stdout (`gf-registry listening on URL`).
    pub(crate) first_line: String,
    stderr: Option<JoinHandle<String>>,
    log: Option<PathBuf>,
}

impl Spawned {
    /// Spawns `cmd` (stdin closed, stdout read by a thread that keeps draining it so the
    /// server never blocks on a full pipe) and waits at most `limit` for its listening line.
    pub(crate) fn spawn(cmd: &mut Command, stderr: Stderr, limit: Duration) -> Self {
        let (err_to, log) = match &stderr {
            Stderr::Collect => (Stdio::piped(), None),
            Stderr::Null => (Stdio::null(), None),
            Stderr::AppendTo(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("log file");
                (Stdio::from(file), Some(path.clone()))
            }
            Stderr::File(path) => {
                let file = std::fs::File::create(path).expect("log file");
                (Stdio::from(file), Some(path.clone()))
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err_to)
            .spawn()
            .expect("spawn gf-registry serve");
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = pipe.read_to_string(&mut s);
                s
            })
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the first line, then drains stdout until the process ends.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut me = Self {
            pid: child.id(),
            child: Some(child),
            base: String::new(),
            first_line: String::new(),
            stderr,
            log,
        };
        let line = rx.recv_timeout(limit).unwrap_or_default();
        match line.trim().strip_prefix(LISTENING) {
            Some(url) => {
                me.base = url.trim_end_matches('/').to_owned();
                me.first_line = line.clone();
            }
            None => {
                me.kill();
                panic!(
                    "no `listening on` line within {limit:?} (got {line:?}); stderr:\n{}",
                    me.stderr_text()
                );
            }
        }
        me
    }

    /// The full URL of `path` (which starts with `/`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("listening address")
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `sig` (a name such as `TERM`) with `kill`.
    pub(crate) fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig}");
    }

    /// Waits at most `limit` for the process to exit; kills it and panics when it does not.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().expect("not killed");
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "server did not exit within {limit:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 20 s) for `/readyz` to answer 200.
    pub(crate) async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while Instant::now() < deadline {
            match client.get(self.url("/readyz")).send().await {
                Ok(r) if r.status() == 200 => return,
                Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill();
        panic!(
            "/readyz never answered 200 (last: {last}); stderr:\n{}",
            self.stderr_text()
        );
    }

    /// SIGTERM, then a clean exit within 20 s; returns stderr.
    pub(crate) fn terminate(mut self) -> String {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(20));
        let stderr = self.stderr_text();
        assert!(
            status.success(),
            "exit after SIGTERM: {status:?}; stderr:\n{stderr}"
        );
        stderr
    }

    /// What it wrote to stderr: all of it when collected (once it has exited; later calls
    /// return nothing), the last lines of its log file, or nothing when discarded.
    pub(crate) fn stderr_text(&mut self) -> String {
        if let Some(log) = &self.log {
            return log_tail(log);
        }
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // A failed assertion must not leave a server running.
        self.kill();
    }
}

/// The last 40 lines of a log file, for failure messages.
pub(crate) fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs `cmd` to its end, within `limit` (killed and a panic past it): exit code, stdout,
/// stderr. Output goes through files, so a chatty command cannot block on a full pipe.
pub(crate) fn output_within(cmd: &mut Command, limit: Duration) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("stdout");
    let err = dir.path().join("stderr");
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(out).unwrap_or_default(),
        std::fs::read_to_string(err).unwrap_or_default(),
    )
}
