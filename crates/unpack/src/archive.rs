//! Safe extraction of a release's source archive.
//!
//! [`extract`] unpacks one archive (tar, optionally gzip/xz/zstd/bzip2-compressed, or zip) into
//! an empty directory, taking entries relative to a `strip_prefix` the way Bazel's
//! `http_archive` does, and refuses anything that could reach outside that directory or exhaust
//! the server:
//!
//! - names with a `..` component, absolute names (`/x`, `C:/x`), NUL bytes or non-UTF-8 bytes;
//! - symlinks whose target, resolved inside the extracted tree (following the archive's other
//!   symlinks), leaves the root, and any entry whose parent is a previously extracted symlink;
//! - hardlinks to anything but a regular file this archive already extracted (the link is
//!   written as an independent copy of that file);
//! - device files, FIFOs and sockets; sparse files and unknown tar entry types;
//! - the same path twice, or a file where a directory is needed;
//! - truncated or corrupt streams (the compressed stream is read to its end, so a damaged
//!   trailer is an error too);
//! - more than [`Limits::max_entries`] entries, more than [`Limits::max_total_bytes`] unpacked
//!   bytes, or an unpacked/packed ratio above [`Limits::max_ratio`] once more than
//!   [`RATIO_GRACE_BYTES`] are unpacked. Bytes are counted as they are decompressed, never
//!   taken from headers, and extraction stops at the first byte over a cap. For tar formats the
//!   count is the whole decompressed tar stream (headers included); for zip, the decompressed
//!   entry data. The metadata a tar reader holds in memory (PAX headers, GNU long names) is
//!   capped per entry, so a huge header cannot exhaust memory.
//!
//! Only the executable bit of a file's mode is kept (files become `0o755` or `0o644`,
//! directories `0o755`); owners and times are not restored. On any error everything written
//! is removed: `dest` is left absent (if this call created it) or empty.
//!
//! The work is blocking file I/O: call it from `tokio::task::spawn_blocking`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;

/// Unpacked bytes below which the compression ratio is not checked (small archives of
/// repetitive text legitimately compress very well).
pub const RATIO_GRACE_BYTES: u64 = 10 * 1024 * 1024;

/// Bytes in one path component (`NAME_MAX` on common file systems).
const MAX_NAME_LEN: usize = 255;

/// Symlinks followed while resolving one symlink's target before it counts as a loop.
const MAX_SYMLINK_HOPS: u32 = 40;

/// Memory the xz decoder may use (`xz -9` needs about 65 MiB).
const XZ_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;

/// Tar metadata (headers, padding, PAX records, GNU long names) allowed between two entries'
/// data, on top of twice [`Limits::max_path_len`].
const TAR_METADATA_PER_ENTRY: u64 = 64 * 1024;

/// The formats a source archive can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchiveType {
    /// `.tar.gz`
    TarGz,
    /// `.tgz` (the same format as [`ArchiveType::TarGz`])
    Tgz,
    /// `.tar.xz` (also `.txz`)
    TarXz,
    /// `.tar.zst` (also `.tzst`)
    TarZst,
    /// `.tar.bz2`
    TarBz2,
    /// `.tar`
    Tar,
    /// `.zip` (also `.jar`, `.war`, `.aar`)
    Zip,
}

impl ArchiveType {
    /// The type named by a `source.json` `archive_type` value: `tar.gz`, `tgz`, `tar.xz`,
    /// `txz`, `tar.zst`, `tzst`, `tar.bz2`, `tar`, `zip`, `jar`, `war` or `aar`.
    pub fn from_archive_type(value: &str) -> Option<Self> {
        Some(match value {
            "tar.gz" => Self::TarGz,
            "tgz" => Self::Tgz,
            "tar.xz" | "txz" => Self::TarXz,
            "tar.zst" | "tzst" => Self::TarZst,
            "tar.bz2" => Self::TarBz2,
            "tar" => Self::Tar,
            "zip" | "jar" | "war" | "aar" => Self::Zip,
            _ => return None,
        })
    }

    /// The type implied by the suffix of a file name or URL (query and fragment ignored,
    /// case-insensitive), as Bazel guesses it when `archive_type` is not given.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let end = name.find(['?', '#']).unwrap_or(name.len());
        let path = name[..end].to_ascii_lowercase();
        const SUFFIXES: [(&str, ArchiveType); 12] = [
            (".tar.gz", ArchiveType::TarGz),
            (".tgz", ArchiveType::Tgz),
            (".tar.xz", ArchiveType::TarXz),
            (".txz", ArchiveType::TarXz),
            (".tar.zst", ArchiveType::TarZst),
            (".tzst", ArchiveType::TarZst),
            (".tar.bz2", ArchiveType::TarBz2),
            (".tar", ArchiveType::Tar),
            (".zip", ArchiveType::Zip),
            (".jar", ArchiveType::Zip),
            (".war", ArchiveType::Zip),
            (".aar", ArchiveType::Zip),
        ];
        SUFFIXES
            .iter()
            .find(|(suffix, _)| path.ends_with(suffix))
            .map(|&(_, kind)| kind)
    }

    /// The canonical `archive_type` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TarGz => "tar.gz",
            Self::Tgz => "tgz",
            Self::TarXz => "tar.xz",
            Self::TarZst => "tar.zst",
            Self::TarBz2 => "tar.bz2",
            Self::Tar => "tar",
            Self::Zip => "zip",
        }
    }
}

