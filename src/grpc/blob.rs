//! Blob addresses as the CAS and ByteStream requests give them, and the reads and writes of
//! the mirror's `cas` role that the CAS, ByteStream and Push services share.
//!
//! Every byte read is verified chunk by chunk as `GET /cas/...` verifies it; a written blob
//! must hash to its digest before it is stored.

use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::Digest;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt as _};
use sha2::Digest as _;
use tonic::Status;

use super::{Caller, Door, READ_CHUNK_BYTES, status_of};
use crate::mirror::{ByteRange, MirrorError};
use crate::registry::Integrity;

/// The sha256 of no bytes: the empty blob is always present and never stored.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A blob's address: lowercase hex sha256 and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BlobAddress {
    pub(super) sha256: String,
    pub(super) size: u64,
}

impl BlobAddress {
    pub(super) fn is_empty_blob(&self) -> bool {
        self.size == 0 && self.sha256 == EMPTY_SHA256
    }

    pub(super) fn integrity(&self) -> Integrity {
        let raw = hex::decode(&self.sha256).unwrap_or_default();
        Integrity::of_digest(crate::registry::Algorithm::Sha256, raw)
    }

    pub(super) fn digest(&self) -> Digest {
        Digest {
            hash: self.sha256.clone(),
            size_bytes: i64::try_from(self.size).unwrap_or(i64::MAX),
        }
    }
}

/// A digest as a request gives it; `field` names it in the error.
pub(super) fn address(digest: Option<&Digest>, field: &str) -> Result<BlobAddress, Status> {
    let d = digest.ok_or_else(|| Status::invalid_argument(format!("{field}: missing")))?;
    parse_address(&d.hash, &d.size_bytes.to_string(), field)
}

fn parse_address(hash: &str, size: &str, field: &str) -> Result<BlobAddress, Status> {
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Status::invalid_argument(format!(
            "{field}: `{hash}` is not a sha256 (64 lowercase hex characters)"
        )));
    }
    let size = size.parse::<u64>().map_err(|_| {
        Status::invalid_argument(format!("{field}: size `{size}` is not a byte count"))
    })?;
    Ok(BlobAddress {
        sha256: hash.to_owned(),
        size,
    })
}

/// The blob a `ByteStream` resource names: `[{instance}/]blobs/{hash}/{size}` for a read,
/// `[{instance}/]uploads/{uuid}/blobs/{hash}/{size}[/{anything}]` for a write.
pub(super) fn resource(name: &str, write: bool) -> Result<BlobAddress, Status> {
    let parts: Vec<&str> = name.split('/').collect();
    let field = "resource_name";
    if parts.contains(&"compressed-blobs") {
        return Err(Status::invalid_argument(format!(
            "{field} `{name}`: compressed-blobs are not offered (Capabilities lists no \
             compressor); ask for blobs/{{hash}}/{{size}}"
        )));
    }
    let shape = if write {
        "[{instance}/]uploads/{uuid}/blobs/{hash}/{size}"
    } else {
        "[{instance}/]blobs/{hash}/{size}"
    };
    let found = parts.iter().enumerate().find_map(|(i, p)| {
        let ok = *p == "blobs"
            && parts.len() >= i + 3
            && (write || parts.len() == i + 3)
            && (!write || (i >= 2 && parts[i - 2] == "uploads"));
        ok.then(|| (parts[i + 1], parts[i + 2]))
    });
    let (hash, size) = found.ok_or_else(|| {
        Status::invalid_argument(format!("{field} `{name}` is not of the shape {shape}"))
    })?;
    parse_address(hash, size, field)
}

impl Door {
    /// Whether the available blobs in memory include `address` (at its size); the empty blob
    /// always is.
    pub(super) fn held(&self, address: &BlobAddress) -> bool {
        address.is_empty_blob()
            || self
                .app
                .mirror
                .stored(&address.integrity())
                .is_some_and(|(_, size)| size == address.size)
    }

    /// [`Door::held`], looking at other replicas' records once before saying it is missing.
    pub(super) async fn present(&self, address: &BlobAddress) -> Result<bool, Status> {
        if self.held(address) {
            return Ok(true);
        }
        self.reload().await?;
        Ok(self.held(address))
    }

    /// Reads the records other replicas wrote since the last look.
    pub(super) async fn reload(&self) -> Result<(), Status> {
        self.app
            .mirror
            .reload_records()
            .await
            .map_err(|e| status_of(&e))
    }

