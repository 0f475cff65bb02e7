//! The files of a registry entry and the `metadata.json` edits: [`bzlmod::entry`], with its
//! refusals mapped to [`PublishError`]s.

pub use bzlmod::entry::*;

use super::PublishError;

impl From<EntryError> for PublishError {
    fn from(e: EntryError) -> Self {
        match e {
            EntryError::Invalid(f) => f.into(),
            // The registry is inconsistent: an internal error, not the publisher's.
            e @ EntryError::Stored { .. } => Self::Registry(e.to_string()),
            EntryError::NotFound(m) => Self::NotFound(m),
            EntryError::Conflict(m) => Self::Conflict(m),
        }
    }
}
