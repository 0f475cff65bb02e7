//! Properties every publishing body has, checked across all of them: publish, yank, unyank and
//! deprecate refuse duplicate keys at every level, naming the JSON path, and write nothing.

use serde_json::{Value, json};

use crate::support::publish::{PublishServer, bounded, publish_path, tar_gz, upload_body_with};

/// `body` as JSON text with `extra` inserted right after the first `anchor` (which must occur):
/// a way to repeat a key that a `serde_json::Value` cannot hold twice.
fn with_repeated(body: &Value, anchor: &str, extra: &str) -> Vec<u8> {
    let text = serde_json::to_string(body).expect("json");
    let at = text
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} in {text}"))
        + anchor.len();
    format!("{}{extra}{}", &text[..at], &text[at..]).into_bytes()
}

/// A publish body of `dup_mod@1.0.0` with one patch and one overlay file, valid as it is.
fn full_body() -> Value {
    let mb = "module(\n    name = \"dup_mod\",\n    version = \"1.0.0\",\n    bazel_compatibility = [\">=7.2.1\"],\n)\n";
    let archive = tar_gz(
        "dup_mod-1.0.0",
        &[("MODULE.bazel", mb), ("greet.txt", "hello\nworld\n")],
    );
    let mut body = upload_body_with("dup_mod", "1.0.0", mb, &archive);
    let patch = "--- a/greet.txt\n+++ b/greet.txt\n@@ -1,2 +1,2 @@\n hello\n-world\n+there\n";
    body["patches"] = json!([{"name": "fix.patch", "content": patch}]);
    body["patch_strip"] = json!(1);
    body["overlay"] = json!([{"path": "BUILD.bazel", "content": "# overlay\n"}]);
    body
}

#[tokio::test]
async fn duplicate_keys_are_refused_in_every_body_naming_the_path() {
    bounded(async {
        let s = PublishServer::start().await;
        let good = full_body();
        let ct = Some("application/json");
        let publish = publish_path("dup_mod", "1.0.0");
        // (what, path, body, field named)
        let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
            (
                "publish, top level",
                publish.clone(),
                with_repeated(&good, "{", r#""strip_prefix":"elsewhere","#),
                "strip_prefix",
            ),
            (
                "publish, in source",
                publish.clone(),
                with_repeated(&good, r#""source":{"#, r#""file_name":"other.tar.gz","#),
                "source.file_name",
            ),
            (
                "publish, in metadata.maintainers[0]",
                publish.clone(),
                with_repeated(
                    &good,
                    r#""maintainers":[{"#,
                    r#""email":"evil@example.com","#,
                ),
                "metadata.maintainers[0].email",
            ),
            (
                "publish, in patches[0]",
                publish.clone(),
                with_repeated(&good, r#""patches":[{"#, r#""name":"b.patch","#),
                "patches[0].name",
            ),
            (
                "publish, in overlay[0]",
                publish.clone(),
                with_repeated(&good, r#""overlay":[{"#, r#""path":"other.bazel","#),
                "overlay[0].path",
            ),
            (
                "yank",
                "/api/v1/modules/hello_lib/1.2.0/yank".to_owned(),
                br#"{"reason": "harmless", "reason": "CVE-1"}"#.to_vec(),
                "reason",
            ),
            (
                "deprecate",
                "/api/v1/modules/hello_lib/deprecate".to_owned(),
                br#"{"reason": "", "reason": "use x"}"#.to_vec(),
                "reason",
            ),
            (
                "unyank",
                "/api/v1/modules/hello_lib/1.2.0/unyank".to_owned(),
                br#"{"a": 1, "a": 1}"#.to_vec(),
                "a",
            ),
        ];
        for (what, path, body, field) in cases {
            let text = s.refused(what, &path, ct, body, 400, field).await;
            assert!(text.contains("duplicate key"), "{what}: {text}");
        }
        assert!(s.audit_records().is_empty(), "nothing is audited");
        // The same body without the duplicates goes through.
        let (status, text) = s.publish("dup_mod", "1.0.0", &good).await;
        assert_eq!(status, 201, "{text}");
        s.stop().await;
    })
    .await;
}
