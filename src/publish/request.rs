//! The publish request as the server takes it: [`bzlmod::publish_request`] (the wire schema the
//! CLI shares), with `MODULE.bazel` parsed on the server's big-stack thread and refusals turned
//! into [`PublishError::Invalid`].

use std::ops::Deref;

use bzlmod::FieldError;
use bzlmod::publish_request as wire;
pub use bzlmod::publish_request::{
    ArchiveSource, MAX_FILES, MAX_TEXT_FILE, MetadataSpec, NamedText, PathText, SourceSpec,
    parse_coordinates,
};

use super::PublishError;
use crate::registry::module_file;

impl From<FieldError> for PublishError {
    fn from(e: FieldError) -> Self {
        Self::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

/// The body of `POST /api/v1/modules/{name}/{version}`: [`wire::PublishRequest`].
///
/// A newtype, not a re-export, only so that [`Self::validate`] can parse `MODULE.bazel` on the
/// server's thread and return the server's [`ValidRequest`]; it derefs to the wire schema.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct PublishRequest(pub wire::PublishRequest);

impl Deref for PublishRequest {
    type Target = wire::PublishRequest;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl PublishRequest {
    /// Parses a JSON body.
    ///
    /// # Errors
    /// [`PublishError::Invalid`] naming the field that is wrong.
    pub fn from_json(body: &[u8]) -> Result<Self, PublishError> {
        Ok(Self(wire::PublishRequest::from_json(body)?))
    }

    /// Checks everything that needs only the request itself.
    ///
    /// # Errors
    /// [`PublishError::Invalid`] naming the field at fault.
    pub fn validate(self, name: &str, version: &str) -> Result<ValidRequest, PublishError> {
        Ok(ValidRequest(self.0.validate(
            name,
            version,
            module_file::parse,
        )?))
    }
}

/// A request that passed every check that needs nothing but the request:
/// [`wire::ValidRequest`].
///
/// A newtype so that the publisher can give it methods of its own; it derefs to the request.
#[derive(Debug, Clone)]
pub struct ValidRequest(pub wire::ValidRequest);

impl ValidRequest {
    /// Decodes and validates a JSON body on the blocking pool: parsing and base64-decoding a
    /// body of hundreds of megabytes takes most of a second, which would stall every
    /// connection of an HTTP worker. The body is dropped there too.
    ///
    /// # Errors
    /// [`PublishError::Invalid`] naming the field at fault.
    pub async fn decode(
        name: String,
        version: String,
        body: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<Self, PublishError> {
        crate::tasks::spawn_blocking(move || {
            PublishRequest::from_json(body.as_ref())?.validate(&name, &version)
        })
        .await
        .map_err(|e| PublishError::Registry(format!("internal task failed: {e}")))?
    }
}

impl Deref for ValidRequest {
    type Target = wire::ValidRequest;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
