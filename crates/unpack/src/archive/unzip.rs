//! The zip back end: the central directory, checked for duplicate names, then each entry.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::ArchiveError;
use super::budget::Budget;
use super::names::{too_long, utf8_name};
use super::tree::{Kind, Tree, copy_counted};
use super::untar::special;

pub(super) fn zip_failure(at: &str, entry: &str, err: zip::result::ZipError) -> ArchiveError {
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

pub(super) fn extract_zip(
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
pub(super) fn duplicate_zip_name(
    archive: &Path,
    starts: [u64; 2],
    max_entries: u64,
) -> Option<String> {
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
