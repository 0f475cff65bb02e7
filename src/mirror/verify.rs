//! Hashing on the way in, and chunk-by-chunk verification on the way out.
//!
//! At ingest every blob gets its sha256 (the public address; sha384/sha512 too when an
//! integrity asks for them) and a BLAKE3 digest per 1 MiB chunk. Reads fetch whole chunks,
//! check each one before any of its bytes leave, and cut the response at the first mismatch,
//! so a client never receives wrong bytes with a success.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use sha2::Digest as _;

use super::records::BlobRecord;
use crate::registry::{Algorithm, Integrity};
use crate::storage::{Storage, StorageKey};

/// Size of a verification chunk.
pub const CHUNK_SIZE: u64 = 1 << 20;

/// Batches at least this large hash SHA-256 and BLAKE3 on two threads.
const PARALLEL_MIN_BYTES: usize = 256 * 1024;

/// Feeds `data` to the per-chunk BLAKE3 hashes.
fn update_chunks(
    chunk: &mut blake3::Hasher,
    filled: &mut u64,
    chunks: &mut Vec<String>,
    mut data: &[u8],
) {
    while !data.is_empty() {
        let room = usize::try_from(CHUNK_SIZE - *filled).unwrap_or(usize::MAX);
        let take = room.min(data.len());
        chunk.update(&data[..take]);
        *filled += take as u64;
        data = &data[take..];
        if *filled == CHUNK_SIZE {
            chunks.push(chunk.finalize().to_hex().to_string());
            chunk.reset();
            *filled = 0;
        }
    }
}

/// The SHA-2 digests of a blob being ingested: sha256, plus sha384/sha512 when asked for.
pub(super) struct ShaHashers {
    sha256: sha2::Sha256,
    sha384: Option<sha2::Sha384>,
    sha512: Option<sha2::Sha512>,
}

impl ShaHashers {
    /// sha256 plus the algorithms of `extra`.
    pub(super) fn new(extra: &[Algorithm]) -> Self {
        Self {
            sha256: sha2::Sha256::new(),
            sha384: extra.contains(&Algorithm::Sha384).then(sha2::Sha384::new),
            sha512: extra.contains(&Algorithm::Sha512).then(sha2::Sha512::new),
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(h) = self.sha384.as_mut() {
            h.update(data);
        }
        if let Some(h) = self.sha512.as_mut() {
            h.update(data);
        }
    }
}

/// The BLAKE3 digest of every chunk of a blob being ingested, and its size.
pub(super) struct ChunkHashers {
    chunk: blake3::Hasher,
    filled: u64,
    chunks: Vec<String>,
    size: u64,
}

impl ChunkHashers {
    pub(super) fn new() -> Self {
        Self {
            chunk: blake3::Hasher::new(),
            filled: 0,
            chunks: Vec::new(),
            size: 0,
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        update_chunks(&mut self.chunk, &mut self.filled, &mut self.chunks, data);
    }
}

/// Incremental hashes of a blob being ingested.
pub(super) struct Hashers {
    sha: ShaHashers,
    chunks: ChunkHashers,
}

/// The digests of a complete blob.
#[derive(Debug, Clone)]
pub(super) struct Digests {
    pub(super) sha256_hex: String,
    pub(super) integrity: Vec<Integrity>,
    pub(super) chunks: Vec<String>,
    pub(super) size: u64,
}

impl Digests {
    /// Whether `expected` matches, and the actual value in the same algorithm when computed.
    pub(super) fn check(&self, expected: &Integrity) -> Result<(), Option<Integrity>> {
        match self
            .integrity
            .iter()
            .find(|i| i.algorithm() == expected.algorithm())
        {
            Some(actual) if actual == expected => Ok(()),
            Some(actual) => Err(Some(actual.clone())),
            None => Err(None),
        }
    }
}

impl Hashers {
    /// Hashers for sha256 plus the algorithms of `extra`.
    pub(super) fn new(extra: &[Algorithm]) -> Self {
        Self::from_parts(ShaHashers::new(extra), ChunkHashers::new())
    }

