//! The controller's volume RPCs against the RDS. Every RPC looks at the RDS before acting
//! (idempotency by looking first), holds a per-volume guard (ABORTED for a concurrent call on
//! the same volume), and maps failures through `ServiceError` (docs/errors.md).

use csi::v1::{
    CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest, DeleteVolumeResponse,
    GetCapacityRequest, GetCapacityResponse, ListVolumesRequest, ListVolumesResponse,
    ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, Volume, VolumeCondition,
    list_volumes_response, validate_volume_capabilities_response::Confirmed,
};
use routeros::{
    ops::{Disk, NewDisk},
    types::{FilePath, Slot},
};

use super::backend::Backend;
use crate::{
    core::{
        access, capacity,
        fencing::FENCED_HOST_NQN,
        ids, mutable,
        paging::{self, Listing},
        params,
    },
    error::ServiceError,
};

use crate::core::{context::key, snapshots::HOLD_MARK};

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(msg.into())
}

impl Backend {
    /// CSI "CreateVolume": idempotent by name; an existing volume of a compatible size is
    /// returned, an incompatible one is ALREADY_EXISTS. One round trip for a new volume of
    /// the file layout (the add with its confirming read); a retry costs a second (the look
    /// after RouterOS refuses the taken slot).
    pub async fn create_volume(
        self: &std::sync::Arc<Self>,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, ServiceError> {
        if req.name.is_empty() {
            return Err(invalid("name is required"));
        }
        access::check_all(&req.volume_capabilities).map_err(invalid)?;
        access::check_new_filesystem(&req.volume_capabilities).map_err(invalid)?;
        let p = params::parse(&req.parameters, &self.cfg.volume_path, &self.cfg.allowed_base_paths)
            .map_err(invalid)?;
        let changeable = mutable::parse(&req.mutable_parameters).map_err(invalid)?;
        let compress = changeable.compress.or(p.compress);
        let (required, limit) =
            req.capacity_range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
        let (slot, derived) = ids::slot_for_name(&req.name);
        let _guard = self.locks.try_lock(slot.as_str(), "volume")?;
        let source = match &req.volume_content_source {
            Some(csi::v1::VolumeContentSource { r#type: Some(t) }) => {
                Some(self.content_source(t).await?)
            }
            Some(_) => return Err(invalid("volume_content_source needs a snapshot or a volume")),
            None => None,
        };
        // A restored or cloned volume is at least as big as its source.
        let floor = source.as_ref().map_or(0, |s| s.size as i64);
        let size = capacity::provision_size(
            required.max(floor),
            limit,
            self.cfg.min_size,
            self.cfg.max_size,
        )?;
        let context = format!("creating volume {slot} ({})", req.name);
        let respond = |disk: &Disk| {
            let mut volume = self.volume(disk, Some(&p));
            volume.content_source = req.volume_content_source.clone();
            if let Some(src) = &source {
                // The node never formats a filled volume that looks blank (a failed copy).
                let kind = if src.slot.starts_with("snap-") { "snapshot" } else { "volume" };
                volume
                    .volume_context
                    .insert(key::CONTENT_SOURCE.into(), format!("{kind}:{}", src.slot));
            }
            CreateVolumeResponse { volume: Some(volume) }
        };
        let conflict = |disk: &Disk| {
            ServiceError::AlreadyExists(format!(
                "volume {slot} for {:?} already exists with {} bytes, which does not fit the requested range \
                 (required {required}, limit {limit}); delete it or request a compatible size",
                req.name, disk.size
            ))
        };
        // The subvolume layout makes its subvolume before the disk, so it looks first: a
        // retry never makes anything for a volume that exists.
        if p.subvolume
            && let Some(disk) =
                self.rds.get_disk(&slot).await.map_err(ServiceError::rds(&context))?
        {
            if !capacity::compatible(disk.size, required, limit) {
                return Err(conflict(&disk));
            }
            self.apply_compress(&disk, compress).await?;
            if let Some(src) = &source {
                self.fill_from(&disk, src).await?;
            }
            return Ok(respond(&disk));
        }
        let nqn = ids::nqn(&self.cfg.nqn_prefix, &slot).map_err(invalid)?;
        if compress == Some(true) {
            self.needs_compress().await?;
        }
        let (file, fill) = self.placement(&p, &slot, source.as_ref()).await?;
        let pvc = p.pvc.as_ref().map(|(ns, n)| (ns.as_str(), n.as_str()));
        let want = NewDisk {
            slot: slot.clone(),
            file,
            size,
            nqn,
            port: p.nvme_port.unwrap_or(self.cfg.nvme_port),
            comment: mutable::record(
                &match source.as_ref().filter(|_| fill) {
                    Some(src) => crate::core::snapshots::CopyRecord {
                        pvc: pvc.map(|(ns, n)| format!("{ns}/{n}")),
                        ..Backend::fill_record(src)
                    }
                    .to_comment(),
                    None => ids::comment(&req.name, derived, pvc, super::attachments::now_s()),
                },
                &changeable,
            ),
            copy_from: None,
            server_nqn_supported: self.server_nqn_supported().await?,
            export: true,
            // With storage fencing no host may connect before the first publish (not even
            // while a restore or clone fills it): an empty list would allow any host.
            allowed_hosts: if self.fencing.storage_fencing {
                vec![routeros::types::Nqn::new(FENCED_HOST_NQN).expect("a valid NQN")]
            } else {
                Vec::new()
            },
        };
        let disk = if p.subvolume {
            self.rds.create_disk(&want).await.map_err(ServiceError::rds(&context))?
        } else {
            // The file layout sends the add first: one round trip for a new volume; a retry
            // learns from RouterOS's refusal that the slot is taken, then looks and compares.
            let (disk, existed) =
                self.rds.create_or_find_disk(&want).await.map_err(ServiceError::rds(&context))?;
            if existed && !capacity::compatible(disk.size, required, limit) {
                return Err(conflict(&disk));
            }
            disk
        };
        self.apply_compress(&disk, compress).await?;
        if let Some(src) = source.as_ref().filter(|_| fill) {
            self.fill_from(&disk, src).await?;
        }
        Ok(respond(&disk))
    }

    /// CSI "DeleteVolume": success when the volume is already gone (or the id is not one this
    /// driver makes); FAILED_PRECONDITION ("Volume in use") while any node holds it or a copy
    /// reads or writes it, naming them. Removes the disk and its file, never a file outside
    /// the allowed base paths. With no disk left, a leftover `<id>.img` under the allowed base
    /// paths (a crash between the two removals) is removed too. One round trip; a disk of the
    /// subvolume layout, outside the plain `<base>/<id>.img`, or whose copy holds its source's
    /// writes takes the careful path (look, then act): 3 or more.
    pub async fn delete_volume(
        &self,
        req: DeleteVolumeRequest,
    ) -> Result<DeleteVolumeResponse, ServiceError> {
        let Some(slot) = self.parse_volume_id(&req.volume_id).map_err(invalid)? else {
            tracing::info!(volume_id = %req.volume_id, "not a volume id of this driver: nothing to delete");
            return Ok(DeleteVolumeResponse {});
        };
        let _guard = self.locks.try_lock(slot.as_str(), "volume")?;
        self.refuse_if_in_use(&slot).await?;
        let context = format!("deleting volume {slot}");
        // One round trip in the plain case: RouterOS removes the disk and its file, or a
        // leftover file when there is no disk, checking inside the same line that the file
        // is `<allowed base>/<id>.img` and that no copy holds its source's writes. Any other
        // disk is left untouched and looked at below.
        if self
            .rds
            .delete_volume_disk(&slot, &self.cfg.allowed_base_paths, HOLD_MARK)
            .await
            .map_err(ServiceError::rds(&context))?
        {
            return Ok(DeleteVolumeResponse {});
        }
        let Some(disk) = self.rds.get_disk(&slot).await.map_err(ServiceError::rds(&context))?
        else {
            self.rds
                .remove_leftover(&self.cfg.allowed_base_paths, &format!("{slot}.img"))
                .await
                .map_err(ServiceError::rds(format!("{context}: removing a leftover {slot}.img")))?;
            return Ok(DeleteVolumeResponse {});
        };
        let file = disk.file.as_deref().and_then(|f| FilePath::new(f).ok()).ok_or_else(|| {
            ServiceError::FailedPrecondition(format!(
                "disk {slot} is not a file disk; rds-csi only deletes the file disks it manages"
            ))
        })?;
        if !self.is_managed(&file) {
            return Err(ServiceError::FailedPrecondition(format!(
                "disk {slot} uses {}, outside the allowed base paths; refusing to delete it (remove it by hand, or add its \
                 directory with --allowed-base-path)",
                file.absolute()
            )));
        }
        // A clone whose copy was interrupted while holding its source's writes: the source
        // gets its export back before the record of the hold goes.
        if let Some(record) = crate::core::snapshots::CopyRecord::from_comment(&disk.comment) {
            self.release_stale_hold(&record).await?;
        }
        self.rds.delete_disk(&slot, &file).await.map_err(ServiceError::rds(&context))?;
        self.remove_own_subvolume(&disk).await?;
        Ok(DeleteVolumeResponse {})
    }

    /// FAILED_PRECONDITION when a node holds `slot` (the attachment record or this process's
    /// grants) or a copy running here reads or writes it. An unreadable record is UNAVAILABLE:
    /// never delete on a guess.
    async fn refuse_if_in_use(&self, slot: &Slot) -> Result<(), ServiceError> {
        let vid = &self.external(slot.as_str());
        let rec = self.fencing.cluster.recorded(vid).await.map_err(|e| {
            ServiceError::Unavailable(format!(
                "cannot tell whether {vid} is attached ({e}); not deleting it, retry shortly"
            ))
        })?;
        let nodes = self.fencing.published_nodes(vid, &rec);
        if !nodes.is_empty() {
            return Err(ServiceError::FailedPrecondition(format!(
                "volume {vid} is in use: attached to node(s) {}; it is deleted once the pods using it stop and it is detached",
                nodes.join(", ")
            )));
        }
        if let Some(copy) = self.copies.involving(slot.as_str()) {
            return Err(ServiceError::FailedPrecondition(format!(
                "volume {vid} is in use by a running copy ({copy}); delete it once the copy finishes"
            )));
        }
        Ok(())
    }

    /// Volumes of this driver: file disks with a `pvc-` slot under an allowed base path.
    async fn managed_volumes(&self) -> Result<Vec<Disk>, ServiceError> {
        let mut disks: Vec<Disk> = self
            .rds
            .list_disks("pvc-")
            .await
            .map_err(ServiceError::rds("listing volumes"))?
            .into_iter()
            .filter(|d| {
                d.file
                    .as_deref()
                    .and_then(|f| FilePath::new(f).ok())
                    .is_some_and(|f| self.is_managed(&f))
            })
            .collect();
        disks.sort_by(|a, b| a.slot.cmp(&b.slot));
        Ok(disks)
    }

    /// CSI "ListVolumes": sorted by id, paginated (`core::paging`: a `starting_token` this
    /// driver did not issue is ABORTED); each entry's `published_node_ids` come from the
    /// attachment record (LIST_VOLUMES_PUBLISHED_NODES).
    pub async fn list_volumes(
        &self,
        req: ListVolumesRequest,
    ) -> Result<ListVolumesResponse, ServiceError> {
        if req.max_entries < 0 {
            return Err(invalid("max_entries must not be negative"));
        }
        let after =
            paging::after(Listing::Volumes, &req.starting_token).map_err(ServiceError::Aborted)?;
        let disks = self.managed_volumes().await?;
        let (page, next_token) = paging::page(
            Listing::Volumes,
            disks,
            |d| d.slot.as_str(),
            after.as_deref(),
            req.max_entries as usize,
        );
        let mut published = self.fencing.all_published();
        let entries = page
            .iter()
            .map(|d| list_volumes_response::Entry {
                volume: Some(self.volume(d, None)),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: published
                        .remove(&self.external(&d.slot))
                        .unwrap_or_default(),
                    volume_condition: None,
                }),
            })
            .collect();
        Ok(ListVolumesResponse { entries, next_token })
    }

