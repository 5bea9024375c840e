//! CSI GroupController: "CreateVolumeGroupSnapshot" (required fields, NOT_FOUND for a missing
//! source, idempotency, ALREADY_EXISTS), "GetVolumeGroupSnapshot" (NOT_FOUND),
//! "DeleteVolumeGroupSnapshot" (an unknown group: OK), and the capability.

use std::{os::unix::fs::FileExt, time::Duration};

use csi::v1::{
    group_controller_service_capability::{self, rpc::Type as G},
    plugin_capability::{Type as PType, service::Type as S},
    *,
};
use tonic::Code;

use crate::harness::{Ctx, expect_code, must};

fn group_req(name: &str, volumes: &[&str]) -> CreateVolumeGroupSnapshotRequest {
    CreateVolumeGroupSnapshotRequest {
        name: name.into(),
        source_volume_ids: volumes.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

/// Creates the group (polling until ready) and records its members for the teardown.
async fn group(c: &mut Ctx, name: &str, volumes: &[&str]) -> VolumeGroupSnapshot {
    for _ in 0..240 {
        let g = must(
            c.g.create_volume_group_snapshot(group_req(name, volumes)).await,
            "CreateVolumeGroupSnapshot",
        )
        .group_snapshot
        .expect("group_snapshot is REQUIRED");
        for s in &g.snapshots {
            c.made_snapshot(&s.snapshot_id);
        }
        if g.ready_to_use {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("group snapshot {name} never became ready");
}

/// CSI: GROUP_CONTROLLER_SERVICE in GetPluginCapabilities; CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT
/// in GroupControllerGetCapabilities; the advertised RPCs are implemented.
pub async fn group_capability_advertised(c: &mut Ctx) {
    let caps = must(c.id.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await, "caps");
    let services: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match c.r#type {
            Some(PType::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    assert!(services.contains(&(S::GroupControllerService as i32)), "{services:?}");
    let got = must(
        c.g.group_controller_get_capabilities(GroupControllerGetCapabilitiesRequest {}).await,
        "GroupControllerGetCapabilities",
    );
    let rpcs: Vec<i32> = got
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type.as_ref().map(|group_controller_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    assert_eq!(rpcs, vec![G::CreateDeleteGetVolumeGroupSnapshot as i32]);
    let r = c.g.delete_volume_group_snapshot(DeleteVolumeGroupSnapshotRequest::default()).await;
    assert_ne!(r.map(|_| ()).unwrap_err().code(), Code::Unimplemented);
}

/// CSI: name REQUIRED → INVALID_ARGUMENT.
pub async fn group_requires_name(c: &mut Ctx) {
    let v = c.create("conformance-group-a").await;
    expect_code(
        c.g.create_volume_group_snapshot(group_req("", &[&v.volume_id])).await,
        Code::InvalidArgument,
        "no name",
    );
}

/// CSI: source_volume_ids REQUIRED → INVALID_ARGUMENT.
pub async fn group_requires_sources(c: &mut Ctx) {
    expect_code(
        c.g.create_volume_group_snapshot(group_req("conformance-group", &[])).await,
        Code::InvalidArgument,
        "no sources",
    );
}

/// A source volume that does not exist → NOT_FOUND, and no member is left behind.
pub async fn group_unknown_source(c: &mut Ctx) {
    let v = c.create("conformance-group-a").await;
    for id in ["some-vol-id", "pvc-00000000-0000-4000-8000-000000000000"] {
        expect_code(
            c.g.create_volume_group_snapshot(group_req("conformance-group", &[&v.volume_id, id]))
                .await,
            Code::NotFound,
            id,
        );
    }
    let list = must(c.c.list_snapshots(ListSnapshotsRequest::default()).await, "ListSnapshots");
    assert!(list.entries.is_empty(), "{:?}", list.entries);
}

/// CSI: "MUST be idempotent": the same name and volumes answer the same group; each member
/// is a ready snapshot of one source, carrying the group's id.
pub async fn group_is_idempotent(c: &mut Ctx) {
    let a = c.create("conformance-group-a").await;
    let b = c.create("conformance-group-b").await;
    let first = group(c, "conformance-group", &[&a.volume_id, &b.volume_id]).await;
    let again = group(c, "conformance-group", &[&b.volume_id, &a.volume_id]).await;
    assert_eq!(first.group_snapshot_id, again.group_snapshot_id);
    assert!(!first.group_snapshot_id.is_empty() && first.creation_time.is_some());
    let mut sources: Vec<&str> =
        first.snapshots.iter().map(|s| s.source_volume_id.as_str()).collect();
    sources.sort();
    let mut want = vec![a.volume_id.as_str(), b.volume_id.as_str()];
    want.sort();
    assert_eq!(sources, want);
    for s in &first.snapshots {
        assert!(s.ready_to_use && s.size_bytes > 0, "{s:?}");
        assert_eq!(s.group_snapshot_id, first.group_snapshot_id);
        let got = must(
            c.c.get_snapshot(GetSnapshotRequest {
                snapshot_id: s.snapshot_id.clone(),
                ..Default::default()
            })
            .await,
            "GetSnapshot of a member",
        );
        assert_eq!(got.snapshot.unwrap().group_snapshot_id, first.group_snapshot_id);
    }
}

/// CSI "Group snapshot already exists but is incompatible" → ALREADY_EXISTS.
pub async fn group_same_name_other_volumes(c: &mut Ctx) {
    let a = c.create("conformance-group-a").await;
    let b = c.create("conformance-group-b").await;
    group(c, "conformance-group", &[&a.volume_id]).await;
    expect_code(
        c.g.create_volume_group_snapshot(group_req("conformance-group", &[&b.volume_id])).await,
        Code::AlreadyExists,
        "other volumes",
    );
}

/// CSI: group_snapshot_id REQUIRED → INVALID_ARGUMENT.
pub async fn get_group_requires_id(c: &mut Ctx) {
    expect_code(
        c.g.get_volume_group_snapshot(GetVolumeGroupSnapshotRequest::default()).await,
        Code::InvalidArgument,
        "no id",
    );
}

/// A group snapshot that does not exist → NOT_FOUND.
pub async fn get_group_unknown(c: &mut Ctx) {
    for id in ["no-such-group", "group-00000000-0000-4000-8000-000000000000"] {
        expect_code(
            c.g.get_volume_group_snapshot(GetVolumeGroupSnapshotRequest {
                group_snapshot_id: id.into(),
                ..Default::default()
            })
            .await,
            Code::NotFound,
            id,
        );
    }
}

/// CSI: group_snapshot_id REQUIRED → INVALID_ARGUMENT.
pub async fn delete_group_requires_id(c: &mut Ctx) {
    expect_code(
        c.g.delete_volume_group_snapshot(DeleteVolumeGroupSnapshotRequest::default()).await,
        Code::InvalidArgument,
        "no id",
    );
}

/// A group snapshot that does not exist → OK.
pub async fn delete_group_unknown_is_ok(c: &mut Ctx) {
    for id in ["no-such-group", "group-00000000-0000-4000-8000-000000000000"] {
        must(
            c.g.delete_volume_group_snapshot(DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: id.into(),
                snapshot_ids: vec![
                    "snap-00000000-0000-4000-8000-000000000000-at-0000000000".into(),
                ],
                ..Default::default()
            })
            .await,
            id,
        );
    }
}

/// Delete removes the group and its members; again: OK; Get: NOT_FOUND.
pub async fn delete_group_removes_members(c: &mut Ctx) {
    let a = c.create("conformance-group-a").await;
    let g = group(c, "conformance-group", &[&a.volume_id]).await;
    let req = DeleteVolumeGroupSnapshotRequest {
        group_snapshot_id: g.group_snapshot_id.clone(),
        snapshot_ids: g.snapshots.iter().map(|s| s.snapshot_id.clone()).collect(),
        ..Default::default()
    };
    must(c.g.delete_volume_group_snapshot(req.clone()).await, "DeleteVolumeGroupSnapshot");
    must(c.g.delete_volume_group_snapshot(req).await, "DeleteVolumeGroupSnapshot again");
    let list = must(c.c.list_snapshots(ListSnapshotsRequest::default()).await, "ListSnapshots");
    assert!(list.entries.is_empty(), "{:?}", list.entries);
    expect_code(
        c.g.get_volume_group_snapshot(GetVolumeGroupSnapshotRequest {
            group_snapshot_id: g.group_snapshot_id,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "deleted group",
    );
}

/// A member is a normal snapshot: a volume restored from it alone holds its volume's bytes.
pub async fn group_member_restores_alone(c: &mut Ctx) {
    let a = c.create("conformance-group-a").await;
    let b = c.create("conformance-group-b").await;
    let mark = |c: &Ctx, v: &Volume, text: &[u8]| {
        let f = std::fs::OpenOptions::new().write(true).open(c.file_of(v)).unwrap();
        f.write_all_at(text, 4096).unwrap();
    };
    mark(c, &a, b"MEMBER-A");
    mark(c, &b, b"MEMBER-B");
    let g = group(c, "conformance-group", &[&a.volume_id, &b.volume_id]).await;
    let member = g.snapshots.iter().find(|s| s.source_volume_id == b.volume_id).unwrap();
    let mut req = c.create_req("conformance-group-restore");
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource { snapshot_id: member.snapshot_id.clone() },
        )),
    });
    let mut restored = None;
    for _ in 0..240 {
        match c.c.create_volume(req.clone()).await {
            Ok(r) => {
                restored = r.into_inner().volume;
                break;
            }
            Err(s) if s.code() == Code::Aborted => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(s) => panic!("restore: {:?}: {}", s.code(), s.message()),
        }
    }
    let v = restored.expect("restored");
    c.made_volume(&v.volume_id);
    let mut buf = [0u8; 8];
    std::fs::File::open(c.file_of(&v)).unwrap().read_exact_at(&mut buf, 4096).unwrap();
    assert_eq!(&buf, b"MEMBER-B");
}
