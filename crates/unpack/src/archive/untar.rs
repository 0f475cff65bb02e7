//! The tar back end: decompression and the tar entry loop.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::rc::Rc;

use super::budget::{Budget, Guard};
use super::names::{too_long, utf8_name};
use super::tree::{Kind, Tree, copy_counted};
use super::{ArchiveError, ArchiveType, XZ_MEMORY_LIMIT};

pub(super) fn decompressor(
    kind: ArchiveType,
    file: BufReader<File>,
) -> Result<Box<dyn Read>, ArchiveError> {
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

pub(super) fn extract_tar(
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

pub(super) fn special(entry: &str, kind: &'static str) -> ArchiveError {
    ArchiveError::SpecialFile {
        entry: entry.to_owned(),
        kind,
    }
}
