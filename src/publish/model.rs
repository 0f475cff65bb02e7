//! What the publisher is given and what it answers: its settings, who asks, and the answer to
//! a publish or an edit.

use std::collections::BTreeMap;

use url::Url;

use super::archive::Limits;

/// Settings of the publisher.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// Registries a `bazel_dep` may resolve in besides this one (base URLs).
    pub upstream_registries: Vec<Url>,
    /// Extraction caps.
    pub limits: Limits,
}

impl Default for PublisherSettings {
    fn default() -> Self {
        Self {
            upstream_registries: vec![
                #[allow(clippy::unwrap_used, reason = "a literal URL")]
                Url::parse("https://bcr.bazel.build/").unwrap(),
            ],
            limits: Limits::default(),
        }
    }
}

/// Who asks, for commits and audit records.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The token's name.
    pub name: String,
    /// The client's address.
    pub address: String,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The version was written.
    Created,
    /// The version existed with identical content.
    Unchanged,
    /// Validated only.
    DryRun,
    /// `metadata.json` was edited.
    Edited,
}

/// The answer to a publish or an edit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    /// The module.
    pub module: String,
    /// The version (publish, yank, unyank).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What happened.
    pub status: Status,
    /// The source archive's hex sha256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    /// Every file of the entry (registry path -> hex sha256).
    pub files: BTreeMap<String, String>,
    /// The registry revision written, when something was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A `metadata.json` edit request.
#[derive(Debug, Clone)]
pub enum EditKind {
    /// Yank `version` with `reason`.
    Yank {
        /// The version.
        version: String,
        /// Why.
        reason: String,
    },
    /// Take the yank of `version` back.
    Unyank {
        /// The version.
        version: String,
    },
    /// Deprecate the module (an empty reason removes the deprecation).
    Deprecate {
        /// Why.
        reason: String,
    },
}
