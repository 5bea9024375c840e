//! CSI "DeleteVolume": "If a volume corresponding to the specified volume_id does not exist or
//! the artifacts associated with the volume do not exist anymore, the Plugin MUST reply 0 OK";
//! error table: volume in use → FAILED_PRECONDITION.

use csi::v1::*;
use tonic::Code;

use crate::harness::{Ctx, NODE, expect_code, must};

fn del(id: &str) -> DeleteVolumeRequest {
    DeleteVolumeRequest { volume_id: id.into(), ..Default::default() }
}

/// CSI: "volume_id ... This field is REQUIRED" → INVALID_ARGUMENT.
pub async fn delete_requires_id(c: &mut Ctx) {
    let msg = expect_code(
        c.c.delete_volume(del("")).await,
        Code::InvalidArgument,
        "DeleteVolume without an id",
    );
    assert!(msg.contains("volume_id"), "{msg}");
}

/// CSI: a volume that does not exist → OK, whatever the id looks like.
pub async fn delete_unknown_is_ok(c: &mut Ctx) {
    for id in ["reallyfakevolumeid", "pvc-00000000-0000-4000-8000-000000000000", "a/b", "x y"] {
        must(c.c.delete_volume(del(id)).await, &format!("DeleteVolume {id:?}"));
    }
}

/// CSI: "This operation MUST be idempotent": deleting again is OK; the file is gone.
pub async fn delete_twice_is_ok(c: &mut Ctx) {
    let v = c.create("conformance-delete").await;
    let file = c.file_of(&v);
    assert!(file.exists());
    must(c.c.delete_volume(del(&v.volume_id)).await, "DeleteVolume");
    assert!(!file.exists(), "the backing file is removed");
    must(c.c.delete_volume(del(&v.volume_id)).await, "DeleteVolume again");
    let list = must(c.c.list_volumes(ListVolumesRequest::default()).await, "ListVolumes");
    assert!(list.entries.is_empty(), "{:?}", list.entries);
}

/// CSI "Volume in use" → FAILED_PRECONDITION: a volume published to a node is never deleted;
/// once unpublished it is.
pub async fn delete_in_use(c: &mut Ctx) {
    let v = c.create("conformance-in-use").await;
    c.publish(&v).await;
    let msg = expect_code(
        c.c.delete_volume(del(&v.volume_id)).await,
        Code::FailedPrecondition,
        "DeleteVolume while published",
    );
    assert!(msg.contains(NODE), "the message names the holder: {msg}");
    assert!(c.file_of(&v).exists(), "the data is still there");
    must(
        c.c.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: NODE.into(),
            ..Default::default()
        })
        .await,
        "ControllerUnpublishVolume",
    );
    must(c.c.delete_volume(del(&v.volume_id)).await, "DeleteVolume once unpublished");
    assert!(!c.file_of(&v).exists());
}

/// CSI: "the artifacts associated with the volume" do not outlive it: a backing file left
/// without its disk (a delete cut between the two removals) is removed by DeleteVolume.
pub async fn delete_removes_leftover_file(c: &mut Ctx) {
    let id = "pvc-0c0c0c0c-0000-4000-8000-00000000c0de";
    let dir = c.files.join("storage-pool/metal-csi");
    std::fs::create_dir_all(&dir).unwrap();
    let leftover = dir.join(format!("{id}.img"));
    std::fs::write(&leftover, b"tenant data left behind").unwrap();
    let unrelated = dir.join("keep-me.img");
    std::fs::write(&unrelated, b"not this volume's").unwrap();
    must(c.c.delete_volume(del(id)).await, "DeleteVolume of a volume with no disk");
    assert!(!leftover.exists(), "the leftover file is removed");
    assert!(unrelated.exists(), "nothing else is touched");
    std::fs::remove_file(unrelated).unwrap();
}
