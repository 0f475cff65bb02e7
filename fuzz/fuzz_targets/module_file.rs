//! `module_file::parse` (a real Starlark parser) on arbitrary strings: must never panic, and
//! is deterministic. The server's wrapper, so the parse runs on the thread and stack the
//! server gives `bzlmod::module_file::parse`.
#![no_main]

use gf_registry::registry::module_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let first = module_file::parse(s);
    if let Ok(m) = &first {
        assert!(m.has_module_call || (m.name.is_none() && m.version.is_none()));
        assert_eq!(module_file::parse(s).as_ref(), Ok(m));
    }
});
