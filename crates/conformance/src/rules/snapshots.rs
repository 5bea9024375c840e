//! CSI "CreateSnapshot" (ALREADY_EXISTS for a name reused with another source), "DeleteSnapshot"
//! (a snapshot that does not exist: OK), "ListSnapshots" (ABORTED for a foreign token) and
//! "GetSnapshot" (NOT_FOUND).

use std::collections::BTreeSet;

use csi::v1::*;
use tonic::Code;

use crate::harness::{Ctx, expect_code, must};

fn snap_req(name: &str, source: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    }
}

/// CSI: name REQUIRED → INVALID_ARGUMENT.
pub async fn snapshot_requires_name(c: &mut Ctx) {
    let v = c.create("conformance-snap-src").await;
    expect_code(
        c.c.create_snapshot(snap_req("", &v.volume_id)).await,
        Code::InvalidArgument,
        "no name",
    );
}

/// CSI: source_volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn snapshot_requires_source(c: &mut Ctx) {
    expect_code(
        c.c.create_snapshot(snap_req("conformance-snap", "")).await,
        Code::InvalidArgument,
        "no source",
    );
}

/// A source volume that does not exist → NOT_FOUND (nothing is created).
pub async fn snapshot_unknown_source(c: &mut Ctx) {
    for id in ["some-vol-id", "pvc-00000000-0000-4000-8000-000000000000"] {
        expect_code(
            c.c.create_snapshot(snap_req("conformance-snap", id)).await,
            Code::NotFound,
            id,
        );
    }
    let list = must(c.c.list_snapshots(ListSnapshotsRequest::default()).await, "ListSnapshots");
    assert!(list.entries.is_empty());
}

/// CSI: "This operation MUST be idempotent": the same name and source answer the same snapshot.
pub async fn snapshot_is_idempotent(c: &mut Ctx) {
    let v = c.create("conformance-snap-src").await;
    let a = c.snapshot("conformance-snap", &v.volume_id).await;
    let b = c.snapshot("conformance-snap", &v.volume_id).await;
    assert_eq!(a.snapshot_id, b.snapshot_id);
    assert_eq!(a.source_volume_id, v.volume_id);
    assert_eq!(a.creation_time, b.creation_time);
    assert!(a.size_bytes > 0 && a.ready_to_use);
}

/// CSI "Snapshot already exists but is incompatible" → ALREADY_EXISTS.
pub async fn snapshot_same_name_other_source(c: &mut Ctx) {
    let a = c.create("conformance-snap-a").await;
    let b = c.create("conformance-snap-b").await;
    c.snapshot("conformance-snap", &a.volume_id).await;
    expect_code(
        c.c.create_snapshot(snap_req("conformance-snap", &b.volume_id)).await,
        Code::AlreadyExists,
        "other source",
    );
}

/// CSI "name": names up to 128 bytes.
pub async fn snapshot_max_length_name(c: &mut Ctx) {
    let v = c.create("conformance-snap-src").await;
    let name = "s".repeat(128);
    let s = c.snapshot(&name, &v.volume_id).await;
    assert_eq!(c.snapshot(&name, &v.volume_id).await.snapshot_id, s.snapshot_id);
}

/// CSI: snapshot_id REQUIRED → INVALID_ARGUMENT.
pub async fn delete_snapshot_requires_id(c: &mut Ctx) {
    expect_code(
        c.c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: String::new(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "no snapshot_id",
    );
}

/// CSI: "If a snapshot corresponding to the specified snapshot_id does not exist ... the Plugin
/// MUST reply 0 OK", whatever the id's form.
pub async fn delete_snapshot_unknown_is_ok(c: &mut Ctx) {
    for id in [
        "reallyfakesnapshotid",
        "snap-00000000-0000-4000-8000-000000000000-at-0000000000",
        "pvc-1",
        "a/b",
    ] {
        must(
            c.c.delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: id.into(),
                ..Default::default()
            })
            .await,
            id,
        );
    }
}

/// CSI: deleting twice is OK; a volume restored from the snapshot keeps its data.
pub async fn delete_snapshot_twice_is_ok(c: &mut Ctx) {
    let v = c.create("conformance-snap-src").await;
    let s = c.snapshot("conformance-snap", &v.volume_id).await;
    let req = DeleteSnapshotRequest { snapshot_id: s.snapshot_id.clone(), ..Default::default() };
    must(c.c.delete_snapshot(req.clone()).await, "DeleteSnapshot");
    must(c.c.delete_snapshot(req).await, "DeleteSnapshot again");
    let list = must(c.c.list_snapshots(ListSnapshotsRequest::default()).await, "ListSnapshots");
    assert!(list.entries.is_empty(), "{:?}", list.entries);
    assert!(c.file_of(&v).exists(), "the source volume is untouched");
}

fn ids(r: ListSnapshotsResponse) -> Vec<String> {
    r.entries.into_iter().map(|e| e.snapshot.unwrap().snapshot_id).collect()
}