impl fmt::Display for ArchiveType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ArchiveType {
    type Err = ArchiveError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::from_archive_type(value).ok_or_else(|| ArchiveError::UnknownType(value.to_owned()))
    }
}

/// Caps that defeat archive bombs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries in the archive (files, directories, links, and entries outside `strip_prefix`).
    pub max_entries: u64,
    /// Unpacked bytes.
    pub max_total_bytes: u64,
    /// Unpacked bytes per packed byte, enforced once more than [`RATIO_GRACE_BYTES`] are
    /// unpacked.
    pub max_ratio: u64,
    /// Bytes in an entry name or a link target.
    pub max_path_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_total_bytes: 2 * 1024 * 1024 * 1024,
            max_ratio: 200,
            max_path_len: 4096,
        }
    }
}

/// What [`extract`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The directory holding the tree (the `dest` given, with `strip_prefix` already removed
    /// from every path).
    pub root: PathBuf,
    /// Regular files and symlinks written (a hardlink counts as a file).
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Why an archive was refused. Every variant but [`ArchiveError::Io`] is the archive's (or the
/// caller's arguments') fault; messages name the offending entry as written in the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An `archive_type` value that is not a known format.
    #[error("unknown archive type `{0}`")]
    UnknownType(String),
    /// `strip_prefix` is absolute, has a `..` component, or names a non-directory.
    #[error("invalid strip_prefix `{prefix}`: {reason}")]
    InvalidStripPrefix {
        /// The prefix as given.
        prefix: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No entry of the archive lies under `strip_prefix`.
    #[error("the archive has no entry under strip_prefix `{prefix}`")]
    StripPrefixNotFound {
        /// The prefix as given.
        prefix: String,
    },
    /// The destination exists and is not an empty directory.
    #[error("destination {} is not an empty directory", path.display())]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// An entry name (or link target) with a NUL byte, invalid UTF-8 or nothing in it.
    #[error("entry `{entry}` has an invalid name: {reason}")]
    InvalidName {
        /// The entry.
        entry: String,
        /// What is wrong with the name.
        reason: &'static str,
    },
    /// An entry with an absolute name.
    #[error("entry `{entry}` has an absolute path")]
    AbsolutePath {
        /// The entry.
        entry: String,
    },
    /// An entry whose name has a `..` component.
    #[error("entry `{entry}` has a `..` path component")]
    ParentTraversal {
        /// The entry.
        entry: String,
    },
    /// An entry name or link target longer than [`Limits::max_path_len`].
    #[error("entry `{entry}` has a path or link target of {len} bytes (at most {max} allowed)")]
    PathTooLong {
        /// The entry (cut to its first 200 bytes).
        entry: String,
        /// Its length in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A symlink whose target resolves outside the extraction root.
    #[error("symlink `{entry}` -> `{target}` points outside the archive root")]
    SymlinkEscape {
        /// The symlink entry.
        entry: String,
        /// Its target.
        target: String,
    },
    /// A symlink whose target never resolves (a cycle of symlinks).
    #[error("symlink `{entry}` -> `{target}` does not resolve (symlink loop)")]
    SymlinkLoop {
        /// The symlink entry.
        entry: String,
        /// Its target.
        target: String,
    },
    /// An entry that would be written through a previously extracted symlink.
    #[error("entry `{entry}` would be written through the symlink `{link}`")]
    ThroughSymlink {
        /// The entry.
        entry: String,
        /// The symlink among its parents (relative to the root).
        link: String,
    },
    /// A hardlink to anything but a regular file already extracted from this archive.
    #[error(
        "hardlink `{entry}` -> `{target}` does not point to a regular file extracted earlier from this archive"
    )]
    BadHardlink {
        /// The hardlink entry.
        entry: String,
        /// Its target.
        target: String,
    },
    /// A device file, FIFO or socket.
    #[error("entry `{entry}` is a {kind}, which source archives may not contain")]
    SpecialFile {
        /// The entry.
        entry: String,
        /// "character device", "block device", "FIFO" or "socket".
        kind: &'static str,
    },
    /// An entry this extractor does not handle (sparse file, unknown type, encryption,
    /// an unsupported zip compression method, a symlink on a platform without them).
    #[error("entry `{entry}` is not supported: {what}")]
    Unsupported {
        /// The entry.
        entry: String,
        /// What is not supported.
        what: String,
    },
    /// The same path twice.
    #[error("entry `{entry}` appears more than once in the archive")]
    Duplicate {
        /// The entry (its second occurrence).
        entry: String,
    },
    /// An entry that clashes with another: a file where a directory is needed or the reverse.
    #[error("entry `{entry}` conflicts with `{other}`, which is not a directory")]
    PathConflict {
        /// The entry.
        entry: String,
        /// The path it clashes with (relative to the root).
        other: String,
    },
    /// More than [`Limits::max_entries`] entries.
    #[error("the archive has more than {max} entries (refused at `{entry}`)")]
    TooManyEntries {
        /// The first entry over the cap.
        entry: String,
        /// The cap.
        max: u64,
    },
    /// More than [`Limits::max_total_bytes`] unpacked bytes.
    #[error("the archive unpacks to more than {max} bytes (refused in `{entry}`)")]
    TooLarge {
        /// The entry being unpacked when the cap was passed.
        entry: String,
        /// The cap.
        max: u64,
    },
    /// An unpacked/packed ratio above [`Limits::max_ratio`].
    #[error(
        "the archive unpacks to more than {max} times its packed size of {packed} bytes (refused in `{entry}`)"
    )]
    RatioExceeded {
        /// The entry being unpacked when the cap was passed.
        entry: String,
        /// The packed size.
        packed: u64,
        /// The cap.
        max: u64,
    },
    /// Tar metadata (PAX records, GNU long names) too large for one entry.
    #[error("tar metadata {at} is larger than {max} bytes")]
    HeaderTooLarge {
        /// Where: `before entry x`, `after entry x` or `at the start of the archive`.
        at: String,
        /// The cap.
        max: u64,
    },
    /// The archive stream is truncated or corrupt.
    #[error("the archive is truncated or corrupt {at}: {source}")]
    Corrupt {
        /// Where: `in entry x`, `after entry x` or `at the start of the archive`.
        at: String,
        /// What the decoder reported.
        #[source]
        source: io::Error,
    },
    /// Reading the archive file or writing the tree failed (the server's fault).
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The local path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// Whether this is a local I/O failure rather than a problem with the archive or the
    /// arguments (for choosing between a 5xx and a 4xx).
    pub fn is_local_io(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}