    /// The verified bytes of `address` from `offset`, at most `limit` (0: to the end).
    pub(super) async fn read_blob(
        &self,
        address: &BlobAddress,
        offset: u64,
        limit: u64,
    ) -> Result<BoxStream<'static, Result<Bytes, Status>>, Status> {
        if offset > address.size {
            return Err(Status::out_of_range(format!(
                "read_offset {offset} is past the end of the {} bytes of {}",
                address.size, address.sha256
            )));
        }
        if address.is_empty_blob() || offset == address.size {
            return Ok(stream::empty().boxed());
        }
        let range = match (offset, limit) {
            (0, 0) => None,
            (o, 0) => Some(ByteRange::From(o)),
            (o, l) => Some(ByteRange::FromTo(o, o.saturating_add(l - 1))),
        };
        let blob = self
            .app
            .mirror
            .get_digest("sha256", &address.sha256, range)
            .await
            .map_err(|e| status_of(&e))?;
        if blob.size.is_some_and(|s| s != address.size) {
            return Err(Status::not_found(format!(
                "the CAS holds {} with {} bytes, not {}",
                address.sha256,
                blob.size.unwrap_or_default(),
                address.size
            )));
        }
        let sha = address.sha256.clone();
        Ok(blob
            .body
            .flat_map(move |item| {
                let pieces: Vec<Result<Bytes, Status>> = match item {
                    Ok(mut bytes) => {
                        let mut out = Vec::with_capacity(bytes.len() / READ_CHUNK_BYTES + 1);
                        while bytes.len() > READ_CHUNK_BYTES {
                            out.push(Ok(bytes.split_to(READ_CHUNK_BYTES)));
                        }
                        out.push(Ok(bytes));
                        out
                    }
                    // Cut off: a chunk failed verification (the blob is quarantined now) or
                    // the store failed. Never an OK end after a wrong or missing byte.
                    Err(e) => vec![Err(Status::unavailable(format!(
                        "the read of {sha} was cut off: {e}"
                    )))],
                };
                stream::iter(pieces)
            })
            .boxed())
    }

    /// Stores `data` as the blob at `address` after checking it hashes to it.
    pub(super) async fn store(
        &self,
        caller: &Caller,
        address: &BlobAddress,
        data: Vec<u8>,
        via: &str,
    ) -> Result<(), Status> {
        if data.len() as u64 != address.size {
            return Err(Status::invalid_argument(format!(
                "{}: {} bytes were sent, the digest says {}",
                address.sha256,
                data.len(),
                address.size
            )));
        }
        let actual = hex::encode(sha2::Sha256::digest(&data));
        if actual != address.sha256 {
            return Err(Status::invalid_argument(format!(
                "the bytes sent hash to sha256 {actual}, not to the digest {}; nothing was stored",
                address.sha256
            )));
        }
        if address.is_empty_blob() {
            return Ok(());
        }
        let label = format!("{via} by {}", caller.principal.name);
        self.app
            .mirror
            .ingest_bytes(Arc::new(data), &label, &caller.requested_by())
            .await
            .map(|_| ())
            .map_err(|e| match e {
                MirrorError::BadRequest(m) => Status::invalid_argument(m),
                e => status_of(&e),
            })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    const H: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn read_resources_name_a_blob() {
        for name in [
            format!("blobs/{H}/3"),
            format!("main/blobs/{H}/3"),
            format!("a/b/blobs/{H}/3"),
        ] {
            let a = resource(&name, false).expect(&name);
            assert_eq!((a.sha256.as_str(), a.size), (H, 3));
        }
    }

    #[test]
    fn write_resources_name_an_upload() {
        for name in [
            format!("uploads/u-1/blobs/{H}/3"),
            format!("main/uploads/u-1/blobs/{H}/3"),
            format!("uploads/u-1/blobs/{H}/3/some/metadata"),
        ] {
            let a = resource(&name, true).expect(&name);
            assert_eq!((a.sha256.as_str(), a.size), (H, 3));
        }
        assert!(resource(&format!("blobs/{H}/3"), true).is_err());
    }

    #[test]
    fn bad_resources_are_named() {
        for (name, needle) in [
            (format!("blobs/{H}"), "is not of the shape"),
            (format!("blobs/{H}/3/extra"), "is not of the shape"),
            (format!("blobs/{}/3", H.to_uppercase()), "not a sha256"),
            ("blobs/abc/3".to_owned(), "not a sha256"),
            (format!("blobs/{H}/-1"), "not a byte count"),
            (format!("compressed-blobs/zstd/{H}/3"), "compressed-blobs"),
        ] {
            let e = resource(&name, false).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{name}");
            assert!(e.message().contains("resource_name"), "{}", e.message());
            assert!(e.message().contains(needle), "{name}: {}", e.message());
        }
    }

    #[test]
    fn digests_name_their_field() {
        let e = address(None, "digests[2]").unwrap_err();
        assert_eq!(e.message(), "digests[2]: missing");
        let d = Digest {
            hash: H.to_owned(),
            size_bytes: -4,
        };
        let e = address(Some(&d), "blob_digests[0]").unwrap_err();
        assert!(
            e.message().starts_with("blob_digests[0]: size"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn the_empty_blob_is_known() {
        let a = parse_address(EMPTY_SHA256, "0", "f").expect("empty");
        assert!(a.is_empty_blob());
        assert_eq!(a.integrity().hex(), EMPTY_SHA256);
    }
}
