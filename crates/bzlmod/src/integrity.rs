//! Subresource-integrity strings (`sha256-<base64>`), as Bazel accepts them in `source.json`,
//! and [`Sha256Digest`], the digest that names a blob in the mirror.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::Digest as _;

/// A hash algorithm a registry integrity may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl Algorithm {
    /// The SRI prefix and URL name (`sha256`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the digest in bytes.
    #[must_use]
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Parses an algorithm name.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Hashes `data` with this algorithm.
    #[must_use]
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// A single-hash SRI value: `<alg>-<standard base64 of the digest>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Integrity {
    algorithm: Algorithm,
    digest: Vec<u8>,
}

/// Why a string is not an SRI value Bazel would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// No `-` separating the algorithm from the digest.
    #[error("integrity `{0}` is not of the form <algorithm>-<base64 digest>")]
    Form(String),
    /// An algorithm other than sha256, sha384, sha512.
    #[error("integrity `{0}` names an unsupported algorithm (use sha256, sha384 or sha512)")]
    Algorithm(String),
    /// The digest is not standard base64.
    #[error("integrity `{0}` has a digest that is not standard base64")]
    Base64(String),
    /// The digest has the wrong number of bytes for its algorithm.
    #[error(
        "integrity `{value}` has a {got}-byte digest, but {algorithm} digests are {want} bytes"
    )]
    Length {
        /// The value as given.
        value: String,
        /// The algorithm it names.
        algorithm: &'static str,
        /// Bytes decoded.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
}

impl Integrity {
    /// Parses one SRI token.
    ///
    /// # Errors
    /// [`IntegrityError`] naming what is wrong.
    pub fn parse(s: &str) -> Result<Self, IntegrityError> {
        let (alg, b64) = s
            .split_once('-')
            .ok_or_else(|| IntegrityError::Form(s.to_owned()))?;
        let algorithm =
            Algorithm::from_name(alg).ok_or_else(|| IntegrityError::Algorithm(s.to_owned()))?;
        // Bazel uses Java's basic decoder: standard alphabet, padding optional.
        let digest = if b64.ends_with('=') {
            STANDARD.decode(b64)
        } else {
            STANDARD_NO_PAD.decode(b64)
        }
        .map_err(|_| IntegrityError::Base64(s.to_owned()))?;
        if digest.len() != algorithm.digest_len() {
            return Err(IntegrityError::Length {
                value: s.to_owned(),
                algorithm: algorithm.name(),
                got: digest.len(),
                want: algorithm.digest_len(),
            });
        }
        Ok(Self { algorithm, digest })
    }

    /// The integrity of `data` under `algorithm`.
    #[must_use]
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Self {
        Self {
            algorithm,
            digest: algorithm.digest(data),
        }
    }

    /// An integrity from a digest already computed (its length must fit the algorithm).
    #[must_use]
    pub fn of_digest(algorithm: Algorithm, digest: Vec<u8>) -> Self {
        debug_assert_eq!(digest.len(), algorithm.digest_len());
        Self { algorithm, digest }
    }

    /// Lowercase hex of the digest.
    #[must_use]
    pub fn hex(&self) -> String {
        hex::encode(&self.digest)
    }

    /// The algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw digest bytes.
    #[must_use]
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// Whether `data` hashes to this value.
    #[must_use]
    pub fn matches(&self, data: &[u8]) -> bool {
        self.algorithm.digest(data) == self.digest
    }
}

impl FromStr for Integrity {
    type Err = IntegrityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.algorithm.name(),
            STANDARD.encode(&self.digest)
        )
    }
}

/// A SHA-256 digest: 32 bytes, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

/// Why a string is not a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not 64 hex digits.
    #[error("`{0}` is not a sha256 digest (64 hex digits)")]
    Hex(String),
    /// Not a valid SRI value.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// A valid SRI value of another algorithm.
    #[error("integrity `{value}` is {algorithm}, not sha256")]
    NotSha256 {
        /// The value as given.
        value: String,
        /// The algorithm it names.
        algorithm: &'static str,
    },
}

impl Sha256Digest {
    /// The digest of `data`.
    #[must_use]
    pub fn of(data: &[u8]) -> Self {
        Self(sha2::Sha256::digest(data).into())
    }

