//! The mirror state folded from the records, held compactly.
//!
//! The state is kept for every blob ever stored, so its size per blob is what the server's
//! memory grows with. Digests are held as bytes, not hex or base64 text; URLs, rules, client
//! names and content types are shared strings (one copy, however many blobs and pins name
//! them). Each record is folded into this form as it is read ([`Folded`]): a start never
//! holds all the records' JSON or parsed records at once. [`BlobState::record`] rebuilds a
//! blob's provenance record exactly as it was stored.
//!
//! Blob and pin records whose sha256 is not 64 lowercase hex digits (never written by this
//! server) are unreadable records: they are skipped and reported, like invalid JSON.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::record::{EventKind, EventRecord, Record};
use crate::registry::{Algorithm, Integrity};

mod aliases;
mod blob;
mod digest;
mod key;
mod packed;
mod strings;

use aliases::{AliasKey, Aliases};
pub use blob::BlobState;
use blob::{Provenance, Upstream};
pub use digest::Sha256Digest;
pub use key::RecordKey;
use key::Seen;
use packed::{Chunks, Sris};
pub(crate) use strings::Strings;

/// How far back an incremental listing reaches before the newest record seen.
pub(super) const RELIST_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// How far past this replica's now a listing position may be. A key dated later (a replica
/// whose clock runs ahead, a damaged or hand-made file) would otherwise move the listing past
/// every real record still to come. Less than [`RELIST_WINDOW`], so a listing always reaches
/// back before now.
pub(super) const FUTURE_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// A URL pin: first seen wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The sha256 it is pinned to.
    pub sha256: Sha256Digest,
    /// When.
    pub at: DateTime<Utc>,
}

/// A record folded into the state's form, not yet applied.
#[derive(Debug)]
pub(super) enum Folded {
    /// A provenance record (the blob as it will be stored when the record is the latest).
    Blob(Box<BlobState>),
    /// A supplement: more SRI values for an ingest already recorded.
    Supplement(Sha256Digest, Sris),
    /// A URL pin.
    Pin(Arc<str>, Pin),
    /// An event.
    Event(Box<EventRecord>),
}

impl Folded {
    /// Folds `record`, sharing strings through `strings`; `None` for a blob or pin record
    /// whose sha256 is not 64 lowercase hex digits.
    pub(super) fn new(record: &Record, strings: &mut Strings) -> Option<Self> {
        Some(match record {
            Record::Blob(b) => {
                let sha256 = Sha256Digest::from_hex(&b.sha256)?;
                let integrity = Sris::new(b.integrity.iter().map(String::as_str), &sha256);
                if b.supplement {
                    return Some(Self::Supplement(sha256, integrity));
                }
                let mut intern = |s: &Option<String>| s.as_deref().map(|s| strings.intern(s));
                let url = intern(&b.url);
                let rule = intern(&b.rule);
                let requested_by = intern(&b.requested_by);
                let upstream = b.upstream.as_ref().map(|u| Upstream {
                    status: u.status,
                    final_url: strings.intern(&u.final_url),
                    etag: u.etag.as_deref().map(Box::from),
                    last_modified: u.last_modified.as_deref().map(Box::from),
                    content_type: u.content_type.as_deref().map(|s| strings.intern(s)),
                });
                Self::Blob(Box::new(BlobState {
                    sha256,
                    size: b.size,
                    chunk_size: b.chunk_size,
                    chunks: Chunks::new(&b.chunks),
                    integrity,
                    urls: url.iter().cloned().collect(),
                    provenance: Provenance {
                        url,
                        fetched_at: b.fetched_at,
                        upstream,
                        rule,
                        requested_by,
                    },
                    quarantined: false,
                    evicted: false,
                    last_access: b.fetched_at,
                }))
            }
            Record::Pin(p) => Self::Pin(
                strings.intern(&p.url),
                Pin {
                    sha256: Sha256Digest::from_hex(&p.sha256)?,
                    at: p.at,
                },
            ),
            Record::Event(e) => Self::Event(Box::new(e.clone())),
        })
    }
}

