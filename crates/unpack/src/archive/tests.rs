//! `extract` on hand-built archives: every refusal of the module documentation, and the
//! limits.

use std::io::Write;
use std::path::PathBuf;

use super::*;
use std::io::Cursor;
use tar::{EntryType, Header};

/// One tar entry; names and link targets are written raw, unchecked.
struct E {
    name: &'static str,
    kind: EntryType,
    data: Vec<u8>,
    link: &'static str,
    mode: u32,
}

fn file(name: &'static str, data: &str) -> E {
    E {
        name,
        kind: EntryType::Regular,
        data: data.as_bytes().to_vec(),
        link: "",
        mode: 0o644,
    }
}

fn exe(name: &'static str, data: &str) -> E {
    E {
        mode: 0o775,
        ..file(name, data)
    }
}

fn dir(name: &'static str) -> E {
    E {
        kind: EntryType::Directory,
        mode: 0o755,
        ..file(name, "")
    }
}

fn link(name: &'static str, kind: EntryType, target: &'static str) -> E {
    E {
        kind,
        link: target,
        ..file(name, "")
    }
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            gnu.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        header.set_entry_type(e.kind);
        header.set_size(e.data.len() as u64);
        header.set_mode(e.mode);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, &e.data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

fn compress(kind: ArchiveType, tar: &[u8]) -> Vec<u8> {
    match kind {
        ArchiveType::TarGz | ArchiveType::Tgz => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(tar).unwrap();
            enc.finish().unwrap()
        }
        ArchiveType::TarXz => {
            let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
            enc.write_all(tar).unwrap();
            enc.finish().unwrap()
        }
        ArchiveType::TarZst => {
            // With a frame checksum, as the zstd command line writes by default.
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            enc.include_checksum(true).unwrap();
            enc.write_all(tar).unwrap();
            enc.finish().unwrap()
        }
        ArchiveType::TarBz2 => {
            let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            enc.write_all(tar).unwrap();
            enc.finish().unwrap()
        }
        ArchiveType::Tar => tar.to_vec(),
        ArchiveType::Zip => unreachable!("zip archives are built by zip_of"),
    }
}

enum Z {
    File(&'static str, Vec<u8>, u32),
    Dir(&'static str),
    Symlink(&'static str, &'static str),
}

fn zip_of(entries: &[Z]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1));
    for e in entries {
        match e {
            Z::File(name, data, mode) => {
                writer
                    .start_file(*name, options.unix_permissions(*mode))
                    .unwrap();
                writer.write_all(data).unwrap();
            }
            Z::Dir(name) => writer.add_directory(*name, options).unwrap(),
            Z::Symlink(name, target) => writer.add_symlink(*name, *target, options).unwrap(),
        }
    }
    writer.finish().unwrap().into_inner()
}

/// Replaces every occurrence of `from` by `to` (same length) in an archive's bytes, to
/// forge names a writer would refuse.
fn forge(mut bytes: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    let mut hits = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from.as_bytes() {
            bytes[i..i + from.len()].copy_from_slice(to.as_bytes());
            hits += 1;
        }
        i += 1;
    }
    assert!(hits > 0, "`{from}` not found");
    bytes
}

struct Run {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    result: Result<Extracted, ArchiveError>,
}

fn run_with(bytes: &[u8], kind: ArchiveType, prefix: &str, limits: &Limits) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join(format!("source.{}", kind.as_str()));
    fs::write(&archive, bytes).unwrap();
    let dest = tmp.path().join("out");
    let result = extract(&archive, kind, prefix, &dest, limits);
    if result.is_err() {
        assert!(
            !dest.exists(),
            "a failed extraction left {}",
            dest.display()
        );
    }
    Run {
        _tmp: tmp,
        dest,
        result,
    }
}

fn run(bytes: &[u8], kind: ArchiveType, prefix: &str) -> Run {
    run_with(bytes, kind, prefix, &Limits::default())
}

