//! `auth::parse_authorization` on arbitrary header bytes, and `AuthConfig::from_toml` on the
//! input read as a TOML document (the whole document, and its `auth` table when it has one).
//!
//! A parsed credential holds a non-empty token without spaces. A config that loads is asked to
//! authorize the parsed credential (or none) for every kind of action. `toml_snippet` output
//! for a valid name and non-empty scopes is accepted by `from_toml` with the token's hash.
#![no_main]

use gf_registry::auth::{
    Action, AuthConfig, Credential, Scope, parse_authorization, parse_expiry, token_sha256,
    toml_snippet, validate_token_name,
};
use libfuzzer_sys::fuzz_target;

fn exercise(config: &AuthConfig, credential: Option<&Credential>) {
    let now = parse_expiry("2026-06-01T12:00:00Z").expect("valid date");
    for action in [
        Action::Read,
        Action::Publish("rules_go"),
        Action::Yank("foo.bar-baz_1"),
        Action::Admin,
    ] {
        let r = config.authorize(credential, &action, now);
        if credential.is_none() && !config.allows_anonymous(&action) {
            assert!(r.is_err());
        }
        if let Ok(p) = &r {
            assert!(!p.name.is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let credential = parse_authorization(data).ok();
    if let Some(c) = &credential {
        assert!(!c.token().is_empty());
        // The header value has no whitespace inside the credentials; a Basic password is
        // taken as decoded (it may hold spaces, and then matches no generated token).
        if let Credential::Bearer(t) = c {
            assert!(!t.contains([' ', '\t']));
        }
        let _ = format!("{c:?}");
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(doc) = toml::from_str::<toml::Value>(text) {
        for value in [Some(&doc), doc.get("auth")].into_iter().flatten() {
            if let Ok(config) = AuthConfig::from_toml(value) {
                exercise(&config, credential.as_ref());
                exercise(&config, None);
                for t in &config.tokens {
                    assert!(!t.scopes.is_empty());
                    assert!(validate_token_name(&t.name).is_ok());
                }
            }
        }
    }

    // Round trip of a generated [[auth.tokens]] block: name and scopes from the input's
    // first two lines, the token from the rest.
    let mut lines = text.splitn(3, '\n');
    let (Some(name), Some(scopes), Some(token)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let Ok(scopes) = scopes
        .split(',')
        .map(str::parse::<Scope>)
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    if validate_token_name(name).is_err() || scopes.is_empty() {
        return;
    }
    let snippet = toml_snippet(name, token, &scopes, None);
    let doc: toml::Value = toml::from_str(&snippet)
        .unwrap_or_else(|e| panic!("toml_snippet wrote invalid TOML: {e}\n{snippet}"));
    let auth = doc.get("auth").expect("snippet has [auth]");
    let config = AuthConfig::from_toml(auth)
        .unwrap_or_else(|e| panic!("from_toml refuses toml_snippet output: {e}\n{snippet}"));
    assert_eq!(config.tokens.len(), 1);
    assert_eq!(config.tokens[0].name, name);
    assert_eq!(config.tokens[0].scopes, scopes);
    assert_eq!(hex_of(&config.tokens[0].sha256), token_sha256(token));
});

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
