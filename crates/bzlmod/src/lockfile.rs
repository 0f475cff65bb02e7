//! The part of Bazel's `MODULE.bazel.lock` that names registry files: `registryFileHashes`,
//! a map from a registry file's URL (before any downloader rewrite) to the sha256 of its
//! bytes, or to `"not found"` when Bazel recorded that the registry has no such file.
//!
//! Bazel writes this map from lockfile version 7 (Bazel 7.2) on; every later version keeps
//! its shape. A lockfile without it is not an error here: it names no registry file (older
//! versions pinned nothing), and the caller reports that.

use serde_json::Value;

use crate::Sha256Digest;

/// What Bazel recorded for one registry file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedHash {
    /// The file's sha256.
    Sha256(Sha256Digest),
    /// `"not found"`: the registry answered 404 when the lockfile was written.
    NotFound,
}

/// One entry of `registryFileHashes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryFileHash {
    /// The file's URL, as Bazel asked for it.
    pub url: String,
    /// What Bazel recorded.
    pub hash: RecordedHash,
}

/// Why a lockfile cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockfileError {
    /// Not JSON, or not a JSON object.
    #[error("not a MODULE.bazel.lock: {0}")]
    NotALockfile(String),
    /// An entry of `registryFileHashes` that is neither 64 hex digits nor `"not found"`.
    #[error("registryFileHashes[{url:?}]: {message}")]
    BadEntry {
        /// The entry's URL.
        url: String,
        /// What is wrong with its value.
        message: String,
    },
}

/// The lockfile's `lockFileVersion` (if any) and its `registryFileHashes` entries, in the
/// file's order.
///
/// # Errors
/// [`LockfileError`] naming the entry at fault.
pub fn registry_file_hashes(
    json: &[u8],
) -> Result<(Option<u64>, Vec<RegistryFileHash>), LockfileError> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| LockfileError::NotALockfile(e.to_string()))?;
    let Value::Object(top) = value else {
        return Err(LockfileError::NotALockfile(
            "the top level is not an object".to_owned(),
        ));
    };
    let version = top.get("lockFileVersion").and_then(Value::as_u64);
    let Some(hashes) = top.get("registryFileHashes") else {
        return Ok((version, Vec::new()));
    };
    let Value::Object(hashes) = hashes else {
        return Err(LockfileError::NotALockfile(
            "registryFileHashes is not an object".to_owned(),
        ));
    };
    let mut out = Vec::with_capacity(hashes.len());
    for (url, v) in hashes {
        let bad = |message: &str| LockfileError::BadEntry {
            url: url.clone(),
            message: message.to_owned(),
        };
        let hash = match v.as_str() {
            Some("not found") => RecordedHash::NotFound,
            Some(hex) => RecordedHash::Sha256(
                Sha256Digest::parse_hex(hex)
                    .map_err(|_| bad("not a sha256 (64 hex digits) or \"not found\""))?,
            ),
            None => return Err(bad("not a string")),
        };
        out.push(RegistryFileHash {
            url: url.clone(),
            hash,
        });
    }
    Ok((version, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hashes_and_not_found() {
        let json = br#"{"lockFileVersion": 13, "registryFileHashes": {
            "https://bcr.bazel.build/bazel_registry.json": "8a28e4aff06ee60aed2a8c281907fb8bcbf3b753c91fb5a5c57da3215d5b3497",
            "https://bcr.bazel.build/modules/x/1.0/MODULE.bazel": "not found"
        }}"#;
        let (version, entries) = registry_file_hashes(json).unwrap();
        assert_eq!(version, Some(13));
        assert_eq!(entries.len(), 2);
        assert!(matches!(entries[0].hash, RecordedHash::Sha256(_)));
        assert_eq!(entries[1].hash, RecordedHash::NotFound);
    }

    #[test]
    fn bad_entries_name_their_url() {
        let e =
            registry_file_hashes(br#"{"registryFileHashes": {"https://r/x": "abc"}}"#).unwrap_err();
        assert!(e.to_string().contains("https://r/x"), "{e}");
        let e = registry_file_hashes(br#"{"registryFileHashes": {"https://r/x": 1}}"#).unwrap_err();
        assert!(e.to_string().contains("not a string"), "{e}");
        assert!(registry_file_hashes(b"[]").is_err());
        assert!(registry_file_hashes(b"{").is_err());
    }

    #[test]
    fn a_lockfile_without_hashes_names_no_file() {
        let (v, e) = registry_file_hashes(br#"{"lockFileVersion": 3}"#).unwrap();
        assert_eq!((v, e.len()), (Some(3), 0));
    }

    #[test]
    fn every_shared_real_lockfile_reads() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/lockfiles");
        let list = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the shared lockfiles at {}: {e}", dir.display()));
        let mut read = 0;
        for f in list.flatten() {
            if f.path().extension().is_some_and(|e| e == "lock") {
                let (_, entries) = registry_file_hashes(&std::fs::read(f.path()).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", f.path().display()));
                assert!(!entries.is_empty(), "{}", f.path().display());
                read += 1;
            }
        }
        assert!(read >= 5, "{read}");
    }
}
