//! Publishing through the real server: `POST /api/v1/modules/{name}/{version}`, yank,
//! deprecate, tokens and scopes.
//!
//! Every test runs under [`bounded`]; every request has a timeout. Refused requests are
//! checked to leave the registry folder and the records role (audit trail, mirror records)
//! byte for byte as they were.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::Upstream;
use crate::support::publish::{
    ADMIN, HELLO_ONLY, PUBLISHER, PublishServer, Setup, TEST_TIMEOUT, allow_policy,
    assert_unchanged, b64, bounded, gzip, metadata, module_bazel, publish_path, snapshot_dir, sri,
    tar_gz, upload_body, upload_body_with,
};
use crate::support::{TestServer, sha256_hex};

/// A token whose entry expired in 2020 (configured by the token test only).
const EXPIRED: &str = "gfr_test_expired_token";

/// One entry of a [`raw_tar_gz`]: names are written into the header as given, unchecked.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    File(&'a str, &'a str),
    Symlink(&'a str, &'a str),
}

/// A `tar.gz` whose entry names and link targets are written byte for byte into the headers
/// (the `tar` crate's path checks would refuse `..` and absolute names).
fn raw_tar_gz(entries: &[Raw<'_>]) -> Vec<u8> {
    fn put(field: &mut [u8], value: &str) {
        assert!(value.len() < field.len(), "{value} fits a tar header");
        field.fill(0);
        field[..value.len()].copy_from_slice(value.as_bytes());
    }
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_old();
        header.set_mode(0o644);
        header.set_mtime(0);
        let data: &[u8] = match entry {
            Raw::File(name, content) => {
                put(&mut header.as_old_mut().name, name);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(content.len() as u64);
                content.as_bytes()
            }
            Raw::Symlink(name, target) => {
                put(&mut header.as_old_mut().name, name);
                put(&mut header.as_old_mut().linkname, target);
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                &[]
            }
        };
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    gzip(&builder.into_inner().expect("tar"))
}

/// A publish body pointing at an archive URL.
fn archive_body(name: &str, version: &str, mb: &str, url: &str, integrity: Option<&str>) -> Value {
    let mut source = json!({"type": "archive", "url": url});
    if let Some(i) = integrity {
        source["integrity"] = json!(i);
    }
    json!({
        "module_bazel": mb,
        "source": source,
        "strip_prefix": format!("{name}-{version}"),
        "metadata": metadata(),
    })
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

// ---------------------------------------------------------------------------------------------
// 1. Upload
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn publish_a_new_module_then_read_every_file_back() {
    bounded(async {
        let s = PublishServer::start().await;
        let body = upload_body(
            "fresh_mod",
            "1.0.0",
            "bazel_dep(name = \"hello_lib\", version = \"1.2.0\")\n",
        );
        let (status, text) = s.publish("fresh_mod", "1.0.0", &body).await;
        assert_eq!(status, 201, "{text}");
        let answer = parse(&text);
        assert_eq!(answer["status"], "created");
        let files = answer["files"].as_object().expect("files");
        for f in ["MODULE.bazel", "source.json"] {
            assert!(
                files.contains_key(&format!("modules/fresh_mod/1.0.0/{f}")),
                "{text}"
            );
        }
        assert!(
            files.contains_key("modules/fresh_mod/metadata.json"),
            "{text}"
        );
        for (path, sha) in files {
            let (status, bytes) = s.server.get_bytes(&format!("/{path}")).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(&sha256_hex(&bytes), sha.as_str().expect("sha"), "{path}");
            // The answer's files are the registry folder's files.
            assert_eq!(
                std::fs::read(s.registry.path().join(path)).expect("written"),
                bytes,
                "{path}"
            );
        }
        let source = s
            .server
            .get_json("/modules/fresh_mod/1.0.0/source.json")
            .await;
        let url = source["url"].as_str().expect("url");
        // The archive is served by this server, verified.
        let archive = s.server.client.get(url).send().await.expect("archive");
        assert_eq!(archive.status(), 200, "{url}");
        let archive = archive.bytes().await.expect("bytes");
        assert_eq!(
            sha256_hex(&archive),
            answer["archive_sha256"].as_str().expect("sha")
        );
        assert_eq!(source["integrity"], sri(&archive));
        let meta = s.server.get_json("/modules/fresh_mod/metadata.json").await;
        assert_eq!(meta["versions"], json!(["1.0.0"]));
        let audit = s.audit_records();
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert_eq!(audit[0]["action"], "publish");
        assert_eq!(audit[0]["outcome"], "created");
        assert_eq!(audit[0]["actor"], "publisher");
        // Idempotent retry.
        let before = snapshot_dir(s.registry.path(), "");
        let (status, text) = s.publish("fresh_mod", "1.0.0", &body).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(parse(&text)["status"], "unchanged", "{text}");
        assert_eq!(parse(&text)["files"], answer["files"], "{text}");
        assert_unchanged(&before, &snapshot_dir(s.registry.path(), ""), "a retry");
        // Other content for the same version: 409, nothing changes.
        let other = upload_body("fresh_mod", "1.0.0", "# changed\n");
        let (status, text) = s.publish("fresh_mod", "1.0.0", &other).await;
        assert_eq!(status, 409, "{text}");
        assert_unchanged(&before, &snapshot_dir(s.registry.path(), ""), "a conflict");
        s.registry_check();
        s.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. Archive URL
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn publish_from_an_archive_url_pins_it_in_the_mirror() {
    bounded(async {
        let mut up = Upstream::start().await;
        let s = PublishServer::start_with(Setup {
            policy: &allow_policy(&up.url("/ok/")),
            ..Setup::default()
        })
        .await;
        for (version, with_integrity) in [("1.0.0", false), ("1.1.0", true)] {
            let mb = module_bazel("url_mod", version, "");
            let prefix = format!("url_mod-{version}");
            let archive = tar_gz(&prefix, &[("MODULE.bazel", &mb), ("BUILD.bazel", "")]);
            let path = format!("/ok/{prefix}.tar.gz");
            up.serve_bytes(&path, archive.clone());
            let url = up.url(&path);
            let integrity = sri(&archive);
            let body = archive_body(
                "url_mod",
                version,
                &mb,
                &url,
                with_integrity.then_some(integrity.as_str()),
            );
            let (status, text) = s.publish("url_mod", version, &body).await;
            assert_eq!(status, 201, "{version}: {text}");
            let answer = parse(&text);
            let hex = sha256_hex(&archive);
            assert_eq!(answer["archive_sha256"], hex);
            let source = s
                .server
                .get_json(&format!("/modules/url_mod/{version}/source.json"))
                .await;
            let mirror_url = format!("{}/mirror/{}{path}", s.server.base, up.host());
            assert_eq!(source["url"], url, "{source}");
            assert_eq!(source["mirror_urls"], json!([mirror_url]), "{source}");
            assert_eq!(source["integrity"], integrity, "{source}");
            assert_eq!(source["strip_prefix"], prefix, "{source}");
            assert_eq!(up.gets(&path), 1, "{version}: fetched once, to pin it");
            // The mirror serves the pinned bytes without going upstream again.
            let got = s
                .server
                .client
                .get(&mirror_url)
                .send()
                .await
                .expect("mirror");
            assert_eq!(got.status(), 200, "{mirror_url}");
            assert_eq!(got.bytes().await.expect("body"), archive);
            let (status, cas) = s.server.get_bytes(&format!("/cas/sha256/{hex}")).await;
            assert_eq!(status, 200);
            assert_eq!(cas, archive);
            assert_eq!(up.gets(&path), 1, "{version}: no other upstream fetch");
            assert_eq!(up.hits(&path).head, 0, "{version}");
        }
        let meta = s.server.get_json("/modules/url_mod/metadata.json").await;
        assert_eq!(meta["versions"], json!(["1.0.0", "1.1.0"]));
        // The mirror keeps serving the pinned archives with the upstream gone.
        up.stop().await;
        let (status, _) = s
            .server
            .get_bytes(&format!("/mirror/{}/ok/url_mod-1.0.0.tar.gz", up.host()))
            .await;
        assert_eq!(status, 200);
        s.registry_check();
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn archive_url_failures_name_the_field_and_write_nothing() {
    bounded(async {
        let mut up = Upstream::start().await;
        let s = PublishServer::start_with(Setup {
            policy: &allow_policy(&up.url("/ok/")),
            ..Setup::default()
        })
        .await;
        let mb = module_bazel("url_bad", "1.0.0", "");
        let archive = tar_gz(
            "url_bad-1.0.0",
            &[("MODULE.bazel", &mb), ("BUILD.bazel", "")],
        );
        let path = "/ok/url_bad-1.0.0.tar.gz";
        up.serve_bytes(path, archive.clone());
        let wrong = sri(b"other bytes");

        let body = archive_body("url_bad", "1.0.0", &mb, &up.url(path), Some(&wrong));
        let text = s
            .publish_refused(
                "wrong integrity",
                "url_bad",
                "1.0.0",
                &body,
                422,
                "source.integrity",
            )
            .await;
        assert!(
            text.contains(&sri(&archive)),
            "names the real integrity: {text}"
        );

        // Malformed integrity: refused before any fetch.
        let body = archive_body("url_bad", "1.0.0", &mb, &up.url(path), Some("sha256-xyz"));
        s.publish_refused(
            "bad SRI",
            "url_bad",
            "1.0.0",
            &body,
            400,
            "source.integrity",
        )
        .await;

        up.serve_bytes("/denied/url_bad-1.0.0.tar.gz", archive.clone());
        let denied = up.url("/denied/url_bad-1.0.0.tar.gz");
        let body = archive_body("url_bad", "1.0.0", &mb, &denied, None);
        let status = {
            let before = s.snapshot();
            let (status, text) = s.publish("url_bad", "1.0.0", &body).await;
            assert!(
                (400..500).contains(&status),
                "not allowed by the policy: {status} {text}"
            );
            assert!(text.starts_with("source.url:"), "names source.url: {text}");
            assert!(text.contains("policy"), "says why: {text}");
            assert_unchanged(&before, &s.snapshot(), "URL outside the policy");
            status
        };
        assert_eq!(
            up.gets("/denied/url_bad-1.0.0.tar.gz"),
            0,
            "refused before fetching ({status})"
        );

        let missing = up.url("/ok/missing-1.0.0.tar.gz");
        let body = archive_body("url_bad", "1.0.0", &mb, &missing, None);
        let before = s.snapshot();
        let (status, text) = s.publish("url_bad", "1.0.0", &body).await;
        assert!(
            (400..500).contains(&status),
            "upstream 404: {status} {text}"
        );
        assert!(text.starts_with("source.url:"), "names source.url: {text}");
        assert_unchanged(&before, &s.snapshot(), "upstream 404");

        let body = archive_body("url_bad", "1.0.0", &mb, "ftp://example.com/x.tar.gz", None);
        s.publish_refused("ftp URL", "url_bad", "1.0.0", &body, 400, "source.url")
            .await;
        assert!(!s.registry.path().join("modules/url_bad").exists());
        assert!(s.audit_records().is_empty());
        up.stop().await;
        s.stop().await;
    })
    .await;
}

/// A URL pinned by an earlier publish keeps its first-seen bytes: a later publish giving
/// another integrity for it is refused without touching anything.
#[tokio::test]
async fn a_pinned_url_with_another_integrity_is_refused() {
    bounded(async {
        let mut up = Upstream::start().await;
        let s = PublishServer::start_with(Setup {
            policy: &allow_policy(&up.url("/ok/")),
            ..Setup::default()
        })
        .await;
        let mb = module_bazel("pin_mod", "1.0.0", "");
        let archive = tar_gz("pin_mod-1.0.0", &[("MODULE.bazel", &mb)]);
        let path = "/ok/pin_mod-1.0.0.tar.gz";
        up.serve_bytes(path, archive.clone());
        let body = archive_body("pin_mod", "1.0.0", &mb, &up.url(path), None);
        let (status, text) = s.publish("pin_mod", "1.0.0", &body).await;
        assert_eq!(status, 201, "{text}");
        // Same URL, same archive name, but 2.0.0 claims another integrity.
        let mb2 = module_bazel("pin_mod", "1.0.1", "");
        let mut body = archive_body("pin_mod", "1.0.1", &mb2, &up.url(path), Some(&sri(b"x")));
        body["strip_prefix"] = json!("pin_mod-1.0.0");
        s.publish_refused(
            "pinned URL",
            "pin_mod",
            "1.0.1",
            &body,
            422,
            "source.integrity",
        )
        .await;
        assert_eq!(up.gets(path), 1, "a pinned URL is not fetched again");
        up.stop().await;
        s.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. Patches and overlay
// ---------------------------------------------------------------------------------------------

const PATCH: &str =
    "--- a/src/greet.txt\n+++ b/src/greet.txt\n@@ -1,2 +1,2 @@\n-hello\n+hello, patched\n world\n";
const BAD_PATCH: &str = "--- a/src/greet.txt\n+++ b/src/greet.txt\n@@ -1,2 +1,2 @@\n-goodbye\n+hello, patched\n world\n";
const OVERLAY_BUILD: &str = "exports_files([\"src/greet.txt\"])\n";

fn overlay_module_bazel(version: &str, compat: bool) -> String {
    let compat = if compat {
        "    bazel_compatibility = [\">=7.2.1\"],\n"
    } else {
        ""
    };
    format!("module(\n    name = \"po_mod\",\n    version = \"{version}\",\n{compat})\n")
}

fn overlay_body(version: &str, compat: bool, patch: &str) -> Value {
    let mb = overlay_module_bazel(version, compat);
    let archive = tar_gz(
        &format!("po_mod-{version}"),
        &[("MODULE.bazel", &mb), ("src/greet.txt", "hello\nworld\n")],
    );
    let mut body = upload_body_with("po_mod", version, &mb, &archive);
    body["patches"] = json!([{"name": "fix.patch", "content": patch}]);
    body["patch_strip"] = json!(1);
    body["overlay"] = json!([{"path": "BUILD.bazel", "content": OVERLAY_BUILD}]);
    body
}

#[tokio::test]
async fn patches_and_overlay_are_checked_and_served_byte_for_byte() {
    bounded(async {
        let s = PublishServer::start().await;
        let text = s
            .publish_refused(
                "overlay without bazel_compatibility",
                "po_mod",
                "1.0.0",
                &overlay_body("1.0.0", false, PATCH),
                400,
                "module_bazel",
            )
            .await;
        assert!(text.contains("7.2.1"), "{text}");
        s.publish_refused(
            "a patch that does not apply",
            "po_mod",
            "1.0.0",
            &overlay_body("1.0.0", true, BAD_PATCH),
            422,
            "patches[0]",
        )
        .await;

        let (status, text) = s
            .publish("po_mod", "1.0.0", &overlay_body("1.0.0", true, PATCH))
            .await;
        assert_eq!(status, 201, "{text}");
        let source = s.server.get_json("/modules/po_mod/1.0.0/source.json").await;
        assert_eq!(
            source["patches"],
            json!({"fix.patch": sri(PATCH.as_bytes())}),
            "{source}"
        );
        assert_eq!(source["patch_strip"], 1, "{source}");
        assert_eq!(
            source["overlay"],
            json!({"BUILD.bazel": sri(OVERLAY_BUILD.as_bytes())}),
            "{source}"
        );
        for (path, want) in [
            ("/modules/po_mod/1.0.0/patches/fix.patch", PATCH),
            ("/modules/po_mod/1.0.0/overlay/BUILD.bazel", OVERLAY_BUILD),
        ] {
            let (status, bytes) = s.server.get_bytes(path).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(bytes, want.as_bytes(), "{path}");
        }
        // Each listed SRI matches the served file.
        for (kind, map) in [
            ("patches", &source["patches"]),
            ("overlay", &source["overlay"]),
        ] {
            for (file, want) in map.as_object().expect("object") {
                let (_, bytes) = s
                    .server
                    .get_bytes(&format!("/modules/po_mod/1.0.0/{kind}/{file}"))
                    .await;
                assert_eq!(&json!(sri(&bytes)), want, "{kind}/{file}");
            }
        }
        assert_eq!(
            s.server
                .get_bytes("/modules/po_mod/1.0.0/MODULE.bazel")
                .await
                .1,
            overlay_module_bazel("1.0.0", true).as_bytes()
        );
        s.registry_check();
        s.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. MODULE.bazel, coordinates, dependencies, compatibility level
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn module_bazel_must_match_the_archive_and_the_url() {
    bounded(async {
        let s = PublishServer::start().await;
        let mb = module_bazel("mb_mod", "1.0.0", "");
        let differing = module_bazel("mb_mod", "1.0.0", "# only in the archive\n");
        let archive = tar_gz("mb_mod-1.0.0", &[("MODULE.bazel", &differing)]);
        let text = s
            .publish_refused(
                "archive MODULE.bazel differs",
                "mb_mod",
                "1.0.0",
                &upload_body_with("mb_mod", "1.0.0", &mb, &archive),
                422,
                "module_bazel",
            )
            .await;
        assert!(text.contains("only in the archive"), "{text}");

        for (what, url_name, url_version) in [
            ("name differs from the URL", "mb_other", "1.0.0"),
            ("version differs from the URL", "mb_mod", "1.0.1"),
        ] {
            s.publish_refused(
                what,
                url_name,
                url_version,
                &upload_body("mb_mod", "1.0.0", ""),
                400,
                "module_bazel",
            )
            .await;
        }
        for (what, name, version, field) in [
            ("build metadata", "mb_mod", "1.0.0+build", "version"),
            (
                "a numeric part of 2^31",
                "mb_mod",
                "2147483648.0.0",
                "version",
            ),
            ("an uppercase name", "Mb_mod", "1.0.0", "name"),
        ] {
            s.publish_refused(
                what,
                name,
                version,
                &upload_body(name, version, ""),
                400,
                field,
            )
            .await;
        }

        // Line endings and trailing whitespace are not differences.
        let crlf = mb.replace(",\n", ",   \n").replace('\n', "\r\n");
        let archive = tar_gz("mb_mod-1.0.0", &[("MODULE.bazel", &crlf)]);
        let (status, text) = s
            .publish(
                "mb_mod",
                "1.0.0",
                &upload_body_with("mb_mod", "1.0.0", &mb, &archive),
            )
            .await;
        assert_eq!(status, 201, "{text}");
        assert_eq!(
            s.server
                .get_bytes("/modules/mb_mod/1.0.0/MODULE.bazel")
                .await
                .1,
            mb.as_bytes(),
            "the submitted MODULE.bazel is the registry's"
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn dependencies_must_resolve_and_compatibility_must_not_drop() {
    bounded(async {
        let s = PublishServer::start().await;
        let bogus = "bazel_dep(name = \"no_such_dep_a\", version = \"1.0\")\nbazel_dep(name = \"no_such_dep_b\", version = \"2.0\")\nbazel_dep(name = \"hello_lib\", version = \"1.2.0\")\n";
        let text = s
            .publish_refused(
                "two unresolved deps",
                "dep_mod",
                "1.0.0",
                &upload_body("dep_mod", "1.0.0", bogus),
                422,
                "module_bazel",
            )
            .await;
        assert!(text.contains("no_such_dep_a@1.0"), "{text}");
        assert!(text.contains("no_such_dep_b@2.0"), "{text}");
        assert!(!text.contains("hello_lib"), "hello_lib 1.2.0 resolves: {text}");
        // A version the registry lacks does not resolve either.
        let text = s
            .publish_refused(
                "unknown version of a known module",
                "dep_mod",
                "1.0.0",
                &upload_body(
                    "dep_mod",
                    "1.0.0",
                    "bazel_dep(name = \"hello_lib\", version = \"9.9.9\")\n",
                ),
                422,
                "module_bazel",
            )
            .await;
        assert!(text.contains("hello_lib@9.9.9"), "{text}");
        // Dev dependencies need not resolve.
        let extra = "bazel_dep(name = \"hello_lib\", version = \"1.2.0\")\nbazel_dep(name = \"no_such_dev_dep\", version = \"1.0\", dev_dependency = True)\n";
        let (status, text) = s
            .publish("dep_mod", "1.0.0", &upload_body("dep_mod", "1.0.0", extra))
            .await;
        assert_eq!(status, 201, "{text}");

        // hello_lib 1.2.0 has compatibility_level 1: 1.3.0 may not go back to 0.
        let text = s
            .publish_refused_after_store(
                "compatibility_level drops",
                "hello_lib",
                "1.3.0",
                &upload_body("hello_lib", "1.3.0", ""),
                422,
                "module_bazel",
            )
            .await;
        assert!(text.contains("compatibility_level"), "{text}");
        let mb = "module(\n    name = \"hello_lib\",\n    version = \"1.3.0\",\n    compatibility_level = 1,\n)\n";
        let archive = tar_gz("hello_lib-1.3.0", &[("MODULE.bazel", mb), ("BUILD", "")]);
        let mut body = upload_body_with("hello_lib", "1.3.0", mb, &archive);
        body.as_object_mut().expect("object").remove("metadata");
        let (status, text) = s.publish("hello_lib", "1.3.0", &body).await;
        assert_eq!(status, 201, "{text}");
        let meta = s.server.get_json("/modules/hello_lib/metadata.json").await;
        assert_eq!(
            meta["versions"],
            json!(["1.0.0", "1.1.0", "1.1.0.bcr.1", "1.2.0", "1.3.0"])
        );
        // The existing metadata is kept as it was (homepage, yanked versions).
        assert_eq!(
            meta["homepage"],
            "https://example.com/gf-registry-examples/hello_lib"
        );
        assert!(meta["yanked_versions"]["1.0.0"].is_string(), "{meta}");
        s.registry_check();
        s.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Malformed requests and hostile archives
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_requests_name_the_field_and_write_nothing() {
    bounded(async {
        let s = PublishServer::start().await;
        // Something in the records role and a lock file in the registry before the checks.
        let (status, text) = s
            .publish("seed_mod", "1.0.0", &upload_body("seed_mod", "1.0.0", ""))
            .await;
        assert_eq!(status, 201, "{text}");

        let (name, version) = ("bad_mod", "1.0.0");
        let path = publish_path(name, version);
        let good = upload_body(name, version, "");
        let mb = module_bazel(name, version, "");
        let prefix = format!("{name}-{version}");
        let json_of = |v: &Value| serde_json::to_vec(v).expect("json");
        let with = |key: &str, value: Value| {
            let mut b = good.clone();
            b[key] = value;
            json_of(&b)
        };
        let without = |key: &str| {
            let mut b = good.clone();
            b.as_object_mut().expect("object").remove(key);
            json_of(&b)
        };
        let archive_of = |bytes: &[u8]| json_of(&upload_body_with(name, version, &mb, bytes));
        let mb_file = format!("{prefix}/MODULE.bazel");
        let complete = tar_gz(&prefix, &[("MODULE.bazel", &mb), ("BUILD.bazel", "")]);

        let ct = Some("application/json");
        // (what, Content-Type, body, status, field named)
        type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
        let cases: Vec<Case<'_>> = vec![
            ("malformed JSON", ct, b"{\"module_bazel\": ".to_vec(), 400, "body"),
            ("not an object", ct, b"[1, 2]".to_vec(), 400, "body"),
            ("missing source", ct, without("source"), 400, "source"),
            ("missing module_bazel", ct, without("module_bazel"), 400, "module_bazel"),
            ("unknown field", ct, with("extra_field", json!(1)), 400, "extra_field"),
            ("unknown source type", ct, with("source", json!({"type": "ftp"})), 400, "source.type"),
            ("wrong Content-Type", Some("text/plain"), json_of(&good), 415, "Content-Type"),
            ("no Content-Type", None, json_of(&good), 415, "Content-Type"),
            ("strip_prefix ../x", ct, with("strip_prefix", json!("../x")), 400, "strip_prefix"),
            ("absolute strip_prefix", ct, with("strip_prefix", json!("/x")), 400, "strip_prefix"),
            ("strip_prefix not in the archive", ct, with("strip_prefix", json!("elsewhere")), 422, "strip_prefix"),
            ("patch_strip too large", ct, with("patch_strip", json!(99)), 400, "patch_strip"),
            (
                "patch name with a slash",
                ct,
                with("patches", json!([{"name": "../p.patch", "content": "x"}])),
                400,
                "patches[0].name",
            ),
            (
                "overlay path escaping",
                ct,
                with("overlay", json!([{"path": "../BUILD", "content": "x"}])),
                400,
                "overlay[0].path",
            ),
            (
                "not base64",
                ct,
                with(
                    "source",
                    json!({"type": "upload", "file_name": "x.tar.gz", "content_base64": "!!!"}),
                ),
                400,
                "source.content_base64",
            ),
            (
                "file name with a slash",
                ct,
                with(
                    "source",
                    json!({"type": "upload", "file_name": "../x.tar.gz", "content_base64": b64(&complete)}),
                ),
                400,
                "source.file_name",
            ),
            (
                "archive with a .. entry",
                ct,
                archive_of(&raw_tar_gz(&[
                    Raw::File(&mb_file, &mb),
                    Raw::File(&format!("{prefix}/../../escaped.txt"), "x"),
                ])),
                422,
                "source.content_base64",
            ),
            (
                "archive with an absolute path",
                ct,
                archive_of(&raw_tar_gz(&[
                    Raw::File(&mb_file, &mb),
                    Raw::File("/tmp/gf-registry-test-absolute.txt", "x"),
                ])),
                422,
                "source.content_base64",
            ),
            (
                "archive with an escaping symlink",
                ct,
                archive_of(&raw_tar_gz(&[
                    Raw::File(&mb_file, &mb),
                    Raw::Symlink(&format!("{prefix}/link"), "../../../../etc"),
                ])),
                422,
                "source.content_base64",
            ),
            (
                "archive writing through a symlink",
                ct,
                archive_of(&raw_tar_gz(&[
                    Raw::File(&mb_file, &mb),
                    Raw::Symlink(&format!("{prefix}/sub"), "."),
                    Raw::File(&format!("{prefix}/sub/x.txt"), "x"),
                ])),
                422,
                "source.content_base64",
            ),
            (
                "truncated gzip",
                ct,
                archive_of(&complete[..complete.len() / 2]),
                422,
                "source.content_base64",
            ),
            (
                "not an archive at all",
                ct,
                archive_of(b"this is not gzip"),
                422,
                "source.content_base64",
            ),
        ];
        for (what, content_type, body, status, field) in cases {
            s.refused(what, &path, content_type, body, status, field).await;
        }
        let mut no_metadata = good.clone();
        no_metadata.as_object_mut().expect("object").remove("metadata");
        s.publish_refused_after_store(
            "new module without metadata",
            name,
            version,
            &no_metadata,
            400,
            "metadata",
        )
        .await;
        assert!(!s.registry.path().join("modules/bad_mod").exists());
        assert!(!Path::new("/tmp/gf-registry-test-absolute.txt").exists());
        assert_eq!(s.audit_records().len(), 1, "only the seed publish is audited");
        // The same request, made valid, goes through.
        let (status, text) = s.publish(name, version, &good).await;
        assert_eq!(status, 201, "{text}");
        s.stop().await;
    })
    .await;
}

/// A refused upload leaves the mirror as it was: the archive is stored only once the request
/// validates (records role and CAS both unchanged), and a dry run never stores it.
#[tokio::test]
async fn a_refused_upload_stores_nothing_in_the_mirror() {
    bounded(async {
        let s = PublishServer::start().await;
        let (name, version) = ("bad_mod", "1.0.0");
        let prefix = format!("{name}-{version}");
        let mb = module_bazel(name, version, "");
        let complete = tar_gz(&prefix, &[("MODULE.bazel", &mb), ("BUILD.bazel", "")]);
        let other_mb = tar_gz(&prefix, &[("MODULE.bazel", "module(name = \"x\")\n")]);
        let mut bad_patch = upload_body(name, version, "");
        bad_patch["patches"] = json!([{"name": "p.patch", "content": BAD_PATCH}]);
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "truncated gzip",
                upload_body_with(name, version, &mb, &complete[..complete.len() / 2]),
                "source.content_base64",
            ),
            (
                "MODULE.bazel differs",
                upload_body_with(name, version, &mb, &other_mb),
                "module_bazel",
            ),
            ("patch does not apply", bad_patch, "patches[0]"),
            (
                "unresolved dep",
                upload_body(
                    name,
                    version,
                    "bazel_dep(name = \"nope\", version = \"1.0\")\n",
                ),
                "module_bazel",
            ),
        ];
        for (what, body, field) in cases {
            assert_mirror_untouched(&s, what, name, version, &body, 422, field).await;
        }
        let before = (s.snapshot(), snapshot_dir(&s.data().join("cas"), ""));
        let (status, text) = s
            .post_json(
                &format!("{}?dry_run=true", publish_path(name, version)),
                &upload_body(name, version, ""),
                Some(PUBLISHER),
            )
            .await;
        assert_eq!(status, 200, "{text}");
        assert_unchanged(&before.0, &s.snapshot(), "dry run");
        assert_unchanged(
            &before.1,
            &snapshot_dir(&s.data().join("cas"), ""),
            "dry run (cas)",
        );
        s.stop().await;
    })
    .await;
}

/// The checks that run inside the registry transaction come after the upload is stored.
#[tokio::test]
async fn an_upload_refused_in_the_transaction_writes_no_records() {
    bounded(async {
        let s = PublishServer::start().await;
        // A first write creates the registry's lock file, which is not at stake here.
        let (status, text) = s
            .publish("seed_mod", "1.0.0", &upload_body("seed_mod", "1.0.0", ""))
            .await;
        assert_eq!(status, 201, "{text}");
        let mut no_metadata = upload_body("bad_mod", "1.0.0", "");
        no_metadata
            .as_object_mut()
            .expect("object")
            .remove("metadata");
        assert_mirror_untouched(
            &s,
            "no metadata",
            "bad_mod",
            "1.0.0",
            &no_metadata,
            400,
            "metadata",
        )
        .await;
        let mut lower = upload_body("hello_lib", "1.3.0", "");
        lower.as_object_mut().expect("object").remove("metadata");
        assert_mirror_untouched(
            &s,
            "lower compatibility_level",
            "hello_lib",
            "1.3.0",
            &lower,
            422,
            "module_bazel",
        )
        .await;
        s.stop().await;
    })
    .await;
}

/// A publish refused with `status` naming `field` changes neither the records role, nor the
/// CAS, nor the registry.
async fn assert_mirror_untouched(
    s: &PublishServer,
    what: &str,
    name: &str,
    version: &str,
    body: &Value,
    status: u16,
    field: &str,
) {
    let cas = s.data().join("cas");
    let before = (s.snapshot(), snapshot_dir(&cas, ""));
    let (got, text) = s.publish(name, version, body).await;
    assert_eq!(got, status, "{what}: {text}");
    assert!(text.starts_with(&format!("{field}:")), "{what}: {text}");
    assert_unchanged(
        &before.0,
        &s.snapshot(),
        &format!("{what} (registry, records)"),
    );
    assert_unchanged(&before.1, &snapshot_dir(&cas, ""), &format!("{what} (cas)"));
}

// ---------------------------------------------------------------------------------------------
// 6. Concurrency
// ---------------------------------------------------------------------------------------------

/// Runs `n` publishes at once; returns their statuses and bodies in order.
async fn publish_all(s: &TestServer, jobs: Vec<(String, String, Value)>) -> Vec<(u16, String)> {
    let futures = jobs
        .iter()
        .map(|(name, version, body)| s.publish(name, version, body));
    tokio::time::timeout(TEST_TIMEOUT / 2, futures::future::join_all(futures))
        .await
        .expect("the concurrent publishes finish in time")
}

fn count(results: &[(u16, String)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_publishes_create_once() {
    bounded(async {
        let s = PublishServer::start().await;
        let body = upload_body("same_mod", "1.0.0", "");
        let jobs = (0..16)
            .map(|_| ("same_mod".to_owned(), "1.0.0".to_owned(), body.clone()))
            .collect();
        let results = publish_all(&s.server, jobs).await;
        assert_eq!(count(&results, 201), 1, "{results:?}");
        assert_eq!(count(&results, 200), 15, "{results:?}");
        let answers: Vec<Value> = results.iter().map(|(_, t)| parse(t)).collect();
        for a in &answers {
            assert_eq!(
                a["files"], answers[0]["files"],
                "every answer describes the same entry"
            );
        }
        let meta = s.server.get_json("/modules/same_mod/metadata.json").await;
        assert_eq!(meta["versions"], json!(["1.0.0"]));
        s.registry_check();
        s.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_different_publishes_of_one_version_create_once() {
    bounded(async {
        let s = PublishServer::start().await;
        let bodies: Vec<Value> = (0..16)
            .map(|i| upload_body("race_mod", "1.0.0", &format!("# variant {i}\n")))
            .collect();
        let jobs = bodies
            .iter()
            .map(|b| ("race_mod".to_owned(), "1.0.0".to_owned(), b.clone()))
            .collect();
        let results = publish_all(&s.server, jobs).await;
        assert_eq!(count(&results, 201), 1, "{results:?}");
        assert_eq!(count(&results, 409), 15, "{results:?}");
        let winner = results
            .iter()
            .position(|(s, _)| *s == 201)
            .expect("a winner");
        let served = s
            .server
            .get_bytes("/modules/race_mod/1.0.0/MODULE.bazel")
            .await
            .1;
        assert_eq!(
            served,
            bodies[winner]["module_bazel"]
                .as_str()
                .expect("mb")
                .as_bytes(),
            "the winner's entry is served"
        );
        s.registry_check();
        s.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_of_different_versions_lose_none() {
    bounded(async {
        let s = PublishServer::start().await;
        let (status, text) = s
            .publish("many_mod", "1.0.0", &upload_body("many_mod", "1.0.0", ""))
            .await;
        assert_eq!(status, 201, "{text}");
        let versions: Vec<String> = (1..=24).map(|i| format!("1.{i}.0")).collect();
        let jobs = versions
            .iter()
            .map(|v| {
                (
                    "many_mod".to_owned(),
                    v.clone(),
                    upload_body("many_mod", v, ""),
                )
            })
            .collect();
        let results = publish_all(&s.server, jobs).await;
        assert_eq!(count(&results, 201), 24, "{results:?}");
        let meta = s.server.get_json("/modules/many_mod/metadata.json").await;
        // Bazel order: 1.2.0 before 1.10.0.
        let mut want = vec!["1.0.0".to_owned()];
        want.extend(versions.iter().cloned());
        assert_eq!(meta["versions"], json!(want));
        for v in &versions {
            let (status, _) = s
                .server
                .get_bytes(&format!("/modules/many_mod/{v}/MODULE.bazel"))
                .await;
            assert_eq!(status, 200, "{v}");
        }
        assert_eq!(s.audit_records().len(), 25, "one audit record per publish");
        s.registry_check();
        s.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. Yank, unyank, deprecate
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn yank_unyank_and_deprecate_edit_metadata_only() {
    bounded(async {
        let s = PublishServer::start().await;
        for v in ["1.0.0", "1.1.0"] {
            let (status, text) = s
                .publish("yank_mod", v, &upload_body("yank_mod", v, ""))
                .await;
            assert_eq!(status, 201, "{text}");
        }
        let entry_files = |s: &PublishServer| {
            let mut all = snapshot_dir(&s.registry.path().join("modules/yank_mod"), "");
            all.remove("metadata.json");
            all
        };
        let entries = entry_files(&s);
        assert_eq!(entries.len(), 4, "{:?}", entries.keys());
        let meta = || s.server.get_json("/modules/yank_mod/metadata.json");
        let sr = &s;
        let post = |path: &str, body: Value| {
            let path = path.to_owned();
            async move { sr.post_json(&path, &body, Some(PUBLISHER)).await }
        };

        let (status, text) = post(
            "/api/v1/modules/yank_mod/1.0.0/yank",
            json!({"reason": "CVE-1"}),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(parse(&text)["status"], "edited");
        assert_eq!(meta().await["yanked_versions"], json!({"1.0.0": "CVE-1"}));
        // Yanking again with the same reason changes nothing.
        let (status, text) = post(
            "/api/v1/modules/yank_mod/1.0.0/yank",
            json!({"reason": "CVE-1"}),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(parse(&text)["status"], "unchanged");

        let before = s.snapshot();
        let (status, text) = post(
            "/api/v1/modules/yank_mod/1.1.0/yank",
            json!({"reason": "bad"}),
        )
        .await;
        assert_eq!(
            status, 409,
            "the latest of a module that is not deprecated: {text}"
        );
        let (status, text) = post(
            "/api/v1/modules/yank_mod/9.9.9/yank",
            json!({"reason": "bad"}),
        )
        .await;
        assert_eq!(status, 404, "{text}");
        let (status, text) = post(
            "/api/v1/modules/no_such_mod/1.0.0/yank",
            json!({"reason": "bad"}),
        )
        .await;
        assert_eq!(status, 404, "{text}");
        let (status, text) =
            post("/api/v1/modules/yank_mod/1.0.0/yank", json!({"reason": ""})).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.starts_with("reason:"), "{text}");
        let (status, text) = post("/api/v1/modules/yank_mod/1.0.0/yank", json!({})).await;
        assert_eq!(status, 400, "a missing reason is an empty one: {text}");
        let (status, text) = s
            .server
            .post_raw(
                "/api/v1/modules/yank_mod/1.0.0/yank",
                Some("application/json"),
                Vec::new(),
                Some(PUBLISHER),
            )
            .await;
        assert!((400..500).contains(&status), "no body: {status} {text}");
        assert_unchanged(&before, &s.snapshot(), "refused edits");

        let (status, text) = post(
            "/api/v1/modules/yank_mod/deprecate",
            json!({"reason": "use other_mod"}),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(meta().await["deprecated"], "use other_mod");
        let (status, text) = post(
            "/api/v1/modules/yank_mod/1.1.0/yank",
            json!({"reason": "bad"}),
        )
        .await;
        assert_eq!(
            status, 200,
            "a deprecated module's latest version can go: {text}"
        );
        assert_eq!(
            meta().await["yanked_versions"],
            json!({"1.0.0": "CVE-1", "1.1.0": "bad"})
        );

        let (status, text) = s
            .server
            .post_raw(
                "/api/v1/modules/yank_mod/1.0.0/unyank",
                None,
                Vec::new(),
                Some(PUBLISHER),
            )
            .await;
        assert_eq!(status, 200, "{text}");
        let m = meta().await;
        assert_eq!(m["yanked_versions"], json!({"1.1.0": "bad"}));
        assert_eq!(
            m["versions"],
            json!(["1.0.0", "1.1.0"]),
            "versions stay listed"
        );
        let (status, text) =
            post("/api/v1/modules/yank_mod/deprecate", json!({"reason": ""})).await;
        assert_eq!(status, 200, "{text}");
        assert!(meta().await.get("deprecated").is_none());

        assert_eq!(
            entries,
            entry_files(&s),
            "MODULE.bazel and source.json never change"
        );
        let actions: Vec<String> = s
            .audit_records()
            .iter()
            .map(|r| r["action"].as_str().expect("action").to_owned())
            .collect();
        for a in ["yank", "unyank", "deprecate"] {
            assert!(
                actions.iter().any(|x| x == a),
                "{a} is audited: {actions:?}"
            );
        }
        s.registry_check();
        s.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 8. Tokens
// ---------------------------------------------------------------------------------------------

fn expired_token_entry() -> String {
    format!(
        "\n[[auth.tokens]]\nname = \"expired\"\nsha256 = \"{}\"\nscopes = [\"publish:*\", \"yank:*\"]\nexpires = \"2020-01-01T00:00:00Z\"\n",
        sha256_hex(EXPIRED.as_bytes())
    )
}

#[tokio::test]
async fn publishing_needs_a_token_with_the_scope() {
    bounded(async {
        let s = PublishServer::start_with(Setup {
            extra: &expired_token_entry(),
            ..Setup::default()
        })
        .await;
        let mut bodies = Vec::new();
        let body = upload_body("fresh_mod", "1.0.0", "");
        let path = publish_path("fresh_mod", "1.0.0");
        let before = s.snapshot();

        for (what, token) in [
            ("no token", None),
            ("unknown token", Some("gfr_not_a_configured_token")),
            ("expired token", Some(EXPIRED)),
        ] {
            let mut req = s.server.client.post(s.server.url(&path)).json(&body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status(), 401, "{what}");
            let challenges: Vec<String> = resp
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .collect();
            assert_eq!(challenges.len(), 2, "{what}: {challenges:?}");
            assert!(
                challenges[0].starts_with("Basic "),
                "{what}: {challenges:?}"
            );
            assert!(
                challenges[1].starts_with("Bearer "),
                "{what}: {challenges:?}"
            );
            bodies.push(resp.text().await.expect("body"));
        }
        // An expired token can not yank either.
        let (status, text) = s
            .post_json(
                "/api/v1/modules/hello_lib/1.1.0/yank",
                &json!({"reason": "x"}),
                Some(EXPIRED),
            )
            .await;
        assert_eq!(status, 401, "{text}");
        bodies.push(text);

        let (status, text) = s.post_json(&path, &body, Some(HELLO_ONLY)).await;
        assert_eq!(status, 403, "{text}");
        assert!(
            text.contains("publish:fresh_mod"),
            "names the scope: {text}"
        );
        bodies.push(text);
        let (status, text) = s
            .post_json(
                "/api/v1/modules/hello_lib/1.1.0/yank",
                &json!({"reason": "x"}),
                Some(HELLO_ONLY),
            )
            .await;
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("yank:hello_lib"), "names the scope: {text}");
        bodies.push(text);
        assert_unchanged(&before, &s.snapshot(), "refused tokens");

        let (status, text) = s
            .post_json(
                &publish_path("hello_new", "1.0.0"),
                &upload_body("hello_new", "1.0.0", ""),
                Some(HELLO_ONLY),
            )
            .await;
        assert_eq!(status, 201, "{text}");
        bodies.push(text);
        assert_eq!(s.audit_records()[0]["actor"], "hello-only");

        // HTTP Basic, the token as the password (a .netrc entry).
        let resp = s
            .server
            .client
            .post(s.server.url(&path))
            .basic_auth("anyone", Some(PUBLISHER))
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 201);
        bodies.push(resp.text().await.expect("body"));

        // Refreshing the registry needs the admin scope.
        for (token, want) in [(None, 401), (Some(PUBLISHER), 403), (Some(ADMIN), 200)] {
            let mut req = s
                .server
                .client
                .post(s.server.url("/admin/registry/refresh"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status(), want, "refresh with {token:?}");
            bodies.push(resp.text().await.expect("body"));
        }

        for b in &bodies {
            for t in [PUBLISHER, HELLO_ONLY, EXPIRED, ADMIN] {
                assert!(!b.contains(t), "a token in a response: {b}");
            }
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reads_can_require_a_token() {
    bounded(async {
        let s = PublishServer::start_with(Setup {
            head: "[auth]\nrequire_token_for_reads = true\n",
            ..Setup::default()
        })
        .await;
        let resp = s.server.get("/bazel_registry.json").await;
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .count(),
            2
        );
        assert_eq!(
            s.server
                .get("/modules/hello_lib/metadata.json")
                .await
                .status(),
            401
        );
        let resp = s
            .server
            .client
            .get(s.server.url("/bazel_registry.json"))
            .bearer_auth("gfr_not_a_configured_token")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 401);
        for token in [PUBLISHER, HELLO_ONLY] {
            let resp = s
                .server
                .client
                .get(s.server.url("/bazel_registry.json"))
                .bearer_auth(token)
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), 200);
            let resp = s
                .server
                .client
                .get(s.server.url("/modules/hello_lib/metadata.json"))
                .basic_auth("anyone", Some(token))
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), 200);
        }
        assert_eq!(s.server.get("/healthz").await.status(), 200);
        // Publishing still works with the token.
        let (status, text) = s
            .publish("read_mod", "1.0.0", &upload_body("read_mod", "1.0.0", ""))
            .await;
        assert_eq!(status, 201, "{text}");
        s.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 9. Dry run
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_dry_run_validates_and_writes_nothing() {
    bounded(async {
        let s = PublishServer::start().await;
        let (status, text) = s
            .publish("seed_mod", "1.0.0", &upload_body("seed_mod", "1.0.0", ""))
            .await;
        assert_eq!(status, 201, "{text}");
        let before = s.snapshot();
        let dry =
            |name: &str, version: &str| format!("{}?dry_run=true", publish_path(name, version));

        let body = upload_body("dry_mod", "1.0.0", "");
        let (status, text) = s
            .post_json(&dry("dry_mod", "1.0.0"), &body, Some(PUBLISHER))
            .await;
        assert_eq!(status, 200, "{text}");
        let answer = parse(&text);
        assert_eq!(answer["status"], "dry_run", "{text}");
        assert!(
            answer["files"]
                .as_object()
                .expect("files")
                .contains_key("modules/dry_mod/1.0.0/source.json"),
            "{text}"
        );
        assert_unchanged(&before, &s.snapshot(), "a dry run");
        assert_eq!(
            s.server
                .get("/modules/dry_mod/1.0.0/MODULE.bazel")
                .await
                .status(),
            404
        );
        assert_eq!(
            s.server
                .get("/modules/dry_mod/metadata.json")
                .await
                .status(),
            404
        );

        // A dry run checks what a publish checks.
        let (status, text) = s
            .post_json(
                &dry("dry_mod", "1.0.0"),
                &upload_body(
                    "dry_mod",
                    "1.0.0",
                    "bazel_dep(name = \"nope\", version = \"1.0\")\n",
                ),
                Some(PUBLISHER),
            )
            .await;
        assert_eq!(status, 422, "{text}");
        let (status, text) = s
            .post_json(
                &dry("seed_mod", "1.0.0"),
                &upload_body("seed_mod", "1.0.0", "# other\n"),
                Some(PUBLISHER),
            )
            .await;
        assert_eq!(status, 409, "{text}");
        assert_unchanged(&before, &s.snapshot(), "refused dry runs");

        // The real publish afterwards gives the entry the dry run announced.
        let (status, text) = s.publish("dry_mod", "1.0.0", &body).await;
        assert_eq!(status, 201, "{text}");
        let real = parse(&text);
        for (path, sha) in answer["files"].as_object().expect("files") {
            if !path.ends_with("metadata.json") {
                assert_eq!(&real["files"][path], sha, "{path}");
            }
        }
        s.stop().await;
    })
    .await;
}

/// Regression (found by `fuzz/`, target `module_file`): a deeply nested MODULE.bazel overflowed
/// the parser's stack and aborted the whole server. It is now a 400 naming `module_bazel`.
#[tokio::test]
async fn a_deeply_nested_module_bazel_is_refused_and_the_server_lives() {
    bounded(async {
        let s = PublishServer::start().await;
        let nested = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/module_file-deep-nesting"),
        )
        .expect("regression input");
        let mut body = upload_body("deep_mod", "1.0.0", "");
        body["module_bazel"] = Value::String(format!(
            "module(name = \"deep_mod\", version = \"1.0.0\")\n{nested}"
        ));
        let (status, text) = s.publish("deep_mod", "1.0.0", &body).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.starts_with("module_bazel"), "{text}");
        let (status, _) = s.server.get_bytes("/healthz").await;
        assert_eq!(status, 200, "the server survived");
        s.server.stop().await;
    })
    .await;
}
