//! What a blob request is answered with, and the range it may ask for.

use bytes::Bytes;
use futures::stream::BoxStream;

/// A `Range` request, before it is resolved against a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (inclusive).
    FromTo(u64, u64),
    /// `bytes=a-`.
    From(u64),
    /// `bytes=-n`.
    Suffix(u64),
}

impl ByteRange {
    /// Resolves to `[start, end)` within `size`, or `None` when unsatisfiable.
    #[must_use]
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let (s, e) = match self {
            Self::FromTo(a, b) if a <= b => (a, b.saturating_add(1).min(size)),
            Self::FromTo(..) => return None,
            Self::From(a) => (a, size),
            Self::Suffix(n) if n > 0 => (size.saturating_sub(n), size),
            Self::Suffix(_) => return None,
        };
        (s < e).then_some((s, e))
    }
}

/// What the edge needs to answer a blob request.
pub struct BlobResponse {
    /// Hex sha256 (the strong ETag), when already known.
    pub sha256: Option<String>,
    /// The blob's total size, when known.
    pub size: Option<u64>,
    /// `Some((start, end_exclusive))` for a `206` answer.
    pub range: Option<(u64, u64)>,
    /// The bytes; an error item means "cut the response off here".
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

impl std::fmt::Debug for BlobResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobResponse")
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}
