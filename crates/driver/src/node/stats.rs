//! NodeGetVolumeStats (usage and VolumeCondition) and NodeExpandVolume.

use std::path::{Path, PathBuf};

use csi::v1::{
    NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetVolumeStatsRequest,
    NodeGetVolumeStatsResponse, VolumeCondition, VolumeUsage, volume_capability::AccessType,
    volume_usage::Unit,
};

use super::{
    NodeService,
    health::{self, Backing, Stale},
    host::{self, BlockDevice, block_node},
    is_clean_absolute, required,
};
use crate::{error::ServiceError, exec};

fn condition(problem: Option<String>) -> VolumeCondition {
    match problem {
        None => VolumeCondition { abnormal: false, message: "volume is healthy".into() },
        Some(m) => VolumeCondition { abnormal: true, message: m },
    }
}

/// The `volume_path` of NodeGetVolumeStats / NodeExpandVolume: required (INVALID_ARGUMENT);
/// a path that cannot hold the volume (relative, with `..`) is NOT_FOUND like any path that
/// does not exist (CSI: "Volume does not exist … on specified volume_path").
fn volume_path(value: &str) -> Result<PathBuf, ServiceError> {
    let p = PathBuf::from(required(value, "volume_path")?);
    if !is_clean_absolute(&p) {
        return Err(ServiceError::NotFound(format!(
            "volume_path {value:?} is not where a volume is staged or published (those are absolute paths without \"..\")"
        )));
    }
    Ok(p)
}

impl NodeService {
    /// Where `volume_path` (a mount or a published device node) gets its device from; NOT_FOUND
    /// when it is missing, holds no volume, or holds another volume's device. (A device that
    /// is gone, or that `vid` no longer resolves to, is still reported: a stale mount of the
    /// volume, abnormal.)
    async fn device_at(&self, vid: &str, p: &Path) -> Result<Source, ServiceError> {
        let st = &self.state;
        let meta = std::fs::symlink_metadata(p).map_err(|_| {
            ServiceError::NotFound(format!(
                "volume_path {} does not exist on this node",
                p.display()
            ))
        })?;
        let source = match block_node(p) {
            Some(mm) => Source::Block(mm),
            None => match st.host.mounts_at(p).await?.pop() {
                Some(top) if meta.is_dir() => Source::Mount(top),
                _ => {
                    return Err(ServiceError::NotFound(format!(
                        "volume_path {} is neither a mount nor a device node of a volume",
                        p.display()
                    )));
                }
            },
        };
        let mm = match &source {
            Source::Block(mm) => *mm,
            Source::Mount(m) => m.major_minor,
        };
        if let Some(other) = st.plane.owner(&st.host, mm).filter(|o| o != vid) {
            return Err(ServiceError::NotFound(format!(
                "volume {vid} is not at {}: that path holds volume {other} (device {}:{})",
                p.display(),
                mm.0,
                mm.1
            )));
        }
        Ok(source)
    }

    /// Why the volume is not healthy: its mount is stale (device gone, not the volume's
    /// device any more, a read fails or hangs), or the NVMe/TCP controller is not live.
    /// `mount` is the mount at the path (None for a block volume's device node `mm`).
    pub(super) async fn problem(
        &self,
        vid: &str,
        mm: (u32, u32),
        mount: Option<(&Path, &crate::core::mountinfo::Mount)>,
    ) -> Result<Option<String>, ServiceError> {
        let st = &self.state;
        let current = st.plane.find(&st.host, vid);
        let Some(dev) = st.host.block_device(mm) else {
            return Ok(Some(Stale::DeviceGone { mounted: format!("{}:{}", mm.0, mm.1) }.message()));
        };
        if current.is_none() {
            return Ok(st.plane.abnormal(&st.host, vid));
        }
        match (mount, &current) {
            (Some((_, m)), _) => {
                if let Backing::Stale(why) = health::backing(&st.host, m, current.as_ref()).await? {
                    return Ok(Some(why.message()));
                }
            }
            (None, Some(c)) if c.major_minor != mm => {
                return Ok(Some(
                    Stale::DeviceMismatch {
                        mounted: format!("/dev/{}", dev.name),
                        current: format!("/dev/{}", c.name),
                    }
                    .message(),
                ));
            }
            _ => {}
        }
        if let Some(p) = st.plane.abnormal(&st.host, vid) {
            return Ok(Some(p));
        }
        let dir = mount.map(|(p, _)| p);
        Ok(health::probe(dir, &dev, st.cfg.io_probe_timeout).await.map(|s| s.message()))
    }

