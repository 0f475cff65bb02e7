//! Finding the token: `GF_REGISTRY_TOKEN`, else the server's `.netrc` entry.

use std::path::{Path, PathBuf};

use url::Url;

use super::*;

/// One `.netrc` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct NetrcEntry {
    /// `None` for `default`.
    pub(super) machine: Option<String>,
    pub(super) login: Option<String>,
    pub(super) password: Option<String>,
}

/// Parses a `.netrc`: whitespace-separated tokens `machine NAME`, `default`, `login NAME`,
/// `password SECRET`, `account X` (ignored), `macdef NAME` (its body, up to the next empty
/// line, is skipped); a token starting with `#` where a keyword is expected comments out the
/// rest of its line.
pub(super) fn parse_netrc(text: &str) -> Vec<NetrcEntry> {
    let mut entries: Vec<NetrcEntry> = Vec::new();
    let mut expect: Option<&str> = None;
    let mut in_macdef = false;
    for line in text.lines() {
        if in_macdef {
            if line.trim().is_empty() {
                in_macdef = false;
            }
            continue;
        }
        for token in line.split_whitespace() {
            if let Some(keyword) = expect.take() {
                let value = Some(token.to_owned());
                match (keyword, entries.last_mut()) {
                    ("machine", _) => entries.push(NetrcEntry {
                        machine: value,
                        ..NetrcEntry::default()
                    }),
                    ("login", Some(e)) => e.login = value,
                    ("password", Some(e)) => e.password = value,
                    ("macdef", _) => {
                        in_macdef = true;
                        break;
                    }
                    _ => {}
                }
                continue;
            }
            match token {
                "machine" | "login" | "password" | "account" | "macdef" => expect = Some(token),
                "default" => entries.push(NetrcEntry::default()),
                t if t.starts_with('#') => break,
                _ => {}
            }
        }
    }
    entries
}

/// The password of the first `.netrc` entry for `host` (case-insensitive), else of `default`.
pub(super) fn netrc_password(text: &str, host: &str) -> Option<String> {
    let entries = parse_netrc(text);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let matches = |e: &&NetrcEntry| {
        e.machine
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(host))
    };
    entries
        .iter()
        .find(matches)
        .or_else(|| entries.iter().find(|e| e.machine.is_none()))
        .and_then(|e| e.password.clone())
}

/// The `.netrc` to read: `$NETRC`, else `~/.netrc`.
pub(super) fn netrc_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NETRC").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".netrc"))
}

/// The API token for `server`: `GF_REGISTRY_TOKEN`, else the `.netrc` password for its host.
pub(crate) fn find_token(server: &Url) -> Option<String> {
    let env = std::env::var(TOKEN_ENV).ok();
    token_from(env, netrc_path().as_deref(), server)
}

pub(super) fn token_from(
    env: Option<String>,
    netrc: Option<&Path>,
    server: &Url,
) -> Option<String> {
    if let Some(t) = env.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        return Some(t);
    }
    let path = netrc?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            eprintln!("warning: cannot read {}: {e}", path.display());
            return None;
        }
    };
    netrc_password(&text, server.host_str()?)
}
