//! The mirror policy folder: `policy.toml` (which upstreams may be pulled through, retention,
//! limits) and `candidates.json` (the external inputs a team requires).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::registry::Integrity;
use crate::upstream::Allowed;

/// A policy problem, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct PolicyError {
    /// The file at fault.
    pub file: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// One allowed upstream prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRule {
    /// The URL prefix (`https://github.com/`).
    pub prefix: String,
    /// Whether loopback, private and link-local targets are allowed.
    pub allow_private: bool,
}

/// Retention of blobs that nothing pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Byte budget for cached (unpinned) blobs.
    pub cached_max_bytes: u64,
    /// Unpinned blobs not read for this long are evicted.
    pub cached_max_age: Duration,
}

/// A required or wanted external input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// A name for people.
    pub name: String,
    /// Its upstream URLs, in preference order.
    pub urls: Vec<Url>,
    /// Its expected integrity.
    pub integrity: Integrity,
    /// Whether `mirror status` fails while it is not durable.
    pub required: bool,
}

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Allowed upstreams, in file order.
    pub upstreams: Vec<UpstreamRule>,
    /// Retention of unpinned blobs.
    pub retention: Retention,
    /// Largest blob the mirror will pull through.
    pub max_blob_bytes: u64,
    /// Candidates from `candidates.json`.
    pub candidates: Vec<Candidate>,
}

impl Default for Policy {
    /// No upstream is allowed: nothing is pulled through.
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            retention: Retention {
                cached_max_bytes: 20 << 30,
                cached_max_age: Duration::from_secs(30 * 86_400),
            },
            max_blob_bytes: 10 << 30,
            candidates: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    upstream: Vec<UpstreamEntry>,
    #[serde(default)]
    retention: Option<RetentionEntry>,
    #[serde(default)]
    limits: Option<LimitsEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamEntry {
    prefix: String,
    #[serde(default)]
    allow_private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionEntry {
    cached_max_bytes: Option<String>,
    cached_max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsEntry {
    max_blob_bytes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateEntry {
    name: String,
    urls: Vec<String>,
    integrity: String,
    #[serde(default)]
    required: bool,
}

impl Policy {
    /// Loads `policy.toml` and `candidates.json` from `dir`; a missing folder or file means
    /// the default (nothing allowed, no candidates).
    ///
    /// # Errors
    /// [`PolicyError`] naming the file and field at fault.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let mut policy = Self::default();
        let file = dir.join("policy.toml");
        if let Some(text) = read_optional(&file)? {
            let err = |message: String| PolicyError {
                file: file.clone(),
                message,
            };
            let parsed: PolicyFile =
                toml::from_str(&text).map_err(|e| err(e.to_string().trim().to_owned()))?;
            for (i, u) in parsed.upstream.into_iter().enumerate() {
                let url = Url::parse(&u.prefix)
                    .map_err(|e| err(format!("upstream[{i}].prefix {:?}: {e}", u.prefix)))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(err(format!(
                        "upstream[{i}].prefix {:?}: only http:// and https:// upstreams",
                        u.prefix
                    )));
                }
                if !u.prefix.ends_with('/') {
                    return Err(err(format!(
                        "upstream[{i}].prefix {:?} must end with `/`, so that it cannot match a longer host name",
                        u.prefix
                    )));
                }
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(err(format!(
                        "upstream[{i}].prefix {:?}: names no host",
                        u.prefix
                    )));
                }
                policy.upstreams.push(UpstreamRule {
                    prefix: u.prefix,
                    allow_private: u.allow_private,
                });
            }
            if let Some(r) = parsed.retention {
                if let Some(b) = r.cached_max_bytes {
                    policy.retention.cached_max_bytes = parse_size(&b)
                        .map_err(|m| err(format!("retention.cached_max_bytes: {m}")))?;
                }
                if let Some(a) = r.cached_max_age {
                    policy.retention.cached_max_age =
                        parse_age(&a).map_err(|m| err(format!("retention.cached_max_age: {m}")))?;
                }
            }
            if let Some(l) = parsed.limits
                && let Some(b) = l.max_blob_bytes
            {
                policy.max_blob_bytes =
                    parse_size(&b).map_err(|m| err(format!("limits.max_blob_bytes: {m}")))?;
            }
        }
        let file = dir.join("candidates.json");
        if let Some(text) = read_optional(&file)? {
            let err = |message: String| PolicyError {
                file: file.clone(),
                message,
            };
            let entries: Vec<CandidateEntry> =
                serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
            for (i, c) in entries.into_iter().enumerate() {
                let integrity = Integrity::parse(&c.integrity)
                    .map_err(|e| err(format!("[{i}] ({}) integrity: {e}", c.name)))?;
                if c.urls.is_empty() {
                    return Err(err(format!(
                        "[{i}] ({}) urls: at least one URL is needed",
                        c.name
                    )));
                }
                let urls = c
                    .urls
                    .iter()
                    .map(|u| {
                        Url::parse(u)
                            .map_err(|e| err(format!("[{i}] ({}) urls: {u:?}: {e}", c.name)))
                    })
                    .collect::<Result<_, _>>()?;
                policy.candidates.push(Candidate {
                    name: c.name,
                    urls,
                    integrity,
                    required: c.required,
                });
            }
        }
        Ok(policy)
    }

    /// The rule that allows `url`, if any: the first prefix it starts with.
    #[must_use]
    pub fn allows(&self, url: &Url) -> Option<Allowed> {
        let s = url.as_str();
        self.upstreams
            .iter()
            .find(|r| s.starts_with(&r.prefix))
            .map(|r| Allowed {
                rule: r.prefix.clone(),
                allow_private: r.allow_private,
            })
    }

    /// The upstream URL for a mirror path `{host}/{path}[?query]`: https when a rule allows
    /// it, else http when a rule allows that; `None` when no rule allows either.
    #[must_use]
    pub fn upstream_for(&self, host_and_path: &str) -> Option<(Url, Allowed)> {
        ["https", "http"].iter().find_map(|scheme| {
            let url = Url::parse(&format!("{scheme}://{host_and_path}")).ok()?;
            self.allows(&url).map(|a| (url, a))
        })
    }
}

fn read_optional(file: &Path) -> Result<Option<String>, PolicyError> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PolicyError {
            file: file.to_path_buf(),
            message: format!("cannot read: {e}"),
        }),
    }
}

