//! The probe's findings and their rendering.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::storage::Role;

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The backend behaved as required.
    Pass,
    /// It did not (or the check could not be completed).
    Fail,
    /// A conditional put was refused as it should be.
    Enforced,
    /// A conditional put was accepted against its condition.
    NotEnforced,
    /// The backend (or its client) does not offer the operation.
    Unsupported,
    /// Not run (see the detail).
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Enforced => "enforced",
            Self::NotEnforced => "not enforced",
            Self::Unsupported => "unsupported",
            Self::Skipped => "skipped",
        }
    }
}

/// One check of one role.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Its name (`read-after-write`, `index-coherence`, ...).
    pub name: &'static str,
    /// Whether a failure makes the verdict "no-go".
    pub required: bool,
    /// What happened.
    pub outcome: Outcome,
    /// How long it took.
    pub millis: u64,
    /// What was seen, for people.
    pub detail: String,
    /// The keys (or errors) that show a failure.
    pub evidence: Vec<String>,
}

/// The checks of one role.
#[derive(Debug, Clone, Serialize)]
pub struct RoleReport {
    /// `cas` or `records`.
    pub role: &'static str,
    /// The role's configured location.
    pub location: String,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
    /// Probe objects removed at the end.
    pub removed: usize,
    /// Probe objects that could not be removed.
    pub left_behind: Vec<String>,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every required check passed.
    Go,
    /// At least one required check failed.
    NoGo,
}

/// The probe's findings.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// "go" or "no-go".
    pub verdict: Verdict,
    /// The run's id: its objects lived under `probe/{run}/` in each role.
    pub run: String,
    /// How long the whole probe took.
    pub millis: u64,
    /// Per role.
    pub roles: Vec<RoleReport>,
}

impl ProbeReport {
    /// Whether the verdict is "go".
    #[must_use]
    pub fn is_go(&self) -> bool {
        self.verdict == Verdict::Go
    }

    /// One check of one role.
    #[must_use]
    pub fn check(&self, role: Role, name: &str) -> Option<&Check> {
        self.roles
            .iter()
            .find(|r| r.role == role.name())?
            .checks
            .iter()
            .find(|c| c.name == name)
    }

    /// The required checks that failed, as `(role, check)`.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, &Check)> {
        self.roles.iter().flat_map(|r| {
            r.checks
                .iter()
                .filter(|c| c.required && c.outcome == Outcome::Fail)
                .map(move |c| (r.role, c))
        })
    }

    /// The report as a table, for people.
    #[must_use]
    pub fn table(&self) -> String {
        const SHOWN: usize = 20;
        let mut out = String::new();
        let _ = writeln!(out, "storage probe {} ({} ms)", self.run, self.millis);
        for r in &self.roles {
            let _ = writeln!(out, "  {:<8} {}", r.role, r.location);
        }
        let _ = writeln!(
            out,
            "\n{:<8} {:<22} {:<20} {:>7}  detail",
            "role", "check", "result", "ms"
        );
        for r in &self.roles {
            for c in &r.checks {
                let result = if c.required || c.outcome == Outcome::Skipped {
                    c.outcome.label().to_owned()
                } else {
                    format!("{} (info)", c.outcome.label())
                };
                let _ = writeln!(
                    out,
                    "{:<8} {:<22} {:<20} {:>7}  {}",
                    r.role, c.name, result, c.millis, c.detail
                );
                for e in c.evidence.iter().take(SHOWN) {
                    let _ = writeln!(out, "{:<8}   evidence: {e}", "");
                }
                if c.evidence.len() > SHOWN {
                    let _ = writeln!(
                        out,
                        "{:<8}   ... and {} more (see --json)",
                        "",
                        c.evidence.len() - SHOWN
                    );
                }
            }
            for k in &r.left_behind {
                let _ = writeln!(out, "{:<8}   left behind (remove by hand): {k}", r.role);
            }
        }
        let failed: Vec<String> = self
            .failures()
            .map(|(role, c)| format!("{role}/{}", c.name))
            .collect();
        if failed.is_empty() {
            let _ = writeln!(
                out,
                "\nverdict: GO (conditional puts are reported, not required)"
            );
        } else {
            let _ = writeln!(
                out,
                "\nverdict: NO-GO ({} required check(s) failed: {})",
                failed.len(),
                failed.join(", ")
            );
        }
        out
    }
}

/// Milliseconds, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
