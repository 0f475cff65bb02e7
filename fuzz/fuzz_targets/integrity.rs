//! `Integrity::parse` on arbitrary strings: what parses has a digest of its algorithm's length,
//! and its `Display` form re-parses to the same value and is canonical (a fixed point).
//! Also `Integrity::of` on the raw bytes round-trips through its text and matches its input.
#![no_main]

use bzlmod::integrity::{Algorithm, Integrity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(i) = Integrity::parse(s) {
            assert_eq!(i.digest().len(), i.algorithm().digest_len());
            assert_eq!(i.hex().len(), 2 * i.digest().len());
            assert_eq!(
                Algorithm::from_name(i.algorithm().name()),
                Some(i.algorithm())
            );
            let text = i.to_string();
            let again = Integrity::parse(&text).unwrap_or_else(|e| {
                panic!("{s:?} displays as {text:?}, which does not parse: {e}")
            });
            assert_eq!(again, i, "{s:?} -> {text:?}");
            assert_eq!(again.to_string(), text, "Display is not canonical");
            assert_eq!(s.parse::<Integrity>().ok(), Some(i));
        }
    }
    for alg in [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512] {
        let i = Integrity::of(alg, data);
        assert!(i.matches(data));
        let again = Integrity::parse(&i.to_string()).expect("Integrity::of displays as valid SRI");
        assert_eq!(again, i);
    }
});
