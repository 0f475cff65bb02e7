//! The registry's JSON readers and `metadata.json` editors on arbitrary bytes: none may panic.
//!
//! - `registry_json::parse_object`: what parses survives `entry::to_registry_json` and re-parses with the
//!   same keys; `archive_ref` and `overlay_lists` agree with it.
//! - `entry::add_version(Some(bytes), ..)`: `None` exactly when `lists_version` says the version
//!   is there already; new bytes re-parse, list the version once, keep parseable versions in
//!   Bazel's order.
//! - `entry::add_version(None, Some(spec), ..)` with the input read as a `MetadataSpec`.
//! - `entry::edit_metadata` with yank / unyank / deprecate edits of the listed versions: new
//!   bytes re-parse, and the same edit again changes nothing (`Ok(None)`).
#![no_main]

use bzlmod::entry::{MetadataEdit, add_version, edit_metadata, lists_version, to_registry_json};
use bzlmod::publish_request::MetadataSpec;
use bzlmod::registry_json::{archive_ref, overlay_lists, parse_object};
use bzlmod::version::ModuleVersion;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The `versions` of a freshly written `metadata.json`: parseable ones come first, in order.
fn check_versions(bytes: &[u8], added: &str) {
    let obj = parse_object(bytes).expect("written metadata.json re-parses");
    let versions = obj
        .get("versions")
        .and_then(Value::as_array)
        .expect("written metadata.json has a versions list");
    assert_eq!(
        versions
            .iter()
            .filter(|v| v.as_str() == Some(added))
            .count(),
        1,
        "{added} listed once"
    );
    let parsed: Vec<Option<ModuleVersion>> = versions
        .iter()
        .map(|v| v.as_str().and_then(|s| ModuleVersion::parse(s).ok()))
        .collect();
    let first_bad = parsed
        .iter()
        .position(Option::is_none)
        .unwrap_or(parsed.len());
    assert!(
        parsed[first_bad..].iter().all(Option::is_none),
        "unparseable versions go last"
    );
    let good: Vec<&ModuleVersion> = parsed[..first_bad].iter().flatten().collect();
    assert!(
        good.windows(2).all(|w| w[0] <= w[1]),
        "versions in Bazel order"
    );
}

fn try_add(existing: &[u8], version: &str) {
    let Ok(v) = ModuleVersion::parse(version) else {
        return;
    };
    match add_version(Some(existing), None, &v) {
        Ok(None) => assert!(lists_version(existing, version)),
        Ok(Some(out)) => {
            assert!(!lists_version(existing, version));
            assert!(lists_version(&out, version));
            check_versions(&out, version);
        }
        Err(_) => {}
    }
}

fn try_edit(metadata: &[u8], edit: &MetadataEdit<'_>) {
    if let Ok(Some(out)) = edit_metadata(metadata, edit) {
        let obj = parse_object(&out).expect("edited metadata.json re-parses");
        match edit {
            MetadataEdit::Yank(v, reason) => {
                let yanked = obj.get("yanked_versions").and_then(Value::as_object);
                assert_eq!(
                    yanked.and_then(|y| y.get(*v)).and_then(Value::as_str),
                    Some(*reason)
                );
            }
            MetadataEdit::Unyank(v) => {
                let yanked = obj.get("yanked_versions").and_then(Value::as_object);
                assert!(yanked.is_none_or(|y| !y.contains_key(*v)));
            }
            MetadataEdit::Deprecate(reason) => {
                let now = obj.get("deprecated").and_then(Value::as_str).unwrap_or("");
                assert_eq!(now, *reason);
            }
        }
        match edit_metadata(&out, edit) {
            Ok(None) => {}
            other => panic!("the same edit twice changed something again: {edit:?} -> {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_object(data);
    if let Ok(obj) = &parsed {
        let written = to_registry_json(&Value::Object(obj.clone()));
        let again = parse_object(&written).expect("to_registry_json output re-parses");
        assert!(again.keys().eq(obj.keys()), "keys survive a write");
        if let Some(overlay) = obj.get("overlay").and_then(Value::as_object) {
            for key in overlay.keys().take(4) {
                assert!(overlay_lists(data, key));
            }
        }
    }
    assert!(!overlay_lists(data, "\u{0}not-a-key") || parsed.is_ok());
    let _ = overlay_lists(data, "BUILD.bazel");
    if let Some(r) = archive_ref("m", "1.0", data) {
        assert!(parsed.is_ok());
        assert!(!r.urls.is_empty());
        assert_eq!(
            r.integrity.digest().len(),
            r.integrity.algorithm().digest_len()
        );
    }

    // metadata.json edits, on the versions the input lists plus a few fixed ones.
    let mut versions: Vec<String> = parsed
        .as_ref()
        .ok()
        .and_then(|o| o.get("versions"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .take(3)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    versions.push("1.0".to_owned());
    for v in &versions {
        try_edit(data, &MetadataEdit::Yank(v, "broken build"));
        try_edit(data, &MetadataEdit::Yank(v, " "));
        try_edit(data, &MetadataEdit::Unyank(v));
        try_add(data, v);
        try_add(data, &format!("{v}.1"));
        try_add(data, &format!("{v}-rc1"));
    }
    try_edit(data, &MetadataEdit::Deprecate("use other_module"));
    try_edit(data, &MetadataEdit::Deprecate(""));
    for v in ["0.0.1", "1.0.0", "999999999999"] {
        try_add(data, v);
    }

    // A new module's metadata.json, from a spec read out of the input.
    if let Ok(spec) = serde_json::from_slice::<MetadataSpec>(data) {
        let v = ModuleVersion::parse("1.0").expect("valid version");
        if let Ok(Some(out)) = add_version(None, Some(&spec), &v) {
            check_versions(&out, "1.0");
        }
    }
});
