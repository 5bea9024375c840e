//! NodeStageVolume and NodeUnstageVolume.

use std::{collections::HashMap, path::Path, time::Duration};

use csi::v1::{
    NodeStageVolumeRequest, NodeStageVolumeResponse, NodeUnstageVolumeRequest,
    NodeUnstageVolumeResponse,
};

use super::{
    BLOCK_TARGETS, NodeService,
    capability::{Kind, kind, published_readonly},
    format, holders,
    host::BlockDevice,
    invalid, path, required,
};
use crate::{
    core::context::key,
    core::{blank::Verdict, mount_options, mountinfo},
    error::ServiceError,
};

/// How a filesystem volume is staged.
struct Filesystem<'a> {
    fs_type: &'a str,
    flags: &'a [String],
    read_only: bool,
    /// `snapshot:<id>` / `volume:<id>`: the volume was filled from a source.
    filled_from: Option<&'a str>,
}

/// The device must be at least as large as the disk was when ControllerPublishVolume
/// answered: a smaller one is the wrong namespace or a size the RDS has not applied.
fn check_size(dev: &BlockDevice, publish: &HashMap<String, String>) -> Result<(), ServiceError> {
    let Some(want) = publish.get(crate::core::context::publish::CAPACITY) else { return Ok(()) };
    let want: u64 = want.parse().map_err(|_| {
        invalid(format!("publish_context capacityBytes={want:?} is not a number of bytes"))
    })?;
    if dev.size < want {
        return Err(ServiceError::FailedPrecondition(format!(
            "/dev/{} is {} bytes but the volume is {want} bytes: the device is not this volume's namespace, or the RDS has not applied its size yet",
            dev.name, dev.size
        )));
    }
    Ok(())
}

