//! `Capabilities`, and an `ActionCache` that says it is not one: build caches and the mirror
//! are separate storage authorities by design (other trust, retention and eviction rules).

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionCacheUpdateCapabilities, ActionResult, CacheCapabilities, GetActionResultRequest,
    GetCapabilitiesRequest, ServerCapabilities, UpdateActionResultRequest,
    action_cache_server::ActionCache, capabilities_server::Capabilities, digest_function,
    symlink_absolute_path_strategy,
};
use bazel_remote_apis::build::bazel::semver::SemVer;
use tonic::Status;

use super::{Door, MAX_BATCH_BYTES};
use crate::auth::Action;

#[tonic::async_trait]
impl Capabilities for Door {
    async fn get_capabilities(
        &self,
        request: tonic::Request<GetCapabilitiesRequest>,
    ) -> Result<tonic::Response<ServerCapabilities>, Status> {
        let max_blob = self.app.mirror.policy().max_blob_bytes;
        self.call(
            "Capabilities/GetCapabilities",
            Action::Read,
            request,
            |_, _| async move {
                let semver = |minor| SemVer {
                    major: 2,
                    minor,
                    patch: 0,
                    prerelease: String::new(),
                };
                Ok(ServerCapabilities {
                    cache_capabilities: Some(CacheCapabilities {
                        digest_functions: vec![digest_function::Value::Sha256 as i32],
                        action_cache_update_capabilities: Some(ActionCacheUpdateCapabilities {
                            update_enabled: false,
                        }),
                        max_batch_total_size_bytes: MAX_BATCH_BYTES as i64,
                        symlink_absolute_path_strategy:
                            symlink_absolute_path_strategy::Value::Disallowed as i32,
                        max_cas_blob_size_bytes: i64::try_from(max_blob).unwrap_or(i64::MAX),
                        ..CacheCapabilities::default()
                    }),
                    execution_capabilities: None,
                    deprecated_api_version: None,
                    low_api_version: Some(semver(0)),
                    high_api_version: Some(semver(3)),
                })
            },
        )
        .await
    }
}

/// Why the action cache answers nothing: one sentence for both of its methods.
const NOT_AN_ACTION_CACHE: &str = "gf-registry is not an action cache: it serves downloads \
     (the Remote Asset API) and their blobs, and keeps build results out of the mirror's trust, \
     retention and eviction rules; point --remote_cache at a build cache to share action \
     results, or pass --noremote_upload_local_results";

#[tonic::async_trait]
impl ActionCache for Door {
    async fn get_action_result(
        &self,
        request: tonic::Request<GetActionResultRequest>,
    ) -> Result<tonic::Response<ActionResult>, Status> {
        self.call(
            "ActionCache/GetActionResult",
            Action::Read,
            request,
            |_, _| async { Err(Status::not_found(NOT_AN_ACTION_CACHE)) },
        )
        .await
    }

    async fn update_action_result(
        &self,
        request: tonic::Request<UpdateActionResultRequest>,
    ) -> Result<tonic::Response<ActionResult>, Status> {
        self.call(
            "ActionCache/UpdateActionResult",
            Action::Read,
            request,
            |_, _| async { Err(Status::permission_denied(NOT_AN_ACTION_CACHE)) },
        )
        .await
    }
}
