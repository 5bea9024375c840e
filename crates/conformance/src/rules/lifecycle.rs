//! The lifecycle of CSI's figure 6 (CreateVolume → ControllerPublish → NodeStage →
//! NodePublish and back), with data, and with every call made twice ("This operation MUST be
//! idempotent").

use std::{
    io::{Read, Seek, SeekFrom, Write},
    path::Path,
};

use csi::v1::*;

use crate::harness::{Ctx, NODE, must, must_ok};

const DATA: &[u8] = b"written through the published volume";

fn write_data(c: &Ctx, target: &Path) {
    if c.is_block() {
        let mut f = std::fs::OpenOptions::new().write(true).open(target).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(DATA).unwrap();
        f.sync_all().unwrap();
    } else {
        std::fs::write(target.join("data"), DATA).unwrap();
        std::fs::File::open(target.join("data")).unwrap().sync_all().unwrap();
    }
}

fn read_data(c: &Ctx, target: &Path) -> Vec<u8> {
    if c.is_block() {
        let mut f = std::fs::File::open(target).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        let mut buf = vec![0; DATA.len()];
        f.read_exact(&mut buf).unwrap();
        buf
    } else {
        std::fs::read(target.join("data")).unwrap()
    }
}

/// Takes `v` down to CREATED (node unpublish, unstage, controller unpublish), `times` times
/// each.
async fn down(c: &mut Ctx, v: &Volume, target: &Path, times: usize) {
    for _ in 0..times {
        let req = NodeUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            target_path: target.display().to_string(),
        };
        must(c.n.node_unpublish_volume(req).await, "NodeUnpublishVolume");
    }
    c.forget_target(target);
    for _ in 0..times {
        let req = NodeUnstageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: c.staging(v).display().to_string(),
        };
        must(c.n.node_unstage_volume(req).await, "NodeUnstageVolume");
    }
    assert!(!c.attached(v), "detached after NodeUnstageVolume");
    for _ in 0..times {
        let req = ControllerUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: NODE.into(),
            ..Default::default()
        };
        must(c.c.controller_unpublish_volume(req).await, "ControllerUnpublishVolume");
    }
}

/// Data written through a published volume survives taking it down to CREATED and up again.
pub async fn lifecycle_keeps_data(c: &mut Ctx) {
    let (v, _, t) = c.up("conformance-life").await;
    write_data(c, &t);
    down(c, &v, &t, 1).await;
    let pc = c.publish(&v).await;
    must_ok(c.stage(&v, &pc).await, "NodeStageVolume again");
    let t2 = c.target("pod-again");
    must_ok(c.node_publish(&v, &pc, &t2).await, "NodePublishVolume again");
    assert_eq!(read_data(c, &t2), DATA);
}

/// Every RPC of the lifecycle, each called twice in a row, succeeds, and the volume works.
pub async fn lifecycle_every_call_twice(c: &mut Ctx) {
    let v = c.create("conformance-twice").await;
    assert_eq!(c.create("conformance-twice").await.volume_id, v.volume_id);
    let pc = c.publish(&v).await;
    assert_eq!(c.publish(&v).await, pc);
    must_ok(c.stage(&v, &pc).await, "NodeStageVolume");
    must_ok(c.stage(&v, &pc).await, "NodeStageVolume twice");
    let t = c.target("pod-twice");
    must_ok(c.node_publish(&v, &pc, &t).await, "NodePublishVolume");
    must_ok(c.node_publish(&v, &pc, &t).await, "NodePublishVolume twice");
    write_data(c, &t);
    assert_eq!(read_data(c, &t), DATA);
    down(c, &v, &t, 2).await;
    for _ in 0..2 {
        must(
            c.c.delete_volume(DeleteVolumeRequest {
                volume_id: v.volume_id.clone(),
                ..Default::default()
            })
            .await,
            "DeleteVolume",
        );
    }
    assert!(!c.file_of(&v).exists(), "deleted");
}
