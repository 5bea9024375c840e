//! CSI Identity service: who the plugin is, what it offers, whether it is ready.

use std::collections::HashMap;

use csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
    identity_server::Identity,
    plugin_capability::{self, service, volume_expansion},
};
use tonic::{Request, Response, Status};

use crate::{readiness::Readiness, rpc::RpcRunner, version};

#[derive(Debug, Clone)]
pub struct IdentityService {
    pub driver_name: String,
    pub controller_enabled: bool,
    pub readiness: Readiness,
    pub rpc: RpcRunner,
}

impl IdentityService {
    /// Plugin capabilities. CSI: CONTROLLER_SERVICE tells the CO to call the Controller service
    /// at all (only when this process runs it), GROUP_CONTROLLER_SERVICE the GroupController
    /// (group snapshots) with it; VOLUME_ACCESSIBILITY_CONSTRAINTS because volumes
    /// are reachable only from nodes that can reach the RDS storage network (NodeGetInfo reports
    /// the topology segment); ONLINE expansion because RDS file disks grow while exported.
    pub fn capabilities(&self) -> Vec<PluginCapability> {
        let service = |t: service::Type| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(plugin_capability::Service {
                r#type: t as i32,
            })),
        };
        let mut caps = Vec::new();
        if self.controller_enabled {
            caps.push(service(service::Type::ControllerService));
            caps.push(service(service::Type::GroupControllerService));
        }
        caps.push(service(service::Type::VolumeAccessibilityConstraints));
        caps.push(PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(
                plugin_capability::VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                },
            )),
        });
        caps
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    /// CSI: name and vendor_version are REQUIRED; the name is validated at start-up.
    async fn get_plugin_info(
        &self,
        request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        self.rpc
            .run("GetPluginInfo", request, |_| async {
                Ok(GetPluginInfoResponse {
                    name: self.driver_name.clone(),
                    vendor_version: version::VERSION.to_string(),
                    manifest: HashMap::from([(
                        "git-revision".to_string(),
                        version::GIT_REVISION.to_string(),
                    )]),
                })
            })
            .await
    }

    async fn get_plugin_capabilities(
        &self,
        request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        self.rpc
            .run("GetPluginCapabilities", request, |_| async {
                Ok(GetPluginCapabilitiesResponse { capabilities: self.capabilities() })
            })
            .await
    }

    /// CSI: a healthy plugin that is still initialising answers successfully with
    /// `ready = false`; readiness comes from the shared [`Readiness`] source.
    async fn probe(
        &self,
        request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        self.rpc
            .run("Probe", request, |_| async {
                let state = self.readiness.get();
                match &state {
                    crate::readiness::ReadyState::NotReady(reason) => {
                        tracing::info!(%reason, "probe: not ready")
                    }
                    // Probe carries only a bool: the log and /readyz say which RDS is down.
                    crate::readiness::ReadyState::Degraded(reason) => {
                        tracing::warn!(%reason, "probe: ready, but some RDS backends are down")
                    }
                    crate::readiness::ReadyState::Ready => {}
                }
                Ok(ProbeResponse { ready: Some(state.is_ready()) })
            })
            .await
    }
}