fn io_error(path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Extracts `archive` of type `kind` into `dest`, an empty or non-existent directory, taking
/// entries relative to `strip_prefix` (whole path components; `""` for none) and skipping
/// entries outside it. See the [module documentation](self) for what is refused.
pub fn extract(
    archive: &Path,
    kind: ArchiveType,
    strip_prefix: &str,
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    let prefix = parse_strip_prefix(strip_prefix)?;
    let file = File::open(archive).map_err(|e| io_error(archive, e))?;
    let packed = file.metadata().map_err(|e| io_error(archive, e))?.len();
    let created = prepare_dest(dest)?;
    let mut tree = Tree {
        dest,
        prefix,
        prefix_raw: strip_prefix,
        limits,
        nodes: HashMap::new(),
        entries: 0,
        files: 0,
        bytes: 0,
        matched: false,
    };
    let result = match kind {
        ArchiveType::Zip => extract_zip(archive, file, packed, &mut tree),
        _ => extract_tar(file, kind, packed, &mut tree),
    }
    .and_then(|()| tree.finish());
    match result {
        Ok(()) => Ok(Extracted {
            root: dest.to_path_buf(),
            files: tree.files,
            bytes: tree.bytes,
        }),
        Err(err) => {
            clean(dest, created);
            Err(err)
        }
    }
}

/// Checks `dest` and creates it if absent; returns whether it was created.
fn prepare_dest(dest: &Path) -> Result<bool, ArchiveError> {
    match fs::metadata(dest) {
        Ok(meta) if meta.is_dir() => {
            let mut listing = fs::read_dir(dest).map_err(|e| io_error(dest, e))?;
            if listing.next().is_some() {
                return Err(ArchiveError::DestinationNotEmpty {
                    path: dest.to_path_buf(),
                });
            }
            Ok(false)
        }
        Ok(_) => Err(ArchiveError::DestinationNotEmpty {
            path: dest.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(|e| io_error(dest, e))?;
            Ok(true)
        }
        Err(e) => Err(io_error(dest, e)),
    }
}

/// Removes what an aborted extraction wrote: `dest` itself if it was created, else its content.
fn clean(dest: &Path, created: bool) {
    let outcome = if created {
        fs::remove_dir_all(dest)
    } else {
        fs::read_dir(dest).and_then(|listing| {
            for child in listing {
                let path = child?.path();
                // `symlink_metadata`: a symlink is removed, never followed.
                if fs::symlink_metadata(&path)?.is_dir() {
                    fs::remove_dir_all(&path)?;
                } else {
                    fs::remove_file(&path)?;
                }
            }
            Ok(())
        })
    };
    if let Err(err) = outcome {
        tracing::warn!(dest = %dest.display(), error = %err, "could not clean up a refused archive");
    }
}

fn parse_strip_prefix(raw: &str) -> Result<Vec<String>, ArchiveError> {
    let invalid = |reason: &str| ArchiveError::InvalidStripPrefix {
        prefix: raw.to_owned(),
        reason: reason.to_owned(),
    };
    if raw.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    if is_absolute(raw) {
        return Err(invalid("it is an absolute path"));
    }
    let parts: Vec<String> = components(raw).map(str::to_owned).collect();
    if parts.iter().any(|c| c == "..") {
        return Err(invalid("it has a `..` component"));
    }
    Ok(parts)
}

fn is_absolute(name: &str) -> bool {
    let bytes = name.as_bytes();
    name.starts_with('/')
        || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
}

/// The meaningful components of a `/`-separated name (empty and `.` components dropped).
fn components(name: &str) -> impl DoubleEndedIterator<Item = &str> {
    name.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// Splits an entry name into checked components.
fn entry_components(entry: &str, limits: &Limits) -> Result<Vec<String>, ArchiveError> {
    if entry.len() > limits.max_path_len {
        return Err(too_long(entry, limits));
    }
    if entry.contains('\0') {
        return Err(ArchiveError::InvalidName {
            entry: entry.to_owned(),
            reason: "it contains a NUL byte",
        });
    }
    if is_absolute(entry) {
        return Err(ArchiveError::AbsolutePath {
            entry: entry.to_owned(),
        });
    }
    let parts: Vec<String> = components(entry).map(str::to_owned).collect();
    if parts.iter().any(|c| c == "..") {
        return Err(ArchiveError::ParentTraversal {
            entry: entry.to_owned(),
        });
    }
    if parts.iter().any(|c| c.len() > MAX_NAME_LEN) {
        return Err(ArchiveError::InvalidName {
            entry: entry.to_owned(),
            reason: "a path component is longer than 255 bytes",
        });
    }
    Ok(parts)
}

fn too_long(entry: &str, limits: &Limits) -> ArchiveError {
    let mut cut = entry.len().min(200);
    while !entry.is_char_boundary(cut) {
        cut -= 1;
    }
    ArchiveError::PathTooLong {
        entry: entry[..cut].to_owned(),
        len: entry.len(),
        max: limits.max_path_len,
    }
}

fn utf8_name(entry_bytes: &[u8]) -> Result<String, ArchiveError> {
    String::from_utf8(entry_bytes.to_vec()).map_err(|_| ArchiveError::InvalidName {
        entry: String::from_utf8_lossy(entry_bytes).into_owned(),
        reason: "it is not valid UTF-8",
    })
}

/// The byte budget shared by the decompressed-stream guard and the extraction loop.
struct Budget {
    limits: Limits,
    packed: u64,
    /// Bytes unpacked so far.
    unpacked: Cell<u64>,
    /// Whether the extraction loop is reading an entry's data (tar).
    in_data: Cell<bool>,
    /// Tar metadata bytes read since the last entry's data.
    metadata: Cell<u64>,
    /// Where the reader is, for error messages: `in entry x`, `after entry x`, ...
    at: RefCell<String>,
    /// The entry being read, for cap errors.
    entry: RefCell<String>,
    /// A cap error raised inside a reader (which can only return `io::Error`).
    failure: RefCell<Option<ArchiveError>>,
}

impl Budget {
    fn new(limits: &Limits, packed: u64) -> Self {
        Self {
            limits: *limits,
            packed,
            unpacked: Cell::new(0),
            in_data: Cell::new(false),
            metadata: Cell::new(0),
            at: RefCell::new("at the start of the archive".to_owned()),
            entry: RefCell::new("(start of archive)".to_owned()),
            failure: RefCell::new(None),
        }
    }

    fn enter(&self, entry: &str) {
        *self.at.borrow_mut() = format!("in entry `{entry}`");
        *self.entry.borrow_mut() = entry.to_owned();
    }

    fn leave(&self, entry: &str) {
        *self.at.borrow_mut() = format!("after entry `{entry}`");
    }

    /// Counts `n` more unpacked bytes.
    fn charge(&self, n: u64) -> Result<(), ArchiveError> {
        let total = self.unpacked.get().saturating_add(n);
        self.unpacked.set(total);
        if total > self.limits.max_total_bytes {
            return Err(ArchiveError::TooLarge {
                entry: self.entry.borrow().clone(),
                max: self.limits.max_total_bytes,
            });
        }
        if total > RATIO_GRACE_BYTES
            && total > self.limits.max_ratio.saturating_mul(self.packed.max(1))
        {
            return Err(ArchiveError::RatioExceeded {
                entry: self.entry.borrow().clone(),
                packed: self.packed,
                max: self.limits.max_ratio,
            });
        }
        Ok(())
    }

    fn metadata_cap(&self) -> u64 {
        TAR_METADATA_PER_ENTRY.saturating_add(2 * self.limits.max_path_len as u64)
    }

    /// Counts `n` bytes read by a tar reader, outside or inside entry data.
    fn charge_stream(&self, n: u64) -> Result<(), ArchiveError> {
        self.charge(n)?;
        if !self.in_data.get() {
            let metadata = self.metadata.get().saturating_add(n);
            self.metadata.set(metadata);
            if metadata > self.metadata_cap() {
                return Err(ArchiveError::HeaderTooLarge {
                    at: self.at.borrow().replacen("in entry", "before entry", 1),
                    max: self.metadata_cap(),
                });
            }
        }
        Ok(())
    }

    /// Turns a read error into the cap error behind it, or a [`ArchiveError::Corrupt`].
    fn read_failure(&self, source: io::Error) -> ArchiveError {
        match self.failure.borrow_mut().take() {
            Some(err) => err,
            None => ArchiveError::Corrupt {
                at: self.at.borrow().clone(),
                source,
            },
        }
    }

    fn corrupt(&self, message: impl Into<String>) -> ArchiveError {
        ArchiveError::Corrupt {
            at: self.at.borrow().clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, message.into()),
        }
    }
}

/// Counts every decompressed byte of a tar stream against the [`Budget`].
struct Guard<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(err) = self.budget.charge_stream(n as u64) {
            let message = err.to_string();
            *self.budget.failure.borrow_mut() = Some(err);
            return Err(io::Error::other(message));
        }
        Ok(n)
    }
}

