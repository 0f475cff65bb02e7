//! API tokens: hashed tokens with scopes, and the decision whether a request may do something.
//!
//! Tokens are never stored: the configuration holds the sha256 of each token with its name (for
//! audit logs), its scopes and an optional expiry. A request presents its token as
//! `Authorization: Bearer TOKEN` or as the password of HTTP Basic (any user name, so a `.netrc`
//! entry works). Reads are open unless `require_token_for_reads` is set; any valid token may read;
//! `publish:<glob>` and `yank:<glob>` grant writes to the modules the glob matches; `admin`
//! grants everything.
//!
//! Nothing here ever puts a token in an error message, a `Debug` output or a log line.

use std::fmt;

use chrono::{DateTime, Utc};

mod config;
mod scope;
mod token;

pub use config::{parse_expiry, toml_snippet, validate_token_name};
use token::{ct_eq, sha256_bytes};
pub use token::{generate_token, parse_authorization, token_sha256};

/// The name of the principal of a request allowed without a token (an open read).
pub const ANONYMOUS: &str = "anonymous";

/// The prefix of generated tokens (recognisable in secret scanners and `.netrc` files).
pub const TOKEN_PREFIX: &str = "gfr_";

/// The `[auth]` section of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Whether reads need a (valid, unexpired) token too; by default they are open.
    pub require_token_for_reads: bool,
    /// The known tokens.
    pub tokens: Vec<TokenEntry>,
    /// Client certificates (by verified subject) and what they may do, like tokens.
    pub clients: Vec<ClientEntry>,
}

/// One `[[auth.clients]]` entry: a client whose verified TLS certificate has this subject may
/// do what `scopes` allow, without a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEntry {
    /// The subject, as RFC 4514 writes it and `/api/v1/blobs` shows it (`CN=ci-runner`).
    pub subject: String,
    /// Unique name, for audit logs and answers, as a token's.
    pub name: String,
    /// What it may do (never empty).
    pub scopes: Vec<Scope>,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// Unique name, for audit logs and answers (`token "NAME" lacks scope ...`).
    pub name: String,
    /// sha256 of the token.
    pub sha256: [u8; 32],
    /// What the token may do (never empty).
    pub scopes: Vec<Scope>,
    /// From this instant on the token is refused.
    pub expires: Option<DateTime<Utc>>,
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `publish:<glob>`: publish versions of the modules the glob matches.
    Publish(Glob),
    /// `yank:<glob>`: yank, unyank and deprecate the modules the glob matches.
    Yank(Glob),
    /// `push`: put blobs into the mirror's CAS and bind URLs to them over gRPC
    /// (`ByteStream/Write`, `BatchUpdateBlobs`, `Push/PushBlob`), for CI that pre-seeds it.
    Push,
    /// `admin`: everything.
    Admin,
}

/// A glob over module names: module-name characters, `*` (any run, also empty) and `?` (one
/// character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Read the registry or the mirror.
    Read,
    /// Publish a version of this module.
    Publish(&'a str),
    /// Yank, unyank or deprecate this module.
    Yank(&'a str),
    /// Put blobs into the CAS, or bind URLs to them.
    Push,
    /// Administrative operations.
    Admin,
}

/// The subject of the client certificate a TLS connection presented and the server verified
/// against `server.tls_client_ca`; the server puts it into each request of that connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject, as RFC 4514 writes it (`CN=ci-runner, O=Example`).
    pub subject: String,
}

/// How records name a client (the `requested_by` of provenance, the `address` of audit
/// records): its address, and the verified certificate's subject when it showed one.
#[must_use]
pub fn client_label(ip: std::net::IpAddr, certificate: Option<&ClientCertificate>) -> String {
    match certificate {
        None => ip.to_string(),
        Some(c) => format!("{ip} (certificate {})", c.subject),
    }
}

/// Who a request runs as: the token's name, or [`ANONYMOUS`] for an open read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's configured name, or `anonymous`.
    pub name: String,
}