/// CSI "ListSnapshots" by snapshot_id: that snapshot only; an unknown id: an empty list.
pub async fn list_snapshots_by_id(c: &mut Ctx) {
    let v = c.create("conformance-snap-src").await;
    let a = c.snapshot("conformance-snap-1", &v.volume_id).await;
    c.snapshot("conformance-snap-2", &v.volume_id).await;
    let by = |id: &str| ListSnapshotsRequest { snapshot_id: id.into(), ..Default::default() };
    assert_eq!(
        ids(must(c.c.list_snapshots(by(&a.snapshot_id)).await, "by id")),
        vec![a.snapshot_id.clone()]
    );
    for unknown in ["none-exist-id", "snap-00000000-0000-4000-8000-000000000000-at-0000000000"] {
        assert!(ids(must(c.c.list_snapshots(by(unknown)).await, unknown)).is_empty(), "{unknown}");
    }
}

/// CSI "ListSnapshots" by source_volume_id: that volume's snapshots; an unknown one: none.
pub async fn list_snapshots_by_source(c: &mut Ctx) {
    let a = c.create("conformance-snap-a").await;
    let b = c.create("conformance-snap-b").await;
    let sa = c.snapshot("conformance-snap-of-a", &a.volume_id).await;
    c.snapshot("conformance-snap-of-b", &b.volume_id).await;
    let by = |id: &str| ListSnapshotsRequest { source_volume_id: id.into(), ..Default::default() };
    let listed = must(c.c.list_snapshots(by(&a.volume_id)).await, "by source");
    assert_eq!(listed.entries.len(), 1);
    let s = listed.entries[0].snapshot.clone().unwrap();
    assert_eq!((s.snapshot_id, s.source_volume_id), (sa.snapshot_id, a.volume_id));
    assert!(
        ids(must(
            c.c.list_snapshots(by("pvc-00000000-0000-4000-8000-000000000000")).await,
            "unknown"
        ))
        .is_empty()
    );
}

/// CSI: max_entries bounds a page, next_token continues; every snapshot once.
pub async fn list_snapshots_paginates(c: &mut Ctx) {
    let v = c.create("conformance-snap-src").await;
    let mut want = BTreeSet::new();
    for i in 0..3 {
        want.insert(c.snapshot(&format!("conformance-page-{i}"), &v.volume_id).await.snapshot_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = must(
            c.c.list_snapshots(ListSnapshotsRequest {
                max_entries: 2,
                starting_token: token.clone(),
                ..Default::default()
            })
            .await,
            "ListSnapshots page",
        );
        assert!(r.entries.len() <= 2);
        token = r.next_token.clone();
        seen.extend(ids(r));
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), want);
}

/// CSI "Invalid starting_token" → ABORTED (also a token of ListVolumes).
pub async fn list_snapshots_foreign_token(c: &mut Ctx) {
    let v = c.create("conformance-snap-src").await;
    let a = c.snapshot("conformance-snap-1", &v.volume_id).await;
    c.create("conformance-other").await;
    let vol_token = must(
        c.c.list_volumes(ListVolumesRequest { max_entries: 1, ..Default::default() }).await,
        "ListVolumes",
    )
    .next_token;
    assert!(!vol_token.is_empty());
    for token in ["invalid-token", "1", a.snapshot_id.as_str(), vol_token.as_str()] {
        expect_code(
            c.c.list_snapshots(ListSnapshotsRequest {
                starting_token: token.into(),
                ..Default::default()
            })
            .await,
            Code::Aborted,
            &format!("token {token:?}"),
        );
    }
}

/// CSI: snapshot_id REQUIRED → INVALID_ARGUMENT.
pub async fn get_snapshot_requires_id(c: &mut Ctx) {
    expect_code(
        c.c.get_snapshot(GetSnapshotRequest { snapshot_id: String::new(), ..Default::default() })
            .await,
        Code::InvalidArgument,
        "no snapshot_id",
    );
}

/// CSI "Snapshot does not exist" → NOT_FOUND, whatever the id's form.
pub async fn get_snapshot_unknown(c: &mut Ctx) {
    for id in ["none-exist-id", "snap-00000000-0000-4000-8000-000000000000-at-0000000000"] {
        expect_code(
            c.c.get_snapshot(GetSnapshotRequest { snapshot_id: id.into(), ..Default::default() })
                .await,
            Code::NotFound,
            id,
        );
    }
}

/// CSI "GetSnapshot": the snapshot's current information.
pub async fn get_snapshot_reports(c: &mut Ctx) {
    let v = c.create("conformance-snap-src").await;
    let s = c.snapshot("conformance-snap", &v.volume_id).await;
    let got = must(
        c.c.get_snapshot(GetSnapshotRequest {
            snapshot_id: s.snapshot_id.clone(),
            ..Default::default()
        })
        .await,
        "GetSnapshot",
    )
    .snapshot
    .expect("snapshot");
    assert_eq!(got.snapshot_id, s.snapshot_id);
    assert_eq!(got.source_volume_id, v.volume_id);
    assert_eq!(got.size_bytes, s.size_bytes);
    assert_eq!(got.creation_time, s.creation_time);
    assert!(got.ready_to_use);
}
