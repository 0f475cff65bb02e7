//! The `[auth]` section of the configuration, and the snippet `token create` prints.

use chrono::{DateTime, SecondsFormat, Utc};

use super::{ANONYMOUS, AuthConfig, ClientEntry, Scope, TokenEntry, token_sha256};

const TOP_KEYS: &str = "require_token_for_reads, tokens, clients";
const ENTRY_KEYS: &str = "name, sha256, scopes, expires";

/// Checks a token name: 1 to 64 visible ASCII characters other than `"` and `\`, not
/// `anonymous`.
pub fn validate_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".to_owned());
    }
    if name.len() > 64 {
        return Err(format!("name {name:?} is longer than 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(format!(
            "name {name:?}: use visible ASCII characters other than '\"' and '\\', no spaces"
        ));
    }
    if name == ANONYMOUS {
        return Err(format!(
            "name {ANONYMOUS:?} is reserved for requests without a token"
        ));
    }
    Ok(())
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn expected(key: &str, what: &str, found: &toml::Value) -> String {
    format!("{key}: expected {what}, found {}", type_name(found))
}

/// Parses an RFC 3339 date-time with an offset, e.g. `2027-01-01T00:00:00Z`.
pub fn parse_expiry(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 date-time like 2027-01-01T00:00:00Z ({e})"))
}

impl AuthConfig {
    /// Reads the `[auth]` table. Errors name the key at fault, e.g.
    /// `auth.tokens[2].scopes[0]: unknown scope "pubish:x" (...)`; unknown keys, duplicate
    /// names and duplicate hashes are errors. Error messages never hold a `sha256` value.
    pub fn from_toml(value: &toml::Value) -> Result<AuthConfig, String> {
        let toml::Value::Table(table) = value else {
            return Err(expected("auth", "a table", value));
        };
        let mut config = AuthConfig::default();
        for (key, v) in table {
            match key.as_str() {
                "require_token_for_reads" => {
                    config.require_token_for_reads = v.as_bool().ok_or_else(|| {
                        expected("auth.require_token_for_reads", "true or false", v)
                    })?;
                }
                "tokens" => {
                    let list = v.as_array().ok_or_else(|| {
                        expected("auth.tokens", "an array of tables ([[auth.tokens]])", v)
                    })?;
                    for (i, item) in list.iter().enumerate() {
                        let entry = parse_entry(&format!("auth.tokens[{i}]"), item)?;
                        if let Some(j) = config.tokens.iter().position(|t| t.name == entry.name) {
                            return Err(format!(
                                "auth.tokens[{i}].name: duplicate name {:?} (also auth.tokens[{j}])",
                                entry.name
                            ));
                        }
                        if let Some(j) = config.tokens.iter().position(|t| t.sha256 == entry.sha256)
                        {
                            return Err(format!(
                                "auth.tokens[{i}].sha256: same hash as auth.tokens[{j}] (one token, two entries)"
                            ));
                        }
                        config.tokens.push(entry);
                    }
                }
                "clients" => {
                    let list = v.as_array().ok_or_else(|| {
                        expected("auth.clients", "an array of tables ([[auth.clients]])", v)
                    })?;
                    for (i, item) in list.iter().enumerate() {
                        let entry = parse_client(&format!("auth.clients[{i}]"), item)?;
                        if let Some(j) = config
                            .clients
                            .iter()
                            .position(|c| c.subject == entry.subject)
                        {
                            return Err(format!(
                                "auth.clients[{i}].subject: duplicate subject {:?} (also auth.clients[{j}])",
                                entry.subject
                            ));
                        }
                        config.clients.push(entry);
                    }
                }
                other => {
                    return Err(format!("auth.{other}: unknown key (expected {TOP_KEYS})"));
                }
            }
        }
        Ok(config)
    }
}

fn parse_scopes(here: &str, v: &toml::Value) -> Result<Vec<Scope>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| expected(here, "an array of strings", v))?;
    if list.is_empty() {
        return Err(format!(
            "{here}: empty (give at least one of publish:<glob>, yank:<glob>, push, admin)"
        ));
    }
    let mut parsed = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let at_i = format!("{here}[{i}]");
        let s = s.as_str().ok_or_else(|| expected(&at_i, "a string", s))?;
        parsed.push(s.parse::<Scope>().map_err(|e| format!("{at_i}: {e}"))?);
    }
    Ok(parsed)
}

