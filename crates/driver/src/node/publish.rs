//! NodePublishVolume and NodeUnpublishVolume.
//!
//! CSI's second-publish table: the same target again with the same arguments is OK; with
//! other arguments (the `readonly` flag) ALREADY_EXISTS; another target path of a
//! SINGLE_NODE_SINGLE_WRITER volume already published on this node is FAILED_PRECONDITION.
//! SINGLE_NODE_MULTI_WRITER, MULTI_NODE_* and the legacy SINGLE_NODE_WRITER /
//! SINGLE_NODE_READER_ONLY publish to several targets: Kubernetes sends ReadWriteOnce as one
//! of those and lets several pods of one node share the volume (docs/node.md).
//!
//! Mounted volumes find their other targets in mountinfo (bind mounts of the staging
//! device). Block volumes' targets are device nodes, invisible in mountinfo: their paths are
//! kept in a small list in the staging directory (`BLOCK_TARGETS`), checked against what is
//! really there at each read and removed at NodeUnstageVolume.

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use csi::v1::{
    NodePublishVolumeRequest, NodePublishVolumeResponse, NodeUnpublishVolumeRequest,
    NodeUnpublishVolumeResponse, volume_capability::access_mode::Mode,
};

use super::{
    BLOCK_TARGETS, NodeService,
    capability::{Kind, kind, published_readonly},
    health::{self, Backing},
    host::{self, block_node},
    path, required,
    stage::Formatting,
};
use crate::{
    core::{mount_options, mountinfo},
    error::ServiceError,
};

/// The device nodes at the listed targets that are still this device's.
fn block_targets(staging: &Path, mm: (u32, u32)) -> Vec<PathBuf> {
    std::fs::read_to_string(staging.join(BLOCK_TARGETS))
        .unwrap_or_default()
        .lines()
        .map(PathBuf::from)
        .filter(|t| block_node(t) == Some(mm))
        .collect()
}

fn remember_block_target(
    staging: &Path,
    mm: (u32, u32),
    target: &Path,
) -> Result<(), ServiceError> {
    let mut all = block_targets(staging, mm);
    if !all.iter().any(|t| t == target) {
        all.push(target.to_path_buf());
    }
    let text: String = all.iter().map(|t| format!("{}\n", t.display())).collect();
    let file = staging.join(BLOCK_TARGETS);
    // Written aside and renamed over the list: a kill half-way leaves the old list whole.
    let tmp = staging.join(format!("{BLOCK_TARGETS}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| internal("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, &file).map_err(|e| internal("cannot write", &file, e))
}

fn single_writer_elsewhere(target: &Path, others: &[String]) -> ServiceError {
    ServiceError::FailedPrecondition(format!(
        "the volume is SINGLE_NODE_SINGLE_WRITER and already published on this node at {}; it cannot be published at {} too (one pod only: ReadWriteOncePod)",
        others.join(", "),
        target.display()
    ))
}

/// One NodePublishVolume's validated request.
#[derive(Clone, Copy)]
struct Publish<'a> {
    req: &'a NodePublishVolumeRequest,
    vid: &'a str,
    target: &'a Path,
    staging: &'a Path,
    single_writer: bool,
}

fn internal(what: &str, p: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::Internal(format!("{what} {}: {e}", p.display()))
}

