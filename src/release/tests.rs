use std::io::Read as _;

use super::testing::{EXEC, FILE, LINK, SUBMODULE, commit, init, tag};
use super::*;
use crate::publish::{ArchiveType, Limits, extract};
use tar::EntryType;

const TIME: i64 = 1_700_000_000;

fn sample(dir: &Path) -> String {
    init(dir);
    let long = format!("deep/{}/file.txt", "x".repeat(120));
    let files: Vec<(&str, u32, &[u8])> = vec![
        (
            "MODULE.bazel",
            FILE,
            b"module(name = \"foo\", version = \"1.2.0\")\n",
        ),
        ("BUILD.bazel", FILE, b"# build\n"),
        ("tools/run.sh", EXEC, b"#!/bin/sh\necho hi\n"),
        ("tools/link", LINK, b"run.sh"),
        ("a-b.txt", FILE, b"dash\n"),
        ("a/inner.txt", FILE, b"inner\n"),
        ("third_party/sub", SUBMODULE, b""),
        (long.as_str(), FILE, b"long\n"),
    ];
    commit(dir, &files, TIME)
}

/// `(path, type, mode, mtime, uid, gid, username, groupname)` of an entry.
type Listed = (String, EntryType, u32, u64, u64, u64, String, String);

fn entries(tgz: &[u8]) -> Vec<Listed> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.entry_type(),
                h.mode().unwrap(),
                h.mtime().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.username().unwrap().unwrap_or_default().to_owned(),
                h.groupname().unwrap().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn archive_is_deterministic_sorted_and_extracts() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let id = sample(&repo);
    let first = deterministic_tar_gz(&repo, &id, "", "foo-1.2.0").unwrap();
    let second = deterministic_tar_gz(&repo, "HEAD", "", "foo-1.2.0").unwrap();
    assert_eq!(first, second);
    // gzip header: no file name flag, mtime 0, best-compression flag.
    assert_eq!(&first[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);

    let listed = entries(&first);
    let names: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
    let long = format!("foo-1.2.0/deep/{}/file.txt", "x".repeat(120));
    let long_dir = format!("foo-1.2.0/deep/{}/", "x".repeat(120));
    assert_eq!(
        names,
        vec![
            "foo-1.2.0/",
            "foo-1.2.0/BUILD.bazel",
            "foo-1.2.0/MODULE.bazel",
            "foo-1.2.0/a/",
            "foo-1.2.0/a-b.txt",
            "foo-1.2.0/a/inner.txt",
            "foo-1.2.0/deep/",
            long_dir.as_str(),
            long.as_str(),
            "foo-1.2.0/third_party/",
            "foo-1.2.0/tools/",
            "foo-1.2.0/tools/link",
            "foo-1.2.0/tools/run.sh",
        ]
    );
    for (path, kind, mode, mtime, uid, gid, user, group) in &listed {
        assert_eq!(*mtime, TIME as u64, "{path}");
        assert_eq!((*uid, *gid), (0, 0), "{path}");
        assert_eq!((user.as_str(), group.as_str()), ("", ""), "{path}");
        let want = match path.as_str() {
            "foo-1.2.0/tools/run.sh" => (EntryType::Regular, 0o755),
            "foo-1.2.0/tools/link" => (EntryType::Symlink, 0o777),
            p if p.ends_with('/') => (EntryType::Directory, 0o755),
            _ => (EntryType::Regular, 0o644),
        };
        assert_eq!((*kind, *mode), want, "{path}");
    }

    let file = tmp.path().join("foo.tar.gz");
    fs::write(&file, &first).unwrap();
    let dest = tmp.path().join("out");
    let out = extract(
        &file,
        ArchiveType::TarGz,
        "foo-1.2.0",
        &dest,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(out.files, 7);
    assert_eq!(
        fs::read(dest.join("MODULE.bazel")).unwrap(),
        b"module(name = \"foo\", version = \"1.2.0\")\n"
    );
    assert_eq!(fs::read(dest.join(&long[10..])).unwrap(), b"long\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("tools/run.sh"), 0o755);
        assert_eq!(mode("BUILD.bazel"), 0o644);
        assert_eq!(
            fs::read_link(dest.join("tools/link")).unwrap(),
            Path::new("run.sh")
        );
    }
    assert!(!dest.join("third_party/sub").exists());
}

#[test]
fn archive_of_a_subfolder_and_without_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    init(repo);
    let id = commit(
        repo,
        &[
            ("README", FILE, b"root\n"),
            ("mods/bar/MODULE.bazel", FILE, b"module(name = \"bar\")\n"),
            ("mods/bar/src/x.c", FILE, b"int x;\n"),
            ("mods/baz/y", FILE, b"y\n"),
        ],
        TIME,
    );
    let tgz = deterministic_tar_gz(repo, &id, "mods/bar", "bar-0.1/").unwrap();
    let names: Vec<String> = entries(&tgz).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "bar-0.1/",
            "bar-0.1/MODULE.bazel",
            "bar-0.1/src/",
            "bar-0.1/src/x.c"
        ]
    );
    let tgz = deterministic_tar_gz(repo, &id, "mods/bar", "").unwrap();
    let names: Vec<String> = entries(&tgz).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["MODULE.bazel", "src/", "src/x.c"]);
    let err = deterministic_tar_gz(repo, &id, "mods/nope", "x").unwrap_err();
    assert!(
        err.to_string().contains("`mods/nope` is not a folder"),
        "{err}"
    );
}

