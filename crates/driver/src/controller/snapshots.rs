//! Snapshots, restores and clones (docs/snapshots.md).
//!
//! A snapshot is an unexported file disk beside its source volume's file. Its comment records
//! the source, the creation time, the mechanism and the copy's progress, so a restarted
//! controller knows where every copy stands. Copies run in the background in resumable 1 GiB
//! chunks: CreateSnapshot answers `ready_to_use=false` until done (the snapshotter polls), and
//! CreateVolume from a snapshot or volume answers ABORTED until the data is in place (the
//! provisioner retries). No RPC blocks on a long copy.
//!
//! A running copy holds both its source and its destination: deleting either is
//! FAILED_PRECONDITION until it ends. A copy that fails is reported by the next call that
//! asks for it (CreateSnapshot or CreateVolume: UNAVAILABLE with the cause), which also
//! resumes it, so the failure reaches the CO and the VolumeSnapshot's or PVC's events, not
//! only a log line.

use std::sync::Arc;

use csi::v1::{
    CreateSnapshotRequest, CreateSnapshotResponse, DeleteSnapshotRequest, DeleteSnapshotResponse,
    GetSnapshotRequest, GetSnapshotResponse, ListSnapshotsRequest, ListSnapshotsResponse, Snapshot,
    list_snapshots_response,
};
use routeros::{
    ops::{Disk, NewDisk, NewSubvolume},
    types::{FilePath, Slot},
};

use super::{attachments::now_s, backend::Backend, copying::Job, subvolumes::subvolume_of};
use crate::{
    core::{
        ids,
        paging::{self, Listing},
        snapshots::{CopyRecord, Mechanism, parse_params, snapshot_id},
    },
    error::ServiceError,
};

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(msg.into())
}

fn file_of(disk: &Disk) -> Result<FilePath, ServiceError> {
    disk.file.as_deref().and_then(|f| FilePath::new(f).ok()).ok_or_else(|| {
        ServiceError::FailedPrecondition(format!("disk {} is not a file disk", disk.slot))
    })
}

/// The file of `slot` in the same directory as `beside`.
fn sibling(beside: &FilePath, slot: &Slot) -> Result<FilePath, ServiceError> {
    let dir = beside.parent().ok_or_else(|| invalid(format!("{beside} is not in a directory")))?;
    dir.join(&format!("{slot}.img")).map_err(|e| invalid(e.to_string()))
}

/// Where a block copy of `src` (file `src_file`) named `slot` goes: beside it, or for a volume
/// in its own subvolume in the pool's directory (the subvolume goes with the volume).
pub(super) fn copy_file_for(
    src: &Disk,
    src_file: &FilePath,
    slot: &Slot,
) -> Result<FilePath, ServiceError> {
    match subvolume_of(src) {
        Some((pool, _)) => pool.join(&format!("{slot}.img")).map_err(|e| invalid(e.to_string())),
        None => sibling(src_file, slot),
    }
}

impl Backend {
    /// The unexported disk item of snapshot `snap` over `file` (copied into, or a btrfs
    /// snapshot's image), with the record `comment`.
    pub(super) fn snapshot_disk(
        &self,
        snap: &Slot,
        file: &FilePath,
        size: u64,
        comment: String,
    ) -> NewDisk {
        NewDisk {
            slot: snap.clone(),
            file: file.clone(),
            size,
            nqn: ids::nqn(&self.cfg.nqn_prefix, snap).expect("snapshot ids make valid NQNs"),
            port: self.cfg.nvme_port,
            comment,
            copy_from: None,
            server_nqn_supported: false,
            export: false,
            allowed_hosts: Vec::new(),
        }
    }

    pub(super) fn snapshot_of(&self, disk: &Disk, record: Option<&CopyRecord>) -> Snapshot {
        Snapshot {
            size_bytes: disk.size as i64,
            snapshot_id: self.external(&disk.slot),
            source_volume_id: record.map(|r| self.external(&r.source)).unwrap_or_default(),
            creation_time: Some(prost_types::Timestamp {
                seconds: record.map_or(0, |r| r.created),
                nanos: 0,
            }),
            ready_to_use: record.is_none_or(CopyRecord::ready),
            group_snapshot_id: record
                .and_then(|r| r.group.as_deref())
                .map(|g| self.external(g))
                .unwrap_or_default(),
        }
    }

