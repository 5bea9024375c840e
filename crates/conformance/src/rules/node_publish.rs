//! CSI "NodePublishVolume" (error table: published but incompatible ALREADY_EXISTS; exceeds
//! capabilities / staging target path not set FAILED_PRECONDITION; the second-publish table
//! per access mode) and "NodeUnpublishVolume".

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use csi::v1::{volume_capability::access_mode::Mode as Am, *};
use tonic::Code;

use crate::harness::{Ctx, NODE, expect_code, mounts_at, must, must_ok};

/// A staged volume, published to this node by the controller.
async fn staged(
    c: &mut Ctx,
    name: &str,
    am: Am,
) -> (Volume, std::collections::HashMap<String, String>) {
    let v = c.create(name).await;
    let cap = c.cap_with(am);
    let pc = must_ok(
        c.controller_publish(&v, NODE, cap.clone(), false).await,
        "ControllerPublishVolume",
    );
    let req = c.stage_req(&v, &pc, cap);
    must_ok(c.stage_with(req).await, "NodeStageVolume");
    (v, pc)
}

/// Whether `target` holds the volume: a mount (filesystem) or a block device node.
fn published_at(c: &Ctx, target: &std::path::Path) -> bool {
    if c.is_block() {
        std::fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_block_device())
    } else {
        !mounts_at(target).is_empty()
    }
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn node_publish_requires_volume_id(c: &mut Ctx) {
    let (v, pc) = staged(c, "conformance-np", Am::SingleNodeWriter).await;
    let t = c.target("pod-a");
    let req = NodePublishVolumeRequest {
        volume_id: String::new(),
        ..c.node_publish_req(&v, &pc, &t, c.cap(), false)
    };
    expect_code(c.node_publish_with(req).await, Code::InvalidArgument, "no volume_id");
}

/// CSI: target_path REQUIRED → INVALID_ARGUMENT.
pub async fn node_publish_requires_target(c: &mut Ctx) {
    let (v, pc) = staged(c, "conformance-np", Am::SingleNodeWriter).await;
    let t = c.target("pod-a");
    let req = NodePublishVolumeRequest {
        target_path: String::new(),
        ..c.node_publish_req(&v, &pc, &t, c.cap(), false)
    };
    expect_code(c.node_publish_with(req).await, Code::InvalidArgument, "no target_path");
}

/// CSI: volume_capability REQUIRED → INVALID_ARGUMENT.
pub async fn node_publish_requires_capability(c: &mut Ctx) {
    let (v, pc) = staged(c, "conformance-np", Am::SingleNodeWriter).await;
    let t = c.target("pod-a");
    let req = NodePublishVolumeRequest {
        volume_capability: None,
        ..c.node_publish_req(&v, &pc, &t, c.cap(), false)
    };
    expect_code(c.node_publish_with(req).await, Code::InvalidArgument, "no capability");
    assert!(!published_at(c, &t));
}

/// CSI "Staging target path not set" (STAGE_UNSTAGE_VOLUME is advertised) → FAILED_PRECONDITION.
pub async fn node_publish_without_staging_path(c: &mut Ctx) {
    let (v, pc) = staged(c, "conformance-np", Am::SingleNodeWriter).await;
    let t = c.target("pod-a");
    let req = NodePublishVolumeRequest {
        staging_target_path: String::new(),
        ..c.node_publish_req(&v, &pc, &t, c.cap(), false)
    };
    let msg = expect_code(
        c.node_publish_with(req).await,
        Code::FailedPrecondition,
        "no staging_target_path",
    );
    assert!(msg.contains("staging_target_path"), "{msg}");
    assert!(!published_at(c, &t));
}

/// CSI second-publish table, T1=T2 P1=P2 → OK (idempotent), nothing stacked.
pub async fn node_publish_is_idempotent(c: &mut Ctx) {
    let (v, pc) = staged(c, "conformance-np", Am::SingleNodeWriter).await;
    let t = c.target("pod-a");
    must_ok(c.node_publish(&v, &pc, &t).await, "NodePublishVolume");
    must_ok(c.node_publish(&v, &pc, &t).await, "NodePublishVolume again");
    assert!(published_at(c, &t));
    if !c.is_block() {
        assert_eq!(mounts_at(&t).len(), 1, "one mount, not two");
    }
}

/// CSI second-publish table, T1=T2 P1≠P2 (readonly) → ALREADY_EXISTS.
pub async fn node_publish_readonly_incompatible(c: &mut Ctx) {
    let (v, pc) = staged(c, "conformance-np", Am::SingleNodeWriter).await;
    let t = c.target("pod-a");
    must_ok(c.node_publish(&v, &pc, &t).await, "NodePublishVolume");
    let req = c.node_publish_req(&v, &pc, &t, c.cap(), true);
    expect_code(c.node_publish_with(req).await, Code::AlreadyExists, "read-only over read-write");
}