    /// CSI "NodeGetVolumeStats": bytes and inodes (statvfs) for a filesystem, total bytes for
    /// a block volume, with a VolumeCondition (VOLUME_CONDITION is advertised). A path that
    /// is not this volume's mount or device node is NOT_FOUND.
    pub(super) async fn stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, ServiceError> {
        let vid = required(&req.volume_id, "volume_id")?;
        let p = volume_path(&req.volume_path)?;
        let st = &self.state;
        match self.device_at(vid, &p).await? {
            Source::Block(mm) => {
                let problem = self.problem(vid, mm, None).await?;
                let usage = st
                    .host
                    .block_device(mm)
                    .map(|d| VolumeUsage {
                        total: d.size as i64,
                        unit: Unit::Bytes as i32,
                        ..Default::default()
                    })
                    .into_iter()
                    .collect();
                Ok(NodeGetVolumeStatsResponse { usage, volume_condition: Some(condition(problem)) })
            }
            Source::Mount(m) => {
                let problem = self.problem(vid, m.major_minor, Some((&p, &m))).await?;
                // A dead device can make statvfs hang: only ask a healthy one.
                let usage = if problem.is_none() {
                    let u = host::statvfs(&p, st.cfg.command_timeout).await?;
                    vec![
                        VolumeUsage {
                            available: u.available as i64,
                            total: u.total as i64,
                            used: u.used as i64,
                            unit: Unit::Bytes as i32,
                        },
                        VolumeUsage {
                            available: u.inodes_free as i64,
                            total: u.inodes as i64,
                            used: u.inodes_used as i64,
                            unit: Unit::Inodes as i32,
                        },
                    ]
                } else {
                    Vec::new()
                };
                Ok(NodeGetVolumeStatsResponse { usage, volume_condition: Some(condition(problem)) })
            }
        }
    }

    /// CSI "NodeExpandVolume": make the device see the new size, then grow the filesystem
    /// online (resize2fs for ext4, xfs_growfs for xfs); a block volume only reports its size.
    pub(super) async fn expand(
        &self,
        req: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, ServiceError> {
        let vid = required(&req.volume_id, "volume_id")?;
        let p = volume_path(&req.volume_path)?;
        let _guard = self.state.locks.try_lock(vid, "volume")?;
        let st = &self.state;
        let required_bytes =
            req.capacity_range.as_ref().map_or(0, |c| c.required_bytes.max(0) as u64);
        let block_cap = matches!(
            req.volume_capability.as_ref().and_then(|c| c.access_type.as_ref()),
            Some(AccessType::Block(_))
        );
        let source = self.device_at(vid, &p).await?;
        let mm = match &source {
            Source::Block(mm) => *mm,
            Source::Mount(m) => m.major_minor,
        };
        let dev = st.host.block_device(mm).ok_or_else(|| {
            ServiceError::FailedPrecondition(format!(
                "the device of {} ({}:{}) is gone; re-stage the volume before expanding it",
                p.display(),
                mm.0,
                mm.1
            ))
        })?;
        st.plane.refresh_size(&st.host, vid, &dev).await?;
        let dev: BlockDevice = st.host.block_device(mm).unwrap_or(dev);
        if dev.size < required_bytes {
            return Err(ServiceError::Unavailable(format!(
                "/dev/{} is {} bytes, less than the requested {required_bytes}: the RDS resize is not visible on this node yet; the CO retries",
                dev.name, dev.size
            )));
        }
        if let (Source::Mount(m), false) = (&source, block_cap) {
            let dp = dev.path();
            let (program, arg) = match m.fs_type.as_str() {
                "ext4" | "ext3" | "ext2" => ("resize2fs", dp.to_string_lossy().into_owned()),
                "xfs" => ("xfs_growfs", p.to_string_lossy().into_owned()),
                other => {
                    return Err(ServiceError::InvalidArgument(format!(
                        "cannot grow a {other} filesystem: only ext4 and xfs are supported"
                    )));
                }
            };
            let out = exec::run(program, &[&arg], st.cfg.command_timeout)
                .await
                .map_err(ServiceError::exec(format!("growing the filesystem of volume {vid}")))?;
            if !out.success() {
                let text = out.text();
                let hint = if text.contains("Permission denied") {
                    " (online growth needs CAP_SYS_RESOURCE: run the node plugin privileged)"
                } else {
                    ""
                };
                return Err(ServiceError::Internal(format!(
                    "growing the {} filesystem of volume {vid}: {program} failed{hint}: {text}",
                    m.fs_type
                )));
            }
        }
        Ok(NodeExpandVolumeResponse { capacity_bytes: dev.size as i64 })
    }
}

enum Source {
    Block((u32, u32)),
    Mount(crate::core::mountinfo::Mount),
}
