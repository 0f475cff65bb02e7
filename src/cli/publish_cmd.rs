//! `gf-registry publish`: sends one module version to a running server's publish API
//! (`POST /api/v1/modules/{name}/{version}`, see `docs/publishing.md`).
//!
//! With `--tag`, `MODULE.bazel` is read at the tag through git, the tag must name its version,
//! and a deterministic `.tar.gz` of the tagged tree is uploaded. With `--archive-url`, the
//! `MODULE.bazel` on disk is sent with that URL. Either way, patches, overlay files and a
//! metadata template are taken from a `.bcr/` folder when there is one.
//!
//! Exit codes: 0 published (or unchanged, or dry run passed); 1 the server refused or could not
//! be reached; 2 a local problem found before anything was sent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ArgGroup;
use serde_json::Value;
use url::Url;

mod client;
mod netrc;
mod request;

use client::*;
use netrc::*;
use request::*;

/// Environment variable holding the API token.
const TOKEN_ENV: &str = "GF_REGISTRY_TOKEN";
/// Environment variable giving `--server`.
const SERVER_ENV: &str = "GF_REGISTRY_SERVER";
/// `patch_strip` for patches from `.bcr/patches` (they are `git diff` output: `a/`, `b/`).
const DEFAULT_PATCH_STRIP: u32 = 1;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(300);

/// Arguments of `publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    /// Base URL of the registry server (env GF_REGISTRY_SERVER).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    #[command(flatten)]
    pub(crate) release: ReleaseArgs,
}

/// The release being published: shared by `publish` and `registry add`.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("source").required(true).args(["tag", "archive_url"])))]
pub(crate) struct ReleaseArgs {
    /// The module's folder: where MODULE.bazel is (the repository root or a folder inside it).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub(crate) module_root: PathBuf,
    /// Publish the tree at this git tag (`X` or `refs/tags/X`), uploaded as a .tar.gz; the tag
    /// must be VERSION or vVERSION of the MODULE.bazel at that tag.
    #[arg(long, value_name = "TAG")]
    tag: Option<String>,
    /// Publish this source archive URL (fetched through the mirror policy); MODULE.bazel is
    /// read from disk.
    #[arg(long, value_name = "URL")]
    archive_url: Option<String>,
    /// Expected SRI hash of the --archive-url archive (sha256-..., sha384-..., sha512-...).
    #[arg(long, value_name = "SRI", conflicts_with = "tag")]
    integrity: Option<String>,
    /// Folder inside the --archive-url archive that is the module root (with --tag it is
    /// always NAME-VERSION).
    #[arg(long, value_name = "DIR", conflicts_with = "tag")]
    strip_prefix: Option<String>,
    /// Archive type of --archive-url (tar.gz, zip, ...) [default: guessed from the URL].
    #[arg(long, value_name = "TYPE", conflicts_with = "tag")]
    archive_type: Option<String>,
    /// Leading path components stripped from patch file names [default: 1 for patches found
    /// in .bcr/patches].
    #[arg(long, value_name = "N")]
    patch_strip: Option<u32>,
    /// Run every validation and print the entry it would create; write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

impl ReleaseArgs {
    /// The request for this release (no network); a local problem is printed and is exit 2.
    pub(crate) fn request(self) -> Result<PublishRequest, ExitCode> {
        let source = match (self.tag, self.archive_url) {
            (Some(tag), None) => SourceSpec::Tag(tag),
            (None, Some(url)) => SourceSpec::ArchiveUrl {
                url,
                integrity: self.integrity,
                strip_prefix: self.strip_prefix,
                archive_type: self.archive_type,
            },
            // clap's group makes exactly one of them present.
            _ => {
                eprintln!("error: give exactly one of --tag and --archive-url");
                return Err(ExitCode::from(2));
            }
        };
        build_request(&self.module_root, &source, self.patch_strip).map_err(|e| {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        })
    }
}

/// Where the sources of a published version come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceSpec {
    /// Archive the tree at this git tag (`X` or `refs/tags/X`) and upload it.
    Tag(String),
    /// Let the server fetch this archive.
    ArchiveUrl {
        /// The archive's URL.
        url: String,
        /// Its expected SRI hash.
        integrity: Option<String>,
        /// The folder inside the archive that is the module root.
        strip_prefix: Option<String>,
        /// Its archive type, when the URL does not tell.
        archive_type: Option<String>,
    },
}

