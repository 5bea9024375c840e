//! CSI "ControllerModifyVolume" (required fields, NOT_FOUND, INVALID_ARGUMENT for a key that
//! cannot be modified, idempotency) and CreateVolume's `mutable_parameters`.

use std::collections::HashMap;

use csi::v1::{controller_service_capability::rpc::Type as C, *};
use tonic::Code;

use crate::harness::{Ctx, expect_code, must};

fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn modify(volume_id: &str, kv: &[(&str, &str)]) -> ControllerModifyVolumeRequest {
    ControllerModifyVolumeRequest {
        volume_id: volume_id.into(),
        mutable_parameters: params(kv),
        ..Default::default()
    }
}

/// CSI: MODIFY_VOLUME advertised; the RPC is implemented.
pub async fn modify_capability_advertised(c: &mut Ctx) {
    let caps = must(
        c.c.controller_get_capabilities(ControllerGetCapabilitiesRequest {}).await,
        "ControllerGetCapabilities",
    );
    let rpcs: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type.as_ref().map(|controller_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    assert!(rpcs.contains(&(C::ModifyVolume as i32)), "{rpcs:?}");
    let r = c.c.controller_modify_volume(ControllerModifyVolumeRequest::default()).await;
    assert_ne!(r.map(|_| ()).unwrap_err().code(), Code::Unimplemented);
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn modify_requires_volume_id(c: &mut Ctx) {
    expect_code(
        c.c.controller_modify_volume(modify("", &[("reconnectDelay", "2")])).await,
        Code::InvalidArgument,
        "no volume_id",
    );
}

/// CSI: mutable_parameters REQUIRED → INVALID_ARGUMENT.
pub async fn modify_requires_parameters(c: &mut Ctx) {
    let v = c.create("conformance-modify").await;
    expect_code(
        c.c.controller_modify_volume(modify(&v.volume_id, &[])).await,
        Code::InvalidArgument,
        "no mutable_parameters",
    );
}

/// CSI "Volume does not exist" → NOT_FOUND.
pub async fn modify_unknown_volume(c: &mut Ctx) {
    for id in ["some-vol-id", "pvc-00000000-0000-4000-8000-000000000000"] {
        expect_code(
            c.c.controller_modify_volume(modify(id, &[("reconnectDelay", "2")])).await,
            Code::NotFound,
            id,
        );
    }
}

/// CSI "Parameters not supported": a key that cannot be modified (or a bad value) →
/// INVALID_ARGUMENT; the message names the mutable keys.
pub async fn modify_immutable_key(c: &mut Ctx) {
    let v = c.create("conformance-modify").await;
    let m = expect_code(
        c.c.controller_modify_volume(modify(&v.volume_id, &[("volumePath", "/elsewhere")])).await,
        Code::InvalidArgument,
        "immutable key",
    );
    assert!(m.contains("compress") && m.contains("reconnectDelay"), "{m}");
    expect_code(
        c.c.controller_modify_volume(modify(&v.volume_id, &[("reconnectDelay", "0")])).await,
        Code::InvalidArgument,
        "bad value",
    );
}

/// CSI: "This operation MUST be idempotent": the same parameters again answer OK.
pub async fn modify_is_idempotent(c: &mut Ctx) {
    let v = c.create("conformance-modify").await;
    for _ in 0..2 {
        must(
            c.c.controller_modify_volume(modify(
                &v.volume_id,
                &[("compress", "yes"), ("reconnectDelay", "2"), ("migrationTimeoutSeconds", "120")],
            ))
            .await,
            "ControllerModifyVolume",
        );
    }
    must(
        c.c.controller_modify_volume(modify(&v.volume_id, &[("compress", "no")])).await,
        "ControllerModifyVolume back",
    );
}

/// CSI CreateVolume "mutable_parameters": accepted at creation (a bad one is INVALID_ARGUMENT,
/// nothing created); the volume is modifiable afterwards.
pub async fn create_with_mutable_parameters(c: &mut Ctx) {
    let mut bad = c.create_req("conformance-modify-bad");
    bad.mutable_parameters = params(&[("volumePath", "/x")]);
    expect_code(c.c.create_volume(bad).await, Code::InvalidArgument, "immutable key at create");
    let list = must(c.c.list_volumes(ListVolumesRequest::default()).await, "ListVolumes");
    assert!(list.entries.is_empty(), "nothing created: {:?}", list.entries);
    let mut req = c.create_req("conformance-modify");
    req.mutable_parameters = params(&[("compress", "yes"), ("ctrlLossTmo", "-1")]);
    let v = c.create_with(req.clone()).await;
    let again = c.create_with(req).await;
    assert_eq!(v.volume_id, again.volume_id, "idempotent with mutable parameters");
    must(
        c.c.controller_modify_volume(modify(&v.volume_id, &[("compress", "no")])).await,
        "ControllerModifyVolume",
    );
}