/// What an entry is, once its type is known.
enum Kind {
    Dir,
    File { exec: bool },
    Symlink { target: String },
    Hardlink { target: String },
}

/// What has been written at a path (relative to the root, `/`-joined).
enum Node {
    Dir { explicit: bool },
    File { exec: bool },
    Symlink { entry: String, target: String },
}

/// The extracted tree and its bookkeeping; the map is authoritative, the disk is never asked
/// what a path is (so nothing is ever followed through a symlink the archive planted).
struct Tree<'a> {
    dest: &'a Path,
    prefix: Vec<String>,
    prefix_raw: &'a str,
    limits: &'a Limits,
    nodes: HashMap<String, Node>,
    entries: u64,
    files: u64,
    bytes: u64,
    matched: bool,
}

impl Tree<'_> {
    /// Counts one more entry against [`Limits::max_entries`].
    fn count_entry(&mut self, entry: &str) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                entry: entry.to_owned(),
                max: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// The path of `entry` relative to the root, or `None` when it lies outside the prefix.
    /// An empty result is the prefix directory itself.
    fn relative(&self, entry: &str) -> Result<Option<Vec<String>>, ArchiveError> {
        let parts = entry_components(entry, self.limits)?;
        if parts.len() < self.prefix.len() || parts[..self.prefix.len()] != self.prefix[..] {
            return Ok(None);
        }
        Ok(Some(parts[self.prefix.len()..].to_vec()))
    }

    fn path_of(&self, rel: &[String]) -> PathBuf {
        let mut path = self.dest.to_path_buf();
        path.extend(rel);
        path
    }

    /// Places one entry. `rel` is its path under the root (empty: the prefix directory);
    /// `body` its data. Returns the data bytes read from `body`.
    fn place(
        &mut self,
        entry: &str,
        rel: Vec<String>,
        kind: Kind,
        body: &mut dyn Read,
        budget: &Budget,
        charge: bool,
    ) -> Result<u64, ArchiveError> {
        if rel.is_empty() {
            if let Kind::Dir = kind {
                return Ok(0);
            }
            if self.prefix.is_empty() {
                return Err(ArchiveError::InvalidName {
                    entry: entry.to_owned(),
                    reason: "it names the root directory but is not a directory",
                });
            }
            return Err(ArchiveError::InvalidStripPrefix {
                prefix: self.prefix_raw.to_owned(),
                reason: format!("it names the non-directory entry `{entry}`"),
            });
        }
        self.matched = true;
        self.make_parents(entry, &rel)?;
        let key = rel.join("/");
        let path = self.path_of(&rel);
        match kind {
            Kind::Dir => {
                match self.nodes.get_mut(&key) {
                    Some(Node::Dir { explicit }) if !*explicit => *explicit = true,
                    Some(_) => {
                        return Err(ArchiveError::Duplicate {
                            entry: entry.to_owned(),
                        });
                    }
                    None => {
                        make_dir(&path)?;
                        self.nodes.insert(key, Node::Dir { explicit: true });
                    }
                }
                Ok(0)
            }
            Kind::File { exec } => {
                self.check_free(entry, &key)?;
                let mut out = create_file(&path)?;
                let written = copy_counted(body, Some((&mut out, &path)), budget, charge)?;
                out.flush().map_err(|e| io_error(&path, e))?;
                drop(out);
                set_mode(&path, exec)?;
                self.nodes.insert(key, Node::File { exec });
                self.files += 1;
                self.bytes += written;
                Ok(written)
            }
            Kind::Symlink { target } => {
                self.check_free(entry, &key)?;
                if target.len() > self.limits.max_path_len {
                    return Err(too_long(entry, self.limits));
                }
                if target.is_empty() || target.contains('\0') {
                    return Err(ArchiveError::InvalidName {
                        entry: entry.to_owned(),
                        reason: "its symlink target is empty or contains a NUL byte",
                    });
                }
                self.check_symlink(entry, &key, &target)?;
                make_symlink(entry, &target, &path)?;
                self.nodes.insert(
                    key,
                    Node::Symlink {
                        entry: entry.to_owned(),
                        target,
                    },
                );
                self.files += 1;
                Ok(0)
            }
            Kind::Hardlink { target } => {
                self.check_free(entry, &key)?;
                let bad = || ArchiveError::BadHardlink {
                    entry: entry.to_owned(),
                    target: target.clone(),
                };
                let source_rel = match self.relative(&target) {
                    Ok(Some(rel)) if !rel.is_empty() => rel,
                    _ => return Err(bad()),
                };
                let exec = match self.nodes.get(&source_rel.join("/")) {
                    Some(Node::File { exec }) => *exec,
                    _ => return Err(bad()),
                };
                let source = self.path_of(&source_rel);
                let mut input = File::open(&source).map_err(|e| io_error(&source, e))?;
                let mut out = create_file(&path)?;
                // The copy is local data, but counts like any unpacked bytes (a bomb of
                // hardlinks to one big file is still a bomb).
                let written = copy_local(&mut input, &source, &mut out, &path, budget)?;
                drop(out);
                set_mode(&path, exec)?;
                self.nodes.insert(key, Node::File { exec });
                self.files += 1;
                self.bytes += written;
                Ok(0)
            }
        }
    }

    /// Refuses a second entry at `key`.
    fn check_free(&self, entry: &str, key: &str) -> Result<(), ArchiveError> {
        match self.nodes.get(key) {
            None => Ok(()),
            Some(Node::Dir { explicit: false }) => Err(ArchiveError::PathConflict {
                entry: entry.to_owned(),
                other: format!("{key}/"),
            }),
            Some(_) => Err(ArchiveError::Duplicate {
                entry: entry.to_owned(),
            }),
        }
    }

    /// Creates the missing parent directories of `rel`, refusing to go through a symlink or
    /// a file.
    fn make_parents(&mut self, entry: &str, rel: &[String]) -> Result<(), ArchiveError> {
        let mut key = String::new();
        for (depth, part) in rel[..rel.len() - 1].iter().enumerate() {
            if depth > 0 {
                key.push('/');
            }
            key.push_str(part);
            match self.nodes.get(&key) {
                Some(Node::Dir { .. }) => {}
                Some(Node::Symlink { .. }) => {
                    return Err(ArchiveError::ThroughSymlink {
                        entry: entry.to_owned(),
                        link: key,
                    });
                }
                Some(Node::File { .. }) => {
                    return Err(ArchiveError::PathConflict {
                        entry: entry.to_owned(),
                        other: key,
                    });
                }
                None => {
                    make_dir(&self.path_of(&rel[..=depth]))?;
                    self.nodes
                        .insert(key.clone(), Node::Dir { explicit: false });
                }
            }
        }
        Ok(())
    }

    /// Resolves the target of the symlink at `key` inside the tree as it stands, following
    /// the tree's symlinks; refuses it if it leaves the root or loops.
    fn check_symlink(&self, entry: &str, key: &str, target: &str) -> Result<(), ArchiveError> {
        let escape = || ArchiveError::SymlinkEscape {
            entry: entry.to_owned(),
            target: target.to_owned(),
        };
        if is_absolute(target) {
            return Err(escape());
        }
        let mut at: Vec<String> = key.split('/').map(str::to_owned).collect();
        at.pop();
        // Components still to walk, last one first.
        let mut pending: Vec<String> = components(target).rev().map(str::to_owned).collect();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                if at.pop().is_none() {
                    return Err(escape());
                }
                continue;
            }
            at.push(part);
            if let Some(Node::Symlink { target: next, .. }) = self.nodes.get(&at.join("/")) {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ArchiveError::SymlinkLoop {
                        entry: entry.to_owned(),
                        target: target.to_owned(),
                    });
                }
                if is_absolute(next) {
                    return Err(escape());
                }
                at.pop();
                pending.extend(components(next).rev().map(str::to_owned));
            }
        }
        Ok(())
    }

    /// Checks what can only be checked once every entry is in: the prefix matched something,
    /// and no symlink escapes through a symlink extracted after it.
    fn finish(&self) -> Result<(), ArchiveError> {
        if !self.prefix.is_empty() && !self.matched {
            return Err(ArchiveError::StripPrefixNotFound {
                prefix: self.prefix_raw.to_owned(),
            });
        }
        let mut links: Vec<(&String, &String, &String)> = self
            .nodes
            .iter()
            .filter_map(|(key, node)| match node {
                Node::Symlink { entry, target } => Some((key, entry, target)),
                _ => None,
            })
            .collect();
        links.sort();
        for (key, entry, target) in links {
            self.check_symlink(entry, key, target)?;
        }
        Ok(())
    }
}