/// CSI second-publish table (SINGLE_NODE_MULTI_WRITER supported): SINGLE_NODE_SINGLE_WRITER,
/// T1≠T2 → FAILED_PRECONDITION; the second target is not published.
pub async fn node_publish_single_writer_elsewhere(c: &mut Ctx) {
    let (v, pc) = staged(c, "conformance-np", Am::SingleNodeSingleWriter).await;
    let cap = c.cap_with(Am::SingleNodeSingleWriter);
    let (t1, t2) = (c.target("pod-a"), c.target("pod-b"));
    let req = c.node_publish_req(&v, &pc, &t1, cap.clone(), false);
    must_ok(c.node_publish_with(req).await, "NodePublishVolume");
    let req = c.node_publish_req(&v, &pc, &t2, cap.clone(), false);
    let msg =
        expect_code(c.node_publish_with(req).await, Code::FailedPrecondition, "a second target");
    assert!(msg.contains(&t1.display().to_string()), "names the first target: {msg}");
    assert!(!published_at(c, &t2), "the second target is not published");
    let req = c.node_publish_req(&v, &pc, &t1, cap, false);
    must_ok(c.node_publish_with(req).await, "the first target again is still fine");
}

/// CSI second-publish table: SINGLE_NODE_MULTI_WRITER, T1≠T2 → OK; both targets reach the
/// same data.
pub async fn node_publish_multi_writer_elsewhere(c: &mut Ctx) {
    let (v, pc) = staged(c, "conformance-np", Am::SingleNodeMultiWriter).await;
    let cap = c.cap_with(Am::SingleNodeMultiWriter);
    let (t1, t2) = (c.target("pod-a"), c.target("pod-b"));
    for t in [&t1, &t2] {
        let req = c.node_publish_req(&v, &pc, t, cap.clone(), false);
        must_ok(c.node_publish_with(req).await, "NodePublishVolume");
    }
    if c.is_block() {
        let rdev = |t: &std::path::Path| std::fs::metadata(t).unwrap().rdev();
        assert_eq!(rdev(&t1), rdev(&t2), "the same device");
    } else {
        std::fs::write(t1.join("shared"), b"both pods").unwrap();
        assert_eq!(std::fs::read(t2.join("shared")).unwrap(), b"both pods");
        std::fs::remove_file(t1.join("shared")).unwrap();
    }
}

/// CSI "readonly: Indicates SP MUST publish the volume in readonly mode", and PUBLISH_READONLY
/// (the controller's readonly reaches the node through the publish context).
pub async fn node_publish_readonly(c: &mut Ctx) {
    // Written once read-write (a filesystem is made), then published read-only.
    let (v, pc, t) = c.up("conformance-ro").await;
    if !c.is_block() {
        std::fs::write(t.join("kept"), b"written before").unwrap();
    }
    let unpub = NodeUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        target_path: t.display().to_string(),
    };
    must(c.n.node_unpublish_volume(unpub).await, "NodeUnpublishVolume");
    c.forget_target(&t);
    let staging = c.staging(&v).display().to_string();
    must(
        c.n.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging,
        })
        .await,
        "unstage",
    );
    let unpub = ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: NODE.into(),
        ..Default::default()
    };
    must(c.c.controller_unpublish_volume(unpub).await, "ControllerUnpublishVolume");
    drop(pc);
    let cap = c.cap();
    let pc = must_ok(
        c.controller_publish(&v, NODE, cap, true).await,
        "ControllerPublishVolume readonly",
    );
    must_ok(c.stage(&v, &pc).await, "NodeStageVolume read-only");
    let t = c.target("pod-ro");
    let req = c.node_publish_req(&v, &pc, &t, c.cap(), true);
    must_ok(c.node_publish_with(req).await, "NodePublishVolume read-only");
    if c.is_block() {
        let mode = std::fs::metadata(&t).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o222, 0, "a read-only device node: {mode:o}");
    } else {
        let m = mounts_at(&t);
        assert!(m[0].0.iter().any(|o| o == "ro"), "mounted read-only: {m:?}");
        assert_eq!(std::fs::read(t.join("kept")).unwrap(), b"written before");
        assert!(std::fs::write(t.join("new"), b"x").is_err(), "writes are refused");
    }
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn node_unpublish_requires_volume_id(c: &mut Ctx) {
    let t = c.target("pod-a");
    let req = NodeUnpublishVolumeRequest {
        volume_id: String::new(),
        target_path: t.display().to_string(),
    };
    expect_code(c.n.node_unpublish_volume(req).await, Code::InvalidArgument, "no volume_id");
}

/// CSI: target_path REQUIRED → INVALID_ARGUMENT.
pub async fn node_unpublish_requires_target(c: &mut Ctx) {
    let req = NodeUnpublishVolumeRequest {
        volume_id: "pvc-00000000-0000-4000-8000-000000000000".into(),
        target_path: String::new(),
    };
    expect_code(c.n.node_unpublish_volume(req).await, Code::InvalidArgument, "no target_path");
}

/// CSI "NodeUnpublishVolume": "The SP MUST delete the file or directory it created at this
/// path"; idempotent (again: OK).
pub async fn node_unpublish_removes_target(c: &mut Ctx) {
    let (v, _pc, t) = c.up("conformance-unpub").await;
    let req = NodeUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        target_path: t.display().to_string(),
    };
    must(c.n.node_unpublish_volume(req.clone()).await, "NodeUnpublishVolume");
    assert!(std::fs::symlink_metadata(&t).is_err(), "the target is removed");
    assert!(mounts_at(&t).is_empty());
    must(c.n.node_unpublish_volume(req).await, "NodeUnpublishVolume again");
    c.forget_target(&t);
}
