//! `unpack::archive::extract` on arbitrary bytes, with small limits (1000 entries, 16 MiB).
//!
//! Input: byte 0 picks the archive type (bits 0-2, `% 7`, in `TYPES` order) and, in bits 3-4, the
//! `strip_prefix` (`""`, `pkg`, `pkg/sub`, `a`); the rest is the archive file. Layout:
//! `base/l1/root/{archive,dest}`, `dest` not created beforehand.
//!
//! After extraction, whatever the result: no entry was added next to `dest` (in `root`, `l1`
//! or `base`), and every symlink under `dest` resolves inside it (following the other
//! symlinks, also through missing files); no device, FIFO, socket, setuid/setgid/sticky bit or
//! shared hard link. On success: at most 1000 entries and 16 MiB, and `files` counts the files
//! and symlinks written. On error: `dest` is absent again (the call created it).
#![no_main]

#[path = "common/fs_check.rs"]
mod fs_check;

use std::fs;

use libfuzzer_sys::fuzz_target;
use unpack::archive::{ArchiveType, Limits, extract};

const TYPES: [ArchiveType; 7] = [
    ArchiveType::TarGz,
    ArchiveType::Tgz,
    ArchiveType::TarXz,
    ArchiveType::TarZst,
    ArchiveType::TarBz2,
    ArchiveType::Tar,
    ArchiveType::Zip,
];

const PREFIXES: [&str; 4] = ["", "pkg", "pkg/sub", "a"];

const LIMITS: Limits = Limits {
    max_entries: 1000,
    max_total_bytes: 16 * 1024 * 1024,
    max_ratio: 200,
    max_path_len: 4096,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, archive_bytes)) = data.split_first() else {
        return;
    };
    let kind = TYPES[usize::from(selector & 7) % TYPES.len()];
    let strip_prefix = PREFIXES[usize::from(selector >> 3) % PREFIXES.len()];

    let base = tempfile::Builder::new()
        .prefix("gf-fuzz-archive-")
        .tempdir()
        .expect("temp dir");
    let root = base.path().join("l1").join("root");
    fs::create_dir_all(&root).expect("create root");
    let archive = root.join("archive");
    fs::write(&archive, archive_bytes).expect("write archive");
    let dest = root.join("dest");

    let result = extract(&archive, kind, strip_prefix, &dest, &LIMITS);
    if fs_check::debug() {
        eprintln!("archive {kind:?} strip_prefix {strip_prefix:?}: {result:?}");
    }

    assert_eq!(
        fs_check::names(base.path()),
        ["l1"],
        "wrote next to l1 ({kind:?})"
    );
    assert_eq!(
        fs_check::names(&base.path().join("l1")),
        ["root"],
        "wrote next to root"
    );
    let in_root = fs_check::names(&root);
    assert!(
        in_root == ["archive", "dest"] || in_root == ["archive"],
        "wrote next to dest: {in_root:?} ({kind:?}, result {result:?})"
    );
    assert_eq!(
        fs::read(&archive).expect("read archive"),
        archive_bytes,
        "archive changed"
    );
    if fs::symlink_metadata(&dest).is_ok() {
        assert!(
            fs::symlink_metadata(&dest).expect("dest").is_dir(),
            "dest is not a directory"
        );
        fs_check::assert_contained(&dest);
    }
    match result {
        Ok(ex) => {
            assert_eq!(ex.root, dest);
            let mut entries = 0u64;
            let mut files = 0u64;
            fs_check::walk(&dest, &mut |_, meta| {
                entries += 1;
                if !meta.is_dir() {
                    files += 1;
                }
            });
            assert!(entries <= LIMITS.max_entries, "{entries} entries extracted");
            assert!(
                ex.bytes <= LIMITS.max_total_bytes,
                "{} bytes extracted",
                ex.bytes
            );
            assert_eq!(
                ex.files, files,
                "Extracted::files vs files on disk ({kind:?})"
            );
        }
        Err(e) => {
            assert!(
                fs::symlink_metadata(&dest).is_err(),
                "dest left behind after an error ({kind:?}): {e}: {:?}",
                fs_check::snapshot(&dest).keys().collect::<Vec<_>>()
            );
        }
    }
});
