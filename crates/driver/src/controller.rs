//! CSI Controller service. Nothing but ControllerGetCapabilities is built yet: every other RPC
//! answers UNIMPLEMENTED (never a fake success), and the capability list is empty, because CSI
//! requires that a CO only calls the optional Controller RPCs the plugin advertises.

use csi::v1::{controller_server::Controller, *};
use tonic::{Request, Response, Status};

use crate::rpc::RpcRunner;

#[derive(Debug, Clone)]
pub struct ControllerService {
    pub rpc: RpcRunner,
}

impl ControllerService {
    /// Capabilities that really work in this build; grows with each implemented RPC.
    pub fn capabilities(&self) -> Vec<ControllerServiceCapability> {
        Vec::new()
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
        self.rpc.unimplemented("CreateVolume", r).await
    }

    async fn delete_volume(&self, r: Request<DeleteVolumeRequest>) -> Answer<DeleteVolumeResponse> {
        self.rpc.unimplemented("DeleteVolume", r).await
    }

    async fn controller_publish_volume(
        &self,
        r: Request<ControllerPublishVolumeRequest>,
    ) -> Answer<ControllerPublishVolumeResponse> {
        self.rpc.unimplemented("ControllerPublishVolume", r).await
    }

    async fn controller_unpublish_volume(
        &self,
        r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Answer<ControllerUnpublishVolumeResponse> {
        self.rpc.unimplemented("ControllerUnpublishVolume", r).await
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Answer<ValidateVolumeCapabilitiesResponse> {
        self.rpc.unimplemented("ValidateVolumeCapabilities", r).await
    }

    async fn list_volumes(&self, r: Request<ListVolumesRequest>) -> Answer<ListVolumesResponse> {
        self.rpc.unimplemented("ListVolumes", r).await
    }

    async fn get_capacity(&self, r: Request<GetCapacityRequest>) -> Answer<GetCapacityResponse> {
        self.rpc.unimplemented("GetCapacity", r).await
    }

    async fn create_snapshot(
        &self,
        r: Request<CreateSnapshotRequest>,
    ) -> Answer<CreateSnapshotResponse> {
        self.rpc.unimplemented("CreateSnapshot", r).await
    }

    async fn delete_snapshot(
        &self,
        r: Request<DeleteSnapshotRequest>,
    ) -> Answer<DeleteSnapshotResponse> {
        self.rpc.unimplemented("DeleteSnapshot", r).await
    }

    async fn list_snapshots(
        &self,
        r: Request<ListSnapshotsRequest>,
    ) -> Answer<ListSnapshotsResponse> {
        self.rpc.unimplemented("ListSnapshots", r).await
    }

    async fn get_snapshot(&self, r: Request<GetSnapshotRequest>) -> Answer<GetSnapshotResponse> {
        self.rpc.unimplemented("GetSnapshot", r).await
    }

    async fn controller_expand_volume(
        &self,
        r: Request<ControllerExpandVolumeRequest>,
    ) -> Answer<ControllerExpandVolumeResponse> {
        self.rpc.unimplemented("ControllerExpandVolume", r).await
    }

    async fn controller_get_volume(
        &self,
        r: Request<ControllerGetVolumeRequest>,
    ) -> Answer<ControllerGetVolumeResponse> {
        self.rpc.unimplemented("ControllerGetVolume", r).await
    }

    async fn controller_modify_volume(
        &self,
        r: Request<ControllerModifyVolumeRequest>,
    ) -> Answer<ControllerModifyVolumeResponse> {
        self.rpc.unimplemented("ControllerModifyVolume", r).await
    }
}