fn err(run: Run) -> ArchiveError {
    match run.result {
        Ok(done) => panic!("extraction succeeded: {done:?}"),
        Err(err) => err,
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

fn sample() -> Vec<E> {
    vec![
        E {
            kind: EntryType::XGlobalHeader,
            ..file(
                "pax_global_header",
                "52 comment=0123456789abcdef0123456789abcdef01234567\n",
            )
        },
        dir("proj-1.0/"),
        file(
            "proj-1.0/MODULE.bazel",
            "module(name = \"proj\", version = \"1.0\")\n",
        ),
        dir("proj-1.0/src/"),
        file("proj-1.0/src/lib.c", "int x;\n"),
        exe("proj-1.0/tools/run.sh", "#!/bin/sh\n"),
        link("proj-1.0/src/alias.c", EntryType::Symlink, "lib.c"),
        link("proj-1.0/top", EntryType::Symlink, "src/../MODULE.bazel"),
        link("proj-1.0/copy.c", EntryType::Link, "proj-1.0/src/lib.c"),
        file("other/ignored.txt", "outside the prefix"),
    ]
}

fn check_sample(run: &Run) {
    let done = run.result.as_ref().unwrap();
    let root = &run.dest;
    assert_eq!(done.root, *root);
    assert_eq!(done.files, 6);
    let module = "module(name = \"proj\", version = \"1.0\")\n";
    assert_eq!(
        done.bytes,
        (module.len() + "int x;\n".len() * 2 + "#!/bin/sh\n".len()) as u64
    );
    assert_eq!(
        fs::read_to_string(root.join("MODULE.bazel")).unwrap(),
        "module(name = \"proj\", version = \"1.0\")\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("src/alias.c")).unwrap(),
        "int x;\n"
    );
    assert_eq!(
        fs::read_link(root.join("src/alias.c")).unwrap(),
        Path::new("lib.c")
    );
    assert_eq!(fs::read_to_string(root.join("copy.c")).unwrap(), "int x;\n");
    assert!(
        !fs::symlink_metadata(root.join("copy.c"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!root.join("other").exists() && !root.join("proj-1.0").exists());
    assert!(!root.join("pax_global_header").exists());
    #[cfg(unix)]
    {
        assert_eq!(mode(&root.join("tools/run.sh")), 0o755);
        assert_eq!(mode(&root.join("tools")), 0o755);
        assert_eq!(mode(&root.join("src/lib.c")), 0o644);
    }
}

#[test]
fn good_tar_gz_with_strip_prefix() {
    let bytes = compress(ArchiveType::TarGz, &tar_of(&sample()));
    let run = run(&bytes, ArchiveType::TarGz, "proj-1.0/");
    check_sample(&run);
    // "./" prefixes and a strip_prefix with "./" and a trailing slash mean the same.
    let bytes = compress(
        ArchiveType::TarGz,
        &tar_of(&[
            file("./proj-1.0/a.txt", "a"),
            file("./proj-1.0/b/c.txt", "c"),
        ]),
    );
    let run = self::run(&bytes, ArchiveType::TarGz, "./proj-1.0");
    assert_eq!(run.result.as_ref().unwrap().files, 2);
    assert_eq!(fs::read_to_string(run.dest.join("b/c.txt")).unwrap(), "c");
}

#[test]
fn every_format_round_trips() {
    for kind in [
        ArchiveType::TarGz,
        ArchiveType::Tgz,
        ArchiveType::TarXz,
        ArchiveType::TarZst,
        ArchiveType::TarBz2,
        ArchiveType::Tar,
    ] {
        let bytes = compress(kind, &tar_of(&sample()));
        let run = run(&bytes, kind, "proj-1.0");
        assert!(run.result.is_ok(), "{kind}: {:?}", run.result);
        check_sample(&run);
    }
    let bytes = zip_of(&[
        Z::Dir("proj-1.0/"),
        Z::File("proj-1.0/MODULE.bazel", b"module()\n".to_vec(), 0o644),
        Z::File("proj-1.0/tools/run.sh", b"#!/bin/sh\n".to_vec(), 0o755),
        Z::Symlink("proj-1.0/alias", "tools/run.sh"),
        Z::File("elsewhere.txt", b"skipped".to_vec(), 0o644),
    ]);
    let run = run(&bytes, ArchiveType::Zip, "proj-1.0");
    let done = run.result.as_ref().unwrap();
    assert_eq!((done.files, done.bytes), (3, 19));
    assert_eq!(
        fs::read_to_string(run.dest.join("MODULE.bazel")).unwrap(),
        "module()\n"
    );
    assert_eq!(
        fs::read_link(run.dest.join("alias")).unwrap(),
        Path::new("tools/run.sh")
    );
    assert!(!run.dest.join("elsewhere.txt").exists());
    #[cfg(unix)]
    {
        assert_eq!(mode(&run.dest.join("tools/run.sh")), 0o755);
        assert_eq!(mode(&run.dest.join("MODULE.bazel")), 0o644);
    }
}

#[test]
fn archive_types_parse() {
    for (value, kind) in [
        ("tar.gz", ArchiveType::TarGz),
        ("tgz", ArchiveType::Tgz),
        ("tar.xz", ArchiveType::TarXz),
        ("tar.zst", ArchiveType::TarZst),
        ("tzst", ArchiveType::TarZst),
        ("tar.bz2", ArchiveType::TarBz2),
        ("tar", ArchiveType::Tar),
        ("zip", ArchiveType::Zip),
        ("jar", ArchiveType::Zip),
        ("war", ArchiveType::Zip),
        ("aar", ArchiveType::Zip),
    ] {
        assert_eq!(value.parse::<ArchiveType>().unwrap(), kind, "{value}");
        assert_eq!(
            ArchiveType::from_file_name(&format!("x-1.0.{value}")),
            Some(kind)
        );
    }
    assert!(
        matches!("rar".parse::<ArchiveType>(), Err(ArchiveError::UnknownType(t)) if t == "rar")
    );
    assert_eq!(
        ArchiveType::from_file_name("https://h/r/archive/v1.2.TAR.GZ?x=1#frag"),
        Some(ArchiveType::TarGz)
    );
    assert_eq!(
        ArchiveType::from_file_name("https://h/r/x.tar.gz/download"),
        None
    );
    assert_eq!(ArchiveType::TarZst.to_string(), "tar.zst");
}

#[test]
fn parent_dir_entries_are_refused() {
    for name in ["proj/../../evil", "../evil", "proj/sub/../x"] {
        let bytes = tar_of(&[file("proj/ok", "ok"), file(name, "x")]);
        let e = err(run(&bytes, ArchiveType::Tar, ""));
        assert!(
            matches!(&e, ArchiveError::ParentTraversal { entry } if entry == name),
            "{e}"
        );
        assert!(e.to_string().contains(name));
    }
    let e = err(run(&tar_of(&[file("a", "")]), ArchiveType::Tar, "a/../.."));
    assert!(matches!(e, ArchiveError::InvalidStripPrefix { .. }), "{e}");
    let e = err(run(&tar_of(&[file("a", "")]), ArchiveType::Tar, "/a"));
    assert!(matches!(e, ArchiveError::InvalidStripPrefix { .. }), "{e}");
}

#[test]
fn absolute_paths_are_refused() {
    for name in ["/etc/passwd", "C:/Windows/x", "//server/share"] {
        let e = err(run(&tar_of(&[file(name, "x")]), ArchiveType::Tar, ""));
        assert!(
            matches!(&e, ArchiveError::AbsolutePath { entry } if entry == name),
            "{e}"
        );
    }
}

#[test]
fn escaping_symlinks_are_refused() {
    let cases: &[&[E]] = &[
        &[link("p/up", EntryType::Symlink, "../../etc")],
        &[link("p/abs", EntryType::Symlink, "/etc/passwd")],
        // Leaves the stripped root: `p` itself is outside it.
        &[link("p/self", EntryType::Symlink, "../p/x")],
        &[
            link("p/c", EntryType::Symlink, "d/.."),
            link("p/d", EntryType::Symlink, "."),
        ],
    ];
    for (i, entries) in cases.iter().enumerate() {
        let e = err(run(&tar_of(entries), ArchiveType::Tar, "p"));
        assert!(
            matches!(e, ArchiveError::SymlinkEscape { .. }),
            "case {i}: {e}"
        );
    }
    // Escapes only through another symlink, extracted after it.
    let entries = [
        link("p/b", EntryType::Symlink, "a/../.."),
        link("p/a", EntryType::Symlink, "."),
    ];
    let e = err(run(&tar_of(&entries), ArchiveType::Tar, "p"));
    assert!(
        matches!(&e, ArchiveError::SymlinkEscape { entry, .. } if entry == "p/b"),
        "{e}"
    );
    let loops = [
        link("p/x", EntryType::Symlink, "y"),
        link("p/y", EntryType::Symlink, "x"),
    ];
    let e = err(run(&tar_of(&loops), ArchiveType::Tar, "p"));
    assert!(matches!(e, ArchiveError::SymlinkLoop { .. }), "{e}");
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let entries = [
        dir("p/real/"),
        link("p/inside", EntryType::Symlink, "real"),
        file("p/inside/file", "x"),
    ];
    let e = err(run(&tar_of(&entries), ArchiveType::Tar, "p"));
    assert!(
        matches!(&e, ArchiveError::ThroughSymlink { entry, link } if entry == "p/inside/file" && link == "inside"),
        "{e}"
    );
    // The classic: a symlink to a directory outside, then a file through it. Refused at
    // the symlink already; check the write is refused even when the link is accepted
    // (dangling but inside) and the directory is created later.
    let entries = [link("p/l", EntryType::Symlink, "d"), dir("p/l/sub/")];
    let e = err(run(&tar_of(&entries), ArchiveType::Tar, "p"));
    assert!(matches!(e, ArchiveError::ThroughSymlink { .. }), "{e}");
    let entries = [
        link("p/l", EntryType::Symlink, "d"),
        link("p/l/h", EntryType::Link, "p/f"),
    ];
    let e = err(run(&tar_of(&entries), ArchiveType::Tar, "p"));
    assert!(matches!(e, ArchiveError::ThroughSymlink { .. }), "{e}");
}

#[test]
fn escaping_hardlinks_are_refused() {
    let cases: [&[E]; 6] = [
        &[link("p/h", EntryType::Link, "../etc/passwd")],
        &[link("p/h", EntryType::Link, "/etc/passwd")],
        // Not yet extracted.
        &[
            link("p/h", EntryType::Link, "p/later"),
            file("p/later", "x"),
        ],
        // Outside the prefix, so never extracted.
        &[
            file("q/secret", "x"),
            link("p/h", EntryType::Link, "q/secret"),
        ],
        // A directory, or a symlink, is not a regular file.
        &[dir("p/d/"), link("p/h", EntryType::Link, "p/d")],
        &[
            file("p/f", "x"),
            link("p/s", EntryType::Symlink, "f"),
            link("p/h", EntryType::Link, "p/s"),
        ],
    ];
    for (i, entries) in cases.iter().enumerate() {
        let e = err(run(&tar_of(entries), ArchiveType::Tar, "p"));
        assert!(
            matches!(&e, ArchiveError::BadHardlink { entry, .. } if entry == "p/h"),
            "case {i}: {e}"
        );
    }
}

#[test]
fn device_and_fifo_entries_are_refused() {
    for (kind, word) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "FIFO"),
    ] {
        let entries = [
            file("p/ok", "x"),
            E {
                kind,
                ..file("p/dev", "")
            },
        ];
        let e = err(run(&tar_of(&entries), ArchiveType::Tar, "p"));
        assert!(
            matches!(&e, ArchiveError::SpecialFile { entry, kind } if entry == "p/dev" && *kind == word),
            "{e}"
        );
    }
    let mut sparse = tar_of(&[E {
        kind: EntryType::GNUSparse,
        ..file("p/sparse", "")
    }]);
    // realsize, in the GNU header, at offset 483.
    sparse[483..495].copy_from_slice(b"00000000000\0");
    let mut header = Header::new_old();
    header.as_mut_bytes().copy_from_slice(&sparse[..512]);
    header.set_cksum();
    sparse[..512].copy_from_slice(header.as_bytes());
    let e = err(run(&sparse, ArchiveType::Tar, "p"));
    assert!(matches!(e, ArchiveError::Unsupported { .. }), "{e}");
}

#[test]
fn duplicate_entries_are_refused() {
    let cases: [&[E]; 4] = [
        &[file("p/a", "1"), file("p/a", "2")],
        &[file("p/a/b", "1"), file("./p//a/./b", "2")],
        &[dir("p/d/"), dir("p/d")],
        &[file("p/a", "1"), dir("p/a/")],
    ];
    for (i, entries) in cases.iter().enumerate() {
        let e = err(run(&tar_of(entries), ArchiveType::Tar, "p"));
        assert!(matches!(e, ArchiveError::Duplicate { .. }), "case {i}: {e}");
    }
    // A file where a directory is, or the reverse.
    for entries in [
        &[file("p/a/b", "1"), file("p/a", "2")][..],
        &[file("p/a", "1"), file("p/a/b", "2")],
    ] {
        let e = err(run(&tar_of(entries), ArchiveType::Tar, "p"));
        assert!(matches!(e, ArchiveError::PathConflict { .. }), "{e}");
    }
    // An explicit directory entry after its content is fine.
    let done = run(
        &tar_of(&[file("p/d/f", "1"), dir("p/d/")]),
        ArchiveType::Tar,
        "p",
    );
    assert!(done.result.is_ok(), "{:?}", done.result);
}

#[test]
fn truncated_and_corrupt_streams_are_errors() {
    let tar = tar_of(&sample());
    for kind in [
        ArchiveType::TarGz,
        ArchiveType::TarXz,
        ArchiveType::TarZst,
        ArchiveType::TarBz2,
    ] {
        let whole = compress(kind, &tar);
        // Cut in the middle, and cut only the trailer (the tar content is all there).
        for cut in [whole.len() / 2, whole.len() - 4] {
            let run = run(&whole[..cut], kind, "proj-1.0");
            assert!(
                run.result.is_err(),
                "{kind} cut at {cut} of {}",
                whole.len()
            );
            let e = err(run);
            assert!(
                matches!(e, ArchiveError::Corrupt { .. }),
                "{kind} cut at {cut}: {e}"
            );
        }
        let mut flipped = whole.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x55;
        let run = run(&flipped, kind, "proj-1.0");
        assert!(run.result.is_err(), "{kind} flipped");
        let e = err(run);
        assert!(
            matches!(e, ArchiveError::Corrupt { .. }),
            "{kind} flipped: {e}"
        );
    }
    // Plain tar cut inside an entry's data.
    let tar = tar_of(&[file("p/big", &"x".repeat(3000))]);
    let e = err(run(&tar[..2048], ArchiveType::Tar, "p"));
    assert!(
        matches!(&e, ArchiveError::Corrupt { at, .. } if at.contains("p/big")),
        "{e}"
    );
    // A bad header checksum.
    let mut tar = tar_of(&[file("p/a", "1")]);
    tar[0] ^= 1;
    let e = err(run(&tar, ArchiveType::Tar, "p"));
    assert!(matches!(e, ArchiveError::Corrupt { .. }), "{e}");
    // Zip: a flipped byte in the data fails the CRC; a cut one has no central directory.
    let zip = zip_of(&[Z::File("p/a", b"hello hello hello".to_vec(), 0o644)]);
    let e = err(run(&zip[..zip.len() - 10], ArchiveType::Zip, "p"));
    assert!(matches!(e, ArchiveError::Corrupt { .. }), "{e}");
}

/// 50 MiB of zeros, deflated, in a zip.
fn zip_bomb() -> &'static [u8] {
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| {
        use zip::write::SimpleFileOptions;
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1));
        writer.start_file("p/zeros", options).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..50 {
            writer.write_all(&chunk).unwrap();
        }
        writer.finish().unwrap().into_inner()
    })
}