#[test]
fn locate_finds_the_repository_and_the_subfolder() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    init(&repo);
    fs::create_dir_all(repo.join("mods/bar")).unwrap();
    let top = locate(&repo).unwrap().unwrap();
    assert_eq!(top.repo_dir, fs::canonicalize(&repo).unwrap());
    assert_eq!(top.subdir, "");
    let sub = locate(&repo.join("mods/bar")).unwrap().unwrap();
    assert_eq!(sub.repo_dir, top.repo_dir);
    assert_eq!(sub.subdir, "mods/bar");
    let sub = locate(&repo.join("mods/bar/../bar/.")).unwrap().unwrap();
    assert_eq!(sub.subdir, "mods/bar");
    let plain = tmp.path().join("plain");
    fs::create_dir(&plain).unwrap();
    // A temp dir is normally outside any repository; only check when it is.
    if Repository::discover(&plain).is_err() {
        assert_eq!(locate(&plain).unwrap(), None);
    }
}

#[test]
fn tags_resolve_peeled() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    init(repo);
    let c1 = commit(
        repo,
        &[("MODULE.bazel", FILE, b"module(version = \"1\")")],
        TIME,
    );
    let c2 = commit(
        repo,
        &[("MODULE.bazel", FILE, b"module(version = \"2\")")],
        TIME + 60,
    );
    tag(repo, "v1", &c1, true);
    tag(repo, "v2", &c2, false);
    assert_eq!(resolve_tag(repo, "v1").unwrap(), c1);
    assert_eq!(resolve_tag(repo, "refs/tags/v1").unwrap(), c1);
    assert_eq!(resolve_tag(repo, "v2").unwrap(), c2);
    let err = resolve_tag(repo, "v3").unwrap_err();
    assert!(err.to_string().contains("no tag `v3`"), "{err}");
    let err = resolve_tag(repo, "bad..name").unwrap_err();
    assert!(err.to_string().contains("no tag"), "{err}");

    // The annotated tag's commit is what is read and archived, at its commit time.
    let c1_tag = resolve_tag(repo, "v1").unwrap();
    assert_eq!(
        read_file_at(repo, &c1_tag, "MODULE.bazel")
            .unwrap()
            .unwrap(),
        b"module(version = \"1\")"
    );
    assert_eq!(
        read_file_at(repo, "refs/tags/v1", "MODULE.bazel")
            .unwrap()
            .unwrap(),
        b"module(version = \"1\")"
    );
    let tgz = deterministic_tar_gz(repo, "v1", "", "p").unwrap();
    assert!(entries(&tgz).iter().all(|e| e.3 == TIME as u64));
    let tgz = deterministic_tar_gz(repo, "v2", "", "p").unwrap();
    assert!(entries(&tgz).iter().all(|e| e.3 == (TIME + 60) as u64));
}

#[test]
fn read_file_at_reads_regular_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    init(repo);
    let id = commit(
        repo,
        &[
            ("a/b.txt", FILE, b"b"),
            ("link", LINK, b"a/b.txt"),
            ("run", EXEC, b"x"),
        ],
        TIME,
    );
    assert_eq!(read_file_at(repo, &id, "a/b.txt").unwrap().unwrap(), b"b");
    assert_eq!(read_file_at(repo, &id, "run").unwrap().unwrap(), b"x");
    assert_eq!(read_file_at(repo, &id, "link").unwrap(), None);
    assert_eq!(read_file_at(repo, &id, "a").unwrap(), None);
    assert_eq!(read_file_at(repo, &id, "nope/x").unwrap(), None);
    assert!(read_file_at(repo, "no-such-rev", "a/b.txt").is_err());
    assert!(read_file_at(&tmp.path().join("missing"), &id, "a/b.txt").is_err());
}

