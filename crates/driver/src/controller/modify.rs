//! ControllerModifyVolume (CSI; Kubernetes VolumeAttributesClass): the mutable parameters of
//! an existing volume (docs/storageclass.md "Changing a volume"). `compress` is the disk's
//! RouterOS property and changes at once; the others are recorded in the disk comment and
//! reach the node through ControllerPublishVolume's publish context, so they take effect at
//! the volume's next attachment and stage (a running connection keeps its parameters).

use csi::v1::{ControllerModifyVolumeRequest, ControllerModifyVolumeResponse};
use routeros::ops::Disk;

use super::backend::Backend;
use crate::{
    core::{ids, mutable},
    error::ServiceError,
};

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(msg.into())
}

impl Backend {
    /// `compress` needs RouterOS 7.18 (INVALID_ARGUMENT before, naming the version).
    pub(super) async fn needs_compress(&self) -> Result<(), ServiceError> {
        let system = self.system().await?;
        if system.version_number().is_none_or(|v| v < (7, 18)) {
            return Err(invalid(format!(
                "parameter compress needs RouterOS 7.18 or newer; this RDS runs {}: remove it",
                system.version
            )));
        }
        Ok(())
    }

    /// Sets the disk's `compress` when `want` says otherwise (looks first: no round trip when
    /// it already is).
    pub(super) async fn apply_compress(
        &self,
        disk: &Disk,
        want: Option<bool>,
    ) -> Result<(), ServiceError> {
        let Some(want) = want else { return Ok(()) };
        if disk.compress.unwrap_or(false) == want {
            return Ok(());
        }
        self.needs_compress().await?;
        let slot = routeros::types::Slot::new(&disk.slot).map_err(|e| invalid(e.to_string()))?;
        self.rds
            .set_compress(&slot, want)
            .await
            .map_err(ServiceError::rds(format!("setting compress on {slot}")))
    }

    /// CSI "ControllerModifyVolume": `mutable_parameters` is required; a key that is not
    /// mutable is INVALID_ARGUMENT naming the mutable ones; an unknown volume is NOT_FOUND.
    /// Idempotent: it looks at the disk and changes only what differs.
    pub async fn modify_volume(
        &self,
        req: ControllerModifyVolumeRequest,
    ) -> Result<ControllerModifyVolumeResponse, ServiceError> {
        let slot = self.parse_volume_id(&req.volume_id).map_err(invalid)?;
        if req.mutable_parameters.is_empty() {
            return Err(invalid(format!(
                "mutable_parameters is required; the mutable parameters are {}",
                mutable::KEYS.join(", ")
            )));
        }
        let m = mutable::parse(&req.mutable_parameters).map_err(invalid)?;
        let slot =
            slot.ok_or_else(|| ServiceError::NotFound(ids::foreign_volume(&req.volume_id)))?;
        let _guard = self.locks.try_lock(slot.as_str(), "volume")?;
        if let Some(copy) = self.copies.involving(slot.as_str()) {
            return Err(ServiceError::Aborted(format!(
                "volume {slot} is being copied ({copy}); the CO retries once the copy ends"
            )));
        }
        let (disk, _) = self.managed_disk(&slot, "reading volume").await?;
        self.apply_compress(&disk, m.compress).await?;
        let comment = mutable::record(&disk.comment, &m);
        if comment != disk.comment {
            self.rds
                .set_comment(&slot, &comment)
                .await
                .map_err(ServiceError::rds(format!("recording the parameters of {slot}")))?;
        }
        Ok(ControllerModifyVolumeResponse {})
    }
}
