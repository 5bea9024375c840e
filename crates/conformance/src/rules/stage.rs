//! CSI "NodeStageVolume" (error table: volume published but incompatible ALREADY_EXISTS;
//! required fields INVALID_ARGUMENT) and "NodeUnstageVolume", plus the data-safety rules of
//! staging: a read-only volume and a restored volume are never formatted.

use std::os::unix::fs::FileExt;

use csi::v1::{volume_capability::access_mode::Mode as Am, *};
use tonic::Code;

use crate::harness::{Ctx, NODE, expect_code, mounts_at, must, must_ok};

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn stage_requires_volume_id(c: &mut Ctx) {
    let v = c.create("conformance-stage").await;
    let pc = c.publish(&v).await;
    let req = NodeStageVolumeRequest { volume_id: String::new(), ..c.stage_req(&v, &pc, c.cap()) };
    expect_code(c.stage_with(req).await, Code::InvalidArgument, "no volume_id");
}

/// CSI: staging_target_path REQUIRED → INVALID_ARGUMENT.
pub async fn stage_requires_staging_path(c: &mut Ctx) {
    let v = c.create("conformance-stage").await;
    let pc = c.publish(&v).await;
    let req = NodeStageVolumeRequest {
        staging_target_path: String::new(),
        ..c.stage_req(&v, &pc, c.cap())
    };
    expect_code(c.stage_with(req).await, Code::InvalidArgument, "no staging_target_path");
    assert!(!c.attached(&v), "nothing was attached");
}

/// CSI: volume_capability REQUIRED → INVALID_ARGUMENT.
pub async fn stage_requires_capability(c: &mut Ctx) {
    let v = c.create("conformance-stage").await;
    let pc = c.publish(&v).await;
    let req = NodeStageVolumeRequest { volume_capability: None, ..c.stage_req(&v, &pc, c.cap()) };
    expect_code(c.stage_with(req).await, Code::InvalidArgument, "no capability");
    assert!(!c.attached(&v), "nothing was attached");
}

/// CSI: "This operation MUST be idempotent": staging twice is OK and stacks nothing.
pub async fn stage_is_idempotent(c: &mut Ctx) {
    let v = c.create("conformance-stage").await;
    let pc = c.publish(&v).await;
    must_ok(c.stage(&v, &pc).await, "NodeStageVolume");
    must_ok(c.stage(&v, &pc).await, "NodeStageVolume again");
    let staged = mounts_at(&c.staging(&v));
    if c.is_block() {
        assert!(staged.is_empty(), "nothing is mounted at a block volume's staging path");
    } else {
        assert_eq!(staged.len(), 1, "one mount, not two: {staged:?}");
    }
    assert!(c.attached(&v));
}

/// CSI "Volume published but is incompatible" → ALREADY_EXISTS: staged as ext4, a stage as
/// xfs at the same path is refused. In block mode a filesystem stage over a block volume's
/// data is refused (FAILED_PRECONDITION) and leaves the data as it was.
pub async fn stage_incompatible(c: &mut Ctx) {
    let v = c.create("conformance-stage").await;
    let pc = c.publish(&v).await;
    must_ok(c.stage(&v, &pc).await, "NodeStageVolume");
    if c.is_block() {
        let file = std::fs::OpenOptions::new().write(true).open(c.file_of(&v)).unwrap();
        file.write_all_at(b"raw VM disk data", 512).unwrap();
        file.sync_all().unwrap();
        must(
            c.n.node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: v.volume_id.clone(),
                staging_target_path: c.staging(&v).display().to_string(),
            })
            .await,
            "NodeUnstageVolume",
        );
        let req = c.stage_req(&v, &pc, crate::harness::mount_cap("ext4", Am::SingleNodeWriter));
        expect_code(
            c.stage_with(req).await,
            Code::FailedPrecondition,
            "a filesystem over block data",
        );
        let mut buf = [0u8; 16];
        std::fs::File::open(c.file_of(&v)).unwrap().read_exact_at(&mut buf, 512).unwrap();
        assert_eq!(&buf, b"raw VM disk data", "the data is untouched");
    } else {
        let req = c.stage_req(&v, &pc, c.cap_fs("xfs", Am::SingleNodeWriter));
        expect_code(c.stage_with(req).await, Code::AlreadyExists, "xfs over a staged ext4");
        assert_eq!(mounts_at(&c.staging(&v)).len(), 1);
    }
}

