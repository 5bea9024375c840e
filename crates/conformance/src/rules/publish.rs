//! CSI "ControllerPublishVolume" (error table: volume or node does not exist NOT_FOUND;
//! published but incompatible ALREADY_EXISTS; published to another node FAILED_PRECONDITION),
//! "ControllerUnpublishVolume" and "ControllerExpandVolume".

use csi::v1::*;
use tonic::Code;

use crate::harness::{Ctx, GIB, NODE, OTHER_NODE, expect_code, must};

fn publish_req(c: &Ctx, id: &str, node: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: id.into(),
        node_id: node.into(),
        volume_capability: Some(c.cap()),
        ..Default::default()
    }
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn publish_requires_volume_id(c: &mut Ctx) {
    let req = publish_req(c, "", NODE);
    expect_code(c.c.controller_publish_volume(req).await, Code::InvalidArgument, "no volume_id");
}

/// CSI: node_id REQUIRED → INVALID_ARGUMENT.
pub async fn publish_requires_node_id(c: &mut Ctx) {
    let v = c.create("conformance-pub").await;
    let req = publish_req(c, &v.volume_id, "");
    expect_code(c.c.controller_publish_volume(req).await, Code::InvalidArgument, "no node_id");
}

/// CSI: volume_capability REQUIRED → INVALID_ARGUMENT.
pub async fn publish_requires_capability(c: &mut Ctx) {
    let v = c.create("conformance-pub").await;
    let req = ControllerPublishVolumeRequest {
        volume_capability: None,
        ..publish_req(c, &v.volume_id, NODE)
    };
    expect_code(c.c.controller_publish_volume(req).await, Code::InvalidArgument, "no capability");
}

/// CSI "Volume does not exist" → NOT_FOUND, whatever the id's form.
pub async fn publish_unknown_volume(c: &mut Ctx) {
    for id in ["some-vol-id", "pvc-00000000-0000-4000-8000-000000000000"] {
        let req = publish_req(c, id, NODE);
        expect_code(c.c.controller_publish_volume(req).await, Code::NotFound, id);
    }
}

/// CSI "Node does not exist" → NOT_FOUND: no node plugin of this driver has that id.
pub async fn publish_unknown_node(c: &mut Ctx) {
    let v = c.create("conformance-pub").await;
    let req = publish_req(c, &v.volume_id, "some-fake-node-id");
    let msg = expect_code(c.c.controller_publish_volume(req).await, Code::NotFound, "unknown node");
    assert!(msg.contains("some-fake-node-id"), "{msg}");
}

/// CSI: "This operation MUST be idempotent": publishing again answers the same context.
pub async fn publish_is_idempotent(c: &mut Ctx) {
    let v = c.create("conformance-pub").await;
    let a = c.publish(&v).await;
    let b = c.publish(&v).await;
    assert_eq!(a, b);
    assert!(a.contains_key("nqn") && a.contains_key("nvmeAddress"), "{a:?}");
}

/// CSI "Volume published but is incompatible" (the readonly flag) → ALREADY_EXISTS.
pub async fn publish_readonly_incompatible(c: &mut Ctx) {
    let v = c.create("conformance-pub").await;
    c.publish(&v).await;
    let cap = c.cap();
    expect_code(
        c.controller_publish(&v, NODE, cap, true).await,
        Code::AlreadyExists,
        "read-only after read-write",
    );
}

/// CSI "Volume published to another node" (no MULTI_NODE capability) → FAILED_PRECONDITION.
pub async fn publish_to_another_node(c: &mut Ctx) {
    let v = c.create("conformance-pub").await;
    c.publish(&v).await;
    let cap = c.cap();
    let msg = expect_code(
        c.controller_publish(&v, OTHER_NODE, cap, false).await,
        Code::FailedPrecondition,
        "second node",
    );
    assert!(msg.contains(NODE), "the message names the holder: {msg}");
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn unpublish_requires_volume_id(c: &mut Ctx) {
    let req = ControllerUnpublishVolumeRequest {
        volume_id: String::new(),
        node_id: NODE.into(),
        ..Default::default()
    };
    expect_code(c.c.controller_unpublish_volume(req).await, Code::InvalidArgument, "no volume_id");
}

/// CSI: unpublishing a volume not published to the node is OK (idempotent); afterwards
/// another node may take it.
pub async fn unpublish_not_published_is_ok(c: &mut Ctx) {
    let v = c.create("conformance-unpub").await;
    let req = ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: NODE.into(),
        ..Default::default()
    };
    must(c.c.controller_unpublish_volume(req.clone()).await, "unpublish, never published");
    c.publish(&v).await;
    must(c.c.controller_unpublish_volume(req.clone()).await, "unpublish");
    must(c.c.controller_unpublish_volume(req).await, "unpublish again");
    let cap = c.cap();
    c.controller_publish(&v, OTHER_NODE, cap, false).await.expect("free for another node");
}

