//! The publishing fixtures: a server over a copy of the example registry with the test tokens
//! configured ([`PublishServer`]), snapshots of what it wrote, and publish request bodies.
//!
//! Every test runs under [`bounded`]; every request has a timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::fixtures::{copy_tree, example_registry, files_under, path_str, sha256_hex};
use super::server::TestServer;

/// The token every test publishes with (scopes: `publish:*`, `yank:*`).
pub(crate) const PUBLISHER: &str = "gfr_test_publisher_token";
/// A token allowed to publish `hello_*` only.
pub(crate) const HELLO_ONLY: &str = "gfr_test_hello_only_token";
/// A token with the `admin` scope (registry refresh).
pub(crate) const ADMIN: &str = "gfr_test_admin_token";

/// Bound on one whole test.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on one request, body included.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body, failing it when it takes longer than [`TEST_TIMEOUT`].
pub(crate) async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("the test finishes within TEST_TIMEOUT")
}

/// Writes `config.toml` in `dir`: `head` (top-level tables such as `[auth]`), the test
/// tokens ([`PUBLISHER`], [`HELLO_ONLY`], [`ADMIN`]), then `extra` (more `[[auth.tokens]]`).
pub(crate) fn config_file(dir: &Path, head: &str, extra: &str) -> PathBuf {
    let file = dir.join("config.toml");
    let text = format!(
        r#"{head}
[publish]
upstream_registries = []

[[auth.tokens]]
name = "publisher"
sha256 = "{}"
scopes = ["publish:*", "yank:*"]

[[auth.tokens]]
name = "hello-only"
sha256 = "{}"
scopes = ["publish:hello_*"]

[[auth.tokens]]
name = "admin"
sha256 = "{}"
scopes = ["admin"]
{extra}"#,
        sha256_hex(PUBLISHER.as_bytes()),
        sha256_hex(HELLO_ONLY.as_bytes()),
        sha256_hex(ADMIN.as_bytes()),
    );
    std::fs::write(&file, text).expect("config");
    file
}

/// A mirror policy allowing URLs under `prefix` (ending in `/`), loopback included.
pub(crate) fn allow_policy(prefix: &str) -> String {
    format!("[[upstream]]\nprefix = \"{prefix}\"\nallow_private = true\n")
}

/// How a [`PublishServer`] is configured.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Setup<'a> {
    /// Top of the config file (e.g. `[auth]` settings).
    pub(crate) head: &'a str,
    /// End of the config file (e.g. more tokens).
    pub(crate) extra: &'a str,
    /// `policy.toml` of the mirror (empty: no upstream allowed).
    pub(crate) policy: &'a str,
}

/// A server over a copy of the example registry, with the test tokens configured, no
/// upstream registries (dependencies must resolve in the registry itself), and its own
/// data folder (`dir/data`), mirror policy (`dir/policy`) and config (`dir/config.toml`).
pub(crate) struct PublishServer {
    pub(crate) server: TestServer,
    pub(crate) registry: tempfile::TempDir,
    pub(crate) dir: tempfile::TempDir,
}

impl PublishServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    pub(crate) async fn start_with(setup: Setup<'_>) -> Self {
        let registry = tempfile::tempdir().expect("tempdir");
        copy_tree(&example_registry(), registry.path());
        let dir = tempfile::tempdir().expect("tempdir");
        let (policy, data) = (dir.path().join("policy"), dir.path().join("data"));
        std::fs::create_dir_all(&policy).expect("mkdir policy");
        std::fs::create_dir_all(&data).expect("mkdir data");
        std::fs::write(policy.join("policy.toml"), setup.policy).expect("policy.toml");
        let config = config_file(dir.path(), setup.head, setup.extra);
        let server = TestServer::start_exact(
            &[
                ("registry", path_str(registry.path())),
                ("data", path_str(&data)),
                ("mirror-policy", path_str(&policy)),
            ],
            Some(&config),
            &[("GF_REGISTRY_POLL_INTERVAL_SECONDS", "0")],
        )
        .await;
        Self {
            server,
            registry,
            dir,
        }
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The records role (audit trail, mirror pins and blob records).
    pub(crate) fn records(&self) -> PathBuf {
        self.data().join("records")
    }

    /// Every file of the registry folder and of the records role, with its bytes.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = snapshot_dir(self.registry.path(), "registry/");
        out.extend(snapshot_dir(&self.records(), "records/"));
        out
    }

    /// [`PublishServer::snapshot`] without the mirror's blob records (`records/blobs/`).
    pub(crate) fn snapshot_but_blob_records(&self) -> BTreeMap<String, Vec<u8>> {
        let mut all = self.snapshot();
        all.retain(|k, _| !k.starts_with("records/blobs/"));
        all
    }

    /// Audit records written so far.
    pub(crate) fn audit_records(&self) -> Vec<Value> {
        audit_records(&self.records())
    }

    pub(crate) async fn publish(&self, name: &str, version: &str, body: &Value) -> (u16, String) {
        self.server.publish(name, version, body).await
    }

    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> (u16, String) {
        self.server.post_json(path, body, token).await
    }

    /// Sends a request that must be refused with `status` and a message starting with
    /// `field:`, and checks that nothing was written. Returns the message.
    pub(crate) async fn refused(
        &self,
        what: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        status: u16,
        field: &str,
    ) -> String {
        self.refused_checking(
            Self::snapshot,
            what,
            path,
            content_type,
            body,
            status,
            field,
        )
        .await
    }

    #[allow(clippy::too_many_arguments, reason = "test helper")]
    async fn refused_checking(
        &self,
        snapshot: fn(&Self) -> BTreeMap<String, Vec<u8>>,
        what: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        status: u16,
        field: &str,
    ) -> String {
        let before = snapshot(self);
        let (got, text) = self
            .server
            .post_raw(path, content_type, body, Some(PUBLISHER))
            .await;
        assert_eq!(got, status, "{what}: {text}");
        assert!(
            text.starts_with(&format!("{field}:")),
            "{what}: the message names `{field}`: {text}"
        );
        assert_unchanged(&before, &snapshot(self), what);
        text
    }

    /// [`PublishServer::refused`] for a JSON publish body.
    pub(crate) async fn publish_refused(
        &self,
        what: &str,
        name: &str,
        version: &str,
        body: &Value,
        status: u16,
        field: &str,
    ) -> String {
        self.refused(
            what,
            &publish_path(name, version),
            Some("application/json"),
            serde_json::to_vec(body).expect("json"),
            status,
            field,
        )
        .await
    }

    /// [`PublishServer::publish_refused`] for an upload refused by a check that runs in the
    /// registry transaction (a new module without metadata, a lower compatibility_level):
    /// the server has stored the upload by then and leaves its blob record behind (a server
    /// bug, pinned down by `an_upload_refused_in_the_transaction_writes_no_records`), so the
    /// blob records are left out of the comparison here.
    pub(crate) async fn publish_refused_after_store(
        &self,
        what: &str,
        name: &str,
        version: &str,
        body: &Value,
        status: u16,
        field: &str,
    ) -> String {
        self.refused_checking(
            Self::snapshot_but_blob_records,
            what,
            &publish_path(name, version),
            Some("application/json"),
            serde_json::to_vec(body).expect("json"),
            status,
            field,
        )
        .await
    }

    /// `gf-registry registry check` on the registry folder must pass.
    pub(crate) fn registry_check(&self) {
        let check = std::process::Command::new(env!("CARGO_BIN_EXE_gf-registry"))
            .args(["registry", "check"])
            .arg(self.registry.path())
            .output()
            .expect("registry check");
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }

    pub(crate) async fn stop(self) {
        self.server.stop().await;
    }
}

