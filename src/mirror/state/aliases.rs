//! sha384 and sha512 SRI values of blobs, mapped to the blobs' sha256.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::blob::BlobState;
use super::digest::Sha256Digest;
use super::packed::Sris;
use crate::registry::Algorithm;

/// A sha384 or sha512 digest: what an alias is looked up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum AliasKey {
    Sha384([u8; 48]),
    Sha512([u8; 64]),
}

impl AliasKey {
    /// The key of a digest (`None` for sha256, or a digest of the wrong length).
    pub(super) fn new(algorithm: Algorithm, digest: &[u8]) -> Option<Self> {
        match algorithm {
            Algorithm::Sha256 => None,
            Algorithm::Sha384 => digest.try_into().ok().map(Self::Sha384),
            Algorithm::Sha512 => digest.try_into().ok().map(Self::Sha512),
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Sha384(_) => Algorithm::Sha384,
            Self::Sha512(_) => Algorithm::Sha512,
        }
    }

    fn digest(&self) -> &[u8] {
        match self {
            Self::Sha384(d) => d,
            Self::Sha512(d) => d,
        }
    }

    /// The digest's first eight bytes.
    fn prefix(&self) -> u64 {
        let mut p = [0u8; 8];
        p.copy_from_slice(&self.digest()[..8]);
        u64::from_le_bytes(p)
    }

    fn listed_in(&self, blob: Option<&BlobState>) -> bool {
        blob.is_some_and(|b| b.integrity.has_digest(self.algorithm(), self.digest()))
    }
}

/// The blobs, as the state holds them.
pub(super) type Blobs = HashMap<Sha256Digest, Box<BlobState>>;

/// SRI value -> sha256, as the records said it: the latest record that names a value wins,
/// and a value is never forgotten.
///
/// Nearly every value is also in the SRI list of the blob it names, so `by_prefix` keys only
/// the digest's first eight bytes and the rest is checked in that list (40 bytes a value
/// instead of 97). A value that is not in its blob's list (a supplement for a blob that has
/// no record, or a value a newer record of the blob dropped), or whose prefix another value
/// holds, is kept whole in `spill`, which a look-up consults first.
#[derive(Debug, Default, Clone)]
pub(super) struct Aliases {
    by_prefix: HashMap<u64, Sha256Digest>,
    spill: HashMap<AliasKey, Sha256Digest>,
}

impl Aliases {
    /// The sha256 that `key` names.
    pub(super) fn get(&self, key: &AliasKey, blobs: &Blobs) -> Option<Sha256Digest> {
        if let Some(s) = self.spill.get(key) {
            return Some(*s);
        }
        let s = self.by_prefix.get(&key.prefix())?;
        key.listed_in(blobs.get(s).map(|b| &**b)).then_some(*s)
    }

    /// Records that `key` names `sha256`. `blobs` must already hold the record that says so.
    pub(super) fn insert(&mut self, key: AliasKey, sha256: Sha256Digest, blobs: &Blobs) {
        let listed = |s: &Sha256Digest| key.listed_in(blobs.get(s).map(|b| &**b));
        if let Some(s) = self.spill.get_mut(&key) {
            *s = sha256;
            return;
        }
        match self.by_prefix.entry(key.prefix()) {
            Entry::Vacant(e) if listed(&sha256) => {
                e.insert(sha256);
            }
            // The slot stands for this very value (it is in the holder's list), and only
            // for it: point it at the new blob, which lists the value too.
            Entry::Occupied(mut e)
                if listed(e.get())
                    && listed(&sha256)
                    && Self::only_value_with_prefix(blobs, *e.get(), &key) =>
            {
                e.insert(sha256);
            }
            _ => {
                self.spill.insert(key, sha256);
            }
        }
    }

    /// Whether `key` is the only value of `holder`'s list with its prefix.
    fn only_value_with_prefix(blobs: &Blobs, holder: Sha256Digest, key: &AliasKey) -> bool {
        blobs.get(&holder).is_none_or(|b| {
            b.integrity
                .digests()
                .filter_map(|(a, d)| AliasKey::new(a, d))
                .all(|k| k == *key || k.prefix() != key.prefix())
        })
    }

    /// A newer record of blob `sha256` replaced the SRI list `old` with `new`: the values it
    /// dropped keep naming the blob.
    pub(super) fn replaced(&mut self, sha256: Sha256Digest, old: &Sris, new: &Sris) {
        for (algorithm, digest) in old.digests() {
            let Some(key) = AliasKey::new(algorithm, digest) else {
                continue;
            };
            if new.has_digest(algorithm, digest) || self.spill.contains_key(&key) {
                continue;
            }
            if self.by_prefix.get(&key.prefix()) == Some(&sha256) {
                self.spill.insert(key, sha256);
            }
        }
    }
}