/// CSI: "If the volume ... cannot be found ... and the volume can be safely regarded as
/// ControllerUnpublished from the node, the plugin SHOULD return 0 OK."
pub async fn unpublish_unknown_volume_is_ok(c: &mut Ctx) {
    for id in ["some-vol-id", "pvc-00000000-0000-4000-8000-000000000000"] {
        let req = ControllerUnpublishVolumeRequest {
            volume_id: id.into(),
            node_id: NODE.into(),
            ..Default::default()
        };
        must(c.c.controller_unpublish_volume(req).await, id);
    }
}

fn expand(id: &str, bytes: i64, cap: Option<VolumeCapability>) -> ControllerExpandVolumeRequest {
    ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: (bytes > 0)
            .then_some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capability: cap,
        ..Default::default()
    }
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn expand_requires_id(c: &mut Ctx) {
    expect_code(
        c.c.controller_expand_volume(expand("", 2 * GIB, None)).await,
        Code::InvalidArgument,
        "no volume_id",
    );
}

/// CSI: capacity_range REQUIRED → INVALID_ARGUMENT.
pub async fn expand_requires_capacity(c: &mut Ctx) {
    let v = c.create("conformance-expand").await;
    expect_code(
        c.c.controller_expand_volume(expand(&v.volume_id, 0, None)).await,
        Code::InvalidArgument,
        "no capacity",
    );
}

/// CSI "Volume does not exist" → NOT_FOUND.
pub async fn expand_unknown_volume(c: &mut Ctx) {
    for id in ["some-vol-id", "pvc-00000000-0000-4000-8000-000000000000"] {
        expect_code(
            c.c.controller_expand_volume(expand(id, 2 * GIB, None)).await,
            Code::NotFound,
            id,
        );
    }
}

/// CSI: the volume grows to at least required_bytes; node_expansion_required tells whether
/// NodeExpandVolume must follow (a filesystem: yes).
pub async fn expand_grows(c: &mut Ctx) {
    let v = c.create("conformance-expand").await;
    let cap = Some(c.cap());
    let r = must(
        c.c.controller_expand_volume(expand(&v.volume_id, 2 * GIB, cap)).await,
        "ControllerExpandVolume",
    );
    assert!(r.capacity_bytes >= 2 * GIB, "{r:?}");
    assert_eq!(r.node_expansion_required, !c.is_block(), "{r:?}");
    assert!(std::fs::metadata(c.file_of(&v)).unwrap().len() as i64 >= 2 * GIB, "the RDS file grew");
}

/// CSI: "If a volume ... is already larger than or equal to the target capacity ... the plugin
/// SHOULD reply 0 OK" (idempotent).
pub async fn expand_already_large_is_ok(c: &mut Ctx) {
    let v = c.create("conformance-expand").await;
    let cap = Some(c.cap());
    let r = must(
        c.c.controller_expand_volume(expand(&v.volume_id, GIB, cap.clone())).await,
        "same size",
    );
    assert!(r.capacity_bytes >= GIB);
    must(c.c.controller_expand_volume(expand(&v.volume_id, 2 * GIB, cap.clone())).await, "grow");
    let r =
        must(c.c.controller_expand_volume(expand(&v.volume_id, 2 * GIB, cap)).await, "grow again");
    assert!(r.capacity_bytes >= 2 * GIB);
}

/// CSI "Unsupported capacity_range" → OUT_OF_RANGE (beyond the largest volume).
pub async fn expand_unsupported_range(c: &mut Ctx) {
    let v = c.create("conformance-expand").await;
    expect_code(
        c.c.controller_expand_volume(expand(&v.volume_id, i64::MAX / 2, None)).await,
        Code::OutOfRange,
        "beyond --max-volume-size",
    );
}
