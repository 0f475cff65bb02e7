//! `unpack::patch::apply` with an arbitrary patch against a small fixed tree.
//!
//! Input: byte 0 picks the strip count (`% 3`); the rest is the patch. Layout:
//! `base/root/{tree,outside/secret.txt}`; the patch is applied to `tree`, which holds
//! `hello_lib` 1.1.0's `BUILD.bazel`, `MODULE.bazel` and `hello.cc`, `src/util.h`, an
//! executable `tools/run.sh`, an empty `empty.txt`, and two symlinks leading out of it
//! (`escape -> ../outside`, `escape_file -> ../outside/secret.txt`).
//!
//! After `apply`, whatever the result: `base` and `root` hold exactly what they held and
//! `outside` is unchanged (nothing was written outside the tree, not even through the
//! symlinks), and nothing below `tree` is a device, FIFO or socket or has a shared hard link.
//! On an error other than I/O the tree is exactly as before (nothing is written unless every
//! hunk applies). On success every changed file name is a clean relative path.
#![no_main]

#[path = "common/fs_check.rs"]
mod fs_check;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use unpack::patch::{Patch, PatchError, apply};

const BUILD: &str = r#"cc_library(
    name = "hello_lib",
    srcs = ["hello.cc"],
    hdrs = ["hello.h"],
    include_prefix = "hello_lib",
    visibility = ["//visibility:public"],
)

cc_test(
    name = "hello_test",
    size = "small",
    srcs = ["hello_test.cc"],
    deps = [":hello_lib"],
)
"#;

const MODULE: &str = r#"module(
    name = "hello_lib",
    version = "1.1.0",
    compatibility_level = 1,
)
"#;

const HELLO_CC: &str = r#"#include "hello_lib/hello.h"

namespace hello {

std::string Greet(const std::string& name) {
  return "Hello, " + name + "!";
}

}  // namespace hello
"#;

/// No trailing newline on purpose.
const UTIL_H: &str = "#pragma once\n\nint util();\n// end";

const RUN_SH: &str = "#!/bin/sh\necho run\n";

const SECRET: &str = "outside the tree\n";

fn write(path: &Path, content: &str, mode: u32) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn set_up(root: &Path) {
    let tree = root.join("tree");
    write(&tree.join("BUILD.bazel"), BUILD, 0o644);
    write(&tree.join("MODULE.bazel"), MODULE, 0o644);
    write(&tree.join("hello.cc"), HELLO_CC, 0o644);
    write(&tree.join("src/util.h"), UTIL_H, 0o644);
    write(&tree.join("tools/run.sh"), RUN_SH, 0o755);
    write(&tree.join("empty.txt"), "", 0o644);
    write(&root.join("outside/secret.txt"), SECRET, 0o644);
    symlink("../outside", tree.join("escape")).expect("symlink");
    symlink("../outside/secret.txt", tree.join("escape_file")).expect("symlink");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, content)) = data.split_first() else {
        return;
    };
    let strip = u32::from(selector % 3);

    let base = tempfile::Builder::new()
        .prefix("gf-fuzz-patch-")
        .tempdir()
        .expect("temp dir");
    let root = base.path().join("root");
    set_up(&root);
    let tree = root.join("tree");
    let outside_before = fs_check::snapshot(&root.join("outside"));
    let tree_before = fs_check::snapshot(&tree);

    let patch = Patch {
        name: "fuzz.patch",
        content,
    };
    let result = apply(&tree, &patch, strip);
    if fs_check::debug() {
        eprintln!("patch -p{strip}: {result:?}");
    }

    assert_eq!(
        fs_check::names(base.path()),
        ["root"],
        "wrote next to root: {result:?}"
    );
    assert_eq!(
        fs_check::names(&root),
        ["outside", "tree"],
        "wrote next to the tree: {result:?}"
    );
    assert_eq!(
        fs_check::snapshot(&root.join("outside")),
        outside_before,
        "changed a file outside the tree: {result:?}"
    );
    fs_check::walk(&tree, &mut |path, meta| {
        let ft = meta.file_type();
        assert!(
            ft.is_dir() || ft.is_file() || ft.is_symlink(),
            "{}",
            path.display()
        );
        if ft.is_file() {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(meta.nlink(), 1, "{}: hard-linked", path.display());
        }
    });
    match result {
        Ok(report) => {
            for f in &report.files_changed {
                assert!(
                    !f.is_empty() && !f.starts_with('/') && !f.contains(['\\', '\0']),
                    "{f:?}"
                );
                assert!(
                    f.split('/').all(|s| !matches!(s, "" | "." | "..")),
                    "changed file {f:?} is not a clean relative path"
                );
            }
        }
        Err(PatchError::Io { .. }) => {}
        Err(e) => {
            assert_eq!(
                fs_check::snapshot(&tree),
                tree_before,
                "the tree changed although the patch was refused: {e}"
            );
        }
    }
});