impl NodeService {
    /// CSI "NodeStageVolume": idempotent. Block volumes are attached and nothing is put at the
    /// staging path (kubelet never reads it for block). Filesystem volumes are formatted only
    /// when proven blank, then mounted at the staging path; a staging path already mounted
    /// from the volume's device is success without remounting. A volume published read-only
    /// (publish context `readonly`) or with a read-only access mode is mounted read-only and
    /// never formatted; nor is a volume filled from a snapshot or clone source.
    ///
    /// The work runs in its own task holding the volume's guard: if the CO gives up on the
    /// call (its deadline, a restart), the stage still runs to its end, so mkfs is never
    /// killed half-way (a half-formatted device would be refused ever after); the CO's
    /// retry is ABORTED until then and then finds the volume staged.
    pub(super) async fn stage(
        &self,
        req: NodeStageVolumeRequest,
    ) -> Result<NodeStageVolumeResponse, ServiceError> {
        let vid = required(&req.volume_id, "volume_id")?;
        let staging = path(&req.staging_target_path, "staging_target_path")?;
        let mut kind = kind(req.volume_capability.as_ref(), &req.volume_context)?;
        if let Kind::Mount { read_only, .. } = &mut kind {
            *read_only |= published_readonly(&req.publish_context);
        }
        let guard = self.state.locks.try_lock(vid, "volume")?;
        let this = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            this.stage_locked(req, staging, kind).await
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("the stage task failed: {e}")))?
    }

    async fn stage_locked(
        &self,
        req: NodeStageVolumeRequest,
        staging: std::path::PathBuf,
        kind: Kind,
    ) -> Result<NodeStageVolumeResponse, ServiceError> {
        let vid = req.volume_id.as_str();
        let filled_from = req.volume_context.get(key::CONTENT_SOURCE).cloned();
        let st = &self.state;
        if !staging.exists() {
            std::fs::create_dir_all(&staging).map_err(|e| {
                ServiceError::Internal(format!(
                    "cannot create staging path {}: {e}",
                    staging.display()
                ))
            })?;
        }
        let mounted = st.host.mounts_at(&staging).await?;
        let was_attached = st.plane.attached(&st.host, vid);
        let dev = st.plane.attach(&st.host, vid, &req.volume_context, &req.publish_context).await?;
        let result = match check_size(&dev, &req.publish_context) {
            Err(e) => Err(e),
            Ok(()) => self.stage_kind(kind, &dev, &staging, &mounted, filled_from.as_deref()).await,
        };
        if let Err(e) = &result {
            if !was_attached && let Err(d) = st.plane.detach(&st.host, vid).await {
                tracing::warn!(error = %d, "detach after a failed stage");
            }
            tracing::warn!(error = %e, device = %dev.name, "stage failed");
        }
        result.map(|()| NodeStageVolumeResponse {})
    }

    async fn stage_kind(
        &self,
        kind: Kind,
        dev: &BlockDevice,
        staging: &Path,
        mounted: &[mountinfo::Mount],
        filled_from: Option<&str>,
    ) -> Result<(), ServiceError> {
        match kind {
            Kind::Block => match mounted.last() {
                None => Ok(()),
                Some(m) => Err(ServiceError::FailedPrecondition(format!(
                    "staging path {} has a mount of {} but the volume is a block volume; unmount it first",
                    staging.display(),
                    m.source
                ))),
            },
            Kind::Mount { fs_type, flags, read_only } => {
                let f = Filesystem { fs_type: &fs_type, flags: &flags, read_only, filled_from };
                self.stage_filesystem(dev, staging, mounted, f).await
            }
        }
    }

    async fn stage_filesystem(
        &self,
        dev: &BlockDevice,
        staging: &Path,
        mounted: &[mountinfo::Mount],
        f: Filesystem<'_>,
    ) -> Result<(), ServiceError> {
        let Filesystem { fs_type, flags, read_only, filled_from } = f;
        let st = &self.state;
        if let Some(top) = mounted.last() {
            if top.major_minor == dev.major_minor {
                if top.fs_type != fs_type {
                    return Err(ServiceError::AlreadyExists(format!(
                        "{} is already staged as {} but the capability asks for {fs_type}",
                        staging.display(),
                        top.fs_type
                    )));
                }
                tracing::info!(device = %dev.name, "already staged on the right device; nothing to do");
                return Ok(());
            }
            if st.host.block_device(top.major_minor).is_some() {
                return Err(ServiceError::FailedPrecondition(format!(
                    "staging path {} is already a mount of another device ({}, {}:{}); unmount it first",
                    staging.display(),
                    top.source,
                    top.major_minor.0,
                    top.major_minor.1
                )));
            }
            // The mounted device is gone (an NVMe controller was replaced after a long
            // outage): drop the dead mount and mount the live device again.
            tracing::warn!(stale = %top.source, device = %dev.name, "stale staging mount; remounting");
            st.host.umount_all(staging).await?;
        }
        let verdict = format::inspect_with_retries(
            &dev.path(),
            dev.size,
            st.cfg.command_timeout,
            st.cfg.blank_check_attempts,
            st.cfg.blank_check_delay,
        )
        .await?;
        match verdict {
            Verdict::Blank if read_only => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "/dev/{} is blank and the volume is staged read-only: a read-only volume is never formatted. Publish it read-write once to create its {fs_type} filesystem",
                    dev.name
                )));
            }
            Verdict::Blank if filled_from.is_some() => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "/dev/{} is blank although the volume was filled from {}: the copy did not arrive, and formatting would hide that. \
                     Not formatting it; check the source and the RDS copy, then restore again",
                    dev.name,
                    filled_from.unwrap_or_default()
                )));
            }
            Verdict::Blank if fs_type == "ext3" => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "/dev/{} is blank and the volume asks for ext3: rds-csi mounts the ext3 filesystems of the Go driver's volumes but never creates one. Use ext4",
                    dev.name
                )));
            }
            Verdict::Blank => {
                tracing::info!(device = %dev.name, fs_type, "device proven blank; formatting");
                format::mkfs(&dev.path(), fs_type, st.cfg.command_timeout).await?;
            }
            Verdict::Filesystem(found) if found == fs_type => {
                tracing::info!(device = %dev.name, fs_type, "existing filesystem; mounting it");
            }
            Verdict::Filesystem(found) => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "/dev/{} holds a {found} filesystem but the volume asks for {fs_type}; refusing to reformat it. Use fsType {found} for this volume",
                    dev.name
                )));
            }
            Verdict::HoldsData(why) => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "/dev/{} is not blank ({why}) and holds no {fs_type} filesystem; refusing to format it. Inspect the volume (it may be a block volume's data) before using it as a filesystem",
                    dev.name
                )));
            }
            Verdict::Unreadable(why) => return Err(ServiceError::Unavailable(why)),
        }
        let mut options = mount_options::with_security(flags, st.cfg.allow_exec, read_only);
        if fs_type == "xfs" {
            // A restored snapshot or clone carries its source's XFS UUID; without nouuid the
            // kernel refuses to mount it on a node where the source is mounted.
            options.push("nouuid".into());
        }
        st.host.mount(&dev.path(), staging, fs_type, &options).await
    }

    /// CSI "NodeUnstageVolume": unmount the staging path, make sure nothing else uses the
    /// device (other mounts, holders, open file descriptors), then detach it. Detaching only
    /// ever touches managed NQNs (or loop files under the loop root); a failed detach is an
    /// error. An already unstaged volume is success.
    pub(super) async fn unstage(
        &self,
        req: NodeUnstageVolumeRequest,
    ) -> Result<NodeUnstageVolumeResponse, ServiceError> {
        let vid = required(&req.volume_id, "volume_id")?;
        let staging = path(&req.staging_target_path, "staging_target_path")?;
        let _guard = self.state.locks.try_lock(vid, "volume")?;
        let st = &self.state;
        let mounts = st.host.mounts().await?;
        let staging_s = staging.to_string_lossy();
        if let Some(dev) = st.plane.find(&st.host, vid) {
            let elsewhere: Vec<String> = mountinfo::of_device(&mounts, dev.major_minor)
                .into_iter()
                .filter(|m| m.target != staging_s.trim_end_matches('/'))
                .map(|m| m.target.clone())
                .collect();
            if !elsewhere.is_empty() {
                return Err(ServiceError::FailedPrecondition(format!(
                    "volume {vid} (/dev/{}) is still mounted at {}; NodeUnpublishVolume those first",
                    dev.name,
                    elsewhere.join(", ")
                )));
            }
        }
        st.host.umount_all(&staging).await?;
        if let Some(dev) = st.plane.find(&st.host, vid) {
            // Short-lived openers (udev probes, a losetup or blkid scanning devices) go away:
            // look three times before calling the device busy.
            let mut users = Vec::new();
            for attempt in 0..3 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                users = holders::users_within(
                    &st.host.sysfs,
                    &st.host.procfs,
                    &dev,
                    st.host.mounts().await?,
                    Duration::from_secs(10),
                )
                .await
                .map_err(ServiceError::Unavailable)?;
                if users.is_empty() {
                    break;
                }
            }
            if !users.is_empty() {
                return Err(ServiceError::FailedPrecondition(format!(
                    "volume {vid} (/dev/{}) is still in use: {}; stop those users, then retry",
                    dev.name,
                    users.join("; ")
                )));
            }
        }
        st.plane.detach(&st.host, vid).await?;
        match std::fs::remove_file(staging.join(BLOCK_TARGETS)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(error = %e, "cannot remove the block targets list");
            }
            _ => {}
        }
        Ok(NodeUnstageVolumeResponse {})
    }
}