fn parse_client(at: &str, value: &toml::Value) -> Result<ClientEntry, String> {
    let toml::Value::Table(table) = value else {
        return Err(expected(at, "a table", value));
    };
    let (mut subject, mut name, mut scopes) = (None, None, None);
    for (key, v) in table {
        let here = format!("{at}.{key}");
        match key.as_str() {
            "subject" => {
                let s = v.as_str().ok_or_else(|| expected(&here, "a string", v))?;
                if s.trim().is_empty() {
                    return Err(format!("{here}: empty (e.g. \"CN=ci-runner\")"));
                }
                subject = Some(s.to_owned());
            }
            "name" => {
                let n = v.as_str().ok_or_else(|| expected(&here, "a string", v))?;
                validate_token_name(n).map_err(|e| format!("{here}: {e}"))?;
                name = Some(n.to_owned());
            }
            "scopes" => scopes = Some(parse_scopes(&here, v)?),
            _ => {
                return Err(format!(
                    "{here}: unknown key (expected subject, name, scopes)"
                ));
            }
        }
    }
    let missing = |key: &str| format!("{at}.{key}: missing (required)");
    Ok(ClientEntry {
        subject: subject.ok_or_else(|| missing("subject"))?,
        name: name.ok_or_else(|| missing("name"))?,
        scopes: scopes.ok_or_else(|| missing("scopes"))?,
    })
}

fn parse_entry(at: &str, value: &toml::Value) -> Result<TokenEntry, String> {
    let toml::Value::Table(table) = value else {
        return Err(expected(at, "a table", value));
    };
    let (mut name, mut sha256, mut scopes, mut expires) = (None, None, None, None);
    for (key, v) in table {
        let here = format!("{at}.{key}");
        match key.as_str() {
            "name" => {
                let n = v.as_str().ok_or_else(|| expected(&here, "a string", v))?;
                validate_token_name(n).map_err(|e| format!("{here}: {e}"))?;
                name = Some(n.to_owned());
            }
            "sha256" => {
                let h = v.as_str().ok_or_else(|| expected(&here, "a string", v))?;
                // Never echo the value: a token pasted here by mistake must not reach a log.
                let ok = h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                let mut bytes = [0u8; 32];
                if !ok || hex::decode_to_slice(h, &mut bytes).is_err() {
                    return Err(format!(
                        "{here}: expected 64 lowercase hex digits, the sha256 of the token \
                         (`gf-registry token hash` prints it), found {} characters",
                        h.chars().count()
                    ));
                }
                sha256 = Some(bytes);
            }
            "scopes" => scopes = Some(parse_scopes(&here, v)?),
            "expires" => {
                let e = match v {
                    toml::Value::String(s) => parse_expiry(s),
                    toml::Value::Datetime(d) if d.date.is_some() && d.offset.is_some() => {
                        parse_expiry(&d.to_string())
                    }
                    toml::Value::Datetime(d) => Err(format!(
                        "{d} lacks a date or a time zone offset (e.g. 2027-01-01T00:00:00Z)"
                    )),
                    other => Err(format!(
                        "expected an RFC 3339 date-time, found {}",
                        type_name(other)
                    )),
                };
                expires = Some(e.map_err(|e| format!("{here}: {e}"))?);
            }
            _ => return Err(format!("{here}: unknown key (expected {ENTRY_KEYS})")),
        }
    }
    let missing = |key: &str| format!("{at}.{key}: missing (required)");
    Ok(TokenEntry {
        name: name.ok_or_else(|| missing("name"))?,
        sha256: sha256.ok_or_else(|| missing("sha256"))?,
        scopes: scopes.ok_or_else(|| missing("scopes"))?,
        expires,
    })
}

/// A `[[auth.tokens]]` block granting `token` (hashed; the token itself is not in it) these
/// scopes; appended to the configuration file, [`AuthConfig::from_toml`] accepts it when `name`
/// passes [`validate_token_name`] and `scopes` is not empty.
#[must_use]
pub fn toml_snippet(
    name: &str,
    token: &str,
    scopes: &[Scope],
    expires: Option<DateTime<Utc>>,
) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let scopes: Vec<String> = scopes.iter().map(|s| quote(&s.to_string())).collect();
    let mut out = format!(
        "[[auth.tokens]]\nname = {}\nsha256 = {}\nscopes = [{}]\n",
        quote(name),
        quote(&token_sha256(token)),
        scopes.join(", ")
    );
    if let Some(e) = expires {
        out.push_str(&format!(
            "expires = {}\n",
            quote(&e.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        ));
    }
    out
}
