//! `apply` against real trees: every rule of the module documentation, and the internals the
//! rules rest on.

use std::fs;

use tempfile::TempDir;

use super::parse::{git_names, unquote};
use super::*;

/// A temporary tree holding `files` (path, content).
fn tree(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let full = dir.path().join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    dir
}

fn run(dir: &TempDir, text: &str, strip: u32) -> Result<ApplyReport, PatchError> {
    run_bytes(dir, text.as_bytes(), strip)
}

fn run_bytes(dir: &TempDir, content: &[u8], strip: u32) -> Result<ApplyReport, PatchError> {
    apply(
        dir.path(),
        &Patch {
            name: "fix.patch",
            content,
        },
        strip,
    )
}

fn read(dir: &TempDir, path: &str) -> String {
    fs::read_to_string(dir.path().join(path)).unwrap()
}

fn exists(dir: &TempDir, path: &str) -> bool {
    fs::symlink_metadata(dir.path().join(path)).is_ok()
}

fn changed(report: &ApplyReport) -> Vec<&str> {
    report.files_changed.iter().map(String::as_str).collect()
}

/// Every entry under `dir`, recursively, relative and sorted.
fn listing(dir: &TempDir) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push(rel);
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir.path(), dir.path(), &mut out);
    out.sort();
    out
}

#[cfg(unix)]
fn mode_of(dir: &TempDir, path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(dir.path().join(path))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

const TEN: &str = "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\n";

#[test]
fn simple_modify() {
    let dir = tree(&[("src/a.c", "int a;\nint b;\nint c;\n")]);
    let patch =
        "--- a/src/a.c\n+++ b/src/a.c\n@@ -1,3 +1,3 @@\n int a;\n-int b;\n+long b;\n int c;\n";
    let report = run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "src/a.c"), "int a;\nlong b;\nint c;\n");
    assert_eq!(changed(&report), ["src/a.c"]);
}

#[test]
fn header_timestamps_and_default_counts() {
    let dir = tree(&[("x.txt", "old\n")]);
    let patch = "--- x.txt\t2019-05-27 17:19:37.054593200 +0200\n\
                 +++ x.txt\t2019-05-27 17:20:00.000000000 +0200\n\
                 @@ -1 +1 @@\n-old\n+new\n";
    run(&dir, patch, 0).unwrap();
    assert_eq!(read(&dir, "x.txt"), "new\n");
}

#[test]
fn multiple_hunks() {
    let dir = tree(&[("t.txt", TEN)]);
    let patch = "--- a/t.txt\n+++ b/t.txt\n\
                 @@ -1,3 +1,4 @@\n one\n+one and a half\n two\n three\n\
                 @@ -8,3 +9,2 @@\n eight\n-nine\n ten\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(
        read(&dir, "t.txt"),
        "one\none and a half\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nten\n"
    );
}

#[test]
fn multiple_files() {
    let dir = tree(&[("a.txt", "a\n"), ("sub/b.txt", "b\n")]);
    let patch = "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+A\n\
                 --- a/sub/b.txt\n+++ b/sub/b.txt\n@@ -1 +1,2 @@\n b\n+B\n";
    let report = run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "a.txt"), "A\n");
    assert_eq!(read(&dir, "sub/b.txt"), "b\nB\n");
    assert_eq!(changed(&report), ["a.txt", "sub/b.txt"]);
}

#[test]
fn create_file_in_new_directory() {
    let dir = tree(&[]);
    let patch = "--- /dev/null\n+++ b/new/dir/file.txt\n@@ -0,0 +1,2 @@\n+hello\n+world\n";
    let report = run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "new/dir/file.txt"), "hello\nworld\n");
    assert_eq!(changed(&report), ["new/dir/file.txt"]);
    #[cfg(unix)]
    {
        assert_eq!(mode_of(&dir, "new/dir/file.txt"), 0o644);
        assert_eq!(mode_of(&dir, "new/dir"), 0o755);
    }
}

#[test]
fn create_existing_file_is_refused() {
    let dir = tree(&[("f.txt", "here\n")]);
    let patch = "--- /dev/null\n+++ b/f.txt\n@@ -0,0 +1 @@\n+new\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "patch fix.patch: line 1: cannot create f.txt: it already exists"
    );
    assert_eq!(read(&dir, "f.txt"), "here\n");
}

#[test]
fn delete_file() {
    let dir = tree(&[("d.txt", "x\ny\n"), ("keep.txt", "k\n")]);
    let patch = "diff --git a/d.txt b/d.txt\ndeleted file mode 100644\nindex 1..0\n\
                 --- a/d.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x\n-y\n";
    let report = run(&dir, patch, 1).unwrap();
    assert!(!exists(&dir, "d.txt"));
    assert_eq!(changed(&report), ["d.txt"]);
}