    /// CSI "CreateSnapshot": idempotent by name (the same source returns the same snapshot; a
    /// different source is ALREADY_EXISTS); `ready_to_use` only once the data is copied.
    pub async fn create_snapshot(
        self: &Arc<Self>,
        req: CreateSnapshotRequest,
    ) -> Result<CreateSnapshotResponse, ServiceError> {
        if req.name.is_empty() {
            return Err(invalid("name is required"));
        }
        let source = self
            .parse_volume_id(&req.source_volume_id)
            .map_err(|e| invalid(format!("source_volume_id: {e}")))?
            .ok_or_else(|| ServiceError::NotFound(ids::foreign_volume(&req.source_volume_id)))?;
        let requested = parse_params(&req.parameters).map_err(invalid)?;
        if requested == Some(Mechanism::CopyFrom) && !self.cfg.allow_copy_from {
            return Err(invalid(
                "mechanism copy-from is refused: what RouterOS's `/disk add copy-from=` does to a file's data is unverified \
                 (it may copy only the properties and leave an empty file). Use disk-copy, or start the controller with \
                 --allow-copy-from after checking it on your firmware (docs/snapshots.md)",
            ));
        }
        let snap = snapshot_id(&req.name);
        let _guard = self.locks.try_lock(snap.as_str(), "snapshot")?;
        let context = format!("creating snapshot {snap} of {source}");
        if let Some(disk) = self.rds.get_disk(&snap).await.map_err(ServiceError::rds(&context))? {
            let record = CopyRecord::from_comment(&disk.comment).filter(|r| r.snapshot);
            if let Some(r) = &record {
                if r.source != source.as_str() {
                    return Err(ServiceError::AlreadyExists(format!(
                        "snapshot {:?} ({snap}) already exists for volume {}, not {source}",
                        req.name, r.source
                    )));
                }
                if !r.ready() {
                    let job = Job {
                        src: source.clone(),
                        dst: snap.clone(),
                        total: disk.size,
                        record: r.clone(),
                    };
                    let done = self.ensure_copies(vec![job]).await?;
                    let mut snapshot = self.snapshot_of(&disk, Some(r));
                    snapshot.ready_to_use = done;
                    return Ok(CreateSnapshotResponse { snapshot: Some(snapshot) });
                }
            }
            return Ok(CreateSnapshotResponse {
                snapshot: Some(self.snapshot_of(&disk, record.as_ref())),
            });
        }
        let (src, src_file) = self.managed_disk(&source, "reading source volume").await?;
        let in_subvolume = subvolume_of(&src);
        // A volume in its own subvolume: a btrfs snapshot by default; a copy of it goes into
        // the pool's directory, not into the volume's subvolume (which goes with the volume).
        let mechanism = requested.unwrap_or(if in_subvolume.is_some() {
            Mechanism::Btrfs
        } else {
            Mechanism::DiskCopy
        });
        let file = match &in_subvolume {
            Some((pool, image)) if mechanism == Mechanism::Btrfs => pool
                .join(snap.as_str())
                .and_then(|d| d.join(image))
                .map_err(|e| invalid(e.to_string()))?,
            _ => copy_file_for(&src, &src_file, &snap)?,
        };
        let mut record = CopyRecord::started(true, source.as_str(), mechanism, now_s());
        if matches!(mechanism, Mechanism::FileCopy | Mechanism::CopyFrom)
            && self.may_be_written(&src).await?
        {
            return Err(ServiceError::FailedPrecondition(format!(
                "volume {source} may be written (it is exported to a node) and mechanism {} copies it over time, \
                 which can tear the snapshot: use mechanism disk-copy, which holds the volume's writes for the copy, \
                 or take the snapshot while the volume is unpublished (docs/snapshots.md)",
                mechanism.name()
            )));
        }
        let new_disk = |comment: String, copy_from: Option<Slot>| NewDisk {
            copy_from,
            ..self.snapshot_disk(&snap, &file, src.size, comment)
        };
        let ready = match mechanism {
            Mechanism::DiskCopy => {
                let disk = self
                    .rds
                    .create_disk(&new_disk(record.to_comment(), None))
                    .await
                    .map_err(ServiceError::rds(&context))?;
                let job = Job {
                    src: source.clone(),
                    dst: snap.clone(),
                    total: disk.size,
                    record: record.clone(),
                };
                self.ensure_copies(vec![job]).await?
            }
            Mechanism::FileCopy => {
                let version = self.system().await?;
                if version.version_number().is_none_or(|v| v < (7, 23)) {
                    return Err(invalid(format!(
                        "mechanism file-copy needs RouterOS 7.23 or newer; this RDS runs {}: use mechanism disk-copy",
                        version.version
                    )));
                }
                self.rds.copy_file(&src_file, &file).await.map_err(ServiceError::rds(&context))?;
                record.copying = None;
                self.rds
                    .create_disk(&new_disk(record.to_comment(), None))
                    .await
                    .map_err(ServiceError::rds(&context))?;
                true
            }
            Mechanism::CopyFrom => {
                record.copying = None;
                self.rds
                    .create_disk(&new_disk(record.to_comment(), Some(source.clone())))
                    .await
                    .map_err(ServiceError::rds(&context))?;
                true
            }
            // Copy-on-write and atomic: the snapshot is one instant of the subvolume (a write
            // in flight is in it or not, as after a power cut), with no write held.
            Mechanism::Btrfs => {
                let Some((pool, _)) = &in_subvolume else {
                    return Err(invalid(format!(
                        "mechanism btrfs needs a volume in its own btrfs subvolume (made with the StorageClass parameter \
                         layout: subvolume); {source} is a file in {}: use mechanism disk-copy",
                        src_file.parent().map(|d| d.absolute()).unwrap_or_default()
                    )));
                };
                let fs = self.btrfs_fs(pool).await?;
                let want = NewSubvolume {
                    fs,
                    name: snap.clone(),
                    parent: Some(source.clone()),
                    read_only: true,
                };
                self.rds.add_subvolume(&want).await.map_err(ServiceError::rds(&context))?;
                record.copying = None;
                self.rds
                    .create_disk(&new_disk(record.to_comment(), None))
                    .await
                    .map_err(ServiceError::rds(&context))?;
                true
            }
        };
        let disk = Disk { slot: snap.to_string(), size: src.size, ..Default::default() };
        let mut snapshot = self.snapshot_of(&disk, Some(&record));
        snapshot.ready_to_use = ready;
        Ok(CreateSnapshotResponse { snapshot: Some(snapshot) })
    }