#[test]
fn bcr_extras_from_the_tagged_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    init(repo);
    let id = commit(
        repo,
        &[
            (".bcr/patches/b.patch", FILE, b"B"),
            (".bcr/patches/a.patch", FILE, b"A"),
            (".bcr/patches/README.md", FILE, b"not a patch"),
            (".bcr/overlay/BUILD.bazel", FILE, b"build"),
            (".bcr/overlay/src/z/BUILD", FILE, b"z"),
            (".bcr/overlay/src/a.bzl", FILE, b"a"),
            (".bcr/metadata.template.json", FILE, b"{}"),
            (".bcr/presubmit.yml", FILE, b"x"),
            ("mods/bar/.bcr/patches/only.patch", FILE, b"O"),
            ("mods/baz/MODULE.bazel", FILE, b""),
        ],
        TIME,
    );
    let root = bcr_extras_at(repo, &id, "").unwrap();
    assert_eq!(root.dir.as_deref(), Some(".bcr"));
    let names = |v: &[ExtraFile]| v.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
    assert_eq!(names(&root.patches), ["a.patch", "b.patch"]);
    assert_eq!(root.patches[0].content, b"A");
    assert_eq!(
        names(&root.overlay),
        ["BUILD.bazel", "src/a.bzl", "src/z/BUILD"]
    );
    assert_eq!(root.metadata_template.as_deref(), Some(&b"{}"[..]));

    // A module in a subfolder with its own `.bcr` uses that one only.
    let bar = bcr_extras_at(repo, &id, "mods/bar").unwrap();
    assert_eq!(bar.dir.as_deref(), Some("mods/bar/.bcr"));
    assert_eq!(names(&bar.patches), ["only.patch"]);
    assert!(bar.overlay.is_empty() && bar.metadata_template.is_none());
    // Without one, the repository root's.
    let baz = bcr_extras_at(repo, &id, "mods/baz").unwrap();
    assert_eq!(baz, root);

    // Read from the tag, not the work tree (which is empty here).
    let none = commit(repo, &[("MODULE.bazel", FILE, b"")], TIME);
    assert_eq!(
        bcr_extras_at(repo, &none, "").unwrap(),
        BcrExtras::default()
    );
}

#[test]
fn bcr_overlay_symlinks_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    init(repo);
    let id = commit(
        repo,
        &[
            (".bcr/overlay/MODULE.bazel", LINK, b"../MODULE.bazel"),
            ("MODULE.bazel", FILE, b""),
        ],
        TIME,
    );
    let err = bcr_extras_at(repo, &id, "").unwrap_err();
    assert!(
        err.to_string()
            .contains("`.bcr/overlay/MODULE.bazel` must be a regular file"),
        "{err}"
    );
}

#[test]
fn bcr_extras_on_disk_prefer_the_module_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    init(&root);
    let write = |p: &str, c: &str| {
        let p = root.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    };
    write(".bcr/patches/2.patch", "two");
    write(".bcr/patches/1.patch", "one");
    write(".bcr/patches/notes.txt", "x");
    write(".bcr/overlay/b/c.txt", "c");
    write(".bcr/overlay/a.txt", "a");
    write(".bcr/metadata.template.json", "{\"homepage\": \"h\"}");
    write("mods/bar/MODULE.bazel", "");
    write("mods/own/.bcr/overlay/BUILD", "own");

    let top = bcr_extras_on_disk(&root).unwrap();
    let names = |v: &[ExtraFile]| v.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
    assert_eq!(names(&top.patches), ["1.patch", "2.patch"]);
    assert_eq!(names(&top.overlay), ["a.txt", "b/c.txt"]);
    assert_eq!(top.overlay[1].content, b"c");
    assert!(top.metadata_template.is_some());

    let bar = bcr_extras_on_disk(&root.join("mods/bar")).unwrap();
    assert_eq!(names(&bar.patches), ["1.patch", "2.patch"]);
    let own = bcr_extras_on_disk(&root.join("mods/own")).unwrap();
    assert_eq!(names(&own.overlay), ["BUILD"]);
    assert!(own.patches.is_empty() && own.metadata_template.is_none());

    let plain = tmp.path().join("plain");
    fs::create_dir(&plain).unwrap();
    if Repository::discover(&plain).is_err() {
        assert_eq!(bcr_extras_on_disk(&plain).unwrap(), BcrExtras::default());
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("a.txt", root.join(".bcr/overlay/l")).unwrap();
        let err = bcr_extras_on_disk(&root).unwrap_err();
        assert!(err.to_string().contains("must be a regular file"), "{err}");
    }
}

#[test]
fn gzip_stream_is_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let id = sample(tmp.path());
    let tgz = deterministic_tar_gz(tmp.path(), &id, "", "p").unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&tgz[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(raw.len() % 512, 0);
    assert!(raw[raw.len() - 1024..].iter().all(|b| *b == 0));
}