fn make_dir(path: &Path) -> Result<(), ArchiveError> {
    fs::create_dir(path).map_err(|e| io_error(path, e))?;
    set_permissions(path, 0o755)
}

fn create_file(path: &Path) -> Result<File, ArchiveError> {
    // `create_new`: never opens an existing path, and never follows a symlink.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error(path, e))
}

fn set_mode(path: &Path, exec: bool) -> Result<(), ArchiveError> {
    set_permissions(path, if exec { 0o755 } else { 0o644 })
}

#[cfg(unix)]
fn set_permissions(path: &Path, mode: u32) -> Result<(), ArchiveError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_error(path, e))
}

#[cfg(not(unix))]
fn set_permissions(_path: &Path, _mode: u32) -> Result<(), ArchiveError> {
    Ok(())
}

#[cfg(unix)]
fn make_symlink(_entry: &str, target: &str, path: &Path) -> Result<(), ArchiveError> {
    std::os::unix::fs::symlink(target, path).map_err(|e| io_error(path, e))
}

#[cfg(not(unix))]
fn make_symlink(entry: &str, _target: &str, _path: &Path) -> Result<(), ArchiveError> {
    Err(ArchiveError::Unsupported {
        entry: entry.to_owned(),
        what: "symlinks on this platform".to_owned(),
    })
}