#[test]
fn delete_must_match_whole_content() {
    let dir = tree(&[("d.txt", "x\ny\nz\n")]);
    let patch = "--- a/d.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x\n-y\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        matches!(err, PatchError::DeleteMismatch { remaining: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("cannot delete d.txt"), "{err}");
    assert_eq!(read(&dir, "d.txt"), "x\ny\nz\n");

    // Content differing from the patch's is a hunk failure.
    let dir = tree(&[("d.txt", "x\nY\n")]);
    let patch = "--- a/d.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x\n-y\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");
    assert!(exists(&dir, "d.txt"));
}

#[test]
fn git_delete_of_empty_file_without_hunks() {
    let dir = tree(&[("empty", "")]);
    let patch = "diff --git a/empty b/empty\ndeleted file mode 100644\nindex e69de29..0000000\n";
    run(&dir, patch, 1).unwrap();
    assert!(!exists(&dir, "empty"));

    let dir = tree(&[("empty", "not empty\n")]);
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::DeleteMismatch { .. }), "{err}");
}

#[test]
fn git_new_empty_file_without_hunks() {
    let dir = tree(&[]);
    let patch =
        "diff --git a/dir/empty b/dir/empty\nnew file mode 100644\nindex 0000000..e69de29\n";
    let report = run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "dir/empty"), "");
    assert_eq!(changed(&report), ["dir/empty"]);
}

#[test]
fn patching_a_missing_file_names_it() {
    let dir = tree(&[]);
    let patch = "--- a/src/gone.c\n+++ b/src/gone.c\n@@ -1 +1 @@\n-a\n+b\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::Missing { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "patch fix.patch: line 1: cannot patch src/gone.c: no such file"
    );
}

#[test]
fn pure_rename() {
    let dir = tree(&[("src/main.c", "int main;\n")]);
    let patch = "diff --git a/src/main.c b/src/entry.c\nsimilarity index 100%\n\
                 rename from src/main.c\nrename to src/entry.c\n";
    let report = run(&dir, patch, 1).unwrap();
    assert!(!exists(&dir, "src/main.c"));
    assert_eq!(read(&dir, "src/entry.c"), "int main;\n");
    assert_eq!(changed(&report), ["src/main.c", "src/entry.c"]);
}

#[cfg(unix)]
#[test]
fn rename_keeps_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tree(&[("run.sh", "echo\n")]);
    fs::set_permissions(dir.path().join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    let patch = "diff --git a/run.sh b/bin/run.sh\nsimilarity index 100%\n\
                 rename from run.sh\nrename to bin/run.sh\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(mode_of(&dir, "bin/run.sh"), 0o750);
}

#[test]
fn rename_with_changes_and_strip_from_rename_lines() {
    let dir = tree(&[("old_name.txt", TEN)]);
    // Real `git diff -M` output.
    let patch = "diff --git a/old_name.txt b/new_name.txt\n\
                 similarity index 89%\n\
                 rename from old_name.txt\n\
                 rename to new_name.txt\n\
                 index c9e9e05..7155914 100644\n\
                 --- a/old_name.txt\n\
                 +++ b/new_name.txt\n\
                 @@ -2,7 +2,7 @@ one\n two\n three\n four\n-five\n+FIVE\n\
                 \x20six\n seven\n eight\n";
    let report = run(&dir, patch, 1).unwrap();
    assert!(!exists(&dir, "old_name.txt"));
    assert_eq!(read(&dir, "new_name.txt"), TEN.replace("five", "FIVE"));
    assert_eq!(changed(&report), ["old_name.txt", "new_name.txt"]);

    // Without a usable `diff --git` line, the rename lines name the files (one component
    // less stripped, as they carry no a/ b/ prefix).
    let dir = tree(&[("x/y", "1\n")]);
    let patch = "diff --git a/x y z b/q r s\nrename from x/y\nrename to x/z\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "x/z"), "1\n");
    assert!(!exists(&dir, "x/y"));
}

#[test]
fn rename_onto_existing_file_is_refused() {
    let dir = tree(&[("a", "a\n"), ("b", "b\n")]);
    let patch = "diff --git a/a b/b\nsimilarity index 100%\nrename from a\nrename to b\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        matches!(err, PatchError::AlreadyExists { ref file, .. } if file == "b"),
        "{err}"
    );
    assert_eq!(read(&dir, "a"), "a\n");
}

