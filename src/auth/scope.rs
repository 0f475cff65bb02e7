//! Globs over module names, scopes, actions and principals.

use std::fmt;
use std::str::FromStr;

use super::{ANONYMOUS, Action, Glob, Principal, Scope};

impl Glob {
    /// The glob as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the whole glob.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        let pattern = self.0.as_bytes();
        // Module names are ASCII; comparing chars keeps `?` one character for anything else.
        let text: Vec<char> = name.chars().collect();
        let (mut p, mut t) = (0usize, 0usize);
        // The last `*` seen and the text position it currently stands for the end of.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some(b'*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(&c) if c == b'?' || char::from(c) == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        star = Some((sp, st + 1));
                        p = sp + 1;
                        t = st + 1;
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == b'*')
    }
}

fn is_module_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

impl FromStr for Glob {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("empty glob (use * for every module)".to_owned());
        }
        if let Some(c) = s
            .chars()
            .find(|&c| !(is_module_name_char(c) || c == '*' || c == '?'))
        {
            return Err(format!(
                "glob {s:?} has {c:?}: only a-z, 0-9, '.', '_', '-', '*' and '?' are allowed"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let glob = |g: &str| g.parse::<Glob>().map_err(|e| format!("scope {s:?}: {e}"));
        if s == "admin" {
            Ok(Self::Admin)
        } else if s == "push" {
            Ok(Self::Push)
        } else if let Some(g) = s.strip_prefix("publish:") {
            Ok(Self::Publish(glob(g)?))
        } else if let Some(g) = s.strip_prefix("yank:") {
            Ok(Self::Yank(glob(g)?))
        } else {
            Err(format!(
                "unknown scope {s:?} (expected publish:<glob>, yank:<glob>, push or admin)"
            ))
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Publish(g) => write!(f, "publish:{g}"),
            Self::Yank(g) => write!(f, "yank:{g}"),
            Self::Push => f.write_str("push"),
            Self::Admin => f.write_str("admin"),
        }
    }
}

impl Scope {
    /// Whether this scope allows `action`. Reads are not a scope: any valid token may read.
    #[must_use]
    pub fn allows(&self, action: &Action<'_>) -> bool {
        match (self, action) {
            (Self::Admin, _) | (_, Action::Read) | (Self::Push, Action::Push) => true,
            (Self::Publish(g), Action::Publish(m)) | (Self::Yank(g), Action::Yank(m)) => {
                g.matches(m)
            }
            _ => false,
        }
    }
}

impl Action<'_> {
    /// The scope that allows this action, as named in a 403 answer: `publish:foo`, `yank:foo`,
    /// `admin`; `read` for reads, which any valid token may do.
    #[must_use]
    pub fn needed_scope(&self) -> String {
        match self {
            Self::Read => "read".to_owned(),
            Self::Publish(m) => format!("publish:{m}"),
            Self::Yank(m) => format!("yank:{m}"),
            Self::Push => "push".to_owned(),
            Self::Admin => "admin".to_owned(),
        }
    }
}

impl Principal {
    /// The principal of an open read.
    #[must_use]
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.to_owned(),
        }
    }
}
