//! Events on the PVC for the outcome of provisioning, expansion and snapshots
//! (docs/observability.md "Kubernetes events"): what the driver did on the RDS, or why it
//! could not. A failure the CO only retries because another call holds the volume (ABORTED)
//! is no event; identical events are published once per window ([`crate::core::events`]).

use std::collections::HashMap;

use super::{attachments::claim, backend::Backend};
use crate::error::ServiceError;

/// The reasons of the outcome events.
pub mod reason {
    pub const PROVISIONED: &str = "VolumeProvisioned";
    pub const PROVISIONING_FAILED: &str = "VolumeProvisioningFailed";
    pub const EXPANDED: &str = "VolumeExpanded";
    pub const EXPANSION_FAILED: &str = "VolumeExpansionFailed";
    pub const SNAPSHOT_TAKEN: &str = "SnapshotTaken";
    pub const SNAPSHOT_FAILED: &str = "SnapshotFailed";
    /// The leader gave back an export a dead copy had withdrawn (a recovery).
    pub const EXPORT_RESTORED: &str = "HeldExportRestored";
}

impl Backend {
    /// The PVC of volume `vid`: its PV's claim (with Kubernetes), else the one `ctx` names
    /// (CreateVolume's parameters from csi-provisioner's `--extra-create-metadata`).
    pub(super) async fn claim_of(
        &self,
        vid: &str,
        ctx: &HashMap<String, String>,
    ) -> Option<(String, String)> {
        let rec = self.fencing.cluster.recorded(vid).await.unwrap_or_default();
        claim(&rec, ctx)
    }

    /// Publishes the outcome of `doing` on `claim`: `success` with `describe(answer)`, or
    /// `failure` with the error (not for ABORTED).
    pub(super) async fn outcome<T>(
        &self,
        claim: &Option<(String, String)>,
        result: &Result<T, ServiceError>,
        (success, failure): (&'static str, &'static str),
        doing: &str,
        describe: impl FnOnce(&T) -> String,
    ) {
        match result {
            Ok(answer) => self.emit(claim, false, success, describe(answer)).await,
            Err(ServiceError::Aborted(_)) => {}
            Err(e) => self.emit(claim, true, failure, format!("{doing} failed: {e}")).await,
        }
    }
}