/// A publish request ready to send.
#[derive(Debug, Clone)]
pub(crate) struct PublishRequest {
    /// The module name (from MODULE.bazel).
    pub(crate) name: String,
    /// The version (from MODULE.bazel).
    pub(crate) version: String,
    /// The JSON body of `POST /api/v1/modules/{name}/{version}`.
    pub(crate) body: Value,
    /// What is being sent, in one line for people (no file contents).
    pub(crate) summary: String,
}

impl PublishArgs {
    pub(crate) fn run(self) -> ExitCode {
        let server = match self.server_url() {
            Ok(u) => u,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        };
        let dry_run = self.release.dry_run;
        let request = match self.release.request() {
            Ok(r) => r,
            Err(code) => return code,
        };
        eprintln!("{}", request.summary);
        send(&server, &request, dry_run)
    }

    fn server_url(&self) -> anyhow::Result<Url> {
        let raw = match &self.server {
            Some(s) => s.clone(),
            None => std::env::var(SERVER_ENV)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| anyhow::anyhow!("--server is required (or set {SERVER_ENV})"))?,
        };
        parse_server(raw.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::testing::{EXEC, FILE, commit, init, tag};
    use base64::Engine as _;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn netrc_parsing() {
        let text = "\
# a comment line
machine other.example login u password wrong
macdef init
  machine registry.example password inside-macro

machine Registry.Example
  login me
  password s3cret # trailing comment
machine registry.example password second
default login anon password fallback
";
        let entries = parse_netrc(text);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].password.as_deref(), Some("wrong"));
        assert_eq!(entries[1].machine.as_deref(), Some("Registry.Example"));
        assert_eq!(entries[1].login.as_deref(), Some("me"));
        assert_eq!(entries[3].machine, None);
        assert_eq!(
            netrc_password(text, "registry.example").as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            netrc_password(text, "other.example").as_deref(),
            Some("wrong")
        );
        assert_eq!(
            netrc_password(text, "unknown.example").as_deref(),
            Some("fallback")
        );
        assert_eq!(netrc_password("machine a password b", "c"), None);
        assert_eq!(netrc_password("", "c"), None);
        // Tokens may span lines; `account` values are skipped.
        assert_eq!(
            netrc_password("machine\nh\naccount password\npassword\nx", "h").as_deref(),
            Some("x")
        );
        assert_eq!(
            netrc_password("machine [::1] password six", "[::1]").as_deref(),
            None
        );
        assert_eq!(
            netrc_password("machine ::1 password six", "[::1]").as_deref(),
            Some("six")
        );
    }

    #[test]
    fn token_comes_from_env_then_netrc() {
        let tmp = tempfile::tempdir().unwrap();
        let netrc = tmp.path().join("netrc");
        std::fs::write(&netrc, "machine reg.example login x password from-netrc\n").unwrap();
        let server = Url::parse("https://reg.example:8443/base/").unwrap();
        assert_eq!(
            token_from(Some(" from-env\n".into()), Some(&netrc), &server).as_deref(),
            Some("from-env")
        );
        assert_eq!(
            token_from(Some(String::new()), Some(&netrc), &server).as_deref(),
            Some("from-netrc")
        );
        assert_eq!(
            token_from(None, Some(&netrc), &server).as_deref(),
            Some("from-netrc")
        );
        let other = Url::parse("https://other.example/").unwrap();
        assert_eq!(token_from(None, Some(&netrc), &other), None);
        assert_eq!(
            token_from(None, Some(&tmp.path().join("none")), &server),
            None
        );
        assert_eq!(token_from(None, None, &server), None);
    }

    #[test]
    fn tag_must_name_the_version() {
        assert!(check_tag_version("1.2.0", "1.2.0").is_ok());
        assert!(check_tag_version("v1.2.0", "1.2.0").is_ok());
        assert!(check_tag_version("refs/tags/v1.2.0", "1.2.0").is_ok());
        assert!(check_tag_version("refs/tags/1.2.0", "1.2.0").is_ok());
        assert!(check_tag_version("vv1", "v1").is_ok());
        assert_eq!(
            check_tag_version("v1.3.0", "1.2.0").unwrap_err(),
            "tag v1.3.0 names version 1.3.0 but MODULE.bazel at that tag says 1.2.0"
        );
        assert_eq!(
            check_tag_version("refs/tags/1.3.0", "1.2.0").unwrap_err(),
            "tag 1.3.0 names version 1.3.0 but MODULE.bazel at that tag says 1.2.0"
        );
        let err = check_tag_version("foo-1.2.0", "1.2.0").unwrap_err();
        assert!(err.contains("must be 1.2.0 or v1.2.0"), "{err}");
        assert!(check_tag_version("V1.2.0", "1.2.0").is_err());
        assert!(check_tag_version("1.2.0.1", "1.2.0").is_err());
    }

    #[test]
    fn publish_url_keeps_the_server_path() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            publish_url(&u("https://r.example"), "foo", "1.2.0", false).as_str(),
            "https://r.example/api/v1/modules/foo/1.2.0"
        );
        assert_eq!(
            publish_url(&u("https://r.example/bzl/"), "foo", "1.2.0", true).as_str(),
            "https://r.example/bzl/api/v1/modules/foo/1.2.0?dry_run=true"
        );
        assert_eq!(
            publish_url(&u("http://127.0.0.1:8080/bzl"), "a/b", "1", false).as_str(),
            "http://127.0.0.1:8080/bzl/api/v1/modules/a%2Fb/1"
        );
        assert!(parse_server("ftp://x").is_err());
        assert!(parse_server("https://x/?q=1").is_err());
        assert!(parse_server("not a url").is_err());
        assert_eq!(
            shown(&u("https://user:secret@r.example/x")),
            "https://user@r.example/x"
        );
    }

    const MODULE: &str = "module(name = \"foo\", version = \"1.2.0\")\n";

    /// A repository whose module sits in `sub` (`""` for the root), tagged `tag` (annotated).
    fn tagged_repo(root: &Path, sub: &str, tag_name: &str, module: &str) -> PathBuf {
        init(root);
        let p = |f: &str| join(sub, f);
        let files = [
            (p("MODULE.bazel"), FILE, module.as_bytes()),
            (p("BUILD.bazel"), FILE, &b"# build\n"[..]),
            (p("tool.sh"), EXEC, &b"#!/bin/sh\n"[..]),
            (
                ".bcr/patches/01-fix.patch".to_owned(),
                FILE,
                &b"--- a/x\n+++ b/x\n"[..],
            ),
            (".bcr/overlay/src/BUILD".to_owned(), FILE, &b"overlay\n"[..]),
            (
                ".bcr/metadata.template.json".to_owned(),
                FILE,
                &br#"{"homepage": "https://example.com/foo",
                    "maintainers": [{"name": "A. Person", "email": "a@example.com"}],
                    "repository": ["github:example/foo"], "versions": [],
                    "yanked_versions": {}}"#[..],
            ),
            ("README".to_owned(), FILE, &b"root\n"[..]),
        ];
        let files: Vec<(&str, u32, &[u8])> =
            files.iter().map(|(p, m, c)| (p.as_str(), *m, *c)).collect();
        let id = commit(root, &files, 1_700_000_000);
        tag(root, tag_name, &id, true);
        let dir = root.join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tag_request_uploads_a_deterministic_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let module_root = tagged_repo(tmp.path(), "", "v1.2.0", MODULE);
        let tag = SourceSpec::Tag("v1.2.0".into());
        let req = build_request(&module_root, &tag, None).unwrap();
        assert_eq!((req.name.as_str(), req.version.as_str()), ("foo", "1.2.0"));
        let body = req.body.as_object().unwrap();
        let keys: Vec<&str> = body.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "module_bazel",
                "source",
                "strip_prefix",
                "archive_type",
                "patches",
                "patch_strip",
                "overlay",
                "metadata"
            ]
        );
        assert_eq!(body["module_bazel"], MODULE);
        assert_eq!(body["source"]["type"], "upload");
        assert_eq!(body["source"]["file_name"], "foo-1.2.0.tar.gz");
        assert_eq!(body["strip_prefix"], "foo-1.2.0");
        assert_eq!(body["archive_type"], "tar.gz");
        assert_eq!(
            body["patches"],
            json!([{"name": "01-fix.patch", "content": "--- a/x\n+++ b/x\n"}])
        );
        assert_eq!(body["patch_strip"], 1);
        assert_eq!(
            body["overlay"],
            json!([{"path": "src/BUILD", "content": "overlay\n"}])
        );
        assert_eq!(
            body["metadata"],
            json!({"homepage": "https://example.com/foo",
                   "maintainers": [{"name": "A. Person", "email": "a@example.com"}],
                   "repository": ["github:example/foo"]})
        );
        let archive = base64::engine::general_purpose::STANDARD
            .decode(body["source"]["content_base64"].as_str().unwrap())
            .unwrap();
        let mut names = Vec::new();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]));
        for e in tar.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        assert!(
            names.contains(&"foo-1.2.0/MODULE.bazel".to_owned()),
            "{names:?}"
        );
        assert!(names.contains(&"foo-1.2.0/tool.sh".to_owned()), "{names:?}");
        assert!(
            req.summary.contains("upload foo-1.2.0.tar.gz"),
            "{}",
            req.summary
        );

        // Same bytes on a second run; --patch-strip overrides the default.
        let again = build_request(&module_root, &tag, Some(0)).unwrap();
        assert_eq!(again.body["source"], req.body["source"]);
        assert_eq!(again.body["patch_strip"], 0);
    }

    #[test]
    fn tag_request_for_a_module_in_a_subfolder() {
        let tmp = tempfile::tempdir().unwrap();
        let module_root = tagged_repo(tmp.path(), "mods/foo", "1.2.0", MODULE);
        let req = build_request(&module_root, &SourceSpec::Tag("1.2.0".into()), None).unwrap();
        let archive = base64::engine::general_purpose::STANDARD
            .decode(req.body["source"]["content_base64"].as_str().unwrap())
            .unwrap();
        let mut names = Vec::new();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]));
        for e in tar.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(
            names,
            [
                "foo-1.2.0/",
                "foo-1.2.0/BUILD.bazel",
                "foo-1.2.0/MODULE.bazel",
                "foo-1.2.0/tool.sh"
            ]
        );
        // The repository root's `.bcr` applies.
        assert_eq!(req.body["patches"][0]["name"], "01-fix.patch");
    }

    #[test]
    fn tag_request_refuses_a_tag_of_another_version() {
        let tmp = tempfile::tempdir().unwrap();
        let module_root = tagged_repo(tmp.path(), "", "v1.3.0", MODULE);
        let err = build_request(&module_root, &SourceSpec::Tag("v1.3.0".into()), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tag v1.3.0 names version 1.3.0 but MODULE.bazel at that tag says 1.2.0"
        );
        let err = build_request(&module_root, &SourceSpec::Tag("v9".into()), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no tag `v9`"), "{err}");
    }

    #[test]
    fn tag_request_needs_name_and_version() {
        let tmp = tempfile::tempdir().unwrap();
        let module_root = tagged_repo(tmp.path(), "", "v1", "module(name = \"foo\")\n");
        let err = build_request(&module_root, &SourceSpec::Tag("v1".into()), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("module(version = ...) is required"), "{err}");
    }

    #[test]
    fn archive_url_request_reads_the_work_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("MODULE.bazel"), MODULE).unwrap();
        let source = SourceSpec::ArchiveUrl {
            url: "https://example.com/foo-1.2.0.tar.gz".into(),
            integrity: Some("sha256-AAAA".into()),
            strip_prefix: Some("foo-1.2.0".into()),
            archive_type: None,
        };
        let req = build_request(root, &source, None).unwrap();
        assert_eq!((req.name.as_str(), req.version.as_str()), ("foo", "1.2.0"));
        assert_eq!(
            req.body,
            json!({
                "module_bazel": MODULE,
                "source": {"type": "archive", "url": "https://example.com/foo-1.2.0.tar.gz",
                           "integrity": "sha256-AAAA"},
                "strip_prefix": "foo-1.2.0",
            })
        );

        // `.bcr/` on disk; a patch_strip given without patches is still sent.
        std::fs::create_dir_all(root.join(".bcr/patches")).unwrap();
        std::fs::write(root.join(".bcr/patches/b.patch"), "B").unwrap();
        std::fs::write(root.join(".bcr/patches/a.patch"), "A").unwrap();
        std::fs::write(
            root.join(".bcr/metadata.template.json"),
            "{\"homepage\": 1}",
        )
        .unwrap();
        let source = SourceSpec::ArchiveUrl {
            url: "https://example.com/foo.zip".into(),
            integrity: None,
            strip_prefix: None,
            archive_type: Some("zip".into()),
        };
        let err = build_request(root, &source, None).unwrap_err().to_string();
        assert!(err.contains("`homepage` must be a string"), "{err}");
        std::fs::write(
            root.join(".bcr/metadata.template.json"),
            "{\"versions\": []}",
        )
        .unwrap();
        let req = build_request(root, &source, Some(2)).unwrap();
        assert_eq!(
            req.body,
            json!({
                "module_bazel": MODULE,
                "source": {"type": "archive", "url": "https://example.com/foo.zip"},
                "archive_type": "zip",
                "patches": [{"name": "a.patch", "content": "A"}, {"name": "b.patch", "content": "B"}],
                "patch_strip": 2,
                "metadata": {},
            })
        );

        let bad = SourceSpec::ArchiveUrl {
            url: "file:///etc/passwd".into(),
            integrity: None,
            strip_prefix: None,
            archive_type: None,
        };
        assert!(build_request(root, &bad, None).is_err());
        let err = build_request(&root.join("missing"), &source, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("MODULE.bazel"), "{err}");
    }

    #[test]
    fn bodies_are_what_the_server_parses() {
        use crate::publish::request::PublishRequest as ServerRequest;
        let tmp = tempfile::tempdir().unwrap();
        let module_root = tagged_repo(tmp.path(), "", "v1.2.0", MODULE);
        let tag = build_request(&module_root, &SourceSpec::Tag("v1.2.0".into()), None).unwrap();
        let parsed: ServerRequest = serde_json::from_value(tag.body).unwrap();
        assert_eq!(parsed.patches.len(), 1);
        assert_eq!(parsed.overlay.len(), 1);
        assert!(parsed.metadata.is_some());
        let url = SourceSpec::ArchiveUrl {
            url: "https://example.com/foo.tar.gz".into(),
            integrity: Some("sha256-AAAA".into()),
            strip_prefix: Some("foo".into()),
            archive_type: Some("tar.gz".into()),
        };
        std::fs::write(module_root.join("MODULE.bazel"), MODULE).unwrap();
        let req = build_request(&module_root, &url, Some(1)).unwrap();
        let _: ServerRequest = serde_json::from_value(req.body).unwrap();
    }

    #[test]
    fn flags_need_exactly_one_source() {
        use clap::Parser as _;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: PublishArgs,
        }
        assert!(Cli::try_parse_from(["x", "--server", "http://s"]).is_err());
        assert!(
            Cli::try_parse_from(["x", "--tag", "v1", "--archive-url", "https://a/b.zip"]).is_err()
        );
        assert!(Cli::try_parse_from(["x", "--tag", "v1", "--integrity", "sha256-x"]).is_err());
        assert!(Cli::try_parse_from(["x", "--tag", "v1", "--strip-prefix", "x"]).is_err());
        let ok =
            Cli::try_parse_from(["x", "--tag", "v1", "--dry-run", "--patch-strip", "0"]).unwrap();
        assert!(ok.args.release.dry_run);
        assert_eq!(ok.args.release.module_root, Path::new("."));
        assert!(
            Cli::try_parse_from([
                "x",
                "--archive-url",
                "https://a/b.zip",
                "--integrity",
                "sha256-x",
                "--strip-prefix",
                "b"
            ])
            .is_ok()
        );
    }

    #[test]
    fn report_exit_codes() {
        let ok = report(
            "foo",
            "1.2.0",
            reqwest::StatusCode::CREATED,
            "{\"status\":\"created\"}",
        );
        assert_eq!(ok, ExitCode::SUCCESS);
        let conflict = report("foo", "1.2.0", reqwest::StatusCode::CONFLICT, "{}");
        assert_eq!(conflict, ExitCode::FAILURE);
    }
}