fn zeros(path: &std::path::Path, len: usize) -> bool {
    let mut buf = vec![1u8; len];
    std::fs::File::open(path).unwrap().read_exact_at(&mut buf, 0).unwrap();
    buf.iter().all(|b| *b == 0)
}

/// PUBLISH_READONLY: a volume published read-only is staged read-only and never formatted (a
/// blank one is refused with FAILED_PRECONDITION and stays blank).
pub async fn stage_readonly_never_formats(c: &mut Ctx) {
    let v = c.create("conformance-ro").await;
    let cap = c.cap();
    let pc = must_ok(
        c.controller_publish(&v, NODE, cap, true).await,
        "ControllerPublishVolume readonly",
    );
    assert_eq!(pc.get("readonly").map(String::as_str), Some("true"), "{pc:?}");
    let r = c.stage(&v, &pc).await;
    if c.is_block() {
        must_ok(r, "a read-only block stage formats nothing");
    } else {
        let msg = expect_code(r, Code::FailedPrecondition, "blank read-only volume");
        assert!(msg.contains("read-only"), "{msg}");
        assert!(!c.attached(&v), "a failed stage detaches");
    }
    assert!(zeros(&c.file_of(&v), 1 << 20), "never formatted");
}

/// A volume restored from a snapshot whose data did not arrive (here: a snapshot of a blank
/// volume) is never formatted as if it were new: FAILED_PRECONDITION. Block volumes are
/// never formatted anyway.
pub async fn stage_restored_blank_is_refused(c: &mut Ctx) {
    use csi::v1::volume_content_source::{SnapshotSource, Type};
    let src = c.create("conformance-blank-source").await;
    let snap = c.snapshot("conformance-blank-snap", &src.volume_id).await;
    let mut restored = None;
    for _ in 0..120 {
        let req = CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource {
                r#type: Some(Type::Snapshot(SnapshotSource {
                    snapshot_id: snap.snapshot_id.clone(),
                })),
            }),
            ..c.create_req("conformance-restored-blank")
        };
        match c.c.create_volume(req).await {
            Ok(r) => {
                restored = r.into_inner().volume;
                break;
            }
            Err(s) if s.code() == Code::Aborted => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await
            }
            Err(s) => panic!("restore: {s:?}"),
        }
    }
    let v = restored.expect("restored");
    c.made_volume(&v.volume_id);
    assert!(v.volume_context.contains_key("contentSource"), "{:?}", v.volume_context);
    let pc = c.publish(&v).await;
    let r = c.stage(&v, &pc).await;
    if c.is_block() {
        must_ok(r, "block: nothing to format");
    } else {
        let msg = expect_code(r, Code::FailedPrecondition, "a blank restored volume");
        assert!(msg.contains("filled from"), "{msg}");
    }
    assert!(zeros(&c.file_of(&v), 1 << 20), "never formatted");
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn unstage_requires_volume_id(c: &mut Ctx) {
    let staging = c.dir.join("kubelet/staging/x");
    let req = NodeUnstageVolumeRequest {
        volume_id: String::new(),
        staging_target_path: staging.display().to_string(),
    };
    expect_code(c.n.node_unstage_volume(req).await, Code::InvalidArgument, "no volume_id");
}

/// CSI: staging_target_path REQUIRED → INVALID_ARGUMENT.
pub async fn unstage_requires_staging_path(c: &mut Ctx) {
    let req = NodeUnstageVolumeRequest {
        volume_id: "pvc-00000000-0000-4000-8000-000000000000".into(),
        staging_target_path: String::new(),
    };
    expect_code(
        c.n.node_unstage_volume(req).await,
        Code::InvalidArgument,
        "no staging_target_path",
    );
}

/// CSI: "This operation MUST be idempotent": unstaging twice is OK; the volume is detached.
pub async fn unstage_twice_is_ok(c: &mut Ctx) {
    let v = c.create("conformance-unstage").await;
    let pc = c.publish(&v).await;
    must_ok(c.stage(&v, &pc).await, "NodeStageVolume");
    let req = NodeUnstageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: c.staging(&v).display().to_string(),
    };
    must(c.n.node_unstage_volume(req.clone()).await, "NodeUnstageVolume");
    assert!(mounts_at(&c.staging(&v)).is_empty());
    assert!(!c.attached(&v), "detached");
    must(c.n.node_unstage_volume(req).await, "NodeUnstageVolume again");
}