    /// CSI "ControllerGetVolume" with a VolumeCondition (abnormal when the export or the
    /// backing file is missing; a missing disk is NOT_FOUND) and the nodes it is published to.
    pub async fn get_volume(
        &self,
        volume_id: &str,
    ) -> Result<(Volume, VolumeCondition, Vec<String>), ServiceError> {
        let slot = self
            .parse_volume_id(volume_id)
            .map_err(invalid)?
            .ok_or_else(|| ServiceError::NotFound(ids::foreign_volume(volume_id)))?;
        let context = format!("reading volume {slot}");
        let (disk, file) = self.managed_disk(&slot, "reading volume").await?;
        let rec = self.fencing.cluster.recorded(volume_id).await.map_err(|e| {
            ServiceError::Unavailable(format!("cannot read the attachments of {volume_id}: {e}"))
        })?;
        let published = self.fencing.published_nodes(volume_id, &rec);
        let mut problems = Vec::new();
        if !disk.export {
            problems.push("the disk is not exported over NVMe/TCP".to_string());
        }
        // A managed file lies under a base path, so it has a directory.
        let dir = file.parent().expect("a file under an allowed base path");
        let listed = self.rds.list_files(&dir).await.map_err(ServiceError::rds(&context))?;
        if !listed.iter().any(|f| f.name == file.as_str()) {
            problems.push(format!("its backing file {} is missing", file.absolute()));
        }
        let condition = VolumeCondition {
            abnormal: !problems.is_empty(),
            message: if problems.is_empty() {
                "volume is healthy".into()
            } else {
                format!("volume {slot}: {}", problems.join("; "))
            },
        };
        Ok((self.volume(&disk, None), condition, published))
    }

