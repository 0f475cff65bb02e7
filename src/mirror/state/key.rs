//! Record keys, held as numbers when they have the form this server writes.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

use crate::mirror::record::key_time;

/// The streams of the records role, in the order of their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Stream {
    Blobs,
    Events,
    Pins,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Self::Blobs => "blobs",
            Self::Events => "events",
            Self::Pins => "pins",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s {
            "blobs" => Some(Self::Blobs),
            "events" => Some(Self::Events),
            "pins" => Some(Self::Pins),
            _ => None,
        }
    }
}

/// The path of a record in the records role. `{stream}/{time}-{salt}-{counter}.json`, the
/// form [`super::super::records::Records::append`] writes, is held as four numbers (32
/// bytes instead of a 66-character string); any other path as its text. Equality, order and
/// [`fmt::Display`] are those of the path text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RecordKey(pub(super) Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum Repr {
    Parsed {
        stream: Stream,
        /// The time part, in nanoseconds since the epoch.
        nanos: i64,
        salt: u64,
        counter: u64,
    },
    Text(Box<str>),
}

impl RecordKey {
    /// The key of the record at `path`.
    #[must_use]
    pub fn parse(path: &str) -> Self {
        match Self::parse_numbers(path) {
            // Only a key that reads back as the same text is held as numbers.
            Some(k) if k.to_string() == path => k,
            _ => Self(Repr::Text(path.into())),
        }
    }

    fn parse_numbers(path: &str) -> Option<Self> {
        let (stream, id) = path.split_once('/')?;
        let stream = Stream::from_name(stream)?;
        let id = id.strip_suffix(".json")?.as_bytes();
        // 20260101T000000.000000000Z-0123456789abcdef-0000000000
        if id.len() != 26 + 1 + 16 + 1 + 10 || id[26] != b'-' || id[43] != b'-' {
            return None;
        }
        let digits = |from: usize, to: usize| -> Option<u64> {
            id.get(from..to)?.iter().try_fold(0u64, |n, &b| {
                b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
            })
        };
        let small = |from: usize, to: usize| digits(from, to).and_then(|n| u32::try_from(n).ok());
        let (t, z) = (b'T', b'Z');
        if id[8] != t || id[15] != b'.' || id[25] != z {
            return None;
        }
        let year = i32::try_from(digits(0, 4)?).ok()?;
        let time = NaiveDate::from_ymd_opt(year, small(4, 6)?, small(6, 8)?)?.and_hms_nano_opt(
            small(9, 11)?,
            small(11, 13)?,
            small(13, 15)?,
            small(16, 25)?,
        )?;
        let salt = std::str::from_utf8(&id[27..43]).ok()?;
        Some(Self(Repr::Parsed {
            stream,
            nanos: time.and_utc().timestamp_nanos_opt()?,
            salt: u64::from_str_radix(salt, 16).ok()?,
            counter: digits(44, 54)?,
        }))
    }

    /// The time part of the key (the time of the write), when the key has the usual shape.
    #[must_use]
    pub fn time(&self) -> Option<DateTime<Utc>> {
        match &self.0 {
            Repr::Parsed { nanos, .. } => Some(DateTime::from_timestamp_nanos(*nanos)),
            Repr::Text(_) => None,
        }
    }

    /// The stream: the part before the first `/` (empty when there is none).
    #[must_use]
    pub fn stream(&self) -> &str {
        match &self.0 {
            Repr::Parsed { stream, .. } => stream.name(),
            Repr::Text(t) => t.split_once('/').map_or("", |(s, _)| s),
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Parsed {
                stream,
                nanos,
                salt,
                counter,
            } => write!(
                f,
                "{}/{}-{salt:016x}-{counter:010}.json",
                stream.name(),
                key_time(DateTime::from_timestamp_nanos(*nanos))
            ),
            Repr::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Ord for RecordKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            // Every part has a fixed width and sorts like its number, and no stream name is a
            // prefix of another: the numbers sort like the text.
            (
                Repr::Parsed {
                    stream: s1,
                    nanos: n1,
                    salt: a1,
                    counter: c1,
                },
                Repr::Parsed {
                    stream: s2,
                    nanos: n2,
                    salt: a2,
                    counter: c2,
                },
            ) => (s1, n1, a1, c1).cmp(&(s2, n2, a2, c2)),
            (Repr::Text(a), Repr::Text(b)) => a.cmp(b),
            _ => self.to_string().cmp(&other.to_string()),
        }
    }
}

