//! Group snapshots (CSI GroupController, docs/snapshots.md "Group snapshots"): every volume of
//! the group copied at one instant. The members are normal snapshots (each restorable alone)
//! whose comment carries `group=<id>`; their copies run as one job set, holding the writes of
//! every member that may be written for the whole copy (copying.rs), so they share the instant.

use std::{collections::BTreeSet, sync::Arc};

use csi::v1::{
    CreateVolumeGroupSnapshotRequest, CreateVolumeGroupSnapshotResponse,
    DeleteVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotResponse,
    GetVolumeGroupSnapshotRequest, GetVolumeGroupSnapshotResponse, VolumeGroupSnapshot,
};
use routeros::{ops::Disk, types::Slot};

use super::{attachments::now_s, backend::Backend, copying::Job, snapshots::copy_file_for};
use crate::{
    core::{
        ids,
        snapshots::{CopyRecord, Mechanism, group_id, is_group_id, member_id, parse_params},
    },
    error::ServiceError,
};

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(msg.into())
}

/// A member of a group: its disk and record.
struct Member {
    disk: Disk,
    record: CopyRecord,
}

impl Backend {
    /// The members of group `gid` on the RDS (one round trip), sorted by snapshot id.
    async fn members(&self, gid: &str) -> Result<Vec<Member>, ServiceError> {
        let disks = self
            .rds
            .list_disks("snap-")
            .await
            .map_err(ServiceError::rds(format!("listing the members of {gid}")))?;
        let mut members: Vec<Member> = disks
            .into_iter()
            .filter_map(|disk| {
                let record = CopyRecord::from_comment(&disk.comment)?;
                (record.snapshot && record.group.as_deref() == Some(gid))
                    .then_some(Member { disk, record })
            })
            .collect();
        members.sort_by(|a, b| a.disk.slot.cmp(&b.disk.slot));
        Ok(members)
    }

    fn group_of(&self, gid: &str, members: &[Member], ready: bool) -> VolumeGroupSnapshot {
        let snapshots: Vec<_> = members
            .iter()
            .map(|m| {
                let mut s = self.snapshot_of(&m.disk, Some(&m.record));
                s.ready_to_use = ready;
                s
            })
            .collect();
        let created = members.iter().map(|m| m.record.created).min().unwrap_or(0);
        VolumeGroupSnapshot {
            group_snapshot_id: self.external(gid),
            snapshots,
            creation_time: Some(prost_types::Timestamp { seconds: created, nanos: 0 }),
            ready_to_use: ready,
        }
    }