/// Every file under `root` (none when it does not exist), keyed `prefix + relative path`.
pub(crate) fn snapshot_dir(root: &Path, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    if !root.exists() {
        return BTreeMap::new();
    }
    files_under(root)
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(root.join(&rel)).expect("read");
            (format!("{prefix}{rel}"), bytes)
        })
        .collect()
}

/// Fails naming every file added, removed or changed.
pub(crate) fn assert_unchanged(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
    what: &str,
) {
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let changed: Vec<&String> = before
        .iter()
        .filter(|(k, v)| after.get(*k).is_some_and(|a| a != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        added.is_empty() && removed.is_empty() && changed.is_empty(),
        "{what}: nothing may be written; added {added:?}, removed {removed:?}, changed {changed:?}"
    );
}

/// The audit records in a records folder, oldest first.
pub(crate) fn audit_records(records: &Path) -> Vec<Value> {
    let dir = records.join("audit");
    if !dir.exists() {
        return Vec::new();
    }
    files_under(&dir)
        .into_iter()
        .filter(|rel| rel.ends_with(".json"))
        .map(|rel| {
            serde_json::from_slice(&std::fs::read(dir.join(rel)).expect("read")).expect("json")
        })
        .collect()
}

// Request bodies and archives

/// A deterministic `tar.gz` holding `files` under `prefix/`.
pub(crate) fn tar_gz(prefix: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("{prefix}/{path}"), content.as_bytes())
            .expect("append");
    }
    gzip(&builder.into_inner().expect("tar"))
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

pub(crate) fn module_bazel(name: &str, version: &str, extra: &str) -> String {
    format!("module(\n    name = \"{name}\",\n    version = \"{version}\",\n)\n{extra}")
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The sha256 SRI of `bytes`.
pub(crate) fn sri(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256-{}", b64(&sha2::Sha256::digest(bytes)))
}

pub(crate) fn metadata() -> Value {
    json!({
        "homepage": "https://example.com/",
        "maintainers": [{"name": "Test", "email": "test@example.com"}],
        "repository": ["github:example/x"],
    })
}

/// A publish body uploading `archive` (named `{name}-{version}.tar.gz`, root folder
/// `{name}-{version}`) with this `MODULE.bazel`.
pub(crate) fn upload_body_with(name: &str, version: &str, mb: &str, archive: &[u8]) -> Value {
    let prefix = format!("{name}-{version}");
    json!({
        "module_bazel": mb,
        "source": {
            "type": "upload",
            "file_name": format!("{prefix}.tar.gz"),
            "content_base64": b64(archive),
        },
        "strip_prefix": prefix,
        "metadata": metadata(),
    })
}

/// A publish body uploading an archive that holds `MODULE.bazel` and a BUILD file.
pub(crate) fn upload_body(name: &str, version: &str, extra: &str) -> Value {
    let mb = module_bazel(name, version, extra);
    let prefix = format!("{name}-{version}");
    let archive = tar_gz(
        &prefix,
        &[("MODULE.bazel", &mb), ("BUILD.bazel", "# empty\n")],
    );
    upload_body_with(name, version, &mb, &archive)
}

pub(crate) fn publish_path(name: &str, version: &str) -> String {
    format!("/api/v1/modules/{name}/{version}")
}