impl PartialOrd for RecordKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where the next listing of a stream starts: keys of that stream at or before it are never
/// listed again.
#[derive(Debug)]
pub(super) struct Floor {
    prefix: String,
    /// `{stream}/{time}`: the offset the listing starts after.
    text: String,
    /// The stream and time, when the time has the fixed-width form.
    parsed: Option<(Stream, i64)>,
}

impl Floor {
    /// The floor of `stream` at time `t`.
    pub(super) fn new(stream: &str, t: DateTime<Utc>) -> Self {
        Self {
            prefix: format!("{stream}/"),
            text: format!("{stream}/{}", key_time(t)),
            parsed: Stream::from_name(stream).zip(t.timestamp_nanos_opt()),
        }
    }

    /// Whether `key` may still be listed: it is of another stream, or after the floor.
    pub(super) fn keeps(&self, key: &RecordKey) -> bool {
        match (&key.0, self.parsed) {
            // `{stream}/{time}-...` is after `{stream}/{floor time}` exactly when its time is
            // not earlier (the same time is a prefix of the key, and shorter).
            (Repr::Parsed { stream, nanos, .. }, Some((s, floor))) => {
                *stream != s || *nanos >= floor
            }
            (Repr::Parsed { stream, .. }, None) if format!("{}/", stream.name()) != self.prefix => {
                true
            }
            _ => {
                let text = key.to_string();
                !text.starts_with(&self.prefix) || text > self.text
            }
        }
    }
}

/// Record keys already applied, sorted: 32 bytes a key, where a hash set takes about twice
/// that (the start of a replica that wrote many records in the last minutes holds them all).
#[derive(Debug, Default, Clone)]
pub(super) struct Seen(Vec<RecordKey>);

impl Seen {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn contains(&self, key: &RecordKey) -> bool {
        self.0.binary_search(key).is_ok()
    }

    pub(super) fn insert(&mut self, key: RecordKey) {
        if let Err(at) = self.0.binary_search(&key) {
            self.0.insert(at, key);
        }
    }

    /// Starts adding up to `n` keys: they are appended, and sorted by [`Self::finish`].
    pub(super) fn batch(&mut self, n: usize) -> Batch {
        self.0.reserve_exact(n);
        Batch {
            sorted: self.0.len(),
        }
    }

    /// Whether `key` was there before the batch started.
    pub(super) fn seen_before(&self, batch: &Batch, key: &RecordKey) -> bool {
        self.0[..batch.sorted].binary_search(key).is_ok()
    }

    /// Adds a key of the batch (not there before, and not added by it yet).
    pub(super) fn add(&mut self, _batch: &Batch, key: RecordKey) {
        self.0.push(key);
    }

    pub(super) fn finish(&mut self, batch: Batch) {
        if self.0.len() > batch.sorted {
            // No key is there twice, so the unstable sort has one result.
            self.0.sort_unstable();
        }
    }

    /// Keeps the keys `keep` says to, giving back the room of the others when many went.
    pub(super) fn retain(&mut self, keep: impl FnMut(&RecordKey) -> bool) {
        self.0.retain(keep);
        if self.0.capacity() > 2 * self.0.len() + 1024 {
            self.0.shrink_to_fit();
        }
    }
}

/// Keys being added to [`Seen`].
#[derive(Debug)]
pub(super) struct Batch {
    sorted: usize,
}

/// For each key, whether an equal key comes earlier in the sequence.
pub(super) fn repeated<'a>(keys: impl ExactSizeIterator<Item = &'a RecordKey>) -> Vec<bool> {
    let keys: Vec<&RecordKey> = keys.collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by(|&a, &b| keys[a].cmp(keys[b]).then(a.cmp(&b)));
    let mut repeated = vec![false; keys.len()];
    for w in order.windows(2) {
        if keys[w[0]] == keys[w[1]] {
            repeated[w[1]] = true;
        }
    }
    repeated
}