#[test]
fn copy() {
    let dir = tree(&[("a.txt", "1\n2\n")]);
    let patch = "diff --git a/a.txt b/c.txt\nsimilarity index 50%\n\
                 copy from a.txt\ncopy to c.txt\n\
                 --- a/a.txt\n+++ b/c.txt\n@@ -1,2 +1,2 @@\n 1\n-2\n+3\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "a.txt"), "1\n2\n");
    assert_eq!(read(&dir, "c.txt"), "1\n3\n");
}

#[test]
fn strip_counts() {
    let patch0 = "--- f.txt\n+++ f.txt\n@@ -1 +1 @@\n-a\n+b\n";
    let dir = tree(&[("f.txt", "a\n")]);
    run(&dir, patch0, 0).unwrap();
    assert_eq!(read(&dir, "f.txt"), "b\n");

    let patch1 = "--- a/f.txt\n+++ b/f.txt\n@@ -1 +1 @@\n-a\n+b\n";
    let dir = tree(&[("f.txt", "a\n")]);
    run(&dir, patch1, 1).unwrap();
    assert_eq!(read(&dir, "f.txt"), "b\n");

    // -p0 keeps the prefix: b/f.txt does not exist.
    let dir = tree(&[("f.txt", "a\n")]);
    let err = run(&dir, patch1, 0).unwrap_err();
    assert!(
        matches!(err, PatchError::Missing { ref file, .. } if file == "b/f.txt"),
        "{err}"
    );

    let patch2 = "--- x/proj-1.0/src/f.txt\n+++ y/proj-1.0//src/f.txt\n@@ -1 +1 @@\n-a\n+b\n";
    let dir = tree(&[("src/f.txt", "a\n")]);
    let report = run(&dir, patch2, 2).unwrap();
    assert_eq!(read(&dir, "src/f.txt"), "b\n");
    assert_eq!(changed(&report), ["src/f.txt"]);

    // `./` counts as a component when stripping; later `.` components are dropped.
    let patch_dot = "--- ./a/./f.txt\n+++ ./a/./f.txt\n@@ -1 +1 @@\n-a\n+b\n";
    let dir = tree(&[("f.txt", "a\n")]);
    run(&dir, patch_dot, 2).unwrap();
    assert_eq!(read(&dir, "f.txt"), "b\n");
}

#[test]
fn strip_leaving_nothing_is_refused() {
    let dir = tree(&[("f.txt", "a\n")]);
    let patch = "garbage\n--- a/f.txt\n+++ b/f.txt\n@@ -1 +1 @@\n-a\n+b\n";
    let err = run(&dir, patch, 2).unwrap_err();
    assert!(
        matches!(err, PatchError::StripTooLong { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(err.to_string().contains("`a/f.txt`"), "{err}");
}

#[test]
fn no_newline_at_end_of_old_file() {
    let dir = tree(&[("nonl.txt", "last")]);
    // Real `git diff` output adding the final newline.
    let patch = "diff --git a/nonl.txt b/nonl.txt\nindex 1c1206e..b25fa3f 100644\n\
                 --- a/nonl.txt\n+++ b/nonl.txt\n@@ -1 +1 @@\n-last\n\
                 \\ No newline at end of file\n+last\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "nonl.txt"), "last\n");

    // The same patch does not apply to a file that has the newline.
    let dir = tree(&[("nonl.txt", "last\n")]);
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        err.to_string().contains("(no newline at end of file)"),
        "{err}"
    );
}

#[test]
fn no_newline_at_end_of_new_file() {
    let dir = tree(&[("f", "a\nb\n")]);
    let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of file\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "f"), "a\nc");
}

#[test]
fn no_newline_on_both_sides() {
    let dir = tree(&[("f", "a\nb\nc")]);
    let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n-a\n+A\n b\n c\n\\ No newline at end of file\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "f"), "A\nb\nc");

    // Marker in the middle of a hunk (old side), then added lines.
    let dir = tree(&[("f", "x\ny")]);
    let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,3 @@\n x\n-y\n\\ No newline at end of file\n\
                 +y\n+z\n\\ No newline at end of file\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "f"), "x\ny\nz");
}

#[test]
fn new_side_without_newline_must_end_the_file() {
    let dir = tree(&[("f", "a\nb\nc\n")]);
    let patch = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+A\n\\ No newline at end of file\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");
    assert_eq!(read(&dir, "f"), "a\nb\nc\n");
}

#[test]
fn context_mismatch_names_file_hunk_and_lines() {
    let mut content = String::new();
    for i in 1..=50 {
        content.push_str(&format!("line {i}\n"));
    }
    let dir = tree(&[("src/a.c", &content)]);
    let patch = "--- a/src/a.c\n+++ b/src/a.c\n\
                 @@ -2,1 +2,1 @@\n-line 2\n+LINE 2\n\
                 @@ -40,3 +40,3 @@\n line 40\n-foo\n+bar\n line 42\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        matches!(
            err,
            PatchError::HunkFailed {
                hunk: 2,
                line: 40,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "patch fix.patch: hunk 2 of src/a.c does not apply at line 40 (context differs at \
         line 41: expected `foo`, found `line 41`; no exact match elsewhere in the file)"
    );
    // Nothing written, not even the first hunk.
    assert_eq!(read(&dir, "src/a.c"), content);
}

