//! The crash and soak workload: the folders and command of a spawned server, a deterministic
//! RNG, releases to publish and the outcome of each request (shared by `crash.rs` and
//! `soak.rs`).

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use super::fixtures::{copy_tree, example_registry, sha256_hex};
use super::publish::sri;
use super::spawned::{Spawned, Stderr, log_tail};
use super::upstream::Upstream;

/// The token the harness publishes with (scope `publish:*`).
pub(crate) const TOKEN: &str = "gfr_crash_harness_token";

/// A tiny xorshift64 generator: deterministic, no crate.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// `len` pseudo-random bytes.
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The folders one server runs on, kept across restarts.
#[derive(Debug)]
pub(crate) struct Layout {
    _root: tempfile::TempDir,
    pub(crate) registry: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) policy: PathBuf,
    pub(crate) config: PathBuf,
    /// The server's `TMPDIR` (publish work folders go there).
    pub(crate) tmpdir: PathBuf,
    /// The server's stderr, appended to by every start.
    pub(crate) log: PathBuf,
}

impl Layout {
    /// A copy of the example registry, an empty data folder, `policy_toml` as the mirror
    /// policy, and a config granting [`TOKEN`] `publish:*` with no upstream registries.
    pub(crate) fn new(policy_toml: &str) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let registry = root.path().join("registry");
        copy_tree(&example_registry(), &registry);
        let data = root.path().join("data");
        let policy = root.path().join("policy");
        let tmpdir = root.path().join("tmp");
        for d in [&data, &policy, &tmpdir] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(policy.join("policy.toml"), policy_toml).expect("policy.toml");
        let config = root.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[publish]\nupstream_registries = []\n\n[[auth.tokens]]\nname = \"harness\"\nsha256 = \"{}\"\nscopes = [\"publish:*\", \"yank:*\"]\n",
                sha256_hex(TOKEN.as_bytes())
            ),
        )
        .expect("config.toml");
        let log = root.path().join("server.log");
        Self {
            _root: root,
            registry,
            data,
            policy,
            config,
            tmpdir,
            log,
        }
    }

    /// The flags naming these folders (for `serve` and the offline commands).
    pub(crate) fn flags(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        for (flag, path) in [
            ("--registry", &self.registry),
            ("--data", &self.data),
            ("--mirror-policy", &self.policy),
            ("--config", &self.config),
        ] {
            out.push(OsString::from(flag));
            out.push(path.as_os_str().to_owned());
        }
        out
    }

    /// The binary with these folders, a clean environment (no inherited `GF_REGISTRY_*`),
    /// no registry polling, no retention runs, stderr appended to [`Layout::log`].
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gf-registry"));
        cmd.args(args).args(self.flags());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GF_REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("GF_REGISTRY_POLL_INTERVAL_SECONDS", "0")
            .env("GF_REGISTRY_GC_INTERVAL_SECONDS", "0")
            .env("TMPDIR", &self.tmpdir)
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `serve --listen 127.0.0.1:0` and waits (bounded) for its listening line.
    pub(crate) fn serve(&self) -> Spawned {
        Spawned::spawn(
            &mut self.command(&["serve", "--listen", "127.0.0.1:0"]),
            Stderr::AppendTo(self.log.clone()),
            Duration::from_secs(60),
        )
    }

    /// The last lines of the server log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

/// A mirror policy allowing the double, loopback included.
pub(crate) fn allow_upstream(up: &Upstream) -> String {
    format!(
        "[[upstream]]\nprefix = \"{}/\"\nallow_private = true\n",
        up.origin()
    )
}

/// A deterministic `tar.gz` holding `files` under `prefix/`.
pub(crate) fn tar_gz(prefix: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("{prefix}/{path}"), *content)
            .expect("append");
    }
    let tar = builder.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// Hex sha256 of an SRI `sha256-...` value.
pub(crate) fn sri_hex(sri: &str) -> Option<String> {
    let b64 = sri.strip_prefix("sha256-")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(hex::encode(raw))
}