/// Parses `20GiB`, `512MB`, `1024` (bytes).
///
/// # Errors
/// A message when the size is malformed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 20GiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses `30d`, `12h`, `45m`, `90s`.
///
/// # Errors
/// A message when the age is malformed.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age like 30d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use s, m, h, d, w)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(parse_size("20GiB").unwrap(), 20 << 30);
        assert_eq!(parse_size("5MB").unwrap(), 5_000_000);
        assert_eq!(parse_size("7").unwrap(), 7);
        assert!(parse_size("5 parsecs").is_err());
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert!(parse_age("soon").is_err());
    }

    #[test]
    fn loads_policy_and_candidates_with_precise_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            "[[upstream]]\nprefix = \"https://github.com/\"\n[[upstream]]\nprefix = \"http://127.0.0.1:18081/\"\nallow_private = true\n[retention]\ncached_max_bytes = \"1GiB\"\ncached_max_age = \"7d\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("candidates.json"),
            r#"[{"name": "zlib", "urls": ["https://github.com/madler/zlib/releases/download/v1.3.1/zlib-1.3.1.tar.gz"], "integrity": "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "required": true}]"#,
        )
        .unwrap();
        let p = Policy::load(dir.path()).unwrap();
        assert_eq!(p.upstreams.len(), 2);
        assert_eq!(p.retention.cached_max_bytes, 1 << 30);
        assert_eq!(p.candidates[0].name, "zlib");
        let (url, rule) = p.upstream_for("github.com/a/b.tar.gz").unwrap();
        assert_eq!(url.as_str(), "https://github.com/a/b.tar.gz");
        assert!(!rule.allow_private);
        let (url, rule) = p.upstream_for("127.0.0.1:18081/x.tgz?v=1").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:18081/x.tgz?v=1");
        assert!(rule.allow_private);
        assert!(p.upstream_for("evil.example/x").is_none());
        // A prefix match must not be fooled by a longer host.
        assert!(p.upstream_for("github.com.evil.example/x").is_none());

        std::fs::write(
            dir.path().join("policy.toml"),
            "[[upstream]]\nprefx = \"x\"\n",
        )
        .unwrap();
        let e = Policy::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("policy.toml") && e.contains("prefx"), "{e}");
        std::fs::write(
            dir.path().join("policy.toml"),
            "[[upstream]]\nprefix = \"ftp://x/\"\n",
        )
        .unwrap();
        let e = Policy::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("upstream[0].prefix"), "{e}");
    }
}
