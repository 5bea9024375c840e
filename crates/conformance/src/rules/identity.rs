//! Identity RPCs and the capability lists (CSI "GetPluginInfo", "GetPluginCapabilities",
//! "Probe", "ControllerGetCapabilities", "NodeGetCapabilities", "NodeGetInfo").

use csi::v1::{
    controller_service_capability::{Type as CType, rpc::Type as C},
    node_service_capability::{Type as NType, rpc::Type as N},
    plugin_capability::{Type as PType, service::Type as S},
    *,
};
use tonic::Code;

use crate::harness::{Ctx, NODE, must};

/// CSI "GetPluginInfo": name REQUIRED, ≤ 63 characters, domain-name notation;
/// vendor_version REQUIRED.
pub async fn plugin_info(c: &mut Ctx) {
    let info = must(c.id.get_plugin_info(GetPluginInfoRequest {}).await, "GetPluginInfo");
    let name = &info.name;
    assert!(!name.is_empty() && name.len() <= 63, "name {name:?}");
    assert!(
        name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric()),
        "{name}"
    );
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'), "{name}");
    assert!(!info.vendor_version.is_empty(), "vendor_version is REQUIRED");
}

/// CSI "GetPluginCapabilities": CONTROLLER_SERVICE for a plugin with a Controller service;
/// VOLUME_ACCESSIBILITY_CONSTRAINTS since NodeGetInfo reports topology.
pub async fn plugin_capabilities(c: &mut Ctx) {
    let caps = must(
        c.id.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await,
        "GetPluginCapabilities",
    );
    let services: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(PType::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    assert!(services.contains(&(S::ControllerService as i32)), "{services:?}");
    assert!(services.contains(&(S::VolumeAccessibilityConstraints as i32)), "{services:?}");
}

/// CSI "Probe": OK, ready.
pub async fn probe_ready(c: &mut Ctx) {
    let p = must(c.id.probe(ProbeRequest {}).await, "Probe");
    assert_eq!(p.ready, Some(true));
}

fn controller_caps(caps: &[ControllerServiceCapability]) -> Vec<C> {
    caps.iter()
        .filter_map(|c| match &c.r#type {
            Some(CType::Rpc(r)) => C::try_from(r.r#type).ok(),
            None => None,
        })
        .collect()
}

/// CSI: "a CO SHALL NOT call an optional RPC the plugin does not advertise"; a plugin answers
/// what it advertises and UNIMPLEMENTED for what it does not (spec "Unsupported RPCs SHOULD
/// return ... CALL_NOT_IMPLEMENTED"). Each advertised capability's RPC is called with an
/// empty request and must not be UNIMPLEMENTED.
pub async fn controller_capabilities_are_served(c: &mut Ctx) {
    let caps = controller_caps(
        &must(
            c.c.controller_get_capabilities(ControllerGetCapabilitiesRequest {}).await,
            "ControllerGetCapabilities",
        )
        .capabilities,
    );
    for want in [
        C::CreateDeleteVolume,
        C::PublishUnpublishVolume,
        C::ListVolumes,
        C::GetCapacity,
        C::ExpandVolume,
        C::GetVolume,
    ] {
        assert!(caps.contains(&want), "{want:?} missing from {caps:?}");
    }
    let not_unimplemented = |r: Result<(), tonic::Status>, rpc: &str| {
        if let Err(s) = r {
            assert_ne!(s.code(), Code::Unimplemented, "{rpc} is advertised but unimplemented");
        }
    };
    for cap in &caps {
        match cap {
            C::CreateDeleteVolume => not_unimplemented(
                c.c.delete_volume(DeleteVolumeRequest::default()).await.map(|_| ()),
                "DeleteVolume",
            ),
            C::ListVolumes => not_unimplemented(
                c.c.list_volumes(ListVolumesRequest::default()).await.map(|_| ()),
                "ListVolumes",
            ),
            C::GetCapacity => not_unimplemented(
                c.c.get_capacity(GetCapacityRequest::default()).await.map(|_| ()),
                "GetCapacity",
            ),
            C::CreateDeleteSnapshot => not_unimplemented(
                c.c.delete_snapshot(DeleteSnapshotRequest::default()).await.map(|_| ()),
                "DeleteSnapshot",
            ),
            C::ListSnapshots => not_unimplemented(
                c.c.list_snapshots(ListSnapshotsRequest::default()).await.map(|_| ()),
                "ListSnapshots",
            ),
            C::GetSnapshot => not_unimplemented(
                c.c.get_snapshot(GetSnapshotRequest::default()).await.map(|_| ()),
                "GetSnapshot",
            ),
            C::GetVolume => not_unimplemented(
                c.c.controller_get_volume(ControllerGetVolumeRequest::default()).await.map(|_| ()),
                "ControllerGetVolume",
            ),
            C::ExpandVolume => not_unimplemented(
                c.c.controller_expand_volume(ControllerExpandVolumeRequest::default())
                    .await
                    .map(|_| ()),
                "ControllerExpandVolume",
            ),
            C::PublishUnpublishVolume => not_unimplemented(
                c.c.controller_unpublish_volume(ControllerUnpublishVolumeRequest::default())
                    .await
                    .map(|_| ()),
                "ControllerUnpublishVolume",
            ),
            _ => {}
        }
    }
    if !caps.contains(&C::ModifyVolume) {
        let s =
            c.c.controller_modify_volume(ControllerModifyVolumeRequest::default())
                .await
                .unwrap_err();
        assert_eq!(
            s.code(),
            Code::Unimplemented,
            "ControllerModifyVolume is not advertised: {}",
            s.message()
        );
    }
}

/// CSI "NodeGetCapabilities": what is advertised is served (NodeGetVolumeStats with
/// GET_VOLUME_STATS, NodeExpandVolume with EXPAND_VOLUME, staging with STAGE_UNSTAGE_VOLUME).
pub async fn node_capabilities_are_served(c: &mut Ctx) {
    let caps: Vec<N> =
        must(c.n.node_get_capabilities(NodeGetCapabilitiesRequest {}).await, "NodeGetCapabilities")
            .capabilities
            .iter()
            .filter_map(|c| match &c.r#type {
                Some(NType::Rpc(r)) => N::try_from(r.r#type).ok(),
                None => None,
            })
            .collect();
    for want in [N::StageUnstageVolume, N::GetVolumeStats, N::ExpandVolume] {
        assert!(caps.contains(&want), "{want:?} missing from {caps:?}");
    }
    let s = c.n.node_get_volume_stats(NodeGetVolumeStatsRequest::default()).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "an empty request is bad input: {}", s.message());
    let s = c.n.node_expand_volume(NodeExpandVolumeRequest::default()).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
}

/// CSI "NodeGetInfo": node_id REQUIRED; accessible_topology when topology is reported.
pub async fn node_info(c: &mut Ctx) {
    let info = must(c.n.node_get_info(NodeGetInfoRequest {}).await, "NodeGetInfo");
    assert_eq!(info.node_id, NODE);
    assert!(info.max_volumes_per_node >= 0);
    let topo = info.accessible_topology.expect("accessible_topology");
    assert!(!topo.segments.is_empty(), "segments");
}
