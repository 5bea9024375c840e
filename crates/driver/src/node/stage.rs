//! NodeStageVolume and NodeUnstageVolume.

use std::{collections::HashMap, path::Path, time::Duration};

use csi::v1::{
    NodeStageVolumeRequest, NodeStageVolumeResponse, NodeUnstageVolumeRequest,
    NodeUnstageVolumeResponse,
};

use super::{
    BLOCK_TARGETS, NodeService,
    capability::{Kind, kind, published_readonly},
    format,
    health::{self, Backing, Stale},
    holders,
    host::BlockDevice,
    invalid, path, required,
};
use crate::{
    core::context::key,
    core::{blank::Verdict, mount_options, mountinfo},
    error::ServiceError,
};

/// Whether a stage may format a proven-blank device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Formatting {
    /// NodeStageVolume of a volume not mounted here before.
    IfProvenBlank,
    /// A repair (NodePublishVolume of a volume whose staging mount went stale).
    Never,
}

/// More mounts than this stacked at one path is a mount storm (incident 2).
pub const MOUNT_STORM_STACK: usize = 3;

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
            let vid = req.volume_id.clone();
            let staged = this.stage_locked(
                &vid,
                &staging,
                kind,
                &req.volume_context,
                &req.publish_context,
                Formatting::IfProvenBlank,
            );
            this.state.breakers.run(&vid, "NodeStageVolume", staged).await
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("the stage task failed: {e}")))?
        .map(|()| NodeStageVolumeResponse {})
    }

    /// Attaches the volume and, for a filesystem, mounts it at `staging` (formatting only
    /// under `formatting`); also the repair NodePublishVolume runs on a stale staging mount.
    pub(super) async fn stage_locked(
        &self,
        vid: &str,
        staging: &Path,
        kind: Kind,
        volume_context: &HashMap<String, String>,
        publish_context: &HashMap<String, String>,
        formatting: Formatting,
    ) -> Result<(), ServiceError> {
        let filled_from = volume_context.get(key::CONTENT_SOURCE).cloned();
        let st = &self.state;
        if !staging.exists() {
            std::fs::create_dir_all(staging).map_err(|e| {
                ServiceError::Internal(format!(
                    "cannot create staging path {}: {e}",
                    staging.display()
                ))
            })?;
        }
        let mounted = self.settle_stack(staging).await?;
        let was_attached = st.plane.attached(&st.host, vid);
        let dev = st.plane.attach(&st.host, vid, volume_context, publish_context).await?;
        if !was_attached && formatting == Formatting::Never {
            st.heal.repair("reattached");
        }
        crate::crashpoint::hit("stage.attached");
        let result = match check_size(&dev, publish_context) {
            Err(e) => Err(e),
            Ok(()) => {
                self.stage_kind(kind, &dev, staging, mounted, filled_from.as_deref(), formatting)
                    .await
            }
        };
        if let Err(e) = &result {
            if !was_attached && let Err(d) = st.plane.detach(&st.host, vid).await {
                tracing::warn!(error = %d, "detach after a failed stage");
            }
            tracing::warn!(error = %e, device = %dev.name, "stage failed");
        }
        result
    }

    /// The mounts stacked at `path`, cleaned down to one: more than one is never ours (each
    /// call looks before mounting), and more than [`MOUNT_STORM_STACK`] is a mount storm,
    /// refused with an error after the cleaning (the CO's retry then finds one mount).
    pub(super) async fn settle_stack(
        &self,
        path: &Path,
    ) -> Result<Option<mountinfo::Mount>, ServiceError> {
        let st = &self.state;
        let mounted = st.host.mounts_at(path).await?;
        if mounted.len() <= 1 {
            return Ok(mounted.into_iter().next());
        }
        let n = mounted.len();
        tracing::warn!(path = %path.display(), stacked = n, "stacked mounts; unmounting down to one");
        st.host.umount_down_to(path, 1).await?;
        if n > MOUNT_STORM_STACK {
            st.heal.mount_storm();
            return Err(ServiceError::FailedPrecondition(format!(
                "{} had {n} mounts stacked on it (a mount storm: something mounted it again and again); rds-csi unmounted {} of them, leaving the first. Retry the call; if it comes back, find what mounts there",
                path.display(),
                n - 1
            )));
        }
        Ok(st.host.mounts_at(path).await?.into_iter().next())
    }

    async fn stage_kind(
        &self,
        kind: Kind,
        dev: &BlockDevice,
        staging: &Path,
        mounted: Option<mountinfo::Mount>,
        filled_from: Option<&str>,
        formatting: Formatting,
    ) -> Result<(), ServiceError> {
        match kind {
            Kind::Block => match mounted {
                None => Ok(()),
                Some(m) => Err(ServiceError::FailedPrecondition(format!(
                    "staging path {} has a mount of {} but the volume is a block volume; unmount it first",
                    staging.display(),
                    m.source
                ))),
            },
            Kind::Mount { fs_type, flags, read_only } => {
                let f = Filesystem { fs_type: &fs_type, flags: &flags, read_only, filled_from };
                self.stage_filesystem(dev, staging, mounted, f, formatting).await
            }
        }
    }

    /// Drops a stale staging mount (plainly; lazily when its device is gone and a process
    /// still sits in it). Returns whether there was one.
    async fn drop_stale(
        &self,
        dev: &BlockDevice,
        path: &Path,
        top: &mountinfo::Mount,
    ) -> Result<bool, ServiceError> {
        let st = &self.state;
        match health::backing(&st.host, top, Some(dev)).await? {
            Backing::Live => Ok(false),
            Backing::Stale(why) => {
                let mounted = st.plane.owner(&st.host, top.major_minor);
                if let Some(other) = mounted.filter(|o| {
                    Some(o.as_str()) != st.plane.owner(&st.host, dev.major_minor).as_deref()
                }) {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "{} is a mount of volume {other}'s device ({}), not of this volume's /dev/{}; unmount it first",
                        path.display(),
                        top.source,
                        dev.name
                    )));
                }
                st.heal.stale_mount(why.reason());
                tracing::warn!(path = %path.display(), device = %dev.name, reason = %why.message(), "stale mount; unmounting it to mount the live device");
                match st.host.umount_all(path).await {
                    Ok(_) => {}
                    Err(e) if matches!(why, Stale::DeviceGone { .. }) => {
                        tracing::warn!(error = %e, "plain unmount refused; unmounting the dead mount lazily");
                        st.host.umount_lazy(path).await?;
                    }
                    Err(e) => return Err(e),
                }
                Ok(true)
            }
        }
    }

    async fn stage_filesystem(
        &self,
        dev: &BlockDevice,
        staging: &Path,
        mounted: Option<mountinfo::Mount>,
        f: Filesystem<'_>,
        formatting: Formatting,
    ) -> Result<(), ServiceError> {
        let Filesystem { fs_type, flags, read_only, filled_from } = f;
        let st = &self.state;
        // A volume that was staged before (a stale mount) or is being repaired is never
        // formatted: a blank device then means lost data, not a new volume.
        let mut may_format = formatting == Formatting::IfProvenBlank;
        if let Some(top) = &mounted {
            if self.drop_stale(dev, staging, top).await? {
                may_format = false;
                st.heal.repair("staging_remounted");
            } else {
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
            Verdict::Blank if !may_format => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "/dev/{} is blank, but volume was mounted here before (this call repairs its mount): a blank device now means its data did not come back. Not formatting it; check the disk on the RDS",
                    dev.name
                )));
            }
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
                crate::crashpoint::hit("stage.formatted");
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
        st.host.mount(&dev.path(), staging, fs_type, &options).await?;
        crate::crashpoint::hit("stage.mounted");
        Ok(())
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
        st.breakers.run(vid, "NodeUnstageVolume", self.unstage_locked(vid, &staging)).await?;
        Ok(NodeUnstageVolumeResponse {})
    }

    async fn unstage_locked(&self, vid: &str, staging: &Path) -> Result<(), ServiceError> {
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
        st.host.umount_all(staging).await?;
        crate::crashpoint::hit("unstage.unmounted");
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
        for name in [BLOCK_TARGETS.to_string(), format!("{BLOCK_TARGETS}.tmp")] {
            match std::fs::remove_file(staging.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(error = %e, "cannot remove the block targets list");
                }
                _ => {}
            }
        }
        Ok(())
    }
}