/// A record read from the store, not yet applied (`record` is `None` when unreadable).
#[derive(Debug)]
pub struct NewRecord {
    pub(super) time: DateTime<Utc>,
    pub(super) key: RecordKey,
    pub(super) record: Option<Folded>,
}

/// The fold of all records.
#[derive(Debug, Default, Clone)]
pub struct MirrorState {
    /// Blobs by sha256 (boxed: the map's spare capacity then costs a pointer per slot, not
    /// a whole state).
    pub blobs: HashMap<Sha256Digest, Box<BlobState>>,
    /// URL pins.
    pub pins: HashMap<Arc<str>, Pin>,
    /// sha384 / sha512 SRI values -> sha256.
    aliases: Aliases,
    /// Drift events, oldest first.
    pub drift: Vec<EventRecord>,
    /// Canonical ids clients named blobs by (only for blobs that have any), without
    /// duplicates.
    pub canonical_ids: HashMap<Sha256Digest, Vec<Arc<str>>>,
    /// Record keys already applied (this replica's own and those read from the store).
    seen: Seen,
    /// The newest record time listed per stream: the next incremental listing starts a few
    /// minutes before it, so records another replica wrote late are still found.
    pub newest: HashMap<String, DateTime<Utc>>,
    strings: Strings,
}

impl MirrorState {
    /// The blob with this hex sha256.
    #[must_use]
    pub fn blob(&self, sha256: &str) -> Option<&BlobState> {
        self.blobs
            .get(&Sha256Digest::from_hex(sha256)?)
            .map(|b| &**b)
    }

    /// The canonical ids clients named blob `sha256` by.
    #[must_use]
    pub fn canonical_ids(&self, sha256: &str) -> &[Arc<str>] {
        Sha256Digest::from_hex(sha256)
            .and_then(|s| self.canonical_ids.get(&s))
            .map_or(&[], Vec::as_slice)
    }

    /// The pin of `url`.
    #[must_use]
    pub fn pin(&self, url: &str) -> Option<Pin> {
        self.pins.get(url).copied()
    }

    /// Whether the record under `key` was applied (and may still be listed again).
    #[must_use]
    pub fn has_seen(&self, key: &RecordKey) -> bool {
        self.seen.contains(key)
    }

    /// Remembers that the record under `key` (a path in the records role) was applied.
    pub fn remember(&mut self, key: &str) {
        self.seen.insert(RecordKey::parse(key));
    }

    /// Applies one record (records must be applied in time order).
    pub fn apply(&mut self, record: &Record) {
        if let Some(folded) = Folded::new(record, &mut self.strings) {
            self.apply_folded(folded);
        }
    }

