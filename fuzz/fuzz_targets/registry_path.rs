//! `RegistryPath::parse` on arbitrary request paths. What parses names a file inside the
//! registry tree: its `tree_path` is relative, has no empty, `.` or `..` segment, no backslash
//! or NUL, and (when it needs no percent-decoding) parses back to the same tree path.
#![no_main]

use bzlmod::RegistryPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = RegistryPath::parse(s) else {
        return;
    };
    let tree = p.tree_path();
    assert!(!tree.starts_with('/'), "{s:?} -> {tree:?}");
    assert!(!tree.contains(['\\', '\0']), "{s:?} -> {tree:?}");
    for seg in tree.split('/') {
        assert!(!matches!(seg, "" | "." | ".."), "{s:?} -> {tree:?}");
    }
    assert!(
        tree == "bazel_registry.json" || tree.starts_with("modules/"),
        "{s:?} -> {tree:?}"
    );
    assert_eq!(p.module().is_some(), tree.starts_with("modules/"));
    if p.version().is_some() {
        assert!(p.module().is_some());
    }
    let _ = p.kind().is_immutable();
    if !tree.contains('%') {
        let again = RegistryPath::parse(&format!("/{tree}"))
            .unwrap_or_else(|e| panic!("{s:?} -> {tree:?}, which does not parse: {e}"));
        assert_eq!(again.tree_path(), tree, "{s:?}");
        assert_eq!(again.module(), p.module());
    }
});
