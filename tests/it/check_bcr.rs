//! `registry check` on a real BCR snapshot (`../shared/data/bcr-51181a8.tar.zst`, 1,247 modules,
//! 44,598 files): no errors but the ones Bazel itself fails on, warnings counted per rule.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gf_registry::registry::check::{Severity, check_registry};
use gf_registry::source::RegistrySource;

/// Versions of the snapshot that Bazel cannot resolve, each with Bazel's own error: they are
/// errors, and the only ones.
const KNOWN_BROKEN: &[(&str, &str)] = &[
    // "the MODULE.bazel file of postgres@14.18 declares a different name (postgres14)"
    (
        "modules/postgres/14.18/MODULE.bazel",
        "module(name = \"postgres14\") does not match",
    ),
    // "the MODULE.bazel file of rules_pitest@0.0.0 declares a different name (...)"
    (
        "modules/rules_pitest/0.0.0/MODULE.bazel",
        "module(name = \"com_bookingcom_rules_pitest\") does not match",
    ),
];

fn snapshot() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/bcr-51181a8.tar.zst");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing, and CI is set",
        path.display()
    );
    eprintln!("skipped: {} is missing (CI is not set)", path.display());
    None
}

#[test]
fn the_real_bcr_has_no_errors_but_bazels_own() {
    let Some(archive) = snapshot() else {
        return;
    };
    // 44,598 small files: on tmpfs when there is one, so a busy disk does not set the pace
    // (extracting and deleting them on a contended disk takes minutes, checking them seconds).
    let dir = tempfile::Builder::new()
        .prefix("check-bcr")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir");
    let started = Instant::now();
    let file = std::fs::File::open(&archive).expect("open snapshot");
    let decoder = zstd::stream::read::Decoder::new(file).expect("zstd");
    tar::Archive::new(decoder)
        .unpack(dir.path())
        .expect("extract snapshot");
    let extracted = started.elapsed();
    let root = dir.path().join("bcr");
    let source = RegistrySource::open(&root, None).expect("open");
    let tree = source.current().expect("tree");
    let report = check_registry(tree.as_ref()).expect("check");
    eprintln!(
        "extracted in {extracted:?}, checked in {:?}: {} modules, {} versions, {} files",
        started.elapsed() - extracted,
        report.modules,
        report.versions,
        report.files
    );
    assert_eq!(report.modules, 1247);
    for (rule, n) in report.by_rule(Severity::Warning) {
        eprintln!("warning {rule}: {n}");
    }
    let errors: Vec<String> = report
        .problems
        .iter()
        .filter(|p| p.severity() == Severity::Error)
        .map(ToString::to_string)
        .collect();
    let unexpected: Vec<&String> = errors
        .iter()
        .filter(|e| {
            !KNOWN_BROKEN
                .iter()
                .any(|(file, what)| e.starts_with(&format!("{file}: error: ")) && e.contains(what))
        })
        .collect();
    assert!(unexpected.is_empty(), "unexpected errors:\n{unexpected:#?}");
    assert_eq!(errors.len(), KNOWN_BROKEN.len(), "{errors:#?}");
    // The false refusals of before are at most warnings now.
    let warned = |rule: &str| report.by_rule(Severity::Warning).get(rule).copied();
    assert_eq!(warned("patch-strip-string"), Some(2));
    assert_eq!(warned("patch-path-irregular"), Some(18));
    assert!(warned("stray-file").is_some_and(|n| n >= 100));
}

#[test]
fn warnings_alone_exit_0_unless_strict() {
    use crate::support::spawned::bin;
    use crate::support::{copy_tree, example_registry};
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&example_registry(), dir.path());
    std::fs::write(dir.path().join("modules/hello_lib/README.md"), "# hello\n").expect("write");
    let out = bin()
        .args(["registry", "check"])
        .arg(dir.path())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("modules/hello_lib/README.md: warning: unexpected file"),
        "{stdout}"
    );
    assert!(
        stderr.contains("0 error(s), 1 warning(s) (stray-file 1)"),
        "{stderr}"
    );
    let strict = bin()
        .args(["registry", "check", "--strict"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(strict.status.code(), Some(1));
}
