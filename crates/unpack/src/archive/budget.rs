//! The byte budget: every decompressed byte counted against the limits as it is read.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::rc::Rc;

use super::{ArchiveError, Limits, RATIO_GRACE_BYTES, TAR_METADATA_PER_ENTRY};

/// The byte budget shared by the decompressed-stream guard and the extraction loop.
pub(super) struct Budget {
    pub(super) limits: Limits,
    pub(super) packed: u64,
    /// Bytes unpacked so far.
    pub(super) unpacked: Cell<u64>,
    /// Whether the extraction loop is reading an entry's data (tar).
    pub(super) in_data: Cell<bool>,
    /// Tar metadata bytes read since the last entry's data.
    pub(super) metadata: Cell<u64>,
    /// Where the reader is, for error messages: `in entry x`, `after entry x`, ...
    pub(super) at: RefCell<String>,
    /// The entry being read, for cap errors.
    pub(super) entry: RefCell<String>,
    /// A cap error raised inside a reader (which can only return `io::Error`).
    pub(super) failure: RefCell<Option<ArchiveError>>,
}

impl Budget {
    pub(super) fn new(limits: &Limits, packed: u64) -> Self {
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

    pub(super) fn enter(&self, entry: &str) {
        *self.at.borrow_mut() = format!("in entry `{entry}`");
        *self.entry.borrow_mut() = entry.to_owned();
    }

    pub(super) fn leave(&self, entry: &str) {
        *self.at.borrow_mut() = format!("after entry `{entry}`");
    }

    /// Counts `n` more unpacked bytes.
    pub(super) fn charge(&self, n: u64) -> Result<(), ArchiveError> {
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

    pub(super) fn metadata_cap(&self) -> u64 {
        TAR_METADATA_PER_ENTRY.saturating_add(2 * self.limits.max_path_len as u64)
    }

    /// Counts `n` bytes read by a tar reader, outside or inside entry data.
    pub(super) fn charge_stream(&self, n: u64) -> Result<(), ArchiveError> {
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
    pub(super) fn read_failure(&self, source: io::Error) -> ArchiveError {
        match self.failure.borrow_mut().take() {
            Some(err) => err,
            None => ArchiveError::Corrupt {
                at: self.at.borrow().clone(),
                source,
            },
        }
    }

    pub(super) fn corrupt(&self, message: impl Into<String>) -> ArchiveError {
        ArchiveError::Corrupt {
            at: self.at.borrow().clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, message.into()),
        }
    }
}

/// Counts every decompressed byte of a tar stream against the [`Budget`].
pub(super) struct Guard<R> {
    pub(super) inner: R,
    pub(super) budget: Rc<Budget>,
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