#[test]
fn mismatch_past_end_of_file() {
    let dir = tree(&[("f", "a\n")]);
    let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected `b`, found the end of the file"),
        "{err}"
    );
}

#[test]
fn offset_hunk_found_by_search() {
    // Three lines were inserted at the top since the patch was made.
    let content = format!("new 1\nnew 2\nnew 3\n{TEN}");
    let dir = tree(&[("t.txt", &content)]);
    let patch = "--- a/t.txt\n+++ b/t.txt\n\
                 @@ -4,3 +4,3 @@\n four\n-five\n+FIVE\n six\n\
                 @@ -8,3 +8,3 @@\n eight\n-nine\n+NINE\n ten\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(
        read(&dir, "t.txt"),
        format!(
            "new 1\nnew 2\nnew 3\n{}",
            TEN.replace("five", "FIVE").replace("nine", "NINE")
        )
    );

    // Negative offset too.
    let dir = tree(&[("t.txt", "four\nfive\nsix\n")]);
    let patch = "--- a/t.txt\n+++ b/t.txt\n@@ -4,3 +4,3 @@\n four\n-five\n+FIVE\n six\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "t.txt"), "four\nFIVE\nsix\n");
}

#[test]
fn search_keeps_hunks_at_file_start_or_end() {
    // Less context after the change than before: the hunk is at the end of the file.
    let patch = "--- a/f\n+++ b/f\n@@ -2,3 +2,3 @@\n b\n c\n-d\n+D\n";
    let dir = tree(&[("f", "x\na\nb\nc\nd\n")]);
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "f"), "x\na\nb\nc\nD\n");
    let dir = tree(&[("f", "x\na\nb\nc\nd\nmore\n")]);
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");

    // Less context before: at the start.
    let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n-a\n+A\n b\n c\n";
    let dir = tree(&[("f", "new\na\nb\nc\n")]);
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");
    let dir = tree(&[("f", "a\nb\nc\n")]);
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "f"), "A\nb\nc\n");
}

