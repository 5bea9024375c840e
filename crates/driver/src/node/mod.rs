//! CSI Node service (docs/node.md): attach over NVMe/TCP (or a loop device for development),
//! format only a provably blank device, mount or publish a raw block device node, expand,
//! report stats and volume health. Each RPC looks at the current state (mountinfo, sysfs)
//! before acting, so every call is idempotent; a concurrent call on the same volume is ABORTED.

pub mod breakers;
mod capability;
pub mod config;
pub mod events;
pub mod format;
pub mod health;
pub mod holders;
pub mod host;
pub mod kube;
pub mod loopdev;
pub mod nvme;
pub mod orphans;
pub mod plane;
mod publish;
pub mod recovery;
mod stage;
mod stats;

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use csi::v1::{
    node_server::Node,
    node_service_capability::{self, rpc::Type as Cap},
    *,
};
use tonic::{Request, Response, Status};

use self::{
    config::{DataPlaneKind, NodeConfig},
    host::Host,
    plane::DataPlane,
};
use crate::{error::ServiceError, locks::Locks, metrics::HealMetrics, rpc::RpcRunner};

/// The node's moving parts.
#[derive(Debug)]
pub struct NodeState {
    pub cfg: NodeConfig,
    pub host: Host,
    pub plane: DataPlane,
    pub locks: Locks,
    pub breakers: breakers::Breakers,
    pub heal: HealMetrics,
    /// The Kubernetes API, with `--node-events` or `--recover-pods`.
    pub kube: Option<kube::NodeKube>,
    /// Events published recently (one per window, events.rs).
    pub events: std::sync::Mutex<crate::core::events::Dedup>,
}

impl NodeState {
    /// Builds the data plane; for NVMe/TCP reads (or creates) the host NQN.
    pub fn new(cfg: NodeConfig, heal: HealMetrics) -> Result<NodeState, String> {
        let host = Host {
            sysfs: cfg.sysfs.clone(),
            procfs: cfg.procfs.clone(),
            command_timeout: cfg.command_timeout,
        };
        if cfg.data_plane == DataPlaneKind::NvmeTcp
            && !std::path::Path::new("/dev/nvme-fabrics").exists()
        {
            tracing::warn!(
                "/dev/nvme-fabrics is missing: load the nvme-tcp kernel module (modprobe nvme-tcp) or stages will fail"
            );
        }
        let plane = match cfg.data_plane {
            DataPlaneKind::NvmeTcp => DataPlane::Nvme(nvme::NvmePlane {
                managed_prefix: cfg.managed_nqn_prefix.clone(),
                nqn_prefix: cfg.nqn_prefix.clone(),
                host_nqn: nvme::host_nqn(&cfg.host_nqn_file)?,
                fabrics: "/dev/nvme-fabrics".into(),
                device_wait: cfg.device_wait,
            }),
            DataPlaneKind::Loop => DataPlane::Loop(
                loopdev::LoopPlane::new(
                    cfg.loop_root.as_deref().ok_or("--data-plane loop needs --loop-root")?,
                )?
                .with_backend_roots(&cfg.loop_backend_roots)?,
            ),
        };
        let breakers = breakers::Breakers::new(cfg.breaker, heal.clone());
        Ok(NodeState {
            cfg,
            host,
            plane,
            locks: Locks::default(),
            breakers,
            heal,
            kube: None,
            events: Default::default(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct NodeService {
    pub node_id: String,
    /// Topology segments reported by NodeGetInfo (key derived from the driver name).
    pub topology: HashMap<String, String>,
    pub rpc: RpcRunner,
    pub state: Arc<NodeState>,
}

/// The list of a block volume's published device nodes, in its staging directory (written
/// by NodePublishVolume, removed by NodeUnstageVolume).
const BLOCK_TARGETS: &str = "rds-csi-block-targets";

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(msg.into())
}

/// A required string field.
fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, ServiceError> {
    if value.is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    Ok(value)
}

/// Whether `p` is absolute and without `..` (the only paths a CO gives a node plugin).
fn is_clean_absolute(p: &std::path::Path) -> bool {
    p.is_absolute() && !p.components().any(|c| matches!(c, std::path::Component::ParentDir))
}

/// A required absolute path field.
fn path(value: &str, field: &str) -> Result<PathBuf, ServiceError> {
    let p = PathBuf::from(required(value, field)?);
    if !is_clean_absolute(&p) {
        return Err(invalid(format!("{field} {value:?} must be an absolute path without \"..\"")));
    }
    Ok(p)
}

impl NodeService {
    /// Capabilities that really work in this build.
    pub fn capabilities(&self) -> Vec<NodeServiceCapability> {
        [
            Cap::StageUnstageVolume,
            Cap::GetVolumeStats,
            Cap::ExpandVolume,
            Cap::VolumeCondition,
            Cap::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(|t| NodeServiceCapability {
            r#type: Some(node_service_capability::Type::Rpc(node_service_capability::Rpc {
                r#type: t as i32,
            })),
        })
        .collect()
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
                    max_volumes_per_node: self.state.cfg.max_volumes_per_node,
                    accessible_topology: Some(Topology { segments: self.topology.clone() }),
                })
            })
            .await
    }

    async fn node_stage_volume(
        &self,
        r: Request<NodeStageVolumeRequest>,
    ) -> Answer<NodeStageVolumeResponse> {
        self.rpc
            .run("NodeStageVolume", r, |req| async move {
                let (vid, ctx) = (req.volume_id.clone(), req.volume_context.clone());
                let out = self.stage(req).await;
                self.stage_outcome(&vid, &ctx, &out).await;
                out
            })
            .await
    }

    async fn node_unstage_volume(
        &self,
        r: Request<NodeUnstageVolumeRequest>,
    ) -> Answer<NodeUnstageVolumeResponse> {
        self.rpc.run("NodeUnstageVolume", r, |req| self.unstage(req)).await
    }

    async fn node_publish_volume(
        &self,
        r: Request<NodePublishVolumeRequest>,
    ) -> Answer<NodePublishVolumeResponse> {
        self.rpc
            .run("NodePublishVolume", r, |req| async move {
                let (vid, ctx) = (req.volume_id.clone(), req.volume_context.clone());
                let out = self.publish(req).await;
                self.publish_outcome(&vid, &ctx, &out).await;
                out
            })
            .await
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> Answer<NodeUnpublishVolumeResponse> {
        self.rpc.run("NodeUnpublishVolume", r, |req| self.unpublish(req)).await
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<NodeGetVolumeStatsRequest>,
    ) -> Answer<NodeGetVolumeStatsResponse> {
        self.rpc.run("NodeGetVolumeStats", r, |req| self.stats(req)).await
    }

    async fn node_expand_volume(
        &self,
        r: Request<NodeExpandVolumeRequest>,
    ) -> Answer<NodeExpandVolumeResponse> {
        self.rpc.run("NodeExpandVolume", r, |req| self.expand(req)).await
    }
}
