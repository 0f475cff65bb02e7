//! `ModuleVersion::parse` on arbitrary strings, and the order of what parses.
//!
//! The input is split at `\n` into up to three versions (the whole input is parsed too).
//! For each parsed version: it keeps its text, re-parses to an equal version, and `-` marks a
//! pre-release. For each pair: `cmp` is antisymmetric, agrees with `==`, `partial_cmp`, `<`,
//! and with text equality (Bazel: `1.0` != `1.0.0`, `01` != `1`). For three: transitivity, and
//! sorting does not panic and yields a sorted list.
#![no_main]

use std::cmp::Ordering;

use bzlmod::version::ModuleVersion;
use libfuzzer_sys::fuzz_target;

fn check_one(s: &str, v: &ModuleVersion) {
    assert_eq!(v.as_str(), s);
    assert_eq!(v.to_string(), s);
    let again = ModuleVersion::parse(v.as_str()).expect("a parsed version re-parses");
    assert_eq!(again.cmp(v), Ordering::Equal);
    assert_eq!(s.parse::<ModuleVersion>().ok().as_ref(), Some(v));
    assert_eq!(v.is_prerelease(), s.contains('-'), "{s:?}");
    assert!(!s.contains('+'));
    assert_eq!(v.cmp(v), Ordering::Equal);
    let _ = v.is_portable();
}

fn check_pair(a: &ModuleVersion, b: &ModuleVersion) {
    let ab = a.cmp(b);
    let ba = b.cmp(a);
    assert_eq!(ab, ba.reverse(), "antisymmetry: {a} vs {b}");
    assert_eq!(a == b, ab == Ordering::Equal, "eq vs cmp: {a} vs {b}");
    assert_eq!(a.partial_cmp(b), Some(ab));
    assert_eq!(a < b, ab == Ordering::Less);
    assert_eq!(a > b, ab == Ordering::Greater);
    assert_eq!(
        a == b,
        a.as_str() == b.as_str(),
        "distinct strings are distinct versions: {a} vs {b}"
    );
    let (lo, hi) = (std::cmp::min(a, b), std::cmp::max(a, b));
    assert!(lo <= a && lo <= b && hi >= a && hi >= b);
}

fn check_three(a: &ModuleVersion, b: &ModuleVersion, c: &ModuleVersion) {
    if a <= b && b <= c {
        assert!(a <= c, "transitivity: {a} <= {b} <= {c}");
    }
    if a < b && b < c {
        assert!(a < c, "strict transitivity: {a} < {b} < {c}");
    }
    if a == b && b == c {
        assert!(a == c);
    }
    let mut v = vec![a.clone(), b.clone(), c.clone()];
    v.sort();
    assert!(v.windows(2).all(|w| w[0] <= w[1]));
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = ModuleVersion::parse(s) {
        check_one(s, &v);
    }
    let parsed: Vec<ModuleVersion> = s
        .splitn(3, '\n')
        .filter_map(|part| {
            let v = ModuleVersion::parse(part).ok()?;
            check_one(part, &v);
            Some(v)
        })
        .collect();
    for a in &parsed {
        for b in &parsed {
            check_pair(a, b);
        }
    }
    if let [a, b, c] = parsed.as_slice() {
        for (x, y, z) in [
            (a, b, c),
            (a, c, b),
            (b, a, c),
            (b, c, a),
            (c, a, b),
            (c, b, a),
        ] {
            check_three(x, y, z);
        }
    }
});