/// Why a request is refused. No variant holds or prints the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential where one is needed.
    #[error(
        "a token is required: send it as `Authorization: Bearer TOKEN` or as the HTTP Basic password"
    )]
    Missing,
    /// The `Authorization` header cannot be read; the reason never echoes the value.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// No configured token has this hash.
    #[error("unknown token")]
    Unknown,
    /// The token is known but past its expiry.
    #[error("token \"{name}\" has expired")]
    Expired {
        /// The token's configured name.
        name: String,
    },
    /// The client certificate is configured but lacks the scope the action needs.
    #[error(
        "client certificate \"{subject}\" (auth.clients entry \"{name}\") lacks scope {needed}"
    )]
    CertificateForbidden {
        /// The certificate's subject.
        subject: String,
        /// The entry's configured name.
        name: String,
        /// The scope needed.
        needed: String,
    },
    /// The token is valid but lacks the scope the action needs.
    #[error("token \"{name}\" lacks scope {needed}")]
    Forbidden {
        /// The token's configured name.
        name: String,
        /// The scope needed, e.g. `publish:foo`.
        needed: String,
    },
}

/// A credential taken from an `Authorization` header. Its `Debug` output hides the token.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// `Authorization: Basic base64(user:TOKEN)`; the user name is ignored.
    Basic(String),
}