    /// CSI "GetCapacity": free space of the pool holding the volume path; 0 for capabilities
    /// this driver cannot provision.
    pub async fn get_capacity(
        &self,
        req: GetCapacityRequest,
    ) -> Result<GetCapacityResponse, ServiceError> {
        let p = params::parse(&req.parameters, &self.cfg.volume_path, &self.cfg.allowed_base_paths)
            .map_err(invalid)?;
        let min = Some(self.cfg.min_size as i64);
        if access::check_all(&req.volume_capabilities).is_err()
            && !req.volume_capabilities.is_empty()
        {
            return Ok(GetCapacityResponse {
                available_capacity: 0,
                maximum_volume_size: Some(0),
                minimum_volume_size: min,
            });
        }
        let free = self.pool_free(&p).await?;
        let largest = (free / capacity::BLOCK * capacity::BLOCK).min(self.cfg.max_size);
        Ok(GetCapacityResponse {
            available_capacity: free as i64,
            maximum_volume_size: Some(if largest < self.cfg.min_size { 0 } else { largest as i64 }),
            minimum_volume_size: min,
        })
    }

    /// Free bytes of the pool holding `p`'s volume path (GetCapacity, and placement over
    /// several backends: fleet.rs). One round trip.
    pub(super) async fn pool_free(&self, p: &params::VolumeParams) -> Result<u64, ServiceError> {
        let pool = self
            .rds
            .pool(p.volume_path.mount_point())
            .await
            .map_err(ServiceError::rds("reading pool capacity"))?;
        Ok(pool.map_or(0, |p| p.free))
    }

