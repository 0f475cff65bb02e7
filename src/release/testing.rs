//! Builds throwaway git repositories for tests (here and in the `publish` command's tests, which may not use git2 themselves).
use std::path::Path;

use git2::{Index, IndexEntry, IndexTime, Oid, Repository, Signature, Time};

/// A regular file.
pub(crate) const FILE: u32 = 0o100644;
/// An executable file.
pub(crate) const EXEC: u32 = 0o100755;
/// A symlink; the content is its target.
pub(crate) const LINK: u32 = 0o120000;
/// A submodule; the content is ignored.
pub(crate) const SUBMODULE: u32 = 0o160000;

/// Initialises a repository with a work tree at `dir`.
pub(crate) fn init(dir: &Path) {
    Repository::init(dir).unwrap();
}

/// Commits a tree holding exactly `files` (`(path, mode, content)`) on `HEAD`, at `time`
/// (seconds); returns the commit id.
pub(crate) fn commit(dir: &Path, files: &[(&str, u32, &[u8])], time: i64) -> String {
    let repo = Repository::open(dir).unwrap();
    let mut index = Index::new().unwrap();
    let zero = IndexTime::new(0, 0);
    for (path, mode, content) in files {
        let id = if *mode == SUBMODULE {
            Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap()
        } else {
            repo.blob(content).unwrap()
        };
        index
            .add(&IndexEntry {
                ctime: zero,
                mtime: zero,
                dev: 0,
                ino: 0,
                mode: *mode,
                uid: 0,
                gid: 0,
                file_size: 0,
                id,
                flags: u16::try_from(path.len().min(0xfff)).unwrap(),
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            })
            .unwrap();
    }
    let tree = repo.find_tree(index.write_tree_to(&repo).unwrap()).unwrap();
    let sig = Signature::new("Test", "test@example.com", &Time::new(time, 0)).unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<_> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, "release", &tree, &parents)
        .unwrap()
        .to_string()
}

/// Tags `commit`: annotated when `annotated`, else lightweight.
pub(crate) fn tag(dir: &Path, name: &str, commit: &str, annotated: bool) {
    let repo = Repository::open(dir).unwrap();
    let target = repo
        .find_object(Oid::from_str(commit).unwrap(), None)
        .unwrap();
    if annotated {
        let sig = Signature::new("Test", "test@example.com", &Time::new(1, 0)).unwrap();
        repo.tag(name, &target, &sig, "a release", false).unwrap();
    } else {
        repo.tag_lightweight(name, &target, false).unwrap();
    }
}