#[test]
fn ambiguous_search_is_refused() {
    let dir = tree(&[("f", "x\na\nb\nx\na\nb\nx\n")]);
    let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n x\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        matches!(
            err,
            PatchError::Ambiguous {
                hunk: 1,
                first: 2,
                second: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to guess"), "{err}");
    assert_eq!(read(&dir, "f"), "x\na\nb\nx\na\nb\nx\n");

    // At the stated position, a repeated pre-image is fine.
    let patch = "--- a/f\n+++ b/f\n@@ -5,3 +5,3 @@\n a\n-b\n+B\n x\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "f"), "x\na\nb\nx\na\nB\nx\n");
}

#[test]
fn search_does_not_go_back_before_previous_hunk() {
    let dir = tree(&[("f", "a\nb\nc\nd\n")]);
    // Hunk 2 claims line 1 again: its lines only exist before hunk 1's end.
    let patch = "--- a/f\n+++ b/f\n@@ -3,1 +3,1 @@\n-c\n+C\n@@ -1,1 +1,1 @@\n-a\n+A\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        matches!(err, PatchError::HunkFailed { hunk: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("overlaps the previous hunk"),
        "{err}"
    );
}

#[test]
fn traversal_names_are_refused() {
    for (name, strip) in [
        ("../x", 0),
        ("a/../x", 1),
        ("a/../../x", 1),
        ("/etc/passwd", 0),
        ("/etc/passwd", 1),
        ("a\\..\\x", 0),
        ("C:/x", 0),
    ] {
        let dir = tree(&[("x", "a\n")]);
        let patch = format!("--- {name}\n+++ {name}\n@@ -1 +1 @@\n-a\n+b\n");
        let err = run(&dir, &patch, strip).unwrap_err();
        assert!(
            matches!(err, PatchError::UnsafePath { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{name}: {err}");
        assert_eq!(read(&dir, "x"), "a\n");
    }
    // NUL and other control characters through git quoting.
    let dir = tree(&[]);
    let patch = "--- /dev/null\n+++ \"b/x\\000y\"\n@@ -0,0 +1 @@\n+a\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    let patch = "--- /dev/null\n+++ \"b/x\\ny\"\n@@ -0,0 +1 @@\n+a\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::UnsafePath { .. }), "{err}");
    // Also when the unsafe name is only the old one.
    let patch = "diff --git a/../x b/x\nsimilarity index 100%\nrename from ../x\nrename to x\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::UnsafePath { .. }), "{err}");
    assert!(listing(&dir).is_empty());
}

#[cfg(unix)]
#[test]
fn symlinks_on_the_way_are_refused() {
    let outside = tree(&[("target.txt", "a\n")]);
    let dir = tree(&[]);
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("target.txt"), dir.path().join("file")).unwrap();

    // Through a symlinked directory.
    let patch = "--- a/link/target.txt\n+++ b/link/target.txt\n@@ -1 +1 @@\n-a\n+b\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains("`link` is a symlink"), "{err}");
    // Creating through it.
    let patch = "--- /dev/null\n+++ b/link/new.txt\n@@ -0,0 +1 @@\n+x\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::UnsafePath { .. }), "{err}");
    // The target itself a symlink.
    let patch = "--- a/file\n+++ b/file\n@@ -1 +1 @@\n-a\n+b\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains("`file`"), "{err}");

    assert_eq!(read(&outside, "target.txt"), "a\n");
    assert!(!outside.path().join("new.txt").exists());
}

#[test]
fn directory_target_is_refused() {
    let dir = tree(&[("d/f", "a\n")]);
    let patch = "--- a/d\n+++ b/d\n@@ -1 +1 @@\n-a\n+b\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::NotAFile { .. }), "{err}");
    let patch = "--- /dev/null\n+++ b/d/f/g\n@@ -0,0 +1 @@\n+a\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        err.to_string().contains("`d/f` is not a directory"),
        "{err}"
    );
}

#[test]
fn real_git_diff() {
    let dir = tree(&[
        ("src/main.c", "int main() {\n  return 0;\n}\n"),
        ("dead.txt", "gone\n"),
        ("run.sh", "#!/bin/sh\necho hi\n"),
        ("sp ace.txt", "x\n"),
    ]);
    // `git diff --cached` output (tabs after names with spaces, quoted names with octal
    // escapes, mode changes, deletion, creation).
    let patch = "diff --git \"a/caf\\303\\251.txt\" \"b/caf\\303\\251.txt\"\n\
                 new file mode 100644\n\
                 index 0000000..c600332\n\
                 --- /dev/null\n\
                 +++ \"b/caf\\303\\251.txt\"\n\
                 @@ -0,0 +1 @@\n\
                 +\u{e9}\n\
                 diff --git a/dead.txt b/dead.txt\n\
                 deleted file mode 100644\n\
                 index 286c5f5..0000000\n\
                 --- a/dead.txt\n\
                 +++ /dev/null\n\
                 @@ -1 +0,0 @@\n\
                 -gone\n\
                 diff --git a/run.sh b/run.sh\n\
                 old mode 100644\n\
                 new mode 100755\n\
                 diff --git a/sp ace.txt b/sp ace.txt\n\
                 index 587be6b..b77b4eb 100644\n\
                 --- a/sp ace.txt\t\n\
                 +++ b/sp ace.txt\t\n\
                 @@ -1 +1,2 @@\n\
                 \x20x\n\
                 +y\n\
                 diff --git a/src/main.c b/src/main.c\n\
                 index 4cce7f6..16db28e 100644\n\
                 --- a/src/main.c\n\
                 +++ b/src/main.c\n\
                 @@ -1,3 +1,3 @@\n\
                 \x20int main() {\n\
                 -  return 0;\n\
                 +  return 1;\n\
                 \x20}\n\
                 diff --git a/tool.sh b/tool.sh\n\
                 new file mode 100755\n\
                 index 0000000..05cfd7f\n\
                 --- /dev/null\n\
                 +++ b/tool.sh\n\
                 @@ -0,0 +1,2 @@\n\
                 +#!/bin/sh\n\
                 +echo new\n";
    let report = run(&dir, patch, 1).unwrap();
    assert_eq!(
        changed(&report),
        [
            "caf\u{e9}.txt",
            "dead.txt",
            "run.sh",
            "sp ace.txt",
            "src/main.c",
            "tool.sh"
        ]
    );
    assert_eq!(read(&dir, "caf\u{e9}.txt"), "\u{e9}\n");
    assert!(!exists(&dir, "dead.txt"));
    assert_eq!(read(&dir, "run.sh"), "#!/bin/sh\necho hi\n");
    assert_eq!(read(&dir, "sp ace.txt"), "x\ny\n");
    assert_eq!(read(&dir, "src/main.c"), "int main() {\n  return 1;\n}\n");
    assert_eq!(read(&dir, "tool.sh"), "#!/bin/sh\necho new\n");
    #[cfg(unix)]
    {
        assert_eq!(mode_of(&dir, "run.sh"), 0o755);
        assert_eq!(mode_of(&dir, "tool.sh"), 0o755);
        assert_eq!(mode_of(&dir, "src/main.c"), 0o644);
    }
}

#[cfg(unix)]
#[test]
fn mode_change_clears_exec_and_keeps_other_bits() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tree(&[("x y", "a\n")]);
    fs::set_permissions(dir.path().join("x y"), fs::Permissions::from_mode(0o755)).unwrap();
    // Unquoted names with a space, no `---`/`+++`: split where both names agree.
    let patch = "diff --git a/x y b/x y\nold mode 100755\nnew mode 100644\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(mode_of(&dir, "x y"), 0o644);
    assert_eq!(read(&dir, "x y"), "a\n");
}

#[test]
fn symlink_and_submodule_modes_are_unsupported() {
    let dir = tree(&[]);
    let patch = "diff --git a/l b/l\nnew file mode 120000\nindex 0..1\n--- /dev/null\n+++ b/l\n\
                 @@ -0,0 +1 @@\n+target\n\\ No newline at end of file\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        matches!(err, PatchError::Unsupported { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("symlink"), "{err}");
    let patch = "diff --git a/m b/m\nnew file mode 160000\nindex 0..1\n--- /dev/null\n+++ b/m\n\
                 @@ -0,0 +1 @@\n+Subproject commit 1234\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(err.to_string().contains("submodule"), "{err}");
}

#[test]
fn format_patch_mail_around_the_diff_is_ignored() {
    let dir = tree(&[("f.txt", "a\n")]);
    let patch = "From 87503407e399baf93f46ec45913e72d52ebd6cf9 Mon Sep 17 00:00:00 2001\n\
                 From: t <a@b>\n\
                 Date: Fri, 27 Nov 2026 13:00:32 +0000\n\
                 Subject: [PATCH] fix things\n\
                 \n\
                 --- this line in the message is not a header\n\
                 ---\n\
                 \x20f.txt | 2 +-\n\
                 \x201 file changed, 1 insertion(+), 1 deletion(-)\n\
                 \x20create mode 100644 other\n\
                 \n\
                 diff --git a/f.txt b/f.txt\n\
                 index 1..2 100644\n\
                 --- a/f.txt\n\
                 +++ b/f.txt\n\
                 @@ -1 +1 @@\n\
                 -a\n\
                 +b\n\
                 -- \n\
                 2.47.3\n\
                 \n";
    let report = run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "f.txt"), "b\n");
    assert_eq!(changed(&report), ["f.txt"]);
}