    /// CSI "CreateVolumeGroupSnapshot": idempotent by name (the same volumes answer the same
    /// group; other volumes are ALREADY_EXISTS); a volume that does not exist is NOT_FOUND;
    /// `ready_to_use` once every member holds its volume's bytes of the one instant.
    pub async fn create_group_snapshot(
        self: &Arc<Self>,
        req: CreateVolumeGroupSnapshotRequest,
    ) -> Result<CreateVolumeGroupSnapshotResponse, ServiceError> {
        if req.name.is_empty() {
            return Err(invalid("name is required"));
        }
        if req.source_volume_ids.is_empty() {
            return Err(invalid("source_volume_ids is required: name the volumes of the group"));
        }
        if parse_params(&req.parameters).map_err(invalid)?.is_some_and(|m| m != Mechanism::DiskCopy)
        {
            return Err(invalid(
                "group snapshots use mechanism disk-copy (the copy that holds the volumes' writes at one instant); remove the mechanism parameter",
            ));
        }
        let mut sources = BTreeSet::new();
        for id in &req.source_volume_ids {
            let slot = self
                .parse_volume_id(id)
                .map_err(|e| invalid(format!("source_volume_ids: {e}")))?
                .ok_or_else(|| ServiceError::NotFound(ids::foreign_volume(id)))?;
            sources.insert(slot);
        }
        let gid = group_id(&req.name);
        let _guard = self.locks.try_lock(&gid, "group snapshot")?;
        let members = self.members(&gid).await?;
        let had: BTreeSet<String> = members.iter().map(|m| m.record.source.clone()).collect();
        let want: BTreeSet<String> = sources.iter().map(Slot::to_string).collect();
        if !had.is_subset(&want) {
            return Err(ServiceError::AlreadyExists(format!(
                "group snapshot {:?} ({gid}) already exists of volumes {}, not {}",
                req.name,
                had.iter().cloned().collect::<Vec<_>>().join(", "),
                want.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if had == want && members.iter().all(|m| m.record.ready()) {
            return Ok(CreateVolumeGroupSnapshotResponse {
                group_snapshot: Some(self.group_of(&gid, &members, true)),
            });
        }
        // New, or unfinished: every member is (re)copied in one job set, so that all hold the
        // same instant, also after a restart that interrupted the set half-way.
        let mut members = members;
        let context = format!("creating group snapshot {gid}");
        // Every source is looked at before any member is made: a missing one leaves nothing.
        let mut new = Vec::new();
        for src in &sources {
            if !had.contains(src.as_str()) {
                new.push((src, self.managed_disk(src, "reading source volume").await?));
            }
        }
        for (src, (disk, file)) in new {
            let snap = member_id(&req.name, src.as_str());
            let record = CopyRecord {
                group: Some(gid.clone()),
                ..CopyRecord::started(true, src.as_str(), Mechanism::DiskCopy, now_s())
            };
            let file = copy_file_for(&disk, &file, &snap)?;
            let created = self
                .rds
                .create_disk(&self.snapshot_disk(&snap, &file, disk.size, record.to_comment()))
                .await
                .map_err(ServiceError::rds(&context))?;
            members.push(Member { disk: created, record });
        }
        members.sort_by(|a, b| a.disk.slot.cmp(&b.disk.slot));
        let running = members.iter().any(|m| self.copies.is_running(&m.disk.slot));
        let jobs = members
            .iter()
            .map(|m| {
                let mut record = m.record.clone();
                if !running && record.paused.is_none() {
                    record.copying = Some(0);
                }
                Ok(Job {
                    src: Slot::new(&m.record.source).map_err(|e| invalid(e.to_string()))?,
                    dst: Slot::new(&m.disk.slot).map_err(|e| invalid(e.to_string()))?,
                    total: m.disk.size,
                    record,
                })
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        let ready = self.ensure_copies(jobs).await?;
        Ok(CreateVolumeGroupSnapshotResponse {
            group_snapshot: Some(self.group_of(&gid, &members, ready)),
        })
    }

    /// CSI "GetVolumeGroupSnapshot": the group's current state; NOT_FOUND when no member
    /// exists, whatever the id's form.
    pub async fn get_group_snapshot(
        &self,
        req: GetVolumeGroupSnapshotRequest,
    ) -> Result<GetVolumeGroupSnapshotResponse, ServiceError> {
        if req.group_snapshot_id.is_empty() {
            return Err(invalid("group_snapshot_id is required"));
        }
        let missing = || {
            ServiceError::NotFound(format!(
                "group snapshot {:?} does not exist",
                req.group_snapshot_id
            ))
        };
        let Some(gid) = self.local(&req.group_snapshot_id).filter(|g| is_group_id(g)) else {
            return Err(missing());
        };
        let members = self.members(gid).await?;
        if members.is_empty() {
            return Err(missing());
        }
        let ready = members.iter().all(|m| m.record.ready());
        Ok(GetVolumeGroupSnapshotResponse {
            group_snapshot: Some(self.group_of(gid, &members, ready)),
        })
    }

    /// CSI "DeleteVolumeGroupSnapshot": deletes every member; OK when the group does not
    /// exist, whatever the id's form; FAILED_PRECONDITION while a member's copy (or a restore
    /// from it) runs.
    pub async fn delete_group_snapshot(
        &self,
        req: DeleteVolumeGroupSnapshotRequest,
    ) -> Result<DeleteVolumeGroupSnapshotResponse, ServiceError> {
        if req.group_snapshot_id.is_empty() {
            return Err(invalid("group_snapshot_id is required"));
        }
        let Some(gid) = self.local(&req.group_snapshot_id).filter(|g| is_group_id(g)) else {
            return Ok(DeleteVolumeGroupSnapshotResponse {});
        };
        let _guard = self.locks.try_lock(gid, "group snapshot")?;
        for m in self.members(gid).await? {
            self.delete_snapshot(csi::v1::DeleteSnapshotRequest {
                snapshot_id: self.external(&m.disk.slot),
                secrets: Default::default(),
            })
            .await?;
        }
        Ok(DeleteVolumeGroupSnapshotResponse {})
    }
}