#[test]
fn zip_bomb_is_stopped_by_the_ratio_cap() {
    let bomb = zip_bomb();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let e = err(run(bomb, ArchiveType::Zip, "p"));
    assert!(
        matches!(&e, ArchiveError::RatioExceeded { entry, .. } if entry == "p/zeros"),
        "{e}"
    );
}

#[test]
fn zip_bomb_is_stopped_by_the_total_cap() {
    let limits = Limits {
        max_total_bytes: 4 << 20,
        max_ratio: u64::MAX,
        ..Limits::default()
    };
    let e = err(run_with(zip_bomb(), ArchiveType::Zip, "p", &limits));
    assert!(
        matches!(&e, ArchiveError::TooLarge { entry, max } if entry == "p/zeros" && *max == 4 << 20),
        "{e}"
    );
}

#[test]
fn tar_bombs_are_stopped_by_the_caps() {
    let entries = [E {
        data: vec![0; 12 << 20],
        ..file("p/zeros", "")
    }];
    let bytes = compress(ArchiveType::TarGz, &tar_of(&entries));
    let e = err(run(&bytes, ArchiveType::TarGz, "p"));
    assert!(
        matches!(&e, ArchiveError::RatioExceeded { entry, .. } if entry == "p/zeros"),
        "{e}"
    );
    let limits = Limits {
        max_total_bytes: 1 << 20,
        ..Limits::default()
    };
    let e = err(run_with(&bytes, ArchiveType::TarGz, "p", &limits));
    assert!(
        matches!(&e, ArchiveError::TooLarge { entry, .. } if entry == "p/zeros"),
        "{e}"
    );
    // A huge PAX header is refused before it is held in memory.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::XHeader);
    let record = format!("1000009 comment={}\n", "x".repeat(999_992));
    assert_eq!(record.len(), 1_000_009);
    header.set_size(record.len() as u64);
    header.set_path("PaxHeaders/x").unwrap();
    header.set_cksum();
    builder.append(&header, record.as_bytes()).unwrap();
    let mut header = Header::new_ustar();
    header.set_path("p/x").unwrap();
    header.set_size(0);
    header.set_cksum();
    builder.append(&header, &[][..]).unwrap();
    let bytes = builder.into_inner().unwrap();
    let e = err(run(&bytes, ArchiveType::Tar, "p"));
    assert!(matches!(e, ArchiveError::HeaderTooLarge { .. }), "{e}");
}