#[test]
fn removed_lines_looking_like_headers() {
    let dir = tree(&[("f", "-- x\n++ y\nz\n")]);
    let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,1 @@\n--- x\n-++ y\n z\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "f"), "z\n");

    let dir = tree(&[("f", "z\n")]);
    let patch = "--- a/f\n+++ b/f\n@@ -1 +1,3 @@\n z\n+++ x\n+-- y\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "f"), "z\n++ x\n-- y\n");
}

#[test]
fn crlf_files_and_patches() {
    let dir = tree(&[("w.txt", "one\r\ntwo\r\nthree\r\n")]);
    let patch =
        "--- a/w.txt\r\n+++ b/w.txt\r\n@@ -1,3 +1,3 @@\r\n one\r\n-two\r\n+TWO\r\n three\r\n";
    let report = run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "w.txt"), "one\r\nTWO\r\nthree\r\n");
    assert_eq!(changed(&report), ["w.txt"]);

    // LF hunk lines do not match CRLF content (no whitespace leniency).
    let dir = tree(&[("w.txt", "one\r\ntwo\r\n")]);
    let patch = "--- a/w.txt\n+++ b/w.txt\n@@ -1,2 +1,2 @@\n one\n-two\n+TWO\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(err.to_string().contains("found `one\\r`"), "{err}");

    // Mixed: only one line ends in CRLF.
    let dir = tree(&[("m.txt", "a\nb\r\nc\n")]);
    let patch = "--- a/m.txt\n+++ b/m.txt\n@@ -1,3 +1,3 @@\n a\n-b\r\n+B\r\n c\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "m.txt"), "a\nB\r\nc\n");
}

#[test]
fn binary_content_is_patched_as_bytes() {
    let dir = tree(&[]);
    fs::write(dir.path().join("bin"), b"\xff\xfe\n\x00zero\n").unwrap();
    let patch = b"--- a/bin\n+++ b/bin\n@@ -1,2 +1,2 @@\n \xff\xfe\n-\x00zero\n+\x01one\n";
    run_bytes(&dir, patch, 1).unwrap();
    assert_eq!(
        fs::read(dir.path().join("bin")).unwrap(),
        b"\xff\xfe\n\x01one\n"
    );
}