/// One version to publish: its `MODULE.bazel`, its archive and the request body.
#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub(crate) module: String,
    pub(crate) version: String,
    pub(crate) module_bazel: String,
    pub(crate) archive: Bytes,
    /// The upstream path serving the archive, for a URL source; `None` for an upload.
    pub(crate) upstream_path: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Release {
    /// A release whose archive holds `MODULE.bazel`, a BUILD file and `padding` random
    /// bytes; uploaded, or (with `upstream`) fetched from the double at a path of its own.
    pub(crate) fn new(
        module: &str,
        version: &str,
        padding: Vec<u8>,
        upstream: Option<&Upstream>,
    ) -> Self {
        let mb = format!("module(\n    name = \"{module}\",\n    version = \"{version}\",\n)\n");
        let prefix = format!("{module}-{version}");
        let archive = tar_gz(
            &prefix,
            &[
                ("MODULE.bazel", mb.as_bytes()),
                ("BUILD.bazel", b"# empty\n"),
                ("padding.bin", &padding),
            ],
        );
        let metadata = json!({
            "homepage": "https://example.com/",
            "maintainers": [{"name": "Harness", "email": "harness@example.com"}],
            "repository": ["github:example/crash"],
        });
        let (source, upstream_path) = match upstream {
            None => (
                json!({
                    "type": "upload",
                    "file_name": format!("{prefix}.tar.gz"),
                    "content_base64": base64::engine::general_purpose::STANDARD.encode(&archive),
                }),
                None,
            ),
            Some(up) => {
                let path = format!("/releases/{module}/{prefix}.tar.gz");
                (
                    json!({"type": "archive", "url": up.url(&path), "integrity": sri(&archive)}),
                    Some(path),
                )
            }
        };
        let body = json!({
            "module_bazel": mb,
            "source": source,
            "strip_prefix": prefix,
            "metadata": metadata,
        });
        Self {
            module: module.to_owned(),
            version: version.to_owned(),
            module_bazel: mb,
            archive: Bytes::from(archive),
            upstream_path,
            body: serde_json::to_vec(&body).expect("json"),
        }
    }

    pub(crate) fn api_path(&self) -> String {
        format!("/api/v1/modules/{}/{}", self.module, self.version)
    }

    pub(crate) fn archive_sha256(&self) -> String {
        sha256_hex(&self.archive)
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `2xx` read to the end, checked.
    Acknowledged,
    /// A complete answer that is not the expected one: status and body.
    Refused(u16, String),
    /// The transfer broke (the server died).
    Cut(String),
    /// A complete `2xx` whose content is wrong (never acceptable).
    Wrong(String),
}

/// `POST` a release with [`TOKEN`]; acknowledged on `201`/`200` naming the archive digest.
pub(crate) async fn publish(client: &reqwest::Client, base: &str, r: &Release) -> Outcome {
    let sent = client
        .post(format!("{base}{}", r.api_path()))
        .bearer_auth(TOKEN)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(r.body.clone())
        .send()
        .await;
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => return Outcome::Cut(e.to_string()),
    };
    let status = resp.status().as_u16();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Cut(e.to_string()),
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != 201 && status != 200 {
        return Outcome::Refused(status, text);
    }
    let answer: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Outcome::Wrong(format!(
                "{status} with a body that is not JSON ({e}): {text}"
            ));
        }
    };
    if answer["archive_sha256"] != json!(r.archive_sha256()) {
        return Outcome::Wrong(format!("answer names another archive: {text}"));
    }
    Outcome::Acknowledged
}

/// `GET` a path; acknowledged on `200` with a body of sha256 `want`.
pub(crate) async fn get_verified(client: &reqwest::Client, url: &str, want: &str) -> Outcome {
    let resp = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Cut(e.to_string()),
    };
    let status = resp.status().as_u16();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Cut(e.to_string()),
    };
    if status != 200 {
        return Outcome::Refused(status, String::from_utf8_lossy(&body).into_owned());
    }
    let got = sha256_hex(&body);
    if got == want {
        Outcome::Acknowledged
    } else {
        Outcome::Wrong(format!(
            "{} bytes of sha256 {got}, expected {want}",
            body.len()
        ))
    }
}