/// Reads `body` to its end, writing to `out` if given; with `charge`, counts the bytes
/// against the budget (zip; a tar stream is counted by its [`Guard`]).
fn copy_counted(
    body: &mut dyn Read,
    mut out: Option<(&mut File, &Path)>,
    budget: &Budget,
    charge: bool,
) -> Result<u64, ArchiveError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(budget.read_failure(e)),
        };
        if charge {
            budget.charge(n as u64)?;
        }
        if let Some((file, path)) = out.as_mut() {
            file.write_all(&buf[..n]).map_err(|e| io_error(path, e))?;
        }
        total += n as u64;
    }
}

/// Copies an extracted file for a hardlink, counting the bytes.
fn copy_local(
    input: &mut File,
    source: &Path,
    out: &mut File,
    path: &Path,
    budget: &Budget,
) -> Result<u64, ArchiveError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(source, e)),
        };
        budget.charge(n as u64)?;
        out.write_all(&buf[..n]).map_err(|e| io_error(path, e))?;
        total += n as u64;
    }
}

fn decompressor(kind: ArchiveType, file: BufReader<File>) -> Result<Box<dyn Read>, ArchiveError> {
    let setup = |e: io::Error| ArchiveError::Corrupt {
        at: "at the start of the archive".to_owned(),
        source: e,
    };
    Ok(match kind {
        ArchiveType::TarGz | ArchiveType::Tgz => {
            Box::new(flate2::bufread::MultiGzDecoder::new(file))
        }
        ArchiveType::TarXz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMORY_LIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|e| setup(e.into()))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(file, stream))
        }
        ArchiveType::TarZst => {
            Box::new(zstd::stream::read::Decoder::with_buffer(file).map_err(setup)?)
        }
        ArchiveType::TarBz2 => Box::new(bzip2::bufread::MultiBzDecoder::new(file)),
        ArchiveType::Tar | ArchiveType::Zip => Box::new(file),
    })
}