#[test]
fn empty_context_hunks() {
    // `diff -U0`: pure insertion, pure deletion, change.
    let dir = tree(&[("t.txt", TEN)]);
    let patch = "--- a/t.txt\n+++ b/t.txt\n\
                 @@ -0,0 +1 @@\n+zero\n\
                 @@ -2,0 +4,2 @@\n+two.a\n+two.b\n\
                 @@ -5 +6,0 @@\n-five\n\
                 @@ -7,2 +8 @@\n-seven\n-eight\n+7-8\n\
                 @@ -10,0 +11 @@\n+eleven\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(
        read(&dir, "t.txt"),
        "zero\none\ntwo\ntwo.a\ntwo.b\nthree\nfour\nsix\n7-8\nnine\nten\neleven\n"
    );

    // An insertion is never moved: past the end is an error.
    let dir = tree(&[("s.txt", "a\n")]);
    let patch = "--- a/s.txt\n+++ b/s.txt\n@@ -5,0 +6 @@\n+x\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        err.to_string().contains("the file has only 1 lines"),
        "{err}"
    );

    // Nor appended after a last line without newline.
    let dir = tree(&[("s.txt", "a")]);
    let patch = "--- a/s.txt\n+++ b/s.txt\n@@ -1,0 +2 @@\n+x\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");
}

#[test]
fn failure_in_second_file_leaves_first_unchanged() {
    let dir = tree(&[("a.txt", "a\n"), ("b.txt", "b\n")]);
    let patch = "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+A\n\
                 --- /dev/null\n+++ b/c.txt\n@@ -0,0 +1 @@\n+c\n\
                 --- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-not b\n+B\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        matches!(err, PatchError::HunkFailed { ref file, hunk: 1, .. } if file == "b.txt"),
        "{err}"
    );
    assert_eq!(read(&dir, "a.txt"), "a\n");
    assert!(!exists(&dir, "c.txt"));
    assert_eq!(listing(&dir), ["a.txt", "b.txt"]);
}

#[test]
fn no_temporary_files_are_left() {
    let dir = tree(&[("d/a.txt", "a\n")]);
    let patch = "--- a/d/a.txt\n+++ b/d/a.txt\n@@ -1 +1 @@\n-a\n+A\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(listing(&dir), ["d", "d/a.txt"]);
}

#[test]
fn sequential_diffs_of_one_file() {
    let dir = tree(&[("f", "1\n2\n3\n")]);
    let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n-1\n+one\n 2\n 3\n\
                 --- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n one\n 2\n-3\n+three\n";
    let report = run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "f"), "one\n2\nthree\n");
    assert_eq!(changed(&report), ["f"]);

    // Create then patch in the same patch.
    let dir = tree(&[]);
    let patch =
        "--- /dev/null\n+++ b/n\n@@ -0,0 +1 @@\n+x\n--- a/n\n+++ b/n\n@@ -1 +1 @@\n-x\n+y\n";
    run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "n"), "y\n");
}

#[test]
fn file_and_directory_conflicts_within_a_patch() {
    let dir = tree(&[]);
    let patch = "--- /dev/null\n+++ b/a\n@@ -0,0 +1 @@\n+x\n\
                 --- /dev/null\n+++ b/a/b\n@@ -0,0 +1 @@\n+y\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(err.to_string().contains("`a` is a file"), "{err}");
    let patch = "--- /dev/null\n+++ b/a/b\n@@ -0,0 +1 @@\n+y\n\
                 --- /dev/null\n+++ b/a\n@@ -0,0 +1 @@\n+x\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(err.to_string().contains("directory holding `a/b`"), "{err}");
    assert!(listing(&dir).is_empty());
}

#[test]
fn binary_patches_are_refused() {
    let dir = tree(&[("img.png", "x")]);
    let patch = "diff --git a/img.png b/img.png\nindex 1..2 100644\nGIT binary patch\n\
                 literal 3\nKcmZ?wbN>K\n\nliteral 1\nIcmZ?w00031\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(matches!(err, PatchError::Binary { line: 3, .. }), "{err}");
    assert!(
        err.to_string().contains("binary patches are not supported"),
        "{err}"
    );
    let patch = "diff --git a/img.png b/img.png\nindex 1..2 100644\n\
                 Binary files a/img.png and b/img.png differ\n";
    let err = run(&dir, patch, 1).unwrap_err();
    assert!(
        err.to_string().contains("binary patches are not supported"),
        "{err}"
    );
}

