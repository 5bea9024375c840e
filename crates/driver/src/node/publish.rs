//! NodePublishVolume and NodeUnpublishVolume.

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::Path,
};

use csi::v1::{
    NodePublishVolumeRequest, NodePublishVolumeResponse, NodeUnpublishVolumeRequest,
    NodeUnpublishVolumeResponse,
};

use super::{
    NodeService,
    host::{self, block_node},
    path, required,
    stage::{Kind, kind},
};
use crate::{core::mount_options, error::ServiceError};

fn internal(what: &str, p: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::Internal(format!("{what} {}: {e}", p.display()))
}

impl NodeService {
    /// CSI "NodePublishVolume": filesystem volumes are bind-mounted from the (live) staging
    /// mount, honouring `readonly`; block volumes get a device node made with mknod (same
    /// major:minor) at the target file, never a bind mount from /dev (incident 2). Publishing
    /// again what is already published is success.
    pub(super) async fn publish(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, ServiceError> {
        let vid = required(&req.volume_id, "volume_id")?;
        let target = path(&req.target_path, "target_path")?;
        let staging = path(&req.staging_target_path, "staging_target_path")?;
        let kind = kind(req.volume_capability.as_ref(), &req.volume_context)?;
        let _guard = self.state.locks.try_lock(vid, "volume")?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| internal("cannot create", parent, e))?;
        }
        match kind {
            Kind::Block => self.publish_block(vid, &target, req.readonly),
            Kind::Mount { flags, read_only, .. } => {
                self.publish_mount(&target, &staging, &flags, req.readonly || read_only).await
            }
        }
        .map(|()| NodePublishVolumeResponse {})
    }

    fn publish_block(&self, vid: &str, target: &Path, read_only: bool) -> Result<(), ServiceError> {
        let st = &self.state;
        let dev = st.plane.find(&st.host, vid).ok_or_else(|| {
            ServiceError::FailedPrecondition(format!(
                "volume {vid} has no device on this node: NodeStageVolume first"
            ))
        })?;
        let want_mode = if read_only { 0o440 } else { 0o660 };
        match std::fs::symlink_metadata(target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal("cannot inspect", target, e)),
            Ok(meta) if meta.file_type().is_block_device() => {
                if block_node(target) == Some(dev.major_minor) {
                    if meta.permissions().mode() & 0o777 != want_mode {
                        std::fs::set_permissions(
                            target,
                            std::fs::Permissions::from_mode(want_mode),
                        )
                        .map_err(|e| internal("cannot chmod", target, e))?;
                    }
                    return Ok(());
                }
                // A node for an old device number (the device was re-created): replace it.
                tracing::warn!(target = %target.display(), rdev = meta.rdev(), device = %dev.name, "replacing a stale device node");
                std::fs::remove_file(target).map_err(|e| internal("cannot remove", target, e))?;
            }
            // kubelet may create an empty file for the node.
            Ok(meta) if meta.is_file() && meta.len() == 0 => {
                std::fs::remove_file(target).map_err(|e| internal("cannot remove", target, e))?;
            }
            Ok(meta)
                if meta.is_dir()
                    && std::fs::read_dir(target).is_ok_and(|mut d| d.next().is_none()) =>
            {
                std::fs::remove_dir(target).map_err(|e| internal("cannot remove", target, e))?;
            }
            Ok(_) => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "target_path {} exists and is not a device node or an empty file; refusing to replace it",
                    target.display()
                )));
            }
        }
        host::mknod_block(target, dev.major_minor, read_only)
    }

    async fn publish_mount(
        &self,
        target: &Path,
        staging: &Path,
        flags: &[String],
        read_only: bool,
    ) -> Result<(), ServiceError> {
        let st = &self.state;
        let staged = st.host.mounts_at(staging).await?;
        let Some(stage) = staged.last() else {
            return Err(ServiceError::FailedPrecondition(format!(
                "staging path {} is not mounted: NodeStageVolume first",
                staging.display()
            )));
        };
        if st.host.block_device(stage.major_minor).is_none() {
            return Err(ServiceError::FailedPrecondition(format!(
                "the staging mount {} is stale (its device {} is gone); NodeStageVolume again to remount it",
                staging.display(),
                stage.source
            )));
        }
        let published = st.host.mounts_at(target).await?;
        if let Some(top) = published.last() {
            if top.major_minor == stage.major_minor {
                let is_ro = top.options.iter().any(|o| o == "ro");
                if is_ro != read_only {
                    return Err(ServiceError::AlreadyExists(format!(
                        "{} is already published {} but this call asks for {}",
                        target.display(),
                        if is_ro { "read-only" } else { "read-write" },
                        if read_only { "read-only" } else { "read-write" }
                    )));
                }
                return Ok(());
            }
            if st.host.block_device(top.major_minor).is_some() {
                return Err(ServiceError::AlreadyExists(format!(
                    "target_path {} already has another mount ({})",
                    target.display(),
                    top.source
                )));
            }
            st.host.umount_all(target).await?;
        }
        match std::fs::symlink_metadata(target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(target).map_err(|e| internal("cannot create", target, e))?;
                let _ = std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o750));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "target_path {} exists and is not a directory",
                    target.display()
                )));
            }
            Err(e) => return Err(internal("cannot inspect", target, e)),
        }
        let options = mount_options::with_security(flags, st.cfg.allow_exec, read_only);
        st.host.bind(staging, target, &options).await
    }

    /// CSI "NodeUnpublishVolume": unmount the target if mountinfo says it is mounted, then
    /// remove only an empty directory or the device node; never a recursive delete. A target
    /// that does not exist is success.
    pub(super) async fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, ServiceError> {
        let vid = required(&req.volume_id, "volume_id")?;
        let target = path(&req.target_path, "target_path")?;
        let _guard = self.state.locks.try_lock(vid, "volume")?;
        if std::fs::symlink_metadata(&target).is_err()
            && self.state.host.mounts_at(&target).await?.is_empty()
        {
            return Ok(NodeUnpublishVolumeResponse {});
        }
        self.state.host.umount_all(&target).await?;
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal("cannot inspect", &target, e)),
            Ok(meta) if meta.is_dir() => std::fs::remove_dir(&target).map_err(|e| {
                ServiceError::FailedPrecondition(format!(
                    "{} is not mounted but cannot be removed ({e}); it is left in place (never deleted recursively): check what wrote into it",
                    target.display()
                ))
            })?,
            Ok(meta) if meta.file_type().is_block_device() || (meta.is_file() && meta.len() == 0) => {
                std::fs::remove_file(&target).map_err(|e| internal("cannot remove", &target, e))?
            }
            Ok(_) => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "target_path {} is neither a mount point, a directory nor a device node; left in place",
                    target.display()
                )));
            }
        }
        Ok(NodeUnpublishVolumeResponse {})
    }
}
