//! Token hashing and generation, and the `Authorization` header.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::{AuthError, Credential, TOKEN_PREFIX};

/// Equality of two hashes in time independent of where they differ.
pub(super) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

pub(super) fn sha256_bytes(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The lowercase hex sha256 of a token: what the configuration holds.
#[must_use]
pub fn token_sha256(token: &str) -> String {
    hex::encode(sha256_bytes(token))
}

/// A new token: `gfr_` and 32 random bytes as lowercase hex.
pub fn generate_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the system: {e}"))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

// ---------------------------------------------------------------------------------------------
// The Authorization header

/// Base64 as clients send it: the standard alphabet, padding optional.
const BASIC_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Reads an `Authorization` header value: `Bearer TOKEN` or `Basic base64(user:TOKEN)`, the
/// scheme in any case. The reason of a [`AuthError::Malformed`] never echoes the value.
pub fn parse_authorization(header_value: &[u8]) -> Result<Credential, AuthError> {
    let value = std::str::from_utf8(header_value)
        .ok()
        .filter(|v| {
            v.bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        })
        .ok_or(AuthError::Malformed("not printable ASCII"))?
        .trim_matches([' ', '\t']);
    if value.is_empty() {
        return Err(AuthError::Malformed("empty"));
    }
    let (scheme, rest) = value.split_once([' ', '\t']).ok_or(AuthError::Malformed(
        "expected `Bearer TOKEN` or `Basic CREDENTIALS`",
    ))?;
    let rest = rest.trim_start_matches([' ', '\t']);
    if rest.contains([' ', '\t']) {
        return Err(AuthError::Malformed("whitespace inside the credentials"));
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Credential::Bearer(rest.to_owned()))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASIC_BASE64
            .decode(rest)
            .map_err(|_| AuthError::Malformed("Basic credentials are not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8"))?;
        // The user id cannot hold a colon (RFC 7617); the password, here the token, can.
        let (_user, token) = decoded.split_once(':').ok_or(AuthError::Malformed(
            "Basic credentials lack the ':' before the password",
        ))?;
        if token.is_empty() {
            return Err(AuthError::Malformed(
                "empty Basic password (the token goes there)",
            ));
        }
        Ok(Credential::Basic(token.to_owned()))
    } else {
        Err(AuthError::Malformed(
            "unsupported scheme (use Bearer or Basic)",
        ))
    }
}
