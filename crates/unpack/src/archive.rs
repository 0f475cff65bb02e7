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
//! The work is blocking file I/O: call it from a blocking thread (the server uses
//! `tasks::spawn_blocking`).
//!
//! The parts: `names.rs` (what a safe entry name is), `budget.rs` (counting decompressed
//! bytes), `tree.rs` (the extracted tree, symlink resolution, the writes), and one back end
//! per container, `untar.rs` and `unzip.rs`; `error.rs` holds [`ArchiveError`].

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self};
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use error::ArchiveError;
use error::io_error;
use names::parse_strip_prefix;
use tree::Tree;
use untar::extract_tar;
use unzip::extract_zip;

mod budget;
mod error;
mod names;
#[cfg(test)]
mod tests;
mod tree;
mod untar;
mod unzip;

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
