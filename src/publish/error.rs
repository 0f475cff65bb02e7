//! Translating the errors of the layers below into [`PublishError`]s that name the field at
//! fault.

use super::PublishError;
use crate::mirror::MirrorError;
use crate::source::SourceError;

pub(super) fn rejected(field: &str, message: impl Into<String>) -> PublishError {
    PublishError::Rejected {
        field: field.to_owned(),
        message: message.into(),
    }
}

pub(super) fn task_err(e: impl std::fmt::Display) -> PublishError {
    PublishError::Registry(format!("internal task failed: {e}"))
}

pub(super) fn source_err(e: SourceError) -> PublishError {
    match e {
        SourceError::Git { .. } | SourceError::Io { .. } => {
            PublishError::Unavailable(format!("registry source: {e}"))
        }
        SourceError::NotARegistry(_) => PublishError::Registry(e.to_string()),
    }
}

pub(super) fn mirror_err(field: &str, e: MirrorError) -> PublishError {
    match e {
        MirrorError::NotFound(m) | MirrorError::BadRequest(m) => rejected(field, m),
        MirrorError::IntegrityMismatch {
            expected, actual, ..
        } => rejected(
            "source.integrity",
            format!("the archive's integrity is {actual}, not {expected}"),
        ),
        MirrorError::Upstream { message, .. } => {
            PublishError::Upstream(format!("{field}: fetching the archive: {message}"))
        }
        MirrorError::Storage(m) | MirrorError::Overloaded(m) => {
            PublishError::Unavailable(format!("the mirror cannot store the archive: {m}"))
        }
        MirrorError::RangeNotSatisfiable { .. } | MirrorError::PinConflict { .. } => {
            PublishError::Registry(e.to_string())
        }
    }
}