impl NodeService {
    async fn bound_to_dead_device(st: &super::NodeState, target: &Path) -> bool {
        st.host
            .mounts_at(target)
            .await
            .is_ok_and(|m| m.last().is_some_and(|t| st.host.block_device(t.major_minor).is_none()))
    }

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
        let kind = kind(req.volume_capability.as_ref(), &req.volume_context)?;
        if req.staging_target_path.is_empty() {
            // CSI "NodePublishVolume Errors": STAGE_UNSTAGE_VOLUME is set but no
            // staging_target_path → FAILED_PRECONDITION.
            return Err(ServiceError::FailedPrecondition(
                "staging_target_path is not set, but this node stages volumes (STAGE_UNSTAGE_VOLUME): call NodeStageVolume and pass its path".into(),
            ));
        }
        let staging = path(&req.staging_target_path, "staging_target_path")?;
        let single_writer = req
            .volume_capability
            .as_ref()
            .and_then(|c| c.access_mode.as_ref())
            .is_some_and(|m| m.mode == Mode::SingleNodeSingleWriter as i32);
        let read_only = req.readonly || published_readonly(&req.publish_context);
        let _guard = self.state.locks.try_lock(vid, "volume")?;
        let work = async {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| internal("cannot create", parent, e))?;
            }
            let p = Publish { req: &req, vid, target: &target, staging: &staging, single_writer };
            match kind {
                Kind::Block => self.publish_block(p, read_only).await,
                Kind::Mount { .. } => self.publish_mount(p, kind, read_only).await,
            }
        };
        self.state.breakers.run(vid, "NodePublishVolume", work).await?;
        crate::crashpoint::hit("publish.mounted");
        Ok(NodePublishVolumeResponse {})
    }

    async fn publish_block(&self, p: Publish<'_>, read_only: bool) -> Result<(), ServiceError> {
        let st = &self.state;
        let Publish { req, vid, target, staging, single_writer } = p;
        let dev = match st.plane.find(&st.host, vid) {
            Some(d) => d,
            // Published here before (the targets list, or a device node at the target) but
            // no device now: the connection was lost and removed (a finite ctrl_loss_tmo, the
            // orphan cleanup); connect again instead of failing.
            None if staging.join(BLOCK_TARGETS).exists() || block_node(target).is_some() => {
                tracing::warn!(
                    volume_id = vid,
                    "published block volume without a device; attaching it again"
                );
                let d = st
                    .plane
                    .attach(&st.host, vid, &req.volume_context, &req.publish_context)
                    .await?;
                st.heal.repair("reattached");
                d
            }
            None => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "volume {vid} has no device on this node: NodeStageVolume first"
                )));
            }
        };
        let want_mode = if read_only { 0o440 } else { 0o660 };
        if single_writer {
            let others: Vec<String> = block_targets(staging, dev.major_minor)
                .into_iter()
                .filter(|t| t != target)
                .map(|t| t.display().to_string())
                .collect();
            if !others.is_empty() {
                return Err(single_writer_elsewhere(target, &others));
            }
        }
        match std::fs::symlink_metadata(target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal("cannot inspect", target, e)),
            Ok(meta) if meta.file_type().is_block_device() => {
                if block_node(target) == Some(dev.major_minor) {
                    let mode = meta.permissions().mode() & 0o777;
                    if mode != want_mode {
                        return Err(ServiceError::AlreadyExists(format!(
                            "{} is already published {} but this call asks for {}",
                            target.display(),
                            if mode & 0o200 == 0 { "read-only" } else { "read-write" },
                            if read_only { "read-only" } else { "read-write" }
                        )));
                    }
                    return remember_block_target(staging, dev.major_minor, target);
                }
                // A node for an old device number (the device was re-created): replace it.
                tracing::warn!(target = %target.display(), rdev = meta.rdev(), device = %dev.name, "replacing a stale device node");
                std::fs::remove_file(target).map_err(|e| internal("cannot remove", target, e))?;
                st.heal.repair("target_rebound");
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
        host::mknod_block(target, dev.major_minor, read_only)?;
        remember_block_target(staging, dev.major_minor, target)
    }

    /// Bind-mounts the staging mount at the target. A stale staging mount (its device gone,
    /// or not the volume's device any more) is repaired first (reconnect, remount; never a
    /// format), and a target still bound to the dead mount is bound again.
    async fn publish_mount(
        &self,
        p: Publish<'_>,
        kind: Kind,
        read_only: bool,
    ) -> Result<(), ServiceError> {
        let st = &self.state;
        let Publish { req, vid, target, staging, single_writer } = p;
        let Kind::Mount { flags, read_only: ro_mode, .. } = &kind else {
            return Err(ServiceError::Internal("publish_mount of a block volume".into()));
        };
        let (flags, read_only) = (flags.clone(), read_only || *ro_mode);
        let Some(mut stage) = self.settle_stack(staging).await? else {
            return Err(ServiceError::FailedPrecondition(format!(
                "staging path {} is not mounted: NodeStageVolume first",
                staging.display()
            )));
        };
        let current = st.plane.find(&st.host, vid);
        let mut dead_mm = None;
        if let Backing::Stale(why) = health::backing(&st.host, &stage, current.as_ref()).await? {
            st.heal.stale_mount(why.reason());
            tracing::warn!(volume_id = vid, staging = %staging.display(), reason = %why.message(), "stale staging mount; repairing it before publishing");
            dead_mm = Some(stage.major_minor);
            self.stage_locked(
                vid,
                staging,
                kind.clone(),
                &req.volume_context,
                &req.publish_context,
                Formatting::Never,
            )
            .await?;
            stage = st.host.mounts_at(staging).await?.pop().ok_or_else(|| {
                ServiceError::Internal(format!(
                    "{} is not mounted after its repair",
                    staging.display()
                ))
            })?;
        }
        if single_writer {
            let mounts = st.host.mounts().await?;
            let (t, s) = (target.to_string_lossy(), staging.to_string_lossy());
            let others: Vec<String> = mountinfo::of_device(&mounts, stage.major_minor)
                .into_iter()
                .filter(|m| {
                    m.target != t.trim_end_matches('/') && m.target != s.trim_end_matches('/')
                })
                .map(|m| m.target.clone())
                .collect();
            if !others.is_empty() {
                return Err(single_writer_elsewhere(target, &others));
            }
        }
        let published = self.settle_stack(target).await?;
        if let Some(top) = &published {
            if top.major_minor == stage.major_minor && dead_mm.is_none() {
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
            if dead_mm != Some(top.major_minor)
                && top.major_minor != stage.major_minor
                && st.host.block_device(top.major_minor).is_some()
            {
                return Err(ServiceError::AlreadyExists(format!(
                    "target_path {} already has another mount ({})",
                    target.display(),
                    top.source
                )));
            }
            tracing::warn!(target = %target.display(), "the target is bound to a dead mount; binding it again");
            if let Err(e) = st.host.umount_all(target).await {
                tracing::warn!(error = %e, "plain unmount refused; unmounting the dead bind lazily");
                st.host.umount_lazy(target).await?;
            }
            st.heal.repair("target_rebound");
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
        let options = mount_options::with_security(&flags, st.cfg.allow_exec, read_only);
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
        let st = &self.state;
        st.breakers
            .run(vid, "NodeUnpublishVolume", async {
                match st.host.umount_all(&target).await {
                    Ok(_) => Ok(()),
                    // A bind of a dead mount (its device gone) that a process still sits in:
                    // the pod is going away; its I/O fails anyway.
                    Err(e) if Self::bound_to_dead_device(st, &target).await => {
                        tracing::warn!(error = %e, "plain unmount refused; unmounting the dead bind lazily");
                        st.host.umount_lazy(&target).await
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        crate::crashpoint::hit("unpublish.unmounted");
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