impl Credential {
    /// The token, whichever way it came.
    #[must_use]
    pub fn token(&self) -> &str {
        match self {
            Self::Bearer(t) | Self::Basic(t) => t,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Credential::Bearer(<redacted>)"),
            Self::Basic(_) => f.write_str("Credential::Basic(<redacted>)"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decisions

impl AuthConfig {
    /// Whether `action` is allowed without any credential (an open read).
    #[must_use]
    pub fn allows_anonymous(&self, action: &Action<'_>) -> bool {
        matches!(action, Action::Read) && !self.require_token_for_reads
    }

    /// Decides whether `credential` may do `action` at `now`.
    ///
    /// Open reads succeed whatever the credential: a valid token reads as its name, anything
    /// else (none, unknown, expired) as `anonymous`, since clients such as Bazel send `.netrc`
    /// credentials with every request and must not lose reads they would get without them.
    pub fn authorize(
        &self,
        credential: Option<&Credential>,
        action: &Action<'_>,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        let result = match credential {
            None => Err(AuthError::Missing),
            Some(c) => self.check(c.token(), action, now),
        };
        match result {
            Err(_) if self.allows_anonymous(action) => Ok(Principal::anonymous()),
            other => other,
        }
    }

    /// Decides a request from its `Authorization` values (HTTP headers or gRPC metadata, at
    /// most one; `several` names the fault when there are more) and the client certificate
    /// its connection showed, as [`AuthConfig::authorize_client`] does. Open reads stay open
    /// whatever a client sends along. A refusal is logged at info, never with the token.
    pub fn authorize_request<'v>(
        &self,
        mut values: impl Iterator<Item = &'v [u8]>,
        several: &'static str,
        certificate: Option<&ClientCertificate>,
        action: &Action<'_>,
    ) -> Result<Principal, AuthError> {
        let credential = match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => parse_authorization(v).map(Some),
            (Some(_), Some(_)) => Err(AuthError::Malformed(several)),
        };
        let result = match credential {
            Ok(c) => self.authorize_client(c.as_ref(), certificate, action, Utc::now()),
            Err(_) if self.allows_anonymous(action) => Ok(Principal::anonymous()),
            Err(e) => Err(e),
        };
        result.inspect_err(|error| {
            tracing::info!(action = %action.needed_scope(), reason = %error, "request refused");
        })
    }

    /// [`AuthConfig::authorize`], with the client certificate the connection showed: without
    /// a token, a certificate that an `[[auth.clients]]` entry names does what its scopes
    /// allow (a token, when given, decides alone).
    pub fn authorize_client(
        &self,
        credential: Option<&Credential>,
        certificate: Option<&ClientCertificate>,
        action: &Action<'_>,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        if credential.is_none()
            && let Some(cert) = certificate
            && let Some(entry) = self.clients.iter().find(|c| c.subject == cert.subject)
        {
            return if entry.scopes.iter().any(|s| s.allows(action)) {
                Ok(Principal {
                    name: entry.name.clone(),
                })
            } else if self.allows_anonymous(action) {
                Ok(Principal::anonymous())
            } else {
                Err(AuthError::CertificateForbidden {
                    subject: cert.subject.clone(),
                    name: entry.name.clone(),
                    needed: action.needed_scope(),
                })
            };
        }
        self.authorize(credential, action, now)
    }

    fn check(
        &self,
        token: &str,
        action: &Action<'_>,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        let hash = sha256_bytes(token);
        // Compare with every entry, in constant time each, so timing says nothing about which.
        let mut found = None;
        for entry in &self.tokens {
            if ct_eq(&entry.sha256, &hash) && found.is_none() {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(AuthError::Unknown)?;
        if entry.expires.is_some_and(|e| now >= e) {
            return Err(AuthError::Expired {
                name: entry.name.clone(),
            });
        }
        if entry.scopes.iter().any(|s| s.allows(action)) {
            Ok(Principal {
                name: entry.name.clone(),
            })
        } else {
            Err(AuthError::Forbidden {
                name: entry.name.clone(),
                needed: action.needed_scope(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn at(s: &str) -> DateTime<Utc> {
        parse_expiry(s).unwrap()
    }

    fn now() -> DateTime<Utc> {
        at("2026-06-01T12:00:00Z")
    }

    fn config(toml_text: &str) -> Result<AuthConfig, String> {
        let doc: toml::Value = toml::from_str(toml_text).unwrap();
        AuthConfig::from_toml(&doc["auth"])
    }

    #[test]
    fn client_certificates_act_by_their_entry() {
        let c = config(
            "[auth]\nrequire_token_for_reads = true\n[[auth.clients]]\nsubject = \"CN=ci\"\n\
             name = \"ci\"\nscopes = [\"push\"]\n",
        )
        .unwrap();
        let now = at("2026-12-01T00:00:00Z");
        let ci = ClientCertificate {
            subject: "CN=ci".to_owned(),
        };
        let other = ClientCertificate {
            subject: "CN=other".to_owned(),
        };
        let name = |r: Result<Principal, AuthError>| r.map(|p| p.name);
        assert_eq!(
            name(c.authorize_client(None, Some(&ci), &Action::Push, now)),
            Ok("ci".to_owned())
        );
        assert_eq!(
            name(c.authorize_client(None, Some(&ci), &Action::Read, now)),
            Ok("ci".to_owned()),
            "any scope reads, as a token's"
        );
        let e = c
            .authorize_client(None, Some(&ci), &Action::Admin, now)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"client certificate "CN=ci" (auth.clients entry "ci") lacks scope admin"#
        );
        // An unknown subject, or none, is as if no certificate were shown.
        assert_eq!(
            c.authorize_client(None, Some(&other), &Action::Read, now),
            Err(AuthError::Missing)
        );
        assert_eq!(
            c.authorize_client(None, None, &Action::Push, now),
            Err(AuthError::Missing)
        );
        // A token given decides alone.
        let bad = Credential::Bearer("gfr_nope".to_owned());
        assert_eq!(
            c.authorize_client(Some(&bad), Some(&ci), &Action::Push, now),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn client_entries_name_what_is_wrong() {
        for (text, want) in [
            (
                "[[auth.clients]]\nname = \"a\"\nscopes = [\"push\"]\n",
                "auth.clients[0].subject: missing",
            ),
            (
                "[[auth.clients]]\nsubject = \"CN=a\"\nname = \"a\"\nscopes = []\n",
                "auth.clients[0].scopes: empty",
            ),
            (
                "[[auth.clients]]\nsubject = \"CN=a\"\nname = \"a\"\nscopes = [\"push\"]\nrole = 1\n",
                "auth.clients[0].role: unknown key",
            ),
            (
                "[[auth.clients]]\nsubject = \"CN=a\"\nname = \"a\"\nscopes = [\"push\"]\n[[auth.clients]]\nsubject = \"CN=a\"\nname = \"b\"\nscopes = [\"push\"]\n",
                "auth.clients[1].subject: duplicate subject",
            ),
        ] {
            let e = config(&format!("[auth]\n{text}")).unwrap_err();
            assert!(e.starts_with(want), "got: {e}\nwant: {want}");
        }
    }

    fn entry(name: &str, token: &str, scopes: &[&str], expires: Option<&str>) -> TokenEntry {
        TokenEntry {
            name: name.to_owned(),
            sha256: sha256_bytes(token),
            scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
            expires: expires.map(at),
        }
    }

    fn sample() -> AuthConfig {
        AuthConfig {
            require_token_for_reads: false,
            clients: Vec::new(),
            tokens: vec![
                entry("ci", "tok-ci", &["publish:rules_*", "yank:rules_go"], None),
                entry("root", "tok-root", &["admin"], None),
                entry(
                    "old",
                    "tok-old",
                    &["publish:*"],
                    Some("2026-06-01T12:00:00Z"),
                ),
                entry(
                    "later",
                    "tok-later",
                    &["publish:*"],
                    Some("2026-06-01T12:00:01Z"),
                ),
            ],
        }
    }

    fn bearer(t: &str) -> Credential {
        Credential::Bearer(t.to_owned())
    }

    fn glob(s: &str) -> Glob {
        s.parse().unwrap()
    }

    // --- globs

    #[test]
    fn glob_matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("foo", "foo", true),
            ("foo", "foob", false),
            ("foo", "fo", false),
            ("*", "anything", true),
            ("*", "a", true),
            ("rules_*", "rules_", true),
            ("rules_*", "rules_go", true),
            ("rules_*", "rule_go", false),
            ("*_go", "rules_go", true),
            ("*_go", "rules_go_x", false),
            ("r*s*o", "rules_go", true),
            ("r*s*o", "rules_gox", false),
            ("a*b*c", "abbbbc", true),
            ("a*b*c", "acb", false),
            ("**", "x", true),
            ("?", "a", true),
            ("?", "ab", false),
            ("?", "", false),
            ("f?o", "foo", true),
            ("f?o", "fo", false),
            ("*?", "a", true),
            ("*?", "", false),
            ("a*", "", false),
            ("*", "", true),
            ("a.b", "axb", false),
            ("a-b_c.d", "a-b_c.d", true),
            ("?", "é", true),
            ("??", "é", false),
            ("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ];
        for &(g, name, want) in cases {
            assert_eq!(glob(g).matches(name), want, "{g} vs {name:?}");
        }
    }

    #[test]
    fn glob_rejects_other_characters() {
        for bad in ["", "Foo", "foo/bar", "a b", "a[b]", "foo:", "é"] {
            assert!(bad.parse::<Glob>().is_err(), "{bad:?}");
        }
        let e = "Foo".parse::<Glob>().unwrap_err();
        assert!(e.contains("'F'"), "{e}");
    }

    // --- scopes

    #[test]
    fn scope_parse_and_display_round_trip() {
        for s in [
            "publish:rules_*",
            "yank:foo",
            "admin",
            "push",
            "publish:*",
            "yank:a?c",
        ] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        assert_eq!(
            "publish:x".parse::<Scope>().unwrap(),
            Scope::Publish(glob("x"))
        );
    }

    #[test]
    fn scope_parse_errors() {
        let e = "pubish:x".parse::<Scope>().unwrap_err();
        assert_eq!(
            e,
            r#"unknown scope "pubish:x" (expected publish:<glob>, yank:<glob>, push or admin)"#
        );
        for bad in ["publish:", "yank:UP", "Admin", "admin:x", "read", "publish"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        let e = "publish:Foo".parse::<Scope>().unwrap_err();
        assert!(e.starts_with(r#"scope "publish:Foo": glob "Foo""#), "{e}");
    }

    #[test]
    fn scope_allows() {
        let p = Scope::Publish(glob("rules_*"));
        assert!(p.allows(&Action::Publish("rules_go")));
        assert!(!p.allows(&Action::Publish("other")));
        assert!(!p.allows(&Action::Yank("rules_go")));
        assert!(!p.allows(&Action::Admin));
        assert!(p.allows(&Action::Read));
        assert!(!p.allows(&Action::Push));
        let y = Scope::Yank(glob("foo"));
        assert!(y.allows(&Action::Yank("foo")));
        assert!(!y.allows(&Action::Publish("foo")));
        assert!(!y.allows(&Action::Push));
        assert!(Scope::Push.allows(&Action::Push));
        assert!(Scope::Push.allows(&Action::Read));
        assert!(!Scope::Push.allows(&Action::Publish("x")));
        assert!(!Scope::Push.allows(&Action::Admin));
        for a in [
            Action::Read,
            Action::Publish("x"),
            Action::Yank("y"),
            Action::Admin,
        ] {
            assert!(Scope::Admin.allows(&a));
        }
    }

    #[test]
    fn needed_scope_names() {
        assert_eq!(Action::Publish("foo").needed_scope(), "publish:foo");
        assert_eq!(Action::Yank("foo").needed_scope(), "yank:foo");
        assert_eq!(Action::Admin.needed_scope(), "admin");
        assert_eq!(Action::Read.needed_scope(), "read");
    }

    // --- decisions

    #[test]
    fn open_reads() {
        let c = sample();
        assert_eq!(
            c.authorize(None, &Action::Read, now()),
            Ok(Principal::anonymous())
        );
        // A valid token reads as itself; a bad one still reads (as anonymous).
        assert_eq!(
            c.authorize(Some(&bearer("tok-ci")), &Action::Read, now())
                .unwrap()
                .name,
            "ci"
        );
        for bad in ["nope", "tok-old"] {
            assert_eq!(
                c.authorize(Some(&bearer(bad)), &Action::Read, now()),
                Ok(Principal::anonymous())
            );
        }
        assert_eq!(
            AuthConfig::default().authorize(None, &Action::Read, now()),
            Ok(Principal::anonymous())
        );
    }

    #[test]
    fn closed_reads() {
        let mut c = sample();
        c.require_token_for_reads = true;
        assert_eq!(
            c.authorize(None, &Action::Read, now()),
            Err(AuthError::Missing)
        );
        assert_eq!(
            c.authorize(Some(&bearer("nope")), &Action::Read, now()),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            c.authorize(Some(&bearer("tok-old")), &Action::Read, now()),
            Err(AuthError::Expired { name: "old".into() })
        );
        // Any valid token may read, whatever its scopes.
        for (t, name) in [
            ("tok-ci", "ci"),
            ("tok-root", "root"),
            ("tok-later", "later"),
        ] {
            assert_eq!(
                c.authorize(Some(&bearer(t)), &Action::Read, now())
                    .unwrap()
                    .name,
                name
            );
        }
        assert!(!c.allows_anonymous(&Action::Read));
    }

    #[test]
    fn writes_need_scopes() {
        let c = sample();
        assert_eq!(
            c.authorize(None, &Action::Publish("rules_go"), now()),
            Err(AuthError::Missing)
        );
        let ci = bearer("tok-ci");
        assert_eq!(
            c.authorize(Some(&ci), &Action::Publish("rules_go"), now())
                .unwrap()
                .name,
            "ci"
        );
        assert!(
            c.authorize(Some(&ci), &Action::Yank("rules_go"), now())
                .is_ok()
        );
        assert_eq!(
            c.authorize(Some(&ci), &Action::Yank("rules_cc"), now()),
            Err(AuthError::Forbidden {
                name: "ci".into(),
                needed: "yank:rules_cc".into()
            })
        );
        assert_eq!(
            c.authorize(Some(&ci), &Action::Publish("foo"), now()),
            Err(AuthError::Forbidden {
                name: "ci".into(),
                needed: "publish:foo".into()
            })
        );
        assert_eq!(
            c.authorize(Some(&ci), &Action::Admin, now()),
            Err(AuthError::Forbidden {
                name: "ci".into(),
                needed: "admin".into()
            })
        );
        let root = Credential::Basic("tok-root".into());
        for a in [Action::Publish("x"), Action::Yank("y"), Action::Admin] {
            assert_eq!(c.authorize(Some(&root), &a, now()).unwrap().name, "root");
        }
        assert_eq!(
            c.authorize(Some(&bearer("nope")), &Action::Admin, now()),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn expiry_is_exclusive_of_its_instant() {
        let c = sample();
        let old = bearer("tok-old");
        assert!(
            c.authorize(
                Some(&old),
                &Action::Publish("x"),
                at("2026-06-01T11:59:59Z")
            )
            .is_ok()
        );
        assert_eq!(
            c.authorize(Some(&old), &Action::Publish("x"), now()),
            Err(AuthError::Expired { name: "old".into() })
        );
        let later = bearer("tok-later");
        assert!(
            c.authorize(Some(&later), &Action::Publish("x"), now())
                .is_ok()
        );
        assert!(
            c.authorize(
                Some(&later),
                &Action::Publish("x"),
                at("2026-06-01T12:00:01Z")
            )
            .is_err()
        );
    }

    #[test]
    fn constant_time_eq() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(ct_eq(&a, &b));
        b[31] ^= 1;
        assert!(!ct_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!ct_eq(&a, &b));
    }

    // --- the header

    #[test]
    fn bearer_any_case() {
        for h in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "bEaReR   abc",
            " Bearer abc ",
        ] {
            assert_eq!(
                parse_authorization(h.as_bytes()),
                Ok(bearer("abc")),
                "{h:?}"
            );
        }
    }

    #[test]
    fn basic_takes_the_password() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let cases = [
            ("user:tok", "tok"),
            (":tok", "tok"),
            ("user:to:k:", "to:k:"),
            ("gfr:a b", "a b"),
        ];
        for (plain, token) in cases {
            for scheme in ["Basic", "basic", "BASIC"] {
                let h = format!("{scheme} {}", b64(plain));
                assert_eq!(
                    parse_authorization(h.as_bytes()),
                    Ok(Credential::Basic(token.to_owned())),
                    "{plain:?}"
                );
            }
        }
        // Padding is optional.
        let h = format!("Basic {}", b64("u:tok").trim_end_matches('='));
        assert_eq!(
            parse_authorization(h.as_bytes()),
            Ok(Credential::Basic("tok".into()))
        );
    }

    #[test]
    fn malformed_headers() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"   ".to_vec(),
            b"Bearer".to_vec(),
            b"Bearer ".to_vec(),
            b"secret-token-value".to_vec(),
            b"Bearer secret token".to_vec(),
            b"Token secret-token-value".to_vec(),
            b"Bearer secr\xffet".to_vec(),
            b"Bearer secret\x01".to_vec(),
            b"Basic !!notbase64!!".to_vec(),
            format!("Basic {}", b64("no-colon-secret")).into_bytes(),
            format!("Basic {}", b64("user:")).into_bytes(),
            {
                let mut v = b"Basic ".to_vec();
                v.extend(
                    base64::engine::general_purpose::STANDARD
                        .encode(b"u:\xff\xfe")
                        .bytes(),
                );
                v
            },
        ];
        for h in cases {
            match parse_authorization(&h) {
                Err(e @ AuthError::Malformed(_)) => {
                    let msg = e.to_string();
                    assert!(!msg.contains("secret"), "{msg}");
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&h)),
            }
        }
    }

    #[test]
    fn token_never_in_messages() {
        let token = "gfr_supersecretvalue";
        let c = AuthConfig {
            require_token_for_reads: true,
            clients: Vec::new(),
            tokens: vec![
                entry("ci", token, &["publish:foo"], None),
                entry("exp", "gfr_other", &["admin"], Some("2000-01-01T00:00:00Z")),
            ],
        };
        let mut errors = vec![];
        for cred in [
            Credential::Bearer(token.into()),
            Credential::Basic(token.into()),
            Credential::Bearer("gfr_other".into()),
            Credential::Bearer("gfr_unknownsecret".into()),
        ] {
            let dbg = format!("{cred:?}");
            assert!(!dbg.contains("gfr_"), "{dbg}");
            for a in [Action::Read, Action::Publish("bar"), Action::Admin] {
                if let Err(e) = c.authorize(Some(&cred), &a, now()) {
                    errors.push(e);
                }
            }
        }
        errors.push(c.authorize(None, &Action::Read, now()).unwrap_err());
        for h in [
            format!("Bearer {token} x"),
            format!("Weird {token}"),
            token.to_owned(),
            format!("Basic {token}"),
        ] {
            errors.push(parse_authorization(h.as_bytes()).unwrap_err());
        }
        assert!(errors.len() > 8);
        for e in errors {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("secret"), "{shown}");
            assert!(!shown.contains("gfr_other"), "{shown}");
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            AuthError::Forbidden {
                name: "ci".into(),
                needed: "publish:foo".into()
            }
            .to_string(),
            r#"token "ci" lacks scope publish:foo"#
        );
        assert_eq!(
            AuthError::Malformed("empty").to_string(),
            "malformed Authorization header: empty"
        );
    }

    // --- tokens

    #[test]
    fn generated_tokens() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        let hexpart = &a[TOKEN_PREFIX.len()..];
        assert_eq!(hexpart.len(), 64);
        assert!(
            hexpart
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        // Usable as a Bearer token and as a Basic password.
        assert_eq!(
            parse_authorization(format!("Bearer {a}").as_bytes()),
            Ok(bearer(&a))
        );
    }

    #[test]
    fn sha256_hex() {
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    // --- configuration

    #[test]
    fn full_config() {
        let c = config(
            r#"
[auth]
require_token_for_reads = true
[[auth.tokens]]
name = "ci-publisher"
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
scopes = ["publish:rules_*", "yank:rules_*"]
expires = "2027-01-01T00:00:00Z"
[[auth.tokens]]
name = "root"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
scopes = ["admin"]
expires = 2027-01-01T01:00:00+01:00
"#,
        )
        .unwrap();
        assert!(c.require_token_for_reads);
        assert_eq!(c.tokens.len(), 2);
        assert_eq!(c.tokens[0].name, "ci-publisher");
        assert_eq!(c.tokens[0].sha256, sha256_bytes("abc"));
        assert_eq!(
            c.tokens[0].scopes,
            vec![
                Scope::Publish(glob("rules_*")),
                Scope::Yank(glob("rules_*"))
            ]
        );
        assert_eq!(c.tokens[0].expires, Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(c.tokens[1].expires, Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(c.tokens[1].scopes, vec![Scope::Admin]);
        assert!(
            c.authorize(Some(&bearer("abc")), &Action::Publish("rules_go"), now())
                .is_ok()
        );
    }

    #[test]
    fn empty_and_default() {
        assert_eq!(config("[auth]\n").unwrap(), AuthConfig::default());
        assert_eq!(
            config("[auth]\ntokens = []\nrequire_token_for_reads = false\n").unwrap(),
            AuthConfig::default()
        );
        let d = AuthConfig::default();
        assert!(!d.require_token_for_reads);
        assert!(d.tokens.is_empty());
    }

    const H1: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const H2: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn one(body: &str) -> String {
        format!(
            "[auth]\n[[auth.tokens]]\nname = \"a\"\nsha256 = \"{H2}\"\nscopes = [\"admin\"]\n[[auth.tokens]]\n{body}"
        )
    }

    #[test]
    fn config_errors_name_the_key() {
        let cases: Vec<(String, &str)> = vec![
            (
                one(&format!(
                    "name = \"b\"\nsha256 = \"{H1}\"\nscopes = [\"pubish:x\"]\n"
                )),
                r#"auth.tokens[1].scopes[0]: unknown scope "pubish:x" (expected publish:<glob>, yank:<glob>, push or admin)"#,
            ),
            (
                one(&format!(
                    "name = \"b\"\nsha256 = \"{H1}\"\nscopes = [\"admin\", \"publish:A\"]\n"
                )),
                "auth.tokens[1].scopes[1]: scope \"publish:A\": glob \"A\"",
            ),
            (
                one(&format!("name = \"b\"\nsha256 = \"{H1}\"\nscopes = []\n")),
                "auth.tokens[1].scopes: empty",
            ),
            (
                one(&format!(
                    "name = \"b\"\nsha256 = \"{H1}\"\nscopes = \"admin\"\n"
                )),
                "auth.tokens[1].scopes: expected an array of strings, found a string",
            ),
            (
                one(&format!("name = \"b\"\nsha256 = \"{H1}\"\nscopes = [1]\n")),
                "auth.tokens[1].scopes[0]: expected a string, found an integer",
            ),
            (
                one(&format!("sha256 = \"{H1}\"\nscopes = [\"admin\"]\n")),
                "auth.tokens[1].name: missing (required)",
            ),
            (
                one("name = \"b\"\nscopes = [\"admin\"]\n"),
                "auth.tokens[1].sha256: missing (required)",
            ),
            (
                one(&format!("name = \"b\"\nsha256 = \"{H1}\"\n")),
                "auth.tokens[1].scopes: missing (required)",
            ),
            (
                one(&format!(
                    "name = \"b\"\nsha256 = \"{H1}\"\nscopes = [\"admin\"]\nnmae = 1\n"
                )),
                "auth.tokens[1].nmae: unknown key (expected name, sha256, scopes, expires)",
            ),
            (
                one(&format!(
                    "name = \"a\"\nsha256 = \"{H1}\"\nscopes = [\"admin\"]\n"
                )),
                "auth.tokens[1].name: duplicate name \"a\" (also auth.tokens[0])",
            ),
            (
                one(&format!(
                    "name = \"b\"\nsha256 = \"{H2}\"\nscopes = [\"admin\"]\n"
                )),
                "auth.tokens[1].sha256: same hash as auth.tokens[0]",
            ),
            (
                one(&format!(
                    "name = \"b\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n",
                    H1.to_uppercase()
                )),
                "auth.tokens[1].sha256: expected 64 lowercase hex digits",
            ),
            (
                one("name = \"b\"\nsha256 = \"gfr_secretpasted\"\nscopes = [\"admin\"]\n"),
                "auth.tokens[1].sha256: expected 64 lowercase hex digits",
            ),
            (
                one(&format!(
                    "name = \"b c\"\nsha256 = \"{H1}\"\nscopes = [\"admin\"]\n"
                )),
                "auth.tokens[1].name: name \"b c\"",
            ),
            (
                one(&format!(
                    "name = \"anonymous\"\nsha256 = \"{H1}\"\nscopes = [\"admin\"]\n"
                )),
                "auth.tokens[1].name: name \"anonymous\" is reserved",
            ),
            (
                one(&format!(
                    "name = \"b\"\nsha256 = \"{H1}\"\nscopes = [\"admin\"]\nexpires = \"2027-01-01\"\n"
                )),
                "auth.tokens[1].expires: \"2027-01-01\" is not an RFC 3339 date-time",
            ),
            (
                one(&format!(
                    "name = \"b\"\nsha256 = \"{H1}\"\nscopes = [\"admin\"]\nexpires = 2027-01-01T00:00:00\n"
                )),
                "auth.tokens[1].expires: 2027-01-01T00:00:00 lacks a date or a time zone offset",
            ),
            (
                one(&format!(
                    "name = \"b\"\nsha256 = \"{H1}\"\nscopes = [\"admin\"]\nexpires = 5\n"
                )),
                "auth.tokens[1].expires: expected an RFC 3339 date-time, found an integer",
            ),
            (
                "[auth]\nrequire_token_for_reads = \"yes\"\n".to_owned(),
                "auth.require_token_for_reads: expected true or false, found a string",
            ),
            (
                "[auth]\nrequire_tokens_for_reads = true\n".to_owned(),
                "auth.require_tokens_for_reads: unknown key (expected require_token_for_reads, tokens, clients)",
            ),
            (
                "[auth]\ntokens = 3\n".to_owned(),
                "auth.tokens: expected an array of tables",
            ),
            (
                "[auth]\ntokens = [3]\n".to_owned(),
                "auth.tokens[0]: expected a table, found an integer",
            ),
            ("auth = 1\n".to_owned(), "auth: expected a table"),
        ];
        for (text, want) in cases {
            let e = config(&text).unwrap_err();
            assert!(e.starts_with(want), "got: {e}\nwant: {want}\nin:\n{text}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn snippet_round_trip() {
        let token = generate_token().unwrap();
        let scopes: Vec<Scope> = ["publish:rules_*", "yank:rules_?o", "admin"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        for expires in [
            None,
            Some(at("2027-01-01T00:00:00Z")),
            Some(at("2027-01-01T00:00:00.250+02:00")),
        ] {
            let snippet = toml_snippet("ci-publisher", &token, &scopes, expires);
            assert!(snippet.starts_with("[[auth.tokens]]\n"), "{snippet}");
            assert!(!snippet.contains(&token), "{snippet}");
            let c = config(&snippet).unwrap();
            assert_eq!(
                c.tokens,
                vec![TokenEntry {
                    name: "ci-publisher".into(),
                    sha256: sha256_bytes(&token),
                    scopes: scopes.clone(),
                    expires,
                }]
            );
            assert!(
                c.authorize(Some(&bearer(&token)), &Action::Publish("rules_go"), now())
                    .is_ok()
            );
            // Appended to a file that has an [auth] table already, it still parses.
            let appended =
                format!("[auth]\nrequire_token_for_reads = true\n\n[server]\nx = 1\n\n{snippet}");
            let c = config(&appended).unwrap();
            assert!(c.require_token_for_reads);
            assert_eq!(c.tokens.len(), 1);
        }
    }

    #[test]
    fn snippet_quotes_odd_names() {
        let snippet = toml_snippet("a'b#c", "t", &[Scope::Admin], None);
        assert_eq!(config(&snippet).unwrap().tokens[0].name, "a'b#c");
    }
}
