//! The access-mode matrix (docs/storageclass.md):
//!
//! | access mode | mount | block |
//! |---|---|---|
//! | SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY, SINGLE_NODE_SINGLE_WRITER, SINGLE_NODE_MULTI_WRITER | yes | yes |
//! | MULTI_NODE_MULTI_WRITER | no | yes (KubeVirt live migration) |
//! | MULTI_NODE_READER_ONLY, MULTI_NODE_SINGLE_WRITER | no | no |
//!
//! Multi-node filesystems are refused: ext4/xfs mounted on two nodes corrupt each other, and a
//! read-only NVMe export does not exist on the RDS to make "readers" safe.

use csi::v1::{
    VolumeCapability,
    volume_capability::{AccessType, access_mode::Mode},
};

/// Checks one capability; the error says why and what to use instead.
pub fn check(cap: &VolumeCapability) -> Result<(), String> {
    let block = match &cap.access_type {
        Some(AccessType::Block(_)) => true,
        Some(AccessType::Mount(_)) => false,
        None => return Err("volume_capability needs access_type: block or mount".into()),
    };
    let mode = cap.access_mode.as_ref().map(|m| m.mode).unwrap_or(0);
    match Mode::try_from(mode) {
        Ok(Mode::SingleNodeWriter | Mode::SingleNodeReaderOnly | Mode::SingleNodeSingleWriter | Mode::SingleNodeMultiWriter) => Ok(()),
        Ok(Mode::MultiNodeMultiWriter) if block => Ok(()),
        Ok(Mode::MultiNodeMultiWriter) => Err(
            "ReadWriteMany needs volumeMode: Block: a filesystem mounted on two nodes at once is corrupted. \
             For KubeVirt live migration use volumeMode: Block; for shared files use an NFS volume"
                .into(),
        ),
        Ok(Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter) => Err(format!(
            "access mode {} is not supported: the RDS cannot export a volume read-only to several nodes; \
             use ReadWriteOnce (one node) or clone the volume for each reader",
            Mode::try_from(mode).map(|m| m.as_str_name()).unwrap_or("?")
        )),
        Ok(Mode::Unknown) | Err(_) => Err("volume_capability needs an access_mode".into()),
    }
}

/// Checks every capability of a request; at least one is required.
pub fn check_all(caps: &[VolumeCapability]) -> Result<(), String> {
    if caps.is_empty() {
        return Err("volume_capabilities are required".into());
    }
    caps.iter().try_for_each(check)
}

/// Filesystems rds-csi creates on a new volume.
pub const NEW_FS_TYPES: &[&str] = &["ext4", "xfs"];

/// Checks the filesystem a new volume is asked for (CreateVolume): ext4, xfs, or unset (ext4).
/// ext3 (which the Go driver accepted) is refused with its replacement; the node still mounts
/// the ext3 filesystems of the Go driver's existing volumes.
pub fn check_new_filesystem(caps: &[VolumeCapability]) -> Result<(), String> {
    for cap in caps {
        if let Some(AccessType::Mount(m)) = &cap.access_type {
            match m.fs_type.as_str() {
                "" | "ext4" | "xfs" => {}
                "ext3" | "ext2" => {
                    return Err(format!(
                        "fsType {} is not created by rds-csi: use ext4 (csi.storage.k8s.io/fstype: ext4 in the StorageClass). \
                         Existing {} volumes of the Go driver are still mounted",
                        m.fs_type, m.fs_type
                    ));
                }
                other => return Err(format!("fsType {other:?} is not supported: use ext4 or xfs")),
            }
        }
    }
    Ok(())
}

/// Whether a capability is a raw block one.
pub fn is_block(cap: &VolumeCapability) -> bool {
    matches!(cap.access_type, Some(AccessType::Block(_)))
}

#[cfg(test)]
mod tests {
    use csi::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};

    use super::*;

    fn cap(block: bool, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(if block {
                AccessType::Block(BlockVolume {})
            } else {
                AccessType::Mount(MountVolume::default())
            }),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn matrix() {
        for m in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ] {
            assert!(check(&cap(false, m)).is_ok() && check(&cap(true, m)).is_ok(), "{m:?}");
        }
        assert!(check(&cap(true, Mode::MultiNodeMultiWriter)).is_ok());
        assert!(
            check(&cap(false, Mode::MultiNodeMultiWriter))
                .unwrap_err()
                .contains("volumeMode: Block")
        );
        assert!(
            check(&cap(true, Mode::MultiNodeReaderOnly)).unwrap_err().contains("not supported")
        );
        assert!(check(&cap(false, Mode::MultiNodeSingleWriter)).is_err());
        assert!(check(&cap(false, Mode::Unknown)).is_err());
        assert!(check(&VolumeCapability::default()).unwrap_err().contains("access_type"));
        assert!(check_all(&[]).unwrap_err().contains("required"));
    }

    #[test]
    fn new_volumes_get_ext4_or_xfs() {
        let fs = |t: &str| {
            let mut c = cap(false, Mode::SingleNodeWriter);
            c.access_type =
                Some(AccessType::Mount(MountVolume { fs_type: t.into(), ..Default::default() }));
            c
        };
        for ok in ["", "ext4", "xfs"] {
            assert!(check_new_filesystem(&[fs(ok)]).is_ok(), "{ok}");
        }
        assert!(check_new_filesystem(&[fs("ext3")]).unwrap_err().contains("use ext4"));
        assert!(check_new_filesystem(&[fs("btrfs")]).unwrap_err().contains("use ext4 or xfs"));
        assert!(check_new_filesystem(&[cap(true, Mode::MultiNodeMultiWriter)]).is_ok());
    }
}
