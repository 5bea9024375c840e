//! CSI Controller and GroupController services. With an RDS connection they serve volumes
//! (create, delete, list, get with condition, capacity, validate, expand, modify), publishing
//! with fencing, snapshots, restores, clones and group snapshots. CSI requires that a CO only
//! calls the optional RPCs the plugin advertises, so the capability lists are exactly what
//! works.

pub mod attachments;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod copies;
pub mod copying;
pub mod fleet;
pub mod groups;
pub mod kube_cluster;
pub mod leader;
pub mod modify;
pub mod outcomes;
pub mod publish;
pub mod reconcile;
pub mod snapshots;
pub mod subvolumes;
pub mod sweep;
pub mod volumes;

use std::sync::Arc;

use csi::v1::{
    controller_server::Controller,
    controller_service_capability::{self, rpc::Type as Cap},
    group_controller_server::GroupController,
    *,
};
use tonic::{Request, Response, Status};

use crate::{
    core::{access, context::key, ids, snapshots as snapshots_core},
    error::ServiceError,
    rpc::RpcRunner,
};
pub use backend::Backend;
pub use fleet::Fleet;
use outcomes::reason;

#[derive(Clone)]
pub struct ControllerService {
    pub rpc: RpcRunner,
    /// The RDS side, one backend per RDS; `None` when the controller runs without an RDS
    /// connection.
    pub fleet: Option<Arc<Fleet>>,
}

impl std::fmt::Debug for ControllerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerService").field("fleet", &self.fleet.is_some()).finish()
    }
}