    fn apply_folded(&mut self, record: Folded) {
        match record {
            Folded::Blob(mut b) => {
                b.adopt_strings(&mut self.strings);
                let sha256 = b.sha256;
                match self.blobs.get_mut(&sha256) {
                    None => {
                        self.blobs.insert(sha256, b);
                    }
                    Some(entry) => {
                        // A re-ingest replaces the bytes: it clears quarantine and eviction
                        // (the new state has neither), and keeps the URLs and last read.
                        let old = std::mem::replace(entry, b);
                        let url = entry.provenance.url.clone();
                        entry.urls = old.urls;
                        entry.last_access = entry.last_access.max(old.last_access);
                        if let Some(u) = &url {
                            entry.add_url(u);
                        }
                        self.aliases
                            .replaced(sha256, &old.integrity, &entry.integrity);
                    }
                }
                if let Some(b) = self.blobs.get(&sha256) {
                    Self::add_aliases(&mut self.aliases, &self.blobs, &b.integrity, sha256);
                }
            }
            Folded::Supplement(sha256, integrity) => {
                // It adds digests and never changes the blob's quarantine or eviction state.
                if let Some(entry) = self.blobs.get_mut(&sha256) {
                    entry.integrity.merge(&integrity);
                }
                Self::add_aliases(&mut self.aliases, &self.blobs, &integrity, sha256);
            }
            Folded::Pin(mut url, pin) => {
                self.strings.adopt(&mut url);
                // The earliest pin wins, whatever order replicas' records arrive in.
                let keep_existing = self
                    .pins
                    .get(&url)
                    .is_some_and(|e| (e.at, e.sha256) <= (pin.at, pin.sha256));
                if !keep_existing {
                    self.pins.insert(url.clone(), pin);
                }
                if let Some(b) = self.blobs.get_mut(&pin.sha256) {
                    b.add_url(&url);
                }
            }
            Folded::Event(e) => {
                let e = *e;
                let blob = Sha256Digest::from_hex(&e.sha256).and_then(|s| self.blobs.get_mut(&s));
                match (e.event, blob) {
                    (EventKind::Quarantine, Some(b)) => b.quarantined = true,
                    (EventKind::Evict, Some(b)) => b.evicted = true,
                    (EventKind::Access, Some(b)) => b.last_access = b.last_access.max(e.at),
                    (EventKind::Drift, _) => self.drift.push(e),
                    (EventKind::CanonicalId, _) => {
                        if let Some(sha) = Sha256Digest::from_hex(&e.sha256) {
                            let ids = self.canonical_ids.entry(sha).or_default();
                            if !ids.iter().any(|id| **id == *e.detail) {
                                ids.push(Arc::from(e.detail.as_str()));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Every value of a record's SRI list names its blob (`blobs` already holds what the
    /// record said). sha256 values are the address itself: only the others need an alias.
    fn add_aliases(
        aliases: &mut Aliases,
        blobs: &aliases::Blobs,
        integrity: &Sris,
        sha256: Sha256Digest,
    ) {
        for (algorithm, digest) in integrity.digests() {
            if let Some(key) = AliasKey::new(algorithm, digest) {
                aliases.insert(key, sha256, blobs);
            }
        }
    }

    /// Applies records read by [`super::records::Records::fetch_new`], skipping any applied
    /// meanwhile.
    pub fn apply_new(&mut self, records: Vec<NewRecord>) {
        self.apply_new_at(records, Utc::now());
    }

    /// [`MirrorState::apply_new`] at `now`: listing positions come from the records' keys
    /// (the time of the write, never a time inside the record), at most [`FUTURE_MARGIN`]
    /// past `now`.
    pub(super) fn apply_new_at(&mut self, records: Vec<NewRecord>, now: DateTime<Utc>) {
        let cap = now + FUTURE_MARGIN;
        // Of equal keys in this batch only the first is applied.
        let repeated = key::repeated(records.iter().map(|r| &r.key));
        let batch = self.seen.batch(records.len());
        for (r, repeated) in records.into_iter().zip(repeated) {
            if repeated || self.seen.seen_before(&batch, &r.key) {
                continue;
            }
            let stream = r.key.stream().to_owned();
            let listed_at = r.key.time().map(|t| t.min(cap));
            self.seen.add(&batch, r.key);
            let Some(record) = r.record else { continue };
            self.apply_folded(record);
            // A key of another shape says nothing about where listings stand.
            if let Some(t) = listed_at {
                let newest = self.newest.entry(stream).or_insert(t);
                *newest = (*newest).max(t);
            }
        }
        self.seen.finish(batch);
        // Keys at or before where the next listing starts are never listed again: forget
        // them, so this set holds minutes of keys rather than every record ever read.
        for (stream, t) in &self.newest {
            let floor = key::Floor::new(stream, *t - RELIST_WINDOW);
            self.seen.retain(|k| floor.keeps(k));
        }
    }

    /// The available blob for an SRI value or a hex sha256.
    #[must_use]
    pub fn resolve_alias(&self, algorithm: &str, hex_digest: &str) -> Option<String> {
        if algorithm == "sha256" {
            return Some(hex_digest.to_ascii_lowercase());
        }
        let raw = hex::decode(hex_digest).ok()?;
        let key = AliasKey::new(Algorithm::from_name(algorithm)?, &raw)?;
        self.aliases.get(&key, &self.blobs).map(|s| s.to_hex())
    }

    /// The hex sha256 of the blob whose records carry the sha384 or sha512 `integrity`.
    #[must_use]
    pub fn alias(&self, integrity: &Integrity) -> Option<String> {
        let key = AliasKey::new(integrity.algorithm(), integrity.digest())?;
        self.aliases.get(&key, &self.blobs).map(|s| s.to_hex())
    }
}

#[cfg(test)]
mod tests;
