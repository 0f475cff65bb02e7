//! Shared fixtures: the example registry, file trees, hashes.

use std::path::{Path, PathBuf};

/// The example registry shipped in the repository.
pub(crate) fn example_registry() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("registry")
}

/// A temp path as `&str` (for flags).
pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Every regular file under `root`, as `/`-separated relative paths, sorted.
pub(crate) fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Copies a directory tree.
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    for rel in files_under(from) {
        let dst = to.join(&rel);
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from.join(&rel), dst).expect("copy");
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The shared BCR snapshot, beside the checkout (`../shared/data`): commit 51181a8, 1,247
/// modules, 44,598 files.
pub(crate) fn bcr_snapshot() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/bcr-51181a8.tar.zst")
}

/// The snapshot's files whose path (`bazel_registry.json`, `modules/...`) `wanted` accepts:
/// URL path -> bytes.
pub(crate) fn bcr_snapshot_files(
    wanted: impl Fn(&str) -> bool,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(bcr_snapshot()).expect("the shared BCR snapshot");
    let decoder = zstd::stream::read::Decoder::new(file).expect("zstd");
    let mut archive = tar::Archive::new(decoder);
    let mut out = std::collections::BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let Some(rel) = path.strip_prefix("bcr/") else {
            continue;
        };
        if wanted(rel) {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read entry");
            out.insert(format!("/{rel}"), bytes);
        }
    }
    out
}