impl ControllerService {
    /// Capabilities that really work in this build (none without an RDS connection).
    pub fn capabilities(&self) -> Vec<ControllerServiceCapability> {
        if self.fleet.is_none() {
            return Vec::new();
        }
        [
            Cap::CreateDeleteVolume,
            Cap::PublishUnpublishVolume,
            Cap::ListVolumes,
            Cap::GetCapacity,
            Cap::ExpandVolume,
            Cap::GetVolume,
            Cap::VolumeCondition,
            Cap::SingleNodeMultiWriter,
            Cap::CreateDeleteSnapshot,
            Cap::ListSnapshots,
            Cap::CloneVolume,
            Cap::PublishReadonly,
            Cap::ListVolumesPublishedNodes,
            Cap::GetSnapshot,
            Cap::ModifyVolume,
        ]
        .into_iter()
        .map(|t| ControllerServiceCapability {
            r#type: Some(controller_service_capability::Type::Rpc(
                controller_service_capability::Rpc { r#type: t as i32 },
            )),
        })
        .collect()
    }

    fn fleet(&self) -> Result<&Arc<Fleet>, ServiceError> {
        self.fleet.as_ref().ok_or_else(|| {
            ServiceError::Unavailable(
                "this controller has no RDS connection: start it with --rds-address (SSH), --rds-transport rest or --backends-file".into(),
            )
        })
    }

    /// The backend an id names (docs/topology.md).
    fn backend(&self, id: &str) -> Result<&Arc<Backend>, ServiceError> {
        self.fleet()?.route(id)
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn controller_get_capabilities(
        &self,
        request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Answer<ControllerGetCapabilitiesResponse> {
        self.rpc
            .run("ControllerGetCapabilities", request, |_| async {
                Ok(ControllerGetCapabilitiesResponse { capabilities: self.capabilities() })
            })
            .await
    }

    async fn create_volume(&self, r: Request<CreateVolumeRequest>) -> Answer<CreateVolumeResponse> {
        self.rpc
            .run("CreateVolume", r, |req| async move {
                let fleet = self.fleet()?;
                // No PV yet: the PVC csi-provisioner's `--extra-create-metadata` names.
                let claim = attachments::claim(&Default::default(), &req.parameters);
                let doing = format!("provisioning volume {:?} on the RDS", req.name);
                let (b, out) = match fleet.place(&req).await {
                    Ok(b) => (b, b.create_volume(req).await),
                    Err(e) => (fleet.first(), Err(e)),
                };
                let reasons = (reason::PROVISIONED, reason::PROVISIONING_FAILED);
                b.outcome(&claim, &out, reasons, &doing, |r| {
                    let v = r.volume.clone().unwrap_or_default();
                    let ctx = &v.volume_context;
                    format!(
                        "volume {} ({} bytes) on the RDS: file {}, exported over NVMe/TCP as {}",
                        v.volume_id,
                        v.capacity_bytes,
                        ctx.get(key::VOLUME_PATH).map_or("-", String::as_str),
                        ctx.get(key::NQN).map_or("-", String::as_str)
                    )
                })
                .await;
                out
            })
            .await
    }

    async fn delete_volume(&self, r: Request<DeleteVolumeRequest>) -> Answer<DeleteVolumeResponse> {
        self.rpc
            .run("DeleteVolume", r, |req| async move {
                match self.fleet()?.route_delete(&req.volume_id, ids::is_managed_volume_id)? {
                    Some(b) => b.delete_volume(req).await,
                    None => Ok(DeleteVolumeResponse {}),
                }
            })
            .await
    }

    async fn controller_publish_volume(
        &self,
        r: Request<ControllerPublishVolumeRequest>,
    ) -> Answer<ControllerPublishVolumeResponse> {
        self.rpc
            .run("ControllerPublishVolume", r, |req| async move {
                self.backend(&req.volume_id)?.publish(req).await
            })
            .await
    }

    async fn controller_unpublish_volume(
        &self,
        r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Answer<ControllerUnpublishVolumeResponse> {
        self.rpc
            .run("ControllerUnpublishVolume", r, |req| async move {
                self.backend(&req.volume_id)?.unpublish(req).await
            })
            .await
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Answer<ValidateVolumeCapabilitiesResponse> {
        self.rpc
            .run("ValidateVolumeCapabilities", r, |req| async move {
                self.backend(&req.volume_id)?.validate(req).await
            })
            .await
    }

    async fn list_volumes(&self, r: Request<ListVolumesRequest>) -> Answer<ListVolumesResponse> {
        self.rpc
            .run("ListVolumes", r, |req| async move { self.fleet()?.list_volumes(req).await })
            .await
    }

    async fn get_capacity(&self, r: Request<GetCapacityRequest>) -> Answer<GetCapacityResponse> {
        self.rpc
            .run("GetCapacity", r, |req| async move { self.fleet()?.get_capacity(req).await })
            .await
    }

    async fn create_snapshot(
        &self,
        r: Request<CreateSnapshotRequest>,
    ) -> Answer<CreateSnapshotResponse> {
        self.rpc
            .run("CreateSnapshot", r, |req| async move {
                let b = self.backend(&req.source_volume_id)?;
                let claim = b.claim_of(&req.source_volume_id, &Default::default()).await;
                let doing = format!("snapshot {:?} of {}", req.name, req.source_volume_id);
                let out = b.create_snapshot(req).await;
                let reasons = (reason::SNAPSHOT_TAKEN, reason::SNAPSHOT_FAILED);
                b.outcome(&claim, &out, reasons, &doing, |r| {
                    let s = r.snapshot.clone().unwrap_or_default();
                    let state = if s.ready_to_use { "ready" } else { "copying" };
                    format!(
                        "snapshot {} of {} ({} bytes): {state}",
                        s.snapshot_id, s.source_volume_id, s.size_bytes
                    )
                })
                .await;
                out
            })
            .await
    }

    async fn delete_snapshot(
        &self,
        r: Request<DeleteSnapshotRequest>,
    ) -> Answer<DeleteSnapshotResponse> {
        self.rpc
            .run("DeleteSnapshot", r, |req| async move {
                let fleet = self.fleet()?;
                match fleet
                    .route_delete(&req.snapshot_id, snapshots_core::is_managed_snapshot_id)?
                {
                    Some(b) => b.delete_snapshot(req).await,
                    None => Ok(DeleteSnapshotResponse {}),
                }
            })
            .await
    }

    async fn list_snapshots(
        &self,
        r: Request<ListSnapshotsRequest>,
    ) -> Answer<ListSnapshotsResponse> {
        self.rpc
            .run("ListSnapshots", r, |req| async move { self.fleet()?.list_snapshots(req).await })
            .await
    }

    async fn get_snapshot(&self, r: Request<GetSnapshotRequest>) -> Answer<GetSnapshotResponse> {
        self.rpc
            .run("GetSnapshot", r, |req| async move {
                self.backend(&req.snapshot_id)?.get_snapshot(req).await
            })
            .await
    }

    /// CSI "ControllerExpandVolume": `node_expansion_required` for filesystem volumes.
    async fn controller_expand_volume(
        &self,
        r: Request<ControllerExpandVolumeRequest>,
    ) -> Answer<ControllerExpandVolumeResponse> {
        self.rpc
            .run("ControllerExpandVolume", r, |req| async move {
                if let Some(cap) = &req.volume_capability {
                    access::check(cap).map_err(ServiceError::InvalidArgument)?;
                }
                let block = req.volume_capability.as_ref().is_some_and(access::is_block);
                let (required, limit) =
                    req.capacity_range.map_or((0, 0), |c| (c.required_bytes, c.limit_bytes));
                let b = self.backend(&req.volume_id)?;
                let out = b.expand(&req.volume_id, required, limit, block).await;
                let claim = b.claim_of(&req.volume_id, &Default::default()).await;
                let doing = format!("expanding {}", req.volume_id);
                let reasons = (reason::EXPANDED, reason::EXPANSION_FAILED);
                b.outcome(&claim, &out, reasons, &doing, |(size, node)| {
                    let then = if *node { "; the node grows the filesystem" } else { "" };
                    format!("{} expanded to {size} bytes on the RDS{then}", req.volume_id)
                })
                .await;
                let (size, node) = out?;
                Ok(ControllerExpandVolumeResponse {
                    capacity_bytes: size as i64,
                    node_expansion_required: node,
                })
            })
            .await
    }

    async fn controller_get_volume(
        &self,
        r: Request<ControllerGetVolumeRequest>,
    ) -> Answer<ControllerGetVolumeResponse> {
        self.rpc
            .run("ControllerGetVolume", r, |req| async move {
                let (volume, condition, published_node_ids) =
                    self.backend(&req.volume_id)?.get_volume(&req.volume_id).await?;
                Ok(ControllerGetVolumeResponse {
                    volume: Some(volume),
                    status: Some(controller_get_volume_response::VolumeStatus {
                        published_node_ids,
                        volume_condition: Some(condition),
                    }),
                })
            })
            .await
    }

    async fn controller_modify_volume(
        &self,
        r: Request<ControllerModifyVolumeRequest>,
    ) -> Answer<ControllerModifyVolumeResponse> {
        self.rpc
            .run("ControllerModifyVolume", r, |req| async move {
                self.backend(&req.volume_id)?.modify_volume(req).await
            })
            .await
    }
}

impl ControllerService {
    /// GroupController capabilities: group snapshots, with an RDS connection only.
    pub fn group_capabilities(&self) -> Vec<GroupControllerServiceCapability> {
        if self.fleet.is_none() {
            return Vec::new();
        }
        vec![GroupControllerServiceCapability {
            r#type: Some(group_controller_service_capability::Type::Rpc(
                group_controller_service_capability::Rpc {
                    r#type: group_controller_service_capability::rpc::Type::CreateDeleteGetVolumeGroupSnapshot
                        as i32,
                },
            )),
        }]
    }
}

/// CSI GroupController: group snapshots (groups.rs).
#[tonic::async_trait]
impl GroupController for ControllerService {
    async fn group_controller_get_capabilities(
        &self,
        request: Request<GroupControllerGetCapabilitiesRequest>,
    ) -> Answer<GroupControllerGetCapabilitiesResponse> {
        self.rpc
            .run("GroupControllerGetCapabilities", request, |_| async {
                Ok(GroupControllerGetCapabilitiesResponse {
                    capabilities: self.group_capabilities(),
                })
            })
            .await
    }

    async fn create_volume_group_snapshot(
        &self,
        r: Request<CreateVolumeGroupSnapshotRequest>,
    ) -> Answer<CreateVolumeGroupSnapshotResponse> {
        self.rpc
            .run("CreateVolumeGroupSnapshot", r, |req| async move {
                self.fleet()?
                    .group_backend(&req.source_volume_ids)?
                    .create_group_snapshot(req)
                    .await
            })
            .await
    }

    async fn delete_volume_group_snapshot(
        &self,
        r: Request<DeleteVolumeGroupSnapshotRequest>,
    ) -> Answer<DeleteVolumeGroupSnapshotResponse> {
        self.rpc
            .run("DeleteVolumeGroupSnapshot", r, |req| async move {
                let fleet = self.fleet()?;
                match fleet.route_delete(&req.group_snapshot_id, snapshots_core::is_group_id)? {
                    Some(b) => b.delete_group_snapshot(req).await,
                    None => Ok(DeleteVolumeGroupSnapshotResponse {}),
                }
            })
            .await
    }

    async fn get_volume_group_snapshot(
        &self,
        r: Request<GetVolumeGroupSnapshotRequest>,
    ) -> Answer<GetVolumeGroupSnapshotResponse> {
        self.rpc
            .run("GetVolumeGroupSnapshot", r, |req| async move {
                self.backend(&req.group_snapshot_id)?.get_group_snapshot(req).await
            })
            .await
    }
}