#[test]
fn quoted_names() {
    let dir = tree(&[("a b/c\"d.txt", "1\n")]);
    let patch = "diff --git \"a/a b/c\\\"d.txt\" \"b/a b/c\\\"d.txt\"\nindex 1..2 100644\n\
                 --- \"a/a b/c\\\"d.txt\"\t\n+++ \"b/a b/c\\\"d.txt\"\t\n@@ -1 +1 @@\n-1\n+2\n";
    let report = run(&dir, patch, 1).unwrap();
    assert_eq!(read(&dir, "a b/c\"d.txt"), "2\n");
    assert_eq!(changed(&report), ["a b/c\"d.txt"]);

    assert_eq!(
        unquote(b"\"a\\tb\\\\c\\303\\251\" rest").unwrap(),
        (b"a\tb\\c\xc3\xa9".to_vec(), &b" rest"[..])
    );
    assert!(unquote(b"\"abc").is_err());
    assert!(unquote(b"\"a\\qb\"").is_err());
    assert_eq!(
        git_names(b"a/x y b/x y").unwrap(),
        Some(("a/x y".to_owned(), "b/x y".to_owned()))
    );
    assert_eq!(
        git_names(b"a/x \"b/y z\"").unwrap(),
        Some(("a/x".to_owned(), "b/y z".to_owned()))
    );
    assert_eq!(git_names(b"a/x y b/z w").unwrap(), None);
}

#[test]
fn malformed_patches() {
    let dir = tree(&[("f", "a\nb\n")]);
    let cases = [
        // Truncated hunk.
        (
            "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n",
            "ends inside hunk 1",
        ),
        // More lines than counted.
        (
            "--- a/f\n+++ b/f\n@@ -1,2 +1,1 @@\n a\n b\n",
            "has more context lines",
        ),
        // Bad line in a hunk body.
        (
            "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n*b\n",
            "fewer than its header says",
        ),
        // Invalid hunk header.
        ("--- a/f\n+++ b/f\n@@ -x +1 @@\n", "invalid hunk header"),
        // Hunk without a file header.
        ("junk\n@@ -1 +1 @@\n-a\n+b\n", "hunk without"),
        // File header without hunks.
        ("--- a/f\n+++ b/f\nnothing\n", "without any hunk"),
        // Marker first.
        (
            "--- a/f\n+++ b/f\n@@ -1 +1 @@\n\\ No newline at end of file\n-a\n+b\n",
            "does not follow",
        ),
        // Stray marker in the middle of one side.
        (
            "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-a\n\\ No newline at end of file\n-b\n+a\n+b\n",
            "goes on after a `\\ No newline",
        ),
        // Both names /dev/null.
        (
            "--- /dev/null\n+++ /dev/null\n@@ -0,0 +1 @@\n+a\n",
            "both file names",
        ),
        // Unterminated quote.
        ("--- \"a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n", "unterminated"),
    ];
    for (patch, expected) in cases {
        let err = run(&dir, patch, 1).unwrap_err();
        assert!(
            matches!(err, PatchError::Malformed { .. }),
            "{patch:?}: {err}"
        );
        assert!(err.to_string().contains(expected), "{patch:?}: {err}");
    }
    assert_eq!(read(&dir, "f"), "a\nb\n");
}

#[test]
fn malformed_error_names_the_line() {
    let dir = tree(&[("f", "a\n")]);
    let err = run(&dir, "x\ny\n--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n*\n", 1).unwrap_err();
    assert!(
        matches!(err, PatchError::Malformed { line: 7, .. }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("patch fix.patch: line 7: "),
        "{err}"
    );
}

#[test]
fn empty_and_oversized_patches() {
    let dir = tree(&[]);
    let err = run(&dir, "just a commit message\n", 1).unwrap_err();
    assert!(matches!(err, PatchError::NoDiff { .. }), "{err}");
    let err = run(&dir, "", 1).unwrap_err();
    assert!(matches!(err, PatchError::NoDiff { .. }), "{err}");

    let huge = vec![b'x'; MAX_PATCH_BYTES + 1];
    let err = run_bytes(&dir, &huge, 1).unwrap_err();
    assert!(matches!(err, PatchError::PatchTooLarge { .. }), "{err}");
}

#[test]
fn patch_without_final_newline() {
    let dir = tree(&[("f", "a\n")]);
    run(&dir, "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b", 1).unwrap();
    assert_eq!(read(&dir, "f"), "b\n");
}

#[test]
fn empty_line_in_hunk_is_empty_context() {
    let dir = tree(&[("f", "a\n\nb\n")]);
    run(&dir, "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n\n-b\n+B\n", 1).unwrap();
    assert_eq!(read(&dir, "f"), "a\n\nB\n");
}
