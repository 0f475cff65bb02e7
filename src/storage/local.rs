//! Housekeeping for roles on the local filesystem: the spool folder, what a killed process
//! left behind (spool files and work folders named with their process id, object-store
//! staging files), block streaming of local files, and bulk reads of small local objects.
//! Only `storage` asks whether a role is local; everything above sees [`Storage`].

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;

use super::{Role, Storage, StorageError, StorageKey};

impl Storage {
    /// For a `cas` role on the local filesystem: its `tmp/` folder (where `StorageKey::Temp`
    /// objects live), for spool files, so a verified spool can become a blob by a rename.
    /// Leftovers there are what `storage verify --fix` cleans up.
    pub(super) fn local_spool_dir(&self) -> Option<std::path::PathBuf> {
        let dir = self.layout().cas.local_path()?.join("tmp");
        std::fs::create_dir_all(&dir).ok()?;
        Some(dir)
    }

    /// Removes what a killed process left in the local store: spool files and publish work
    /// folders (named with their process id, see [`spool_prefix`]) of processes that no longer
    /// run on this host, and `object_store`'s staging files (`NAME#N`, never listed) in the
    /// local roles. Returns how many entries were removed.
    ///
    /// A staging file of another live process writing to the same folder right now would make
    /// that write fail (loudly, never silently): replicas sharing one store use S3.
    #[must_use]
    pub fn clean_local_leftovers(&self) -> usize {
        let mut removed = 0;
        if let Some(spool) = self.local_spool_dir()
            && let Ok(entries) = std::fs::read_dir(&spool)
        {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if spool_owner(&name).is_some_and(|pid| !process_alive(pid)) {
                    let path = e.path();
                    let gone = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    if gone.is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        for root in [
            self.layout().cas.local_path(),
            self.layout().records.local_path(),
        ]
        .into_iter()
        .flatten()
        {
            removed += remove_staging_files(&root);
        }
        removed
    }

    /// For a key whose role is on the local filesystem: the file that holds it.
    pub(super) fn local_path_of(&self, key: &StorageKey) -> Option<std::path::PathBuf> {
        let root = match key.role() {
            Role::Cas => self.layout().cas.local_path()?,
            Role::Records => self.layout().records.local_path()?,
        };
        Some(
            key.path()
                .parts()
                .fold(root, |p, part| p.join(part.as_ref())),
        )
    }
}

/// Blocking tasks that read the objects of a local folder.
const LOCAL_READERS: usize = 4;

/// An object's bytes (`None` when it is gone).
pub(super) type Fetched = Result<Option<Bytes>, StorageError>;

/// Objects being read from a local folder by blocking tasks.
struct LocalRead {
    keys: Arc<[StorageKey]>,
    rx: tokio::sync::mpsc::Receiver<(usize, Option<Fetched>)>,
    /// Which keys were answered.
    received: Vec<bool>,
    /// Once every reader is done: no key before this one is unanswered.
    next_unanswered: usize,
    storage: Storage,
}

/// Reads the local objects at `keys`, in any order, each answered with its index: a few
/// blocking tasks read the files one after another. One blocking task per file (the object
/// store's way) grows tokio's blocking pool to hundreds of threads during a start, each
/// keeping its stack and allocator arena.
pub(super) fn read_files(
    storage: Storage,
    keys: Vec<StorageKey>,
) -> BoxStream<'static, (usize, Fetched)> {
    let keys: Arc<[StorageKey]> = keys.into();
    let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Option<Fetched>)>(64);
    let share = keys.len().div_ceil(LOCAL_READERS).max(1);
    for first in (0..keys.len()).step_by(share) {
        let (tx, storage, keys) = (tx.clone(), storage.clone(), keys.clone());
        tokio::spawn(crate::tasks::spawn_blocking(move || {
            for (i, key) in keys.iter().enumerate().skip(first).take(share) {
                let path = storage.local_path_of(key);
                let got = match path.map(std::fs::read) {
                    Some(Ok(bytes)) => Some(Ok(Some(Bytes::from(bytes)))),
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Some(Ok(None)),
                    // Any other failure: read it through the store, for its error.
                    _ => None,
                };
                if tx.blocking_send((i, got)).is_err() {
                    return; // the caller stopped reading
                }
            }
        }));
    }
    drop(tx);
    let state = LocalRead {
        received: vec![false; keys.len()],
        keys,
        rx,
        next_unanswered: 0,
        storage,
    };
    futures::stream::unfold(state, |mut st| async move {
        let (i, got) = match st.rx.recv().await {
            Some((i, got)) => (i, got),
            // Every reader is done. A key one did not answer (it failed) is read through
            // the store, like the ones it could not read.
            None => {
                let i = (st.next_unanswered..st.keys.len()).find(|&i| !st.received[i])?;
                st.next_unanswered = i + 1;
                (i, None)
            }
        };
        st.received[i] = true;
        let got = match got {
            Some(got) => got,
            None => st.storage.get(&st.keys[i]).await,
        };
        Some(((i, got), st))
    })
    .boxed()
}

/// Size of the blocks read from a local file.
const FILE_BLOCK: u64 = 1 << 20;

/// Streams `range` of a local file in 1 MiB positioned reads on the blocking pool.
pub(super) fn file_blocks(
    file: std::fs::File,
    range: Range<u64>,
    role: Role,
) -> BoxStream<'static, Result<Bytes, StorageError>> {
    let file = Arc::new(file);
    futures::stream::unfold(range.start, move |pos| {
        let file = file.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return None;
            }
            let want = usize::try_from((end - pos).min(FILE_BLOCK)).unwrap_or(1 << 20);
            let read = crate::tasks::spawn_blocking(move || {
                use std::os::unix::fs::FileExt as _;
                let mut buf = vec![0u8; want];
                file.read_exact_at(&mut buf, pos).map(|()| buf)
            })
            .await;
            let item = match read {
                Ok(Ok(buf)) => Ok(Bytes::from(buf)),
                Ok(Err(e)) => Err(StorageError::Backend {
                    role: role.name(),
                    source: object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    },
                }),
                Err(e) => Err(StorageError::Backend {
                    role: role.name(),
                    source: object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    },
                }),
            };
            // After an error the stream ends.
            let next = if item.is_ok() { pos + want as u64 } else { end };
            Some((item, next))
        }
    })
    .boxed()
}

/// The name prefix of this process's spool files and work folders of `kind` (`fill`,
/// `upload`, `publish`): `gf-registry-{kind}-{pid}-`.
#[must_use]
pub fn spool_prefix(kind: &str) -> String {
    format!("gf-registry-{kind}-{}-", std::process::id())
}

/// The process id a spool entry's name carries, if it is one.
fn spool_owner(name: &str) -> Option<u32> {
    let rest = ["fill", "upload", "publish"]
        .iter()
        .find_map(|k| name.strip_prefix(&format!("gf-registry-{k}-")))?;
    rest.split('-').next()?.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes `object_store` `LocalFileSystem` staging files (`NAME#N`) under `root`.
fn remove_staging_files(root: &Path) -> usize {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
                continue;
            }
            let name = e.file_name();
            let name = name.to_string_lossy();
            let staged = name
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if staged && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