    /// CSI "DeleteSnapshot": OK when the snapshot does not exist, whatever the id's form
    /// ("If a snapshot corresponding to the specified snapshot_id does not exist … the Plugin
    /// MUST reply 0 OK"); FAILED_PRECONDITION ("Snapshot in use") while a copy into it or
    /// from it (a restore) runs; never a file outside the allowed paths.
    pub async fn delete_snapshot(
        &self,
        req: DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, ServiceError> {
        let Some(snap) = self.parse_snapshot_id(&req.snapshot_id).map_err(invalid)? else {
            return Ok(DeleteSnapshotResponse {});
        };
        let _guard = self.locks.try_lock(snap.as_str(), "snapshot")?;
        if let Some(copy) = self.copies.involving(snap.as_str()) {
            return Err(ServiceError::FailedPrecondition(format!(
                "snapshot {snap} is in use by a running copy ({copy}); delete it once the copy finishes"
            )));
        }
        let context = format!("deleting snapshot {snap}");
        let Some(disk) = self.rds.get_disk(&snap).await.map_err(ServiceError::rds(&context))?
        else {
            return Ok(DeleteSnapshotResponse {});
        };
        let file = file_of(&disk)?;
        if !self.is_managed(&file) {
            return Err(ServiceError::FailedPrecondition(format!(
                "snapshot {snap} uses {}, outside the allowed base paths; refusing to delete it",
                file.absolute()
            )));
        }
        if let Some(record) = CopyRecord::from_comment(&disk.comment) {
            self.release_stale_hold(&record).await?;
            // The image of a btrfs snapshot is read-only: it goes with its subvolume.
            if record.mechanism == Mechanism::Btrfs.name() {
                self.rds.remove_subvolume(&snap).await.map_err(ServiceError::rds(&context))?;
            }
        }
        self.rds.delete_disk(&snap, &file).await.map_err(ServiceError::rds(&context))?;
        Ok(DeleteSnapshotResponse {})
    }

    /// Snapshots of this driver among `disks`: under the allowed paths, with a snapshot record.
    fn snapshots_of(&self, disks: &[Disk]) -> Vec<Snapshot> {
        disks
            .iter()
            .filter(|d| {
                d.file
                    .as_deref()
                    .and_then(|f| FilePath::new(f).ok())
                    .is_some_and(|f| self.is_managed(&f))
            })
            .map(|d| {
                self.snapshot_of(
                    d,
                    CopyRecord::from_comment(&d.comment).filter(|r| r.snapshot).as_ref(),
                )
            })
            .collect()
    }

    /// CSI "ListSnapshots": by id (an unknown id, whatever its form, lists nothing), by
    /// source, sorted by id and paginated (`core::paging`: a token this driver did not issue
    /// is ABORTED).
    pub async fn list_snapshots(
        &self,
        req: ListSnapshotsRequest,
    ) -> Result<ListSnapshotsResponse, ServiceError> {
        if req.max_entries < 0 {
            return Err(invalid("max_entries must not be negative"));
        }
        let after = paging::after(Listing::Snapshots, &req.starting_token)
            .map_err(ServiceError::Aborted)?;
        let disks: Vec<Disk> = if !req.snapshot_id.is_empty() {
            match self.parse_snapshot_id(&req.snapshot_id) {
                Ok(Some(id)) => self
                    .rds
                    .get_disk(&id)
                    .await
                    .map_err(ServiceError::rds("reading a snapshot"))?
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            }
        } else {
            self.rds.list_disks("snap-").await.map_err(ServiceError::rds("listing snapshots"))?
        };
        let snaps: Vec<Snapshot> = self
            .snapshots_of(&disks)
            .into_iter()
            .filter(|s| {
                req.source_volume_id.is_empty() || s.source_volume_id == req.source_volume_id
            })
            .collect();
        Ok(page_snapshots(snaps, after.as_deref(), req.max_entries))
    }

    /// CSI "GetSnapshot": the snapshot's current state (also while it is still being copied);
    /// NOT_FOUND when it does not exist, whatever the id's form. One round trip.
    pub async fn get_snapshot(
        &self,
        req: GetSnapshotRequest,
    ) -> Result<GetSnapshotResponse, ServiceError> {
        let missing =
            || ServiceError::NotFound(format!("snapshot {:?} does not exist", req.snapshot_id));
        let snap =
            self.parse_snapshot_id(&req.snapshot_id).map_err(invalid)?.ok_or_else(missing)?;
        let disk = self
            .rds
            .get_disk(&snap)
            .await
            .map_err(ServiceError::rds(format!("reading snapshot {snap}")))?
            .ok_or_else(missing)?;
        let snapshot = self.snapshots_of(&[disk]).into_iter().next().ok_or_else(missing)?;
        Ok(GetSnapshotResponse { snapshot: Some(snapshot) })
    }

    /// For CreateVolume from a snapshot or a volume: the source disk, checked. A source that
    /// does not exist, whatever its id's form, is NOT_FOUND (CSI: "Source does not exist").
    pub async fn content_source(
        &self,
        source: &csi::v1::volume_content_source::Type,
    ) -> Result<Disk, ServiceError> {
        use csi::v1::volume_content_source::Type;
        let (id, parsed, what) = match source {
            Type::Snapshot(s) => {
                (&s.snapshot_id, self.parse_snapshot_id(&s.snapshot_id), "snapshot")
            }
            Type::Volume(v) => (&v.volume_id, self.parse_volume_id(&v.volume_id), "volume"),
        };
        let missing = || ServiceError::NotFound(format!("source {what} {id:?} does not exist"));
        let slot = parsed
            .map_err(|e| invalid(format!("volume_content_source: {e}")))?
            .ok_or_else(missing)?;
        let disk = self
            .rds
            .get_disk(&slot)
            .await
            .map_err(ServiceError::rds(format!("reading source {what} {slot}")))?
            .ok_or_else(missing)?;
        let record = CopyRecord::from_comment(&disk.comment);
        let managed = file_of(&disk).is_ok_and(|f| self.is_managed(&f));
        if !managed || (what == "snapshot" && !record.as_ref().is_some_and(|r| r.snapshot)) {
            return Err(missing());
        }
        if let Some(r) = record
            && !r.ready()
        {
            return Err(ServiceError::Unavailable(format!(
                "source {what} {slot} is still being copied; the CO retries"
            )));
        }
        Ok(disk)
    }

    /// Fills a new (or retried) restored/cloned volume from its source; ABORTED while copying.
    pub async fn fill_from(
        self: &Arc<Self>,
        volume: &Disk,
        source: &Disk,
    ) -> Result<(), ServiceError> {
        let record = match CopyRecord::from_comment(&volume.comment).filter(|r| !r.snapshot) {
            Some(r) if r.ready() => return Ok(()),
            Some(r) => r,
            None => return Ok(()),
        };
        let src = Slot::new(&source.slot).map_err(|e| invalid(e.to_string()))?;
        let dst = Slot::new(&volume.slot).map_err(|e| invalid(e.to_string()))?;
        let job = Job { src, dst, total: source.size, record: record.clone() };
        if self.ensure_copies(vec![job]).await? {
            return Ok(());
        }
        Err(ServiceError::Aborted(format!(
            "volume {} is being filled from {} ({} of {} bytes copied); the CO retries",
            volume.slot,
            source.slot,
            record.copying.unwrap_or(0),
            source.size
        )))
    }

    /// The comment of a volume being filled from `source`.
    pub fn fill_record(source: &Disk) -> CopyRecord {
        CopyRecord::started(false, &source.slot, Mechanism::DiskCopy, now_s())
    }
}

/// One page of `snaps` sorted by id after `after` (ListSnapshots, of one backend or of all).
pub(super) fn page_snapshots(
    mut snaps: Vec<Snapshot>,
    after: Option<&str>,
    max_entries: i32,
) -> ListSnapshotsResponse {
    snaps.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
    let (page, next_token) = paging::page(
        Listing::Snapshots,
        snaps,
        |s| s.snapshot_id.as_str(),
        after,
        max_entries.max(0) as usize,
    );
    let entries =
        page.into_iter().map(|s| list_snapshots_response::Entry { snapshot: Some(s) }).collect();
    ListSnapshotsResponse { entries, next_token }
}
