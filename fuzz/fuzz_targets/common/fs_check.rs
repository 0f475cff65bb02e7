//! File-system checks shared by the `archive` and `patch` targets.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Resolves `path` (absolute) the way the kernel would, following every symlink, but without
/// needing the final components to exist (missing components are taken literally, as no
/// symlink can hide below them). `None` for a symlink loop.
pub fn resolve(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_front(&mut todo, path, &mut out);
    let mut hops = 0u32;
    while let Some(comp) = todo.pop_front() {
        if comp == "." {
            continue;
        }
        if comp == ".." {
            out.pop();
            continue;
        }
        let candidate = out.join(&comp);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 64 {
                    return None;
                }
                let target = fs::read_link(&candidate).ok()?;
                push_front(&mut todo, &target, &mut out);
            }
            _ => out = candidate,
        }
    }
    Some(out)
}

/// Puts the components of `p` before the pending ones; an absolute `p` restarts at `/`.
fn push_front(todo: &mut VecDeque<OsString>, p: &Path, out: &mut PathBuf) {
    let mut comps = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                *out = PathBuf::from("/");
                comps.clear();
            }
            Component::CurDir => {}
            Component::ParentDir => comps.push(OsString::from("..")),
            Component::Normal(n) => comps.push(n.to_os_string()),
        }
    }
    for c in comps.into_iter().rev() {
        todo.push_front(c);
    }
}

/// What `snapshot` records of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Symlink { target: PathBuf },
    Other { mode: u32 },
}

/// Every entry below `root` (not following symlinks), by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, &mut |path, meta| {
        let rel = path.strip_prefix(root).expect("below root").to_path_buf();
        let mode = meta.permissions().mode();
        let ft = meta.file_type();
        let node = if ft.is_symlink() {
            Node::Symlink {
                target: fs::read_link(path).expect("read_link"),
            }
        } else if ft.is_dir() {
            Node::Dir { mode }
        } else if ft.is_file() {
            Node::File {
                mode,
                content: fs::read(path).expect("read file"),
            }
        } else {
            Node::Other { mode }
        };
        out.insert(rel, node);
    });
    out
}

/// Calls `f` on every entry below `dir` (depth first, symlinks not followed).
pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata)) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.map(|e| e.expect("dir entry").path()).collect();
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).expect("symlink_metadata");
        f(&path, &meta);
        if meta.file_type().is_dir() {
            walk(&path, f);
        }
    }
}

/// The names directly in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Asserts that every symlink below `root` resolves (following symlinks, even through missing
/// files) to a path inside `root`, and that nothing below it is a device, FIFO or socket, or
/// has the setuid, setgid or sticky bit, or is a regular file with a second hard link.
pub fn assert_contained(root: &Path) {
    let root = fs::canonicalize(root).expect("canonical root");
    walk(&root, &mut |path, meta| {
        let ft = meta.file_type();
        assert!(
            ft.is_dir() || ft.is_file() || ft.is_symlink(),
            "{}: not a file, directory or symlink",
            path.display()
        );
        assert_eq!(
            meta.permissions().mode() & 0o7000,
            0,
            "{}: setuid/setgid/sticky bit",
            path.display()
        );
        if ft.is_file() {
            assert_eq!(meta.nlink(), 1, "{}: hard-linked file", path.display());
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).expect("read_link");
            if let Some(resolved) = resolve(path) {
                assert!(
                    resolved.starts_with(&root),
                    "symlink {} -> {} resolves to {}, outside {}",
                    path.display(),
                    target.display(),
                    resolved.display(),
                    root.display()
                );
            }
        }
    });
}

/// Whether `GF_FUZZ_DEBUG` is set: targets then print each input's outcome to stderr (for
/// checking what seeds reach; too slow for fuzzing).
pub fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("GF_FUZZ_DEBUG").is_some())
}
