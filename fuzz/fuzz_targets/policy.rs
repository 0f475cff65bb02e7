//! The mirror policy folder: `Policy::load` reads `policy.toml` and `candidates.json` from a
//! directory, so the input is split at the first NUL byte into the two files (an empty part
//! leaves that file absent) written to a fresh temp dir. `parse_size` / `parse_age` get every
//! line of the input. Whatever loads is then asked which URLs it allows.
#![no_main]

use gf_registry::mirror::policy::{Policy, parse_age, parse_size};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        for line in s.lines().take(8) {
            if let Ok(n) = parse_size(line) {
                let _ = n;
            }
            let _ = parse_age(line);
        }
    }

    let (toml_part, json_part) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let dir = tempfile::Builder::new()
        .prefix("gf-fuzz-policy-")
        .tempdir()
        .expect("temp dir");
    if !toml_part.is_empty() {
        std::fs::write(dir.path().join("policy.toml"), toml_part).expect("write policy.toml");
    }
    if !json_part.is_empty() {
        std::fs::write(dir.path().join("candidates.json"), json_part)
            .expect("write candidates.json");
    }
    let policy = match Policy::load(dir.path()) {
        Ok(p) => p,
        Err(e) => {
            if std::env::var_os("GF_FUZZ_DEBUG").is_some() {
                eprintln!("Policy::load: {e}");
            }
            return;
        }
    };
    if std::env::var_os("GF_FUZZ_DEBUG").is_some() {
        eprintln!(
            "Policy::load: {} upstreams, {} candidates",
            policy.upstreams.len(),
            policy.candidates.len()
        );
    }
    for rule in &policy.upstreams {
        assert!(rule.prefix.ends_with('/'));
        let host_and_path = rule
            .prefix
            .split_once("://")
            .map_or(rule.prefix.as_str(), |(_, rest)| rest);
        let _ = policy.upstream_for(host_and_path);
        let _ = policy.upstream_for(&format!("{host_and_path}x/y.tar.gz?q=1"));
    }
    for c in &policy.candidates {
        assert!(!c.urls.is_empty());
        for u in &c.urls {
            let _ = policy.allows(u);
        }
    }
});