#[test]
fn errors_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<ArchiveError>();
}

#[test]
fn too_many_entries_are_refused() {
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let names: Vec<&'static str> = (0..11)
        .map(|i| &*Box::leak(format!("p/f{i}").into_boxed_str()))
        .collect();
    let entries: Vec<E> = names.iter().map(|name| file(name, "x")).collect();
    let ok = run_with(&tar_of(&entries[..10]), ArchiveType::Tar, "p", &limits);
    assert_eq!(ok.result.as_ref().unwrap().files, 10);
    let e = err(run_with(&tar_of(&entries), ArchiveType::Tar, "p", &limits));
    assert!(
        matches!(&e, ArchiveError::TooManyEntries { entry, max: 10 } if entry == "p/f10"),
        "{e}"
    );
    let zip: Vec<Z> = names
        .iter()
        .map(|name| Z::File(name, b"x".to_vec(), 0o644))
        .collect();
    let e = err(run_with(&zip_of(&zip), ArchiveType::Zip, "p", &limits));
    assert!(matches!(e, ArchiveError::TooManyEntries { .. }), "{e}");
}

#[test]
fn long_names_are_refused() {
    let limits = Limits {
        max_path_len: 20,
        ..Limits::default()
    };
    let e = err(run_with(
        &tar_of(&[file("p/a-rather-long-file-name", "x")]),
        ArchiveType::Tar,
        "p",
        &limits,
    ));
    assert!(
        matches!(
            e,
            ArchiveError::PathTooLong {
                len: 25,
                max: 20,
                ..
            }
        ),
        "{e}"
    );
    let e = err(run_with(
        &tar_of(&[link("p/l", EntryType::Symlink, "a-rather-longer-target")]),
        ArchiveType::Tar,
        "p",
        &limits,
    ));
    assert!(
        matches!(&e, ArchiveError::PathTooLong { entry, .. } if entry == "p/l"),
        "{e}"
    );
    // A component longer than file systems allow (a GNU long name entry).
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    let long = format!("p/{}", "n".repeat(256));
    builder.append_data(&mut header, &long, &b"x"[..]).unwrap();
    let bytes = builder.into_inner().unwrap();
    let e = err(run(&bytes, ArchiveType::Tar, "p"));
    assert!(
        matches!(&e, ArchiveError::InvalidName { entry, .. } if *entry == long),
        "{e}"
    );
}

