//! The checks of a release against its sources, in the work folder: extraction, the overlay,
//! the patches, and `MODULE.bazel` compared with the archive's. Blocking file work: it runs on
//! the blocking pool.

use std::path::{Path, PathBuf};

use super::PublishError;
use super::archive::{self, ArchiveError, Limits};
use super::error::rejected;
use super::patch;
use super::request::{ArchiveSource, ValidRequest};

/// Normalizes `MODULE.bazel` for comparison: line endings and trailing whitespace.
fn normalize(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .replace("\r\n", "\n")
        .split('\n')
        .map(|l| l.trim_end().to_owned())
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// Extracts the archive, lays the overlay down, applies the patches and compares the result's
/// `MODULE.bazel` with the submitted one.
pub(super) fn check_sources(
    req: &ValidRequest,
    archive_path: &Path,
    kind: archive::ArchiveType,
    strip_prefix: &str,
    dest: &Path,
    limits: &Limits,
) -> Result<(), PublishError> {
    let field = match &req.archive {
        Some((ArchiveSource::Upload { .. }, _)) => "source.content_base64",
        Some(_) => "source.url",
        None => "source.commit",
    };
    archive::extract(archive_path, kind, strip_prefix, dest, limits).map_err(|e| match e {
        ArchiveError::StripPrefixNotFound { .. } | ArchiveError::InvalidStripPrefix { .. } => {
            rejected("strip_prefix", e.to_string())
        }
        ArchiveError::Io { .. } => PublishError::Unavailable(format!("extracting: {e}")),
        other => rejected(field, format!("the archive is refused: {other}")),
    })?;
    for (i, (path, bytes)) in req.overlay.iter().enumerate() {
        write_overlay(dest, path.as_str(), bytes)
            .map_err(|m| rejected(&format!("overlay[{i}].path"), m))?;
    }
    for (i, (name, content)) in req.patches.iter().enumerate() {
        patch::apply(dest, &patch::Patch { name, content }, req.patch_strip)
            .map_err(|e| rejected(&format!("patches[{i}]"), e.to_string()))?;
    }
    match std::fs::read(dest.join("MODULE.bazel")) {
        Ok(bytes) => {
            let archived = String::from_utf8_lossy(&bytes);
            let (a, s) = (normalize(&archived), normalize(&req.module_bazel));
            if a != s {
                let line = a
                    .iter()
                    .zip(&s)
                    .position(|(x, y)| x != y)
                    .unwrap_or(a.len().min(s.len()));
                return Err(rejected(
                    "module_bazel",
                    format!(
                        "differs from the MODULE.bazel in the archive (after overlay and patches) at line {}: archive has {:?}, request has {:?}",
                        line + 1,
                        a.get(line).map_or("<end of file>", String::as_str),
                        s.get(line).map_or("<end of file>", String::as_str),
                    ),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(PublishError::Unavailable(format!(
                "reading MODULE.bazel: {e}"
            )));
        }
    }
    Ok(())
}

/// Writes one overlay file under `root`, never through a symlink.
fn write_overlay(root: &Path, rel: &str, bytes: &[u8]) -> Result<(), String> {
    let mut path = PathBuf::from(root);
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "`{rel}` would be written through a symlink in the archive"
                ));
            }
            Ok(m) if i + 1 < parts.len() && !m.is_dir() => {
                return Err(format!("`{rel}`: a parent is a file in the archive"));
            }
            Ok(m) if i + 1 == parts.len() && m.is_dir() => {
                return Err(format!("`{rel}` is a folder in the archive"));
            }
            Ok(_) => {}
            Err(_) if i + 1 < parts.len() => {
                std::fs::create_dir(&path).map_err(|e| format!("`{rel}`: {e}"))?;
            }
            Err(_) => {}
        }
    }
    std::fs::write(&path, bytes).map_err(|e| format!("`{rel}`: {e}"))
}
