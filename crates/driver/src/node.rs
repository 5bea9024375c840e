//! CSI Node service. NodeGetInfo and NodeGetCapabilities are built; staging, publishing,
//! expansion and stats answer UNIMPLEMENTED and are not advertised, as CSI requires.

use std::collections::HashMap;

use csi::v1::{node_server::Node, *};
use tonic::{Request, Response, Status};

use crate::rpc::RpcRunner;

#[derive(Debug, Clone)]
pub struct NodeService {
    pub node_id: String,
    /// Topology segments reported by NodeGetInfo (key derived from the driver name).
    pub topology: HashMap<String, String>,
    pub rpc: RpcRunner,
}

impl NodeService {
    /// Capabilities that really work in this build; grows with each implemented RPC.
    pub fn capabilities(&self) -> Vec<NodeServiceCapability> {
        Vec::new()
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_get_capabilities(
        &self,
        request: Request<NodeGetCapabilitiesRequest>,
    ) -> Answer<NodeGetCapabilitiesResponse> {
        self.rpc
            .run("NodeGetCapabilities", request, |_| async {
                Ok(NodeGetCapabilitiesResponse { capabilities: self.capabilities() })
            })
            .await
    }

    /// CSI "NodeGetInfo": node_id is REQUIRED; `max_volumes_per_node = 0` means no limit is
    /// reported; accessible_topology is REQUIRED because the plugin advertises
    /// VOLUME_ACCESSIBILITY_CONSTRAINTS.
    async fn node_get_info(
        &self,
        request: Request<NodeGetInfoRequest>,
    ) -> Answer<NodeGetInfoResponse> {
        self.rpc
            .run("NodeGetInfo", request, |_| async {
                Ok(NodeGetInfoResponse {
                    node_id: self.node_id.clone(),
                    max_volumes_per_node: 0,
                    accessible_topology: Some(Topology { segments: self.topology.clone() }),
                })
            })
            .await
    }

    async fn node_stage_volume(
        &self,
        r: Request<NodeStageVolumeRequest>,
    ) -> Answer<NodeStageVolumeResponse> {
        self.rpc.unimplemented("NodeStageVolume", r).await
    }

    async fn node_unstage_volume(
        &self,
        r: Request<NodeUnstageVolumeRequest>,
    ) -> Answer<NodeUnstageVolumeResponse> {
        self.rpc.unimplemented("NodeUnstageVolume", r).await
    }

    async fn node_publish_volume(
        &self,
        r: Request<NodePublishVolumeRequest>,
    ) -> Answer<NodePublishVolumeResponse> {
        self.rpc.unimplemented("NodePublishVolume", r).await
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> Answer<NodeUnpublishVolumeResponse> {
        self.rpc.unimplemented("NodeUnpublishVolume", r).await
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<NodeGetVolumeStatsRequest>,
    ) -> Answer<NodeGetVolumeStatsResponse> {
        self.rpc.unimplemented("NodeGetVolumeStats", r).await
    }

    async fn node_expand_volume(
        &self,
        r: Request<NodeExpandVolumeRequest>,
    ) -> Answer<NodeExpandVolumeResponse> {
        self.rpc.unimplemented("NodeExpandVolume", r).await
    }
}