    /// A digest from its bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex digits (either case; shown in lowercase).
    ///
    /// # Errors
    /// [`DigestError::Hex`].
    pub fn parse_hex(s: &str) -> Result<Self, DigestError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| DigestError::Hex(s.to_owned()))?;
        Ok(Self(bytes))
    }

    /// Parses an SRI value, which must be `sha256-<base64>`.
    ///
    /// # Errors
    /// [`DigestError::Integrity`] for a malformed value, [`DigestError::NotSha256`] for
    /// another algorithm.
    pub fn parse_sri(s: &str) -> Result<Self, DigestError> {
        let integrity = Integrity::parse(s)?;
        integrity.sha256().ok_or(DigestError::NotSha256 {
            value: s.to_owned(),
            algorithm: integrity.algorithm.name(),
        })
    }

    /// The raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as in mirror paths (`blobs/sha256/<hex>`).
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The SRI form, `sha256-<base64>`.
    #[must_use]
    pub fn integrity(&self) -> Integrity {
        Integrity::of_digest(Algorithm::Sha256, self.0.to_vec())
    }
}

impl FromStr for Sha256Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_hex(s)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl Integrity {
    /// The digest, when the algorithm is SHA-256.
    #[must_use]
    pub fn sha256(&self) -> Option<Sha256Digest> {
        match self.algorithm {
            Algorithm::Sha256 => self.digest.as_slice().try_into().ok().map(Sha256Digest),
            Algorithm::Sha384 | Algorithm::Sha512 => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_match() {
        for alg in [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512] {
            let i = Integrity::of(alg, b"hello");
            let parsed = Integrity::parse(&i.to_string()).unwrap();
            assert_eq!(parsed, i);
            assert!(parsed.matches(b"hello"));
            assert!(!parsed.matches(b"hello!"));
        }
        // Known value: sha256("") in SRI form.
        let empty =
            Integrity::parse("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").unwrap();
        assert!(empty.matches(b""));
        // Padding is optional.
        assert!(Integrity::parse("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU").is_ok());
    }

    #[test]
    fn malformed_values() {
        assert!(matches!(
            Integrity::parse("sha256"),
            Err(IntegrityError::Form(_))
        ));
        assert!(matches!(
            Integrity::parse("md5-abc"),
            Err(IntegrityError::Algorithm(_))
        ));
        assert!(matches!(
            Integrity::parse("sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk="),
            Err(IntegrityError::Algorithm(_))
        ));
        assert!(matches!(
            Integrity::parse("SHA256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
            Err(IntegrityError::Algorithm(_))
        ));
        // URL-safe alphabet is refused, as in Java's basic decoder.
        assert!(matches!(
            Integrity::parse("sha256-47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="),
            Err(IntegrityError::Base64(_))
        ));
        assert!(matches!(
            Integrity::parse("sha256-AAAA"),
            Err(IntegrityError::Length { got: 3, .. })
        ));
        assert!(matches!(
            Integrity::parse("sha512-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
            Err(IntegrityError::Length { want: 64, .. })
        ));
        assert!(
            Integrity::parse("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU= sha256-x")
                .is_err()
        );
    }

    #[test]
    fn sha256_digest_forms() {
        let d = Sha256Digest::of(b"hello");
        let hex = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(d.to_string(), hex);
        assert_eq!(Sha256Digest::parse_hex(hex), Ok(d));
        assert_eq!(Sha256Digest::parse_hex(&hex.to_uppercase()), Ok(d));
        assert_eq!(hex.parse::<Sha256Digest>(), Ok(d));
        let sri = d.integrity().to_string();
        assert_eq!(sri, "sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=");
        assert_eq!(Sha256Digest::parse_sri(&sri), Ok(d));
        assert_eq!(Integrity::of(Algorithm::Sha256, b"hello").sha256(), Some(d));
        assert_eq!(Integrity::of(Algorithm::Sha512, b"hello").sha256(), None);
        assert!(matches!(
            Sha256Digest::parse_sri(&Integrity::of(Algorithm::Sha384, b"x").to_string()),
            Err(DigestError::NotSha256 {
                algorithm: "sha384",
                ..
            })
        ));
        assert!(matches!(
            Sha256Digest::parse_sri("sha256-xx"),
            Err(DigestError::Integrity(_))
        ));
        for bad in [
            "",
            "2cf2",
            &hex[1..],
            &format!("{hex}00"),
            &hex.replace('2', "g"),
        ] {
            assert!(Sha256Digest::parse_hex(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{d:?}"), format!("Sha256Digest({hex})"));
    }
}
