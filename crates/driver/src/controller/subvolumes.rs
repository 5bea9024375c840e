//! Volumes in their own btrfs subvolume (StorageClass `layout: subvolume`, RouterOS 7.18+;
//! docs/snapshots.md "btrfs"). A volume `<slot>` lives at `<pool>/<slot>/<image>`: the
//! subvolume `<slot>` of the btrfs pool mounted at `<pool>` (the StorageClass's volumePath),
//! so a snapshot is a read-only btrfs snapshot of that subvolume (copy-on-write, atomic: one
//! instant without holding any write), and a restore or clone from it is a writable snapshot.
//! Where RouterOS places a subvolume is not documented: `<pool mount point>/<name>` is
//! INFERRED (the emulator does the same; docs/routeros.md).

use routeros::{
    ops::{Disk, NewSubvolume},
    types::{FilePath, Slot},
};

use super::backend::Backend;
use crate::{
    core::{ids, params::VolumeParams},
    error::ServiceError,
};

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(msg.into())
}

/// `(pool mount point, image file name)` when `disk`'s file is `<pool>/<slot>/<image>`: the
/// disk lives in its own subvolume.
pub fn subvolume_of(disk: &Disk) -> Option<(FilePath, String)> {
    let file = FilePath::new(disk.file.as_deref()?).ok()?;
    let dir = file.parent()?;
    let image = file.as_str().rsplit('/').next()?.to_string();
    (dir.as_str().rsplit('/').next()? == disk.slot).then_some(())?;
    Some((dir.parent()?, image))
}

impl Backend {
    /// The label of the btrfs filesystem mounted at `pool` (which must be a pool's mount
    /// point), for `/disk/btrfs/subvolume add fs=`.
    pub(super) async fn btrfs_fs(&self, pool: &FilePath) -> Result<String, ServiceError> {
        let system = self.system().await?;
        if system.version_number().is_none_or(|v| v < (7, 18)) {
            return Err(invalid(format!(
                "layout subvolume needs RouterOS 7.18 or newer (btrfs subvolumes); this RDS runs {}: use layout file",
                system.version
            )));
        }
        let found = self
            .rds
            .pool(pool.as_str())
            .await
            .map_err(ServiceError::rds(format!("reading the pool at {}", pool.absolute())))?;
        match found {
            Some(p) if p.fs.as_deref() == Some("btrfs") => {
                Ok(p.fs_label.unwrap_or_else(|| format!("{}-fs", p.slot)))
            }
            Some(p) => Err(invalid(format!(
                "layout subvolume needs volumePath to be the mount point of a btrfs pool; {} is on {}",
                pool.absolute(),
                p.fs.unwrap_or_else(|| "an unknown filesystem".into())
            ))),
            None => Err(invalid(format!(
                "layout subvolume needs volumePath to be the mount point of a btrfs pool; no pool is mounted at {}",
                pool.absolute()
            ))),
        }
    }

    /// Where a new volume's file goes, making its subvolume with `layout: subvolume`, and
    /// whether it is then filled by a copy from `source`. A source in a subvolume of the same
    /// pool (a btrfs snapshot, or a volume of this layout) becomes a writable btrfs snapshot:
    /// nothing to copy.
    pub(super) async fn placement(
        &self,
        p: &VolumeParams,
        slot: &Slot,
        source: Option<&Disk>,
    ) -> Result<(FilePath, bool), ServiceError> {
        if !p.subvolume {
            return Ok((
                ids::backing_file(&p.volume_path, slot).map_err(invalid)?,
                source.is_some(),
            ));
        }
        let fs = self.btrfs_fs(&p.volume_path).await?;
        let context = format!("making the subvolume of {slot}");
        let snapshot_of = source.and_then(|s| {
            subvolume_of(s).filter(|(pool, _)| *pool == p.volume_path).map(|(_, image)| (s, image))
        });
        let dir = p.volume_path.join(slot.as_str()).map_err(|e| invalid(e.to_string()))?;
        match snapshot_of {
            Some((src, image)) => {
                let parent = Slot::new(&src.slot).map_err(|e| invalid(e.to_string()))?;
                let want =
                    NewSubvolume { fs, name: slot.clone(), parent: Some(parent), read_only: false };
                self.rds.add_subvolume(&want).await.map_err(ServiceError::rds(&context))?;
                Ok((dir.join(&image).map_err(|e| invalid(e.to_string()))?, false))
            }
            None => {
                let want = NewSubvolume { fs, name: slot.clone(), parent: None, read_only: false };
                self.rds.add_subvolume(&want).await.map_err(ServiceError::rds(&context))?;
                Ok((
                    dir.join(&format!("{slot}.img")).map_err(|e| invalid(e.to_string()))?,
                    source.is_some(),
                ))
            }
        }
    }

    /// Removes the subvolume a deleted disk lived in (nothing for a disk of the file layout).
    pub(super) async fn remove_own_subvolume(&self, disk: &Disk) -> Result<(), ServiceError> {
        if subvolume_of(disk).is_none() {
            return Ok(());
        }
        let slot = Slot::new(&disk.slot).map_err(|e| invalid(e.to_string()))?;
        self.rds
            .remove_subvolume(&slot)
            .await
            .map_err(ServiceError::rds(format!("removing the subvolume of {slot}")))
    }
}
