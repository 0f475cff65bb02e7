//! The one type that owns every object path.

use object_store::path::Path as ObjectPath;

/// A storage role: which location an object lives at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Content-addressed blobs.
    Cas,
    /// Append-only records.
    Records,
}

impl Role {
    /// The role's name in configuration and messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Cas => "cas",
            Self::Records => "records",
        }
    }
}

/// The key of every object the server stores.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StorageKey {
    /// A verified blob: `{algorithm}/{hex}` in the `cas` role; holds exactly those bytes.
    Blob {
        /// `sha256`, `sha384` or `sha512`.
        algorithm: &'static str,
        /// Lowercase hex digest.
        hex: String,
    },
    /// An upload in progress: `tmp/{id}` in the `cas` role; never served.
    Temp {
        /// A unique id.
        id: String,
    },
    /// One append-only record: `{stream}/{id}` in the `records` role.
    Record {
        /// The record stream (`pins`, `provenance`, ...).
        stream: &'static str,
        /// A unique id within the stream.
        id: String,
    },
}

impl StorageKey {
    /// A blob key.
    #[must_use]
    pub fn blob(algorithm: &'static str, hex: &str) -> Self {
        Self::Blob {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        }
    }

    /// The role whose location holds this key.
    #[must_use]
    pub fn role(&self) -> Role {
        match self {
            Self::Blob { .. } | Self::Temp { .. } => Role::Cas,
            Self::Record { .. } => Role::Records,
        }
    }

    /// The object path within its role's location.
    #[must_use]
    pub fn path(&self) -> ObjectPath {
        match self {
            Self::Blob { algorithm, hex } => ObjectPath::from(format!("{algorithm}/{hex}")),
            Self::Temp { id } => ObjectPath::from(format!("tmp/{id}")),
            Self::Record { stream, id } => ObjectPath::from(format!("{stream}/{id}")),
        }
    }
}
