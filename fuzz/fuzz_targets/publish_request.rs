//! `PublishRequest::from_json` on arbitrary bytes, then `validate("foo", "1.0")` with the
//! server's `MODULE.bazel` parser (on its big-stack thread): must never panic. A request that validates keeps its bounds (at most `MAX_FILES` patches and overlay
//! files, overlay sorted by path without duplicates).
#![no_main]

use bzlmod::publish_request::{MAX_FILES, PublishRequest};
use gf_registry::registry::module_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let debug = std::env::var_os("GF_FUZZ_DEBUG").is_some();
    let request = match PublishRequest::from_json(data) {
        Ok(r) => r,
        Err(e) => {
            if debug {
                eprintln!("from_json: {e}");
            }
            return;
        }
    };
    let valid = match request.validate("foo", "1.0", module_file::parse) {
        Ok(v) => v,
        Err(e) => {
            if debug {
                eprintln!("validate: {e}");
            }
            return;
        }
    };
    if debug {
        eprintln!(
            "valid: {} patches, {} overlay files",
            valid.patches.len(),
            valid.overlay.len()
        );
    }
    assert_eq!(valid.name.as_str(), "foo");
    assert_eq!(valid.version.as_str(), "1.0");
    assert!(valid.patches.len() <= MAX_FILES);
    assert!(valid.overlay.len() <= MAX_FILES);
    assert!(
        valid
            .overlay
            .windows(2)
            .all(|w| w[0].0.as_str() < w[1].0.as_str()),
        "overlay sorted by path, no duplicates"
    );
    assert!(
        valid.archive.is_some() != valid.git.is_some(),
        "exactly one source"
    );
});
