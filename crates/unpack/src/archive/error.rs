//! Why an archive was refused.

use std::io;
use std::path::{Path, PathBuf};

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

pub(super) fn io_error(path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}
