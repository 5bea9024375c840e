//! Snapshots, restores and clones over gRPC, black-box: the real `rds-csi` binary against the
//! RDS emulator over SSH and REST (docs/snapshots.md): data copied in chunks, long copies that
//! never block an RPC, copies that hold their source and target, a failed copy reported.

mod support;

use std::time::Duration;

use csi::v1::{controller_client::ControllerClient, *};
use rds_emulator::emulator::Faults;
use support::{Daemon, controller::*, rds::rds_with};
use tonic::Code;

async fn snapshots(transport: &str) {
    let (rds, _daemon, mut c) = start(transport).await;
    let a = "pvc-a0000000-0000-4000-8000-000000000001";
    let a_file = format!("storage-pool/metal-csi/{a}.img");
    c.create_volume(create(a, 4 * GIB, &[])).await.unwrap();
    write_at(&rds, &a_file, 0, b"HELLO");
    write_at(&rds, &a_file, 3 * (1 << 30) + 5, b"WORLD");

    // CreateSnapshot: copied in 1 GiB chunks; ready once the data is in the snapshot's file.
    let s = c
        .create_snapshot(snap_req("snapshot-1", a, &[]))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(s.snapshot_id.starts_with("snap-") && s.snapshot_id.contains("-at-"), "{s:?}");
    assert_eq!((s.source_volume_id.as_str(), s.size_bytes, s.ready_to_use), (a, 4 * GIB, true));
    assert!(s.creation_time.unwrap().seconds > 1_700_000_000);
    let s_file = format!("storage-pool/metal-csi/{}.img", s.snapshot_id);
    assert_eq!(read_at(&rds, &s_file, 0, 5), b"HELLO");
    assert_eq!(read_at(&rds, &s_file, 3 * (1 << 30) + 5, 5), b"WORLD");
    let snap_disk = rds.ros(&format!(
        ":put [:serialize to=json [/disk print as-value where slot=\"{}\"]]",
        s.snapshot_id
    ));
    assert!(
        snap_disk.contains("\"nvme-tcp-export\":false"),
        "snapshots are not exported: {snap_disk}"
    );
    assert!(
        snap_disk.contains(&format!("rds-csi snapshot source={a}")),
        "source kept in the comment: {snap_disk}"
    );
    let again = c
        .create_snapshot(snap_req("snapshot-1", a, &[]))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!((again.snapshot_id, again.ready_to_use), (s.snapshot_id.clone(), true));
    let other = "pvc-a0000000-0000-4000-8000-000000000002";
    c.create_volume(create(other, GIB, &[])).await.unwrap();
    assert_eq!(
        code(c.create_snapshot(snap_req("snapshot-1", other, &[])).await).0,
        Code::AlreadyExists
    );
    assert_eq!(
        code(c.create_snapshot(snap_req("snapshot-x", "pvc-none", &[])).await).0,
        Code::NotFound
    );
    let (k, m) =
        code(c.create_snapshot(snap_req("snapshot-y", a, &[("mechanism", "reflink")])).await);
    assert!(k == Code::InvalidArgument && m.contains("disk-copy (default otherwise)"), "{m}");
    let (k, m) =
        code(c.create_snapshot(snap_req("snapshot-y", a, &[("mechanism", "file-copy")])).await);
    assert!(k == Code::InvalidArgument && m.contains("7.23"), "this emulator runs 7.21: {m}");

    // The source changes after the snapshot.
    write_at(&rds, &a_file, 0, b"CHANGED");

    // Restore: the snapshot's bytes, not the source's current ones.
    let b = "pvc-b0000000-0000-4000-8000-000000000001";
    let snap_src = volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
        snapshot_id: s.snapshot_id.clone(),
    });
    let restored = c
        .create_volume(from_source(b, GIB, snap_src.clone()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(restored.capacity_bytes, 4 * GIB, "at least the snapshot's size");
    assert!(restored.content_source.is_some());
    let b_file = format!("storage-pool/metal-csi/{b}.img");
    assert_eq!(read_at(&rds, &b_file, 0, 5), b"HELLO");
    assert_eq!(read_at(&rds, &b_file, 3 * (1 << 30) + 5, 5), b"WORLD");
    assert!(c.create_volume(from_source(b, GIB, snap_src)).await.is_ok(), "idempotent");

    // Clone: the source volume's current bytes.
    let cl = "pvc-c0000000-0000-4000-8000-000000000001";
    let vol_src = volume_content_source::Type::Volume(volume_content_source::VolumeSource {
        volume_id: a.into(),
    });
    c.create_volume(from_source(cl, 4 * GIB, vol_src)).await.unwrap();
    assert_eq!(read_at(&rds, &format!("storage-pool/metal-csi/{cl}.img"), 0, 7), b"CHANGED");

    // ListSnapshots: all, by id, by source, paginated.
    c.create_snapshot(snap_req("snapshot-2", other, &[])).await.unwrap();
    let list = |req: ListSnapshotsRequest| {
        let mut c = c.clone();
        async move { c.list_snapshots(req).await }
    };
    let all = list(ListSnapshotsRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.entries.len(), 2);
    let by_id =
        list(ListSnapshotsRequest { snapshot_id: s.snapshot_id.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(by_id.entries.len(), 1);
    let unknown =
        list(ListSnapshotsRequest { snapshot_id: "snap-nope".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
    assert!(unknown.entries.is_empty());
    let by_source =
        list(ListSnapshotsRequest { source_volume_id: other.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(by_source.entries.len(), 1);
    let page = list(ListSnapshotsRequest { max_entries: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 1);
    let next = list(ListSnapshotsRequest {
        max_entries: 1,
        starting_token: page.next_token.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(next.entries.len(), 1);
    assert!(next.next_token.is_empty());
    assert_ne!(
        page.entries[0].snapshot.as_ref().unwrap().snapshot_id,
        next.entries[0].snapshot.as_ref().unwrap().snapshot_id
    );
    assert_eq!(
        code(
            list(ListSnapshotsRequest { starting_token: "pvc-x".into(), ..Default::default() })
                .await
        )
        .0,
        Code::Aborted
    );

    // The Go driver's mechanism is refused unless enabled (its data semantics are unverified)...
    let (code_, msg) =
        code(c.create_snapshot(snap_req("snapshot-3", a, &[("mechanism", "copy-from")])).await);
    assert_eq!(code_, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("--allow-copy-from"), "{msg}");
    // ... and works with --allow-copy-from.
    let flags: Vec<String> =
        rds.flags(transport).into_iter().chain(["--allow-copy-from".to_string()]).collect();
    let opted = Daemon::start_owned(&flags);
    for _ in 0..200 {
        if opted.http_get("/readyz").0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c2 = ControllerClient::new(opted.channel().await);
    let legacy = c2
        .create_snapshot(snap_req("snapshot-3", a, &[("mechanism", "copy-from")]))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(legacy.ready_to_use);

    // DeleteSnapshot: disk and file gone; idempotent; a restored volume is independent.
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: s.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!rds.file_exists(&s_file));
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: s.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(read_at(&rds, &b_file, 0, 5), b"HELLO");
    // CSI: a snapshot that does not exist is OK to delete, whatever the id's form.
    for id in ["pvc-1", "reallyfakesnapshotid", "snap-00000000-0000-4000-8000-000000000000-at-00"] {
        c.delete_snapshot(DeleteSnapshotRequest { snapshot_id: id.into(), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("{id}: {e:?}"));
    }
    assert_eq!(
        code(c.delete_snapshot(DeleteSnapshotRequest::default()).await).0,
        Code::InvalidArgument,
        "the id is required"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_restores_and_clones_over_ssh() {
    snapshots("ssh").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_restores_and_clones_over_rest() {
    snapshots("rest").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn long_copies_never_block_an_rpc() {
    let (rds, _daemon, mut c) = start("ssh").await;
    let a = "pvc-d0000000-0000-4000-8000-000000000001";
    c.create_volume(create(a, 8 * GIB, &[])).await.unwrap();
    write_at(&rds, &format!("storage-pool/metal-csi/{a}.img"), 7 * (1 << 30), b"TAIL");
    // Every command now takes 0.4 s: eight chunks (copy + progress, ~6.4 s) take far longer than
    // an RPC waits (2 s), so the restore below surely meets a snapshot still copying.
    rds.emu.set_faults(Faults { latency_ms: 400, ..Faults::default() }).unwrap();
    let first =
        c.create_snapshot(snap_req("slow", a, &[])).await.unwrap().into_inner().snapshot.unwrap();
    assert!(!first.ready_to_use, "not ready while copying");
    // A running copy holds its source and its destination.
    let (k, m) = code(
        c.delete_volume(DeleteVolumeRequest { volume_id: a.into(), ..Default::default() }).await,
    );
    assert!(k == Code::FailedPrecondition && m.contains("running copy"), "{k:?} {m}");
    let (k, m) = code(
        c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: first.snapshot_id.clone(),
            ..Default::default()
        })
        .await,
    );
    assert!(k == Code::FailedPrecondition && m.contains("running copy"), "{k:?} {m}");
    assert!(
        rds.file_exists(&format!("storage-pool/metal-csi/{a}.img")),
        "the source is still there"
    );
    let snap_src = volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
        snapshot_id: first.snapshot_id.clone(),
    });
    assert_eq!(
        code(
            c.create_volume(from_source(
                "pvc-d0000000-0000-4000-8000-000000000002",
                GIB,
                snap_src.clone()
            ))
            .await
        )
        .0,
        Code::Unavailable,
        "a snapshot still copying cannot be restored yet"
    );
    let mut ready = false;
    for _ in 0..60 {
        if c.create_snapshot(snap_req("slow", a, &[]))
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap()
            .ready_to_use
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(ready, "the snapshotter's polling sees it become ready");
    assert_eq!(
        read_at(
            &rds,
            &format!("storage-pool/metal-csi/{}.img", first.snapshot_id),
            7 * (1 << 30),
            4
        ),
        b"TAIL",
        "the snapshot holds the tail"
    );
    // A restore under the same latency answers ABORTED until its data is in place.
    let b = "pvc-d0000000-0000-4000-8000-000000000003";
    let mut answers = Vec::new();
    for _ in 0..100 {
        match c.create_volume(from_source(b, GIB, snap_src.clone())).await {
            Ok(_) => {
                answers.push(Code::Ok);
                break;
            }
            Err(s) => answers.push(s.code()),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(answers.first(), Some(&Code::Aborted), "{answers:?}");
    assert_eq!(answers.last(), Some(&Code::Ok), "{answers:?}");
    assert_eq!(
        read_at(&rds, &format!("storage-pool/metal-csi/{b}.img"), 7 * (1 << 30), 4),
        b"TAIL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn file_copy_snapshots_on_routeros_7_23() {
    let behaviour =
        rds_emulator::exec::Behaviour { version: "7.23".parse().unwrap(), ..Default::default() };
    let (rds, _daemon, mut c) = start_on(rds_with(behaviour).await, "ssh").await;
    let a = "pvc-f0000000-0000-4000-8000-000000000001";
    c.create_volume(create(a, 2 * GIB, &[])).await.unwrap();
    write_at(&rds, &format!("storage-pool/metal-csi/{a}.img"), 1 << 30, b"FILECOPY");
    let s = c
        .create_snapshot(snap_req("fc", a, &[("mechanism", "file-copy")]))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(s.ready_to_use);
    assert_eq!(
        read_at(&rds, &format!("storage-pool/metal-csi/{}.img", s.snapshot_id), 1 << 30, 8),
        b"FILECOPY"
    );
    assert!(rds.commands().iter().any(|c| c.starts_with("/file/copy")), "{:?}", rds.commands());
    // The version is read once per process: CreateVolume's NQN rule learnt it, the file-copy
    // check reuses it.
    let version_reads = rds.commands().iter().filter(|c| c.contains("/system resource")).count();
    assert_eq!(version_reads, 1, "{:?}", rds.commands());
    let snap_disk = rds.ros(&format!(
        ":put [:serialize to=json [/disk print as-value where slot=\"{}\"]]",
        s.snapshot_id
    ));
    assert!(
        snap_disk.contains("mechanism=file-copy ready")
            && snap_disk.contains("\"nvme-tcp-export\":false"),
        "{snap_disk}"
    );
    let b = "pvc-f0000000-0000-4000-8000-000000000002";
    let src = volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
        snapshot_id: s.snapshot_id,
    });
    c.create_volume(from_source(b, GIB, src)).await.unwrap();
    assert_eq!(read_at(&rds, &format!("storage-pool/metal-csi/{b}.img"), 1 << 30, 8), b"FILECOPY");
}

/// A copy that fails is reported by the next CreateSnapshot (UNAVAILABLE with the RouterOS
/// cause), not only in a log line, and that call starts it again; it then completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_copy_is_reported_on_the_next_call_and_resumed() {
    let (rds, _daemon, mut c) = start("ssh").await;
    let a = "pvc-f0000000-0000-4000-8000-0000000000c1";
    c.create_volume(create(a, 3 * GIB, &[])).await.unwrap();
    write_at(&rds, &format!("storage-pool/metal-csi/{a}.img"), 2 * (1 << 30) + 7, b"END");
    // The second chunk fails once, the way a RouterOS error would.
    rds.emu
        .set_faults(Faults {
            fail: vec![rds_emulator::emulator::FailRule {
                pattern: "^/disk copy".into(),
                nth: 2,
                error: "failure: copy interrupted".into(),
            }],
            ..Faults::default()
        })
        .unwrap();
    let mut reported = None;
    let mut ready = None;
    for _ in 0..100 {
        match c.create_snapshot(snap_req("failing", a, &[])).await {
            Ok(r) if r.get_ref().snapshot.as_ref().unwrap().ready_to_use => {
                ready = r.into_inner().snapshot;
                break;
            }
            Ok(_) => {}
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                assert!(
                    s.message().contains("failure: copy interrupted")
                        && s.message().contains("restarted"),
                    "{}",
                    s.message()
                );
                reported = Some(s.message().to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reported.is_some(), "the failure reached the caller");
    let s = ready.expect("the copy was resumed and finished");
    assert_eq!(
        read_at(
            &rds,
            &format!("storage-pool/metal-csi/{}.img", s.snapshot_id),
            2 * (1 << 30) + 7,
            3
        ),
        b"END"
    );
}