#[test]
fn missing_strip_prefix_is_an_error() {
    let bytes = tar_of(&sample());
    for prefix in ["proj-2.0", "proj", "proj-1.0/nothing-here"] {
        let e = err(run(&bytes, ArchiveType::Tar, prefix));
        assert!(
            matches!(&e, ArchiveError::StripPrefixNotFound { prefix: p } if p == prefix),
            "{e}"
        );
        assert!(e.to_string().contains(prefix));
    }
    // Only the directory itself is nothing under it.
    let e = err(run(
        &tar_of(&[dir("proj-1.0/")]),
        ArchiveType::Tar,
        "proj-1.0",
    ));
    assert!(matches!(e, ArchiveError::StripPrefixNotFound { .. }), "{e}");
    // A prefix naming a file.
    let e = err(run(&bytes, ArchiveType::Tar, "proj-1.0/MODULE.bazel"));
    assert!(matches!(e, ArchiveError::InvalidStripPrefix { .. }), "{e}");
}

#[test]
fn zip_with_parent_and_absolute_names_is_refused() {
    let good = zip_of(&[
        Z::File("p/ok", b"1".to_vec(), 0o644),
        Z::File("zz/evil.txt", b"2".to_vec(), 0o644),
    ]);
    let e = err(run(
        &forge(good.clone(), "zz/evil", "../evil"),
        ArchiveType::Zip,
        "",
    ));
    assert!(
        matches!(&e, ArchiveError::ParentTraversal { entry } if entry == "../evil.txt"),
        "{e}"
    );
    let e = err(run(
        &forge(good.clone(), "zz/evil", "/z/evil"),
        ArchiveType::Zip,
        "",
    ));
    assert!(
        matches!(&e, ArchiveError::AbsolutePath { entry } if entry == "/z/evil.txt"),
        "{e}"
    );
    let e = err(run(
        &forge(good, "zz/evil", "..\\evil"),
        ArchiveType::Zip,
        "",
    ));
    assert!(matches!(e, ArchiveError::ParentTraversal { .. }), "{e}");
    let links = zip_of(&[Z::Symlink("p/l", "../../etc/passwd")]);
    let e = err(run(&links, ArchiveType::Zip, "p"));
    assert!(matches!(e, ArchiveError::SymlinkEscape { .. }), "{e}");
    let dup = zip_of(&[
        Z::File("p/a1", b"1".to_vec(), 0o644),
        Z::File("p/a2", b"2".to_vec(), 0o644),
    ]);
    let e = err(run(&forge(dup, "p/a2", "p/a1"), ArchiveType::Zip, "p"));
    assert!(
        matches!(&e, ArchiveError::Duplicate { entry } if entry == "p/a1"),
        "{e}"
    );
}

#[test]
fn destination_must_be_empty_and_is_left_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.tar");
    fs::write(
        &archive,
        tar_of(&[file("p/a", "1"), file("p/b/c", "2"), file("../x", "3")]),
    )
    .unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("stale"), "").unwrap();
    let e = extract(&archive, ArchiveType::Tar, "", &dest, &Limits::default()).unwrap_err();
    assert!(matches!(e, ArchiveError::DestinationNotEmpty { .. }), "{e}");
    fs::remove_file(dest.join("stale")).unwrap();
    // An existing empty directory is used, and emptied again on failure.
    let e = extract(&archive, ArchiveType::Tar, "", &dest, &Limits::default()).unwrap_err();
    assert!(matches!(e, ArchiveError::ParentTraversal { .. }), "{e}");
    assert!(dest.is_dir() && fs::read_dir(&dest).unwrap().next().is_none());
    assert!(!tmp.path().join("x").exists());
    let e = extract(
        &tmp.path().join("missing.tar"),
        ArchiveType::Tar,
        "",
        &dest,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(e.is_local_io(), "{e}");
}