    /// CSI "ValidateVolumeCapabilities": NOT_FOUND for an unknown volume; confirmed only when
    /// every capability is supported, otherwise a message saying why.
    pub async fn validate(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, ServiceError> {
        let slot = self.parse_volume_id(&req.volume_id).map_err(invalid)?;
        if req.volume_capabilities.is_empty() {
            return Err(invalid("volume_capabilities are required"));
        }
        let slot =
            slot.ok_or_else(|| ServiceError::NotFound(ids::foreign_volume(&req.volume_id)))?;
        self.managed_disk(&slot, "reading volume").await?;
        Ok(match access::check_all(&req.volume_capabilities) {
            Ok(()) => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            },
            Err(why) => ValidateVolumeCapabilitiesResponse { confirmed: None, message: why },
        })
    }

    /// CSI "ControllerExpandVolume": grows only; the exact size is re-read from the RDS;
    /// filesystem volumes need the node to grow the filesystem.
    pub async fn expand(
        &self,
        volume_id: &str,
        required: i64,
        limit: i64,
        block: bool,
    ) -> Result<(u64, bool), ServiceError> {
        let slot = self.parse_volume_id(volume_id).map_err(invalid)?;
        if required <= 0 {
            return Err(invalid("capacity_range.required_bytes is required to expand a volume"));
        }
        let slot = slot.ok_or_else(|| ServiceError::NotFound(ids::foreign_volume(volume_id)))?;
        let size = capacity::provision_size(required, limit, self.cfg.min_size, self.cfg.max_size)?;
        let _guard = self.locks.try_lock(slot.as_str(), "volume")?;
        let context = format!("expanding volume {slot}");
        let (disk, _) = self.managed_disk(&slot, "expanding volume").await?;
        let node_expansion = !block;
        if disk.size >= size {
            return Ok((disk.size, node_expansion));
        }
        let grown =
            self.rds.set_file_size(&slot, size).await.map_err(ServiceError::rds(&context))?;
        Ok((grown.size, node_expansion))
    }
}