    /// The two halves, fed separately (for instance on two threads).
    pub(super) fn from_parts(sha: ShaHashers, chunks: ChunkHashers) -> Self {
        Self { sha, chunks }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        let (sha, chunks) = (&mut self.sha, &mut self.chunks);
        if data.len() >= PARALLEL_MIN_BYTES {
            // SHA-256 (about 1.7 GB/s per core with SHA-NI) and BLAKE3 run side by side: an
            // ingest batch costs the slower of the two, not their sum.
            std::thread::scope(|s| {
                s.spawn(|| sha.update(data));
                chunks.update(data);
            });
        } else {
            sha.update(data);
            chunks.update(data);
        }
    }

    pub(super) fn finish(self) -> Digests {
        let (sha, mut c) = (self.sha, self.chunks);
        if c.filled > 0 {
            c.chunks.push(c.chunk.finalize().to_hex().to_string());
        }
        let sha256 = sha.sha256.finalize().to_vec();
        let sha256_hex = hex::encode(&sha256);
        let mut integrity = vec![Integrity::of_digest(Algorithm::Sha256, sha256)];
        if let Some(h) = sha.sha384 {
            integrity.push(Integrity::of_digest(
                Algorithm::Sha384,
                h.finalize().to_vec(),
            ));
        }
        if let Some(h) = sha.sha512 {
            integrity.push(Integrity::of_digest(
                Algorithm::Sha512,
                h.finalize().to_vec(),
            ));
        }
        Digests {
            sha256_hex,
            integrity,
            chunks: c.chunks,
            size: c.size,
        }
    }
}

/// Why a verified read stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ReadFault {
    /// Stored bytes do not match their record: quarantine.
    Corrupt(String),
    /// The backend failed (transient, or the object vanished): no verdict on the bytes.
    Backend(String),
}

/// Opens bytes `[start, end)` of a stored blob for a verified read. The backend is asked
/// before anything is answered, so an unreachable backend is an error here (and a 503 at the
/// edge), not a response cut off after its headers.
///
/// # Errors
/// [`ReadFault::Backend`] when the backend fails, [`ReadFault::Corrupt`] when the object is
/// missing.
pub(super) async fn open_verified(
    storage: &Storage,
    record: Arc<BlobRecord>,
    start: u64,
    end: u64,
    on_fault: Arc<dyn Fn(ReadFault) + Send + Sync>,
) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, ReadFault> {
    let key = StorageKey::blob("sha256", &record.sha256);
    if start >= end {
        // Nothing to read, but an empty blob's object must still be empty.
        if record.size == 0 {
            match storage.size(&key).await {
                Ok(Some(0)) => {}
                Ok(Some(stored)) => return Err(wrong_size(&record, stored)),
                Ok(None) => {
                    return Err(ReadFault::Corrupt(format!(
                        "blob {} is missing from the cas role",
                        record.sha256
                    )));
                }
                Err(e) => return Err(ReadFault::Backend(e.to_string())),
            }
        }
        return Ok(futures::stream::empty().boxed());
    }
    let cs = record.chunk_size.max(1);
    let fetch_start = (start / cs) * cs;
    let fetch_end = end.div_ceil(cs).saturating_mul(cs).min(record.size);
    match storage.get_range_sized(&key, fetch_start..fetch_end).await {
        // Chunk digests cover only `[0, size)`: bytes appended to the object (or cut off past
        // the range) would pass them, yet the object is no longer the blob its name says.
        Ok(Some((stored, _))) if stored != record.size => Err(wrong_size(&record, stored)),
        Ok(Some((_, s))) => Ok(verified_stream(
            s.map_err(|e| e.to_string()).boxed(),
            record,
            start,
            end,
            on_fault,
        )),
        Ok(None) => Err(ReadFault::Corrupt(format!(
            "blob {} is missing from the cas role",
            record.sha256
        ))),
        Err(e) => {
            // A range past the end of a truncated object is refused by the backend as a bad
            // range, which says nothing about the bytes: ask for the size before blaming the
            // backend.
            match storage.size(&key).await {
                Ok(Some(stored)) if stored != record.size => Err(wrong_size(&record, stored)),
                Ok(None) => Err(ReadFault::Corrupt(format!(
                    "blob {} is missing from the cas role",
                    record.sha256
                ))),
                _ => Err(ReadFault::Backend(e.to_string())),
            }
        }
    }
}

/// The fault of an object whose size is not its record's.
fn wrong_size(record: &BlobRecord, stored: u64) -> ReadFault {
    ReadFault::Corrupt(format!(
        "blob {} is {stored} bytes in the cas role, its record says {}",
        record.sha256, record.size
    ))
}

/// Verifies an opened range read chunk by chunk. On a fault `on_fault` is called once and the
/// stream ends with an error (the response is cut off).
fn verified_stream(
    inner: BoxStream<'static, Result<Bytes, String>>,
    record: Arc<BlobRecord>,
    start: u64,
    end: u64,
    on_fault: Arc<dyn Fn(ReadFault) + Send + Sync>,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let cs = record.chunk_size.max(1);
    let first = start / cs;
    struct St {
        inner: Option<BoxStream<'static, Result<Bytes, String>>>,
        buf: BytesMut,
        chunk: u64,
        done: bool,
    }
    let state = St {
        inner: Some(inner),
        buf: BytesMut::new(),
        chunk: first,
        done: false,
    };
    futures::stream::unfold(state, move |mut st| {
        let record = record.clone();
        let on_fault = on_fault.clone();
        async move {
            if st.done {
                return None;
            }
            let fail = |st: &mut St, fault: ReadFault| {
                st.done = true;
                let msg = match &fault {
                    ReadFault::Corrupt(m) | ReadFault::Backend(m) => m.clone(),
                };
                on_fault(fault);
                Some(Err(std::io::Error::other(msg)))
            };
            let chunk_start = st.chunk * cs;
            let chunk_len = cs.min(record.size - chunk_start);
            let chunk_len_usize = usize::try_from(chunk_len).unwrap_or(usize::MAX);
            let mut whole: Option<Bytes> = None;
            while whole.is_none() && st.buf.len() < chunk_len_usize {
                let next = match st.inner.as_mut() {
                    Some(s) => s.next().await,
                    None => None,
                };
                match next {
                    // Blocks that are exactly one chunk (local files) need no copy.
                    Some(Ok(b)) if st.buf.is_empty() && b.len() == chunk_len_usize => {
                        whole = Some(b)
                    }
                    Some(Ok(b)) => st.buf.extend_from_slice(&b),
                    Some(Err(e)) => {
                        let r = fail(&mut st, ReadFault::Backend(e));
                        return r.map(|x| (x, st));
                    }
                    None => {
                        let r = fail(
                            &mut st,
                            ReadFault::Corrupt(format!(
                                "blob {} is shorter than its record says",
                                record.sha256
                            )),
                        );
                        return r.map(|x| (x, st));
                    }
                }
            }
            let data = match whole {
                Some(b) => b,
                None => st.buf.split_to(chunk_len_usize).freeze(),
            };
            let idx = usize::try_from(st.chunk).unwrap_or(usize::MAX);
            let ok = record
                .chunks
                .get(idx)
                .is_some_and(|want| blake3::hash(&data).to_hex().as_str() == want);
            if !ok {
                let r = fail(
                    &mut st,
                    ReadFault::Corrupt(format!(
                        "blob {} chunk {idx} does not match its digest",
                        record.sha256
                    )),
                );
                return r.map(|x| (x, st));
            }
            st.chunk += 1;
            let from = usize::try_from(start.saturating_sub(chunk_start)).unwrap_or(0);
            let to = usize::try_from(end.min(chunk_start + chunk_len) - chunk_start).unwrap_or(0);
            if chunk_start + chunk_len >= end {
                st.done = true;
            }
            Some((Ok(data.slice(from..to)), st))
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashers_chunk_and_digest() {
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 17))
            .map(|i| (i % 253) as u8)
            .collect();
        let mut h = Hashers::new(&[Algorithm::Sha512]);
        for part in data.chunks(70_001) {
            h.update(part);
        }
        let d = h.finish();
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(d.chunks.len(), 3);
        assert_eq!(
            d.chunks[2],
            blake3::hash(&data[(CHUNK_SIZE * 2) as usize..])
                .to_hex()
                .to_string()
        );
        assert_eq!(d.sha256_hex, hex::encode(sha2::Sha256::digest(&data)));
        assert!(d.check(&Integrity::of(Algorithm::Sha512, &data)).is_ok());
        assert!(
            d.check(&Integrity::of(Algorithm::Sha512, b"other"))
                .is_err()
        );
        assert_eq!(d.check(&Integrity::of(Algorithm::Sha384, &data)), Err(None));
    }
}
