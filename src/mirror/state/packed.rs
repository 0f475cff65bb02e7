//! Digests packed as bytes: a blob's chunk digests and its SRI values.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::digest::Sha256Digest;
use crate::registry::Algorithm;

/// 64 lowercase hex digits as 32 bytes.
fn lower_hex_32(s: &str) -> Option<[u8; 32]> {
    Sha256Digest::from_hex(s).map(|d| d.0)
}

/// The BLAKE3 digests of a blob's chunks: bytes when every one is 64 lowercase hex digits
/// (as this server records them), otherwise the text as recorded.
#[derive(Debug, Clone)]
pub(crate) enum Chunks {
    Bytes(Box<[[u8; 32]]>),
    Text(Box<[Box<str>]>),
}

impl Chunks {
    pub(crate) fn new(hex: &[String]) -> Self {
        match hex
            .iter()
            .map(|h| lower_hex_32(h))
            .collect::<Option<Vec<_>>>()
        {
            Some(bytes) => Self::Bytes(bytes.into_boxed_slice()),
            None => Self::Text(hex.iter().map(|h| Box::from(h.as_str())).collect()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::Text(t) => t.len(),
        }
    }

    /// The digests as recorded (lowercase hex).
    pub(crate) fn to_strings(&self) -> Vec<String> {
        match self {
            Self::Bytes(b) => b.iter().map(hex::encode).collect(),
            Self::Text(t) => t.iter().map(|h| h.to_string()).collect(),
        }
    }
}

// One entry: a tag byte, then the digest (or, for text, a little-endian u64 length and the
// UTF-8 bytes).
const TEXT: u8 = 0;
/// `sha256-` of the blob's own digest: no bytes follow.
const OWN: u8 = 1;
const SHA256: u8 = 2;
const SHA384: u8 = 3;
const SHA512: u8 = 4;

/// One SRI value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sri<'a> {
    /// `sha256-` of the blob's own digest.
    Own,
    /// `<algorithm>-<standard base64 of the digest>`.
    Digest(Algorithm, &'a [u8]),
    /// Anything else, as recorded.
    Text(&'a str),
}

/// A blob's SRI values, in record order, packed into one allocation. A value that is the
/// canonical form of a sha256, sha384 or sha512 digest is held as the digest's bytes (the
/// blob's own sha256 as one byte); anything else as its text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sris(Box<[u8]>);

impl Sris {
    pub(crate) fn new<'a>(values: impl Iterator<Item = &'a str>, own: &Sha256Digest) -> Self {
        let mut out = Vec::new();
        for v in values {
            push(&mut out, v, own);
        }
        Self(out.into_boxed_slice())
    }

    fn spans(&self) -> impl Iterator<Item = &[u8]> {
        spans(&self.0)
    }

    fn entries(&self) -> impl Iterator<Item = Sri<'_>> {
        self.spans().map(|span| {
            let body = &span[1..];
            match span[0] {
                OWN => Sri::Own,
                SHA256 => Sri::Digest(Algorithm::Sha256, body),
                SHA384 => Sri::Digest(Algorithm::Sha384, body),
                SHA512 => Sri::Digest(Algorithm::Sha512, body),
                _ => Sri::Text(std::str::from_utf8(&body[8..]).unwrap_or_default()),
            }
        })
    }

    /// The digests held as bytes, with their algorithms (the blob's own sha256 excluded).
    pub(crate) fn digests(&self) -> impl Iterator<Item = (Algorithm, &[u8])> {
        self.entries().filter_map(|e| match e {
            Sri::Digest(a, d) => Some((a, d)),
            Sri::Own | Sri::Text(_) => None,
        })
    }

    /// Whether the list has this digest.
    pub(crate) fn has_digest(&self, algorithm: Algorithm, digest: &[u8]) -> bool {
        self.digests().any(|(a, d)| a == algorithm && d == digest)
    }

    /// The values as recorded.
    pub(crate) fn to_strings(&self, own: &Sha256Digest) -> Vec<String> {
        self.entries()
            .map(|e| match e {
                Sri::Own => format!("sha256-{}", STANDARD.encode(own.0)),
                Sri::Digest(a, d) => format!("{}-{}", a.name(), STANDARD.encode(d)),
                Sri::Text(t) => t.to_owned(),
            })
            .collect()
    }

    /// Appends the values of `other` (of the same blob) that are not here yet, in order.
    pub(crate) fn merge(&mut self, other: &Self) {
        // Equal values have equal entries: the packing is a function of the value.
        let mut out: Option<Vec<u8>> = None;
        for span in other.spans() {
            let have = out.as_deref().unwrap_or(&self.0);
            if !spans(have).any(|s| s == span) {
                out.get_or_insert_with(|| self.0.to_vec())
                    .extend_from_slice(span);
            }
        }
        if let Some(out) = out {
            self.0 = out.into_boxed_slice();
        }
    }
}

/// The encoded entries of packed SRI values.
fn spans(packed: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = packed;
    std::iter::from_fn(move || {
        let (&tag, after) = rest.split_first()?;
        let len = match tag {
            OWN => 0,
            SHA256 => 32,
            SHA384 => 48,
            SHA512 => 64,
            _ => {
                let n = after.get(..8)?;
                8 + usize::try_from(u64::from_le_bytes(n.try_into().ok()?)).ok()?
            }
        };
        let (span, next) = rest.split_at_checked(1 + len)?;
        rest = next;
        Some(span)
    })
}

/// Appends the entry of the SRI value `v`.
fn push(out: &mut Vec<u8>, v: &str, own: &Sha256Digest) {
    match canonical(v) {
        Some((Algorithm::Sha256, digest)) if digest.bytes() == own.0 => out.push(OWN),
        Some((algorithm, digest)) => {
            out.push(match algorithm {
                Algorithm::Sha256 => SHA256,
                Algorithm::Sha384 => SHA384,
                Algorithm::Sha512 => SHA512,
            });
            out.extend_from_slice(digest.bytes());
        }
        None => {
            out.push(TEXT);
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
    }
}

/// The digest of an SRI value that is exactly `<algorithm>-<standard base64>` with the
/// digest length of its algorithm (decoded without allocating: this runs for every value of
/// every record at start).
fn canonical(v: &str) -> Option<(Algorithm, Digest)> {
    let (name, b64) = v.split_once('-')?;
    let algorithm = Algorithm::from_name(name)?;
    let len = algorithm.digest_len();
    if b64.len() != len.div_ceil(3) * 4 {
        return None;
    }
    let mut digest = Digest([0u8; 64], len);
    let mut decoded = [0u8; 66];
    let n = STANDARD.decode_slice(b64, &mut decoded).ok()?;
    if n != len {
        return None;
    }
    digest.0[..len].copy_from_slice(&decoded[..len]);
    let mut encoded = [0u8; 88];
    let m = STANDARD.encode_slice(digest.bytes(), &mut encoded).ok()?;
    (encoded[..m] == *b64.as_bytes()).then_some((algorithm, digest))
}

/// A digest of up to 64 bytes, on the stack.
struct Digest([u8; 64], usize);

impl Digest {
    fn bytes(&self) -> &[u8] {
        &self.0[..self.1]
    }
}