fn extract_tar(
    file: File,
    kind: ArchiveType,
    packed: u64,
    tree: &mut Tree<'_>,
) -> Result<(), ArchiveError> {
    let budget = Rc::new(Budget::new(tree.limits, packed));
    let stream = decompressor(kind, BufReader::with_capacity(64 * 1024, file))?;
    let mut archive = tar::Archive::new(Guard {
        inner: stream,
        budget: Rc::clone(&budget),
    });
    let entries = archive.entries().map_err(|e| budget.read_failure(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| budget.read_failure(e))?;
        let name = utf8_name(&entry.path_bytes())?;
        budget.enter(&name);
        tree.count_entry(&name)?;
        let header = entry.header();
        let entry_type = header.entry_type();
        let mode = header.mode().map_err(|e| budget.read_failure(e))?;
        let size = entry.size();
        let kind = match entry_type {
            tar::EntryType::Regular | tar::EntryType::Continuous if name.ends_with('/') => {
                Some(Kind::Dir)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => Some(Kind::File {
                exec: mode & 0o111 != 0,
            }),
            tar::EntryType::Directory => Some(Kind::Dir),
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = match entry.link_name_bytes() {
                    Some(bytes) => utf8_name(&bytes).map_err(|_| ArchiveError::InvalidName {
                        entry: name.clone(),
                        reason: "its link target is not valid UTF-8",
                    })?,
                    None => String::new(),
                };
                if target.len() > tree.limits.max_path_len {
                    return Err(too_long(&name, tree.limits));
                }
                if entry_type == tar::EntryType::Symlink {
                    Some(Kind::Symlink { target })
                } else {
                    Some(Kind::Hardlink { target })
                }
            }
            // A pax global header (git archive writes one): metadata, not a file.
            tar::EntryType::XGlobalHeader => None,
            tar::EntryType::Char => return Err(special(&name, "character device")),
            tar::EntryType::Block => return Err(special(&name, "block device")),
            tar::EntryType::Fifo => return Err(special(&name, "FIFO")),
            other => {
                return Err(ArchiveError::Unsupported {
                    entry: name,
                    what: format!("tar entry type {:?}", other),
                });
            }
        };
        let rel = match kind {
            Some(_) => tree.relative(&name)?,
            None => None,
        };
        budget.in_data.set(true);
        let read = match (kind, rel) {
            (Some(kind), Some(rel)) => tree.place(&name, rel, kind, &mut entry, &budget, false)?,
            _ => 0,
        };
        // Whatever was not consumed (entries outside the prefix, link bodies) is read here,
        // so it is counted as data and the stream is checked to its end.
        let rest = copy_counted(&mut entry, None, &budget, false)?;
        budget.in_data.set(false);
        budget.metadata.set(0);
        if read + rest != size {
            return Err(budget.corrupt(format!(
                "entry data ends after {} of {size} bytes",
                read + rest
            )));
        }
        budget.leave(&name);
    }
    // Read the compressed stream to its end: a damaged trailer or checksum is an error, and
    // trailing data counts against the caps.
    let mut stream = archive.into_inner();
    budget.in_data.set(true);
    copy_counted(&mut stream, None, &budget, false)?;
    // A cap error a reader swallowed is still an error.
    match budget.failure.borrow_mut().take() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn special(entry: &str, kind: &'static str) -> ArchiveError {
    ArchiveError::SpecialFile {
        entry: entry.to_owned(),
        kind,
    }
}

fn zip_failure(at: &str, entry: &str, err: zip::result::ZipError) -> ArchiveError {
    use zip::result::ZipError;
    match err {
        ZipError::UnsupportedArchive(what) => ArchiveError::Unsupported {
            entry: entry.to_owned(),
            what: what.to_owned(),
        },
        ZipError::CompressionMethodNotSupported(method) => ArchiveError::Unsupported {
            entry: entry.to_owned(),
            what: format!("zip compression method {method}"),
        },
        other => ArchiveError::Corrupt {
            at: at.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, other),
        },
    }
}

fn extract_zip(
    archive: &Path,
    file: File,
    packed: u64,
    tree: &mut Tree<'_>,
) -> Result<(), ArchiveError> {
    let budget = Budget::new(tree.limits, packed);
    let mut zip = zip::ZipArchive::new(BufReader::with_capacity(64 * 1024, file))
        .map_err(|e| zip_failure("at its central directory", "(central directory)", e))?;
    if zip.has_duplicate_names() {
        let starts = [
            zip.central_directory_start(),
            zip.central_directory_start().saturating_add(zip.offset()),
        ];
        let entry = duplicate_zip_name(archive, starts, tree.limits.max_entries)
            .unwrap_or_else(|| "(a name repeated in the central directory)".to_owned());
        return Err(ArchiveError::Duplicate { entry });
    }
    for index in 0..zip.len() {
        let name = match zip.name_for_index(index) {
            Some(Ok(name)) => name.replace('\\', "/"),
            _ => format!("(entry #{index})"),
        };
        budget.enter(&name);
        tree.count_entry(&name)?;
        let at = budget.at.borrow().clone();
        let mut file = zip
            .by_index(index)
            .map_err(|e| zip_failure(&at, &name, e))?;
        const S_IFMT: u32 = 0o170_000;
        let file_type = file.unix_mode().map_or(0, |mode| mode & S_IFMT);
        let exec = file.unix_mode().is_some_and(|mode| mode & 0o111 != 0);
        let kind = match file_type {
            0o120_000 => {
                let mut target = Vec::new();
                let limit = tree.limits.max_path_len as u64 + 1;
                let mut limited = (&mut file).take(limit);
                loop {
                    let mut buf = [0u8; 4096];
                    let n = match limited.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(budget.read_failure(e)),
                    };
                    budget.charge(n as u64)?;
                    target.extend_from_slice(&buf[..n]);
                }
                if target.len() > tree.limits.max_path_len {
                    return Err(too_long(&name, tree.limits));
                }
                let target = utf8_name(&target).map_err(|_| ArchiveError::InvalidName {
                    entry: name.clone(),
                    reason: "its link target is not valid UTF-8",
                })?;
                Kind::Symlink { target }
            }
            0o020_000 => return Err(special(&name, "character device")),
            0o060_000 => return Err(special(&name, "block device")),
            0o010_000 => return Err(special(&name, "FIFO")),
            0o140_000 => return Err(special(&name, "socket")),
            0o040_000 => Kind::Dir,
            _ if file.is_dir() => Kind::Dir,
            0 | 0o100_000 => Kind::File { exec },
            other => {
                return Err(ArchiveError::Unsupported {
                    entry: name,
                    what: format!("zip entry of unix file type {other:o}"),
                });
            }
        };
        if let Some(rel) = tree.relative(&name)? {
            tree.place(&name, rel, kind, &mut file, &budget, true)?;
        }
        // Read the rest (entries outside the prefix, directory bodies) so every byte is
        // counted and every entry's checksum verified.
        copy_counted(&mut file, None, &budget, true)?;
        budget.leave(&name);
    }
    Ok(())
}

/// The first name repeated in a zip's central directory (the zip reader keeps only one entry
/// per name, so the directory is walked by hand to name the culprit).
fn duplicate_zip_name(archive: &Path, starts: [u64; 2], max_entries: u64) -> Option<String> {
    const CENTRAL_HEADER: u32 = 0x0201_4b50;
    let mut file = BufReader::new(File::open(archive).ok()?);
    for start in starts {
        let mut seen = HashSet::new();
        if file.seek(SeekFrom::Start(start)).is_err() {
            continue;
        }
        for _ in 0..=max_entries {
            let mut fixed = [0u8; 46];
            if file.read_exact(&mut fixed).is_err()
                || u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]) != CENTRAL_HEADER
            {
                break;
            }
            let field = |at: usize| u64::from(u16::from_le_bytes([fixed[at], fixed[at + 1]]));
            let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
            let mut name = Vec::new();
            if (&mut file).take(name_len).read_to_end(&mut name).is_err()
                || file
                    .seek_relative((extra_len + comment_len) as i64)
                    .is_err()
            {
                break;
            }
            if !seen.insert(name.clone()) {
                return Some(String::from_utf8_lossy(&name).into_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
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
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
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
}
