//! Point-in-time copies, group snapshots and volume modification over gRPC, black-box: the
//! real `rds-csi` binary against the RDS emulator over SSH (docs/snapshots.md "Point in
//! time", "Group snapshots"; docs/storageclass.md "Changing a volume"). What the initiators
//! see of a held export is proven on a real kernel in tests/point_in_time_vm.rs.

mod support;

use std::{collections::HashMap, time::Duration};

use csi::v1::{
    controller_client::ControllerClient, group_controller_client::GroupControllerClient,
    volume_capability::access_mode::Mode, *,
};
use rds_emulator::emulator::Faults;
use support::{Daemon, cap, controller::*, rds::rds};
use tonic::{Code, transport::Channel};

const A: &str = "pvc-70000000-0000-4000-8000-000000000001";
const B: &str = "pvc-70000000-0000-4000-8000-000000000002";

fn file(slot: &str) -> String {
    format!("storage-pool/metal-csi/{slot}.img")
}

async fn start_with(extra: &[&str]) -> (support::rds::Rds, Daemon, ControllerClient<Channel>) {
    start_on(rds().await, extra).await
}

async fn start_on(
    rds: support::rds::Rds,
    extra: &[&str],
) -> (support::rds::Rds, Daemon, ControllerClient<Channel>) {
    let mut flags = vec!["--known-node-id=node-a,node-b"];
    flags.extend_from_slice(extra);
    start_with_flags(rds, "ssh", &flags).await
}

async fn publish(
    c: &mut ControllerClient<Channel>,
    vid: &str,
    node: &str,
) -> HashMap<String, String> {
    let volume = c
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: vid.into() })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    c.controller_publish_volume(ControllerPublishVolumeRequest {
        volume_id: vid.into(),
        node_id: node.into(),
        volume_capability: Some(cap(false, Mode::SingleNodeWriter)),
        volume_context: volume.volume_context,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .publish_context
}

/// The disk as RouterOS prints it (JSON).
fn disk(rds: &support::rds::Rds, slot: &str) -> serde_json::Value {
    let out = rds.ros(&format!(
        ":put [:serialize to=json [/disk print detail as-value where slot=\"{slot}\"]]"
    ));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v[0].clone()
}

/// Indexes of the commands that withdraw and give back `slot`'s export, and of the copies.
fn export_changes(commands: &[String], slot: &str) -> (Vec<usize>, Vec<usize>) {
    let set = format!("/disk set \"{slot}\" nvme-tcp-export=");
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for (i, c) in commands.iter().enumerate() {
        if c.starts_with(&format!("{set}no")) {
            off.push(i);
        } else if c.starts_with(&format!("{set}yes")) {
            on.push(i);
        }
    }
    (off, on)
}

async fn snapshot_until(
    c: &mut ControllerClient<Channel>,
    name: &str,
    source: &str,
    params: &[(&str, &str)],
) -> Result<Snapshot, tonic::Status> {
    for _ in 0..200 {
        let s =
            c.create_snapshot(snap_req(name, source, params)).await?.into_inner().snapshot.unwrap();
        if s.ready_to_use {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("snapshot {name} never became ready");
}

/// A snapshot of a published volume withdraws its export for the copy (so the copy is one
/// instant: the initiators queue their writes) and gives it back with the same hosts; an
/// unpublished volume is copied without a pause; mechanisms that copy over time are refused
/// for a published volume, naming the one that works; a publish waits while a copy reads.
#[tokio::test(flavor = "multi_thread")]
async fn copies_of_published_volumes_hold_their_writes() {
    let (rds, daemon, mut c) = start_with(&[]).await;
    c.create_volume(create(A, 2 * GIB, &[])).await.unwrap();
    support::controller::write_at(&rds, &file(A), 0, b"BEFORE");

    let quiet = snapshot_until(&mut c, "unpublished", A, &[]).await.unwrap();
    assert_eq!(export_changes(&rds.commands(), A), (vec![], vec![]), "no pause without a node");
    assert_eq!(read_at(&rds, &file(&quiet.snapshot_id), 0, 6), b"BEFORE");

    publish(&mut c, A, "node-a").await;
    let hosts_before = disk(&rds, A)["nvme-tcp-server-allow-host-name"].clone();
    let from = rds.commands().len();
    let held = snapshot_until(&mut c, "published", A, &[]).await.unwrap();
    let commands = rds.commands().split_off(from);
    let (off, on) = export_changes(&commands, A);
    assert_eq!((off.len(), on.len()), (1, 1), "one hold: {commands:#?}");
    let copies: Vec<usize> = commands
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with(&format!("/disk copy src=\"{A}\"")))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(copies.len(), 16, "2 GiB in 128 MiB chunks while held: {commands:#?}");
    assert!(
        off[0] < copies[0] && *copies.last().unwrap() < on[0],
        "copied while held: {commands:#?}"
    );
    let ready_at = commands
        .iter()
        .position(|c| {
            c.contains(&held.snapshot_id) && c.contains("comment=") && c.contains(" ready")
        })
        .expect("marked ready");
    assert!(ready_at > on[0], "ready only after the export is back: {commands:#?}");
    let after = disk(&rds, A);
    assert_eq!(after["nvme-tcp-export"], true, "{after}");
    assert_eq!(after["nvme-tcp-server-allow-host-name"], hosts_before, "the same hosts");
    let (_, metrics) = daemon.http_get("/metrics");
    assert!(
        metrics.contains("rds_csi_controller_held_copies_total{action=\"done\"} 1"),
        "{metrics}"
    );
    let pause_ms = metrics
        .lines()
        .find(|l| l.starts_with("rds_csi_controller_copy_last_pause_milliseconds "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .expect("the pause gauge");
    assert!(pause_ms > 0, "{metrics}");
    println!("held copy of 2 GiB (16 chunks over SSH on loopback): writes held {pause_ms} ms");

    // file-copy copies over time: refused for a published volume, naming disk-copy.
    let e = c.create_snapshot(snap_req("fc", A, &[("mechanism", "file-copy")])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("use mechanism disk-copy"), "{}", e.message());

    // A clone of the published volume holds its writes too.
    let from = rds.commands().len();
    let src = volume_content_source::Type::Volume(volume_content_source::VolumeSource {
        volume_id: A.into(),
    });
    let clone = "pvc-70000000-0000-4000-8000-0000000000c1";
    let mut answers = Vec::new();
    for _ in 0..100 {
        match c.create_volume(from_source(clone, 2 * GIB, src.clone())).await {
            Ok(_) => break,
            Err(s) => answers.push(s.code()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answers.iter().all(|c| *c == Code::Aborted), "{answers:?}");
    let (off, on) = export_changes(&rds.commands().split_off(from), A);
    assert_eq!((off.len(), on.len()), (1, 1), "the clone held the source's writes");
    assert_eq!(read_at(&rds, &file(clone), 0, 6), b"BEFORE");

    // While a copy reads the volume, a publish waits (ABORTED): a new writer would tear it.
    rds.emu.set_faults(Faults { latency_ms: 150, ..Faults::default() }).unwrap();
    let first = c.create_snapshot(snap_req("slow", A, &[])).await.unwrap().into_inner();
    assert!(!first.snapshot.unwrap().ready_to_use);
    let e = c
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: A.into(),
            node_id: "node-b".into(),
            volume_capability: Some(cap(false, Mode::SingleNodeWriter)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(e.message().contains("being copied"), "{}", e.message());
    rds.emu.set_faults(Faults::default()).unwrap();
    snapshot_until(&mut c, "slow", A, &[]).await.unwrap();
}

/// The pause is bounded: a copy the measured rate says cannot finish within
/// `--snapshot-pause-max-seconds` is stopped, the export given back, and the snapshot left
/// not ready (never restorable); the caller gets FAILED_PRECONDITION saying why, and a retry is
/// refused before any pause. With 0, every copy of a published volume is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_pause_is_bounded() {
    let (rds, _daemon, mut c) = start_with(&["--snapshot-pause-max-seconds", "1"]).await;
    c.create_volume(create(A, 4 * GIB, &[])).await.unwrap();
    publish(&mut c, A, "node-a").await;
    let from = rds.commands().len();
    rds.emu.set_faults(Faults { latency_ms: 300, ..Faults::default() }).unwrap();
    let mut refusal = None;
    for _ in 0..40 {
        match c.create_snapshot(snap_req("big", A, &[])).await {
            Ok(r) => assert!(!r.into_inner().snapshot.unwrap().ready_to_use, "never ready"),
            Err(s) => {
                refusal = Some(s);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = refusal.expect("refused");
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("pause bound") && s.message().contains(A), "{}", s.message());
    rds.emu.set_faults(Faults::default()).unwrap();
    assert_eq!(disk(&rds, A)["nvme-tcp-export"], true, "the export is back");
    let (off, on) = export_changes(&rds.commands().split_off(from), A);
    assert_eq!((off.len(), on.len()), (1, 1), "one hold, given back");
    // The retry is refused from the measured rate, without holding again.
    let s = c.create_snapshot(snap_req("big", A, &[])).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("measured"), "{}", s.message());
    assert_eq!(export_changes(&rds.commands().split_off(from), A).0.len(), 1, "no second hold");
    let snap = csi::v1::GetSnapshotRequest {
        snapshot_id: driver::core::snapshots::snapshot_id("big").to_string(),
        ..Default::default()
    };
    let got = c.get_snapshot(snap).await.unwrap().into_inner().snapshot.unwrap();
    assert!(!got.ready_to_use, "a stopped copy is never ready");
    let restore = volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
        snapshot_id: got.snapshot_id,
    });
    let e = c
        .create_volume(from_source("pvc-70000000-0000-4000-8000-0000000000d1", GIB, restore))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "not restorable: {e:?}");

    let (rds0, _d0, mut c0) = start_with(&["--snapshot-pause-max-seconds", "0"]).await;
    c0.create_volume(create(B, GIB, &[])).await.unwrap();
    snapshot_until(&mut c0, "idle", B, &[]).await.expect("unpublished: no pause needed");
    publish(&mut c0, B, "node-a").await;
    let from = rds0.commands().len();
    let mut refused = None;
    for _ in 0..20 {
        match c0.create_snapshot(snap_req("never", B, &[])).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    let s = refused.expect("refused");
    assert!(
        s.code() == Code::FailedPrecondition
            && s.message().contains("--snapshot-pause-max-seconds 0"),
        "{s:?}"
    );
    assert_eq!(export_changes(&rds0.commands().split_off(from), B), (vec![], vec![]), "never held");
}

/// CreateVolumeGroupSnapshot copies every volume at one instant (the published one held for
/// the whole group copy); members are normal snapshots, restorable alone; the same name with
/// other volumes is ALREADY_EXISTS; Get and Delete by group id; an unknown group is NOT_FOUND
/// for Get and OK for Delete.
#[tokio::test(flavor = "multi_thread")]
async fn group_snapshots_share_one_instant() {
    let (rds, daemon, mut c) = start_with(&[]).await;
    let mut g = GroupControllerClient::new(daemon.channel().await);
    c.create_volume(create(A, GIB, &[])).await.unwrap();
    c.create_volume(create(B, GIB, &[])).await.unwrap();
    write_at(&rds, &file(A), 0, b"AAAA");
    write_at(&rds, &file(B), 0, b"BBBB");
    publish(&mut c, A, "node-a").await;
    let from = rds.commands().len();
    let caps = g
        .group_controller_get_capabilities(GroupControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    assert_eq!(caps.len(), 1, "{caps:?}");

    let req = |volumes: &[&str]| CreateVolumeGroupSnapshotRequest {
        name: "vgs-1".into(),
        source_volume_ids: volumes.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let mut group = None;
    for _ in 0..100 {
        let got = g.create_volume_group_snapshot(req(&[B, A])).await.unwrap().into_inner();
        let got = got.group_snapshot.unwrap();
        if got.ready_to_use {
            group = Some(got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let group = group.expect("ready");
    assert!(group.group_snapshot_id.starts_with("group-"), "{group:?}");
    assert_eq!(group.snapshots.len(), 2);
    assert!(group.creation_time.unwrap().seconds > 1_700_000_000);
    let (off, on) = export_changes(&rds.commands().split_off(from), A);
    assert_eq!((off.len(), on.len()), (1, 1), "A (published) held once for the group");
    assert_eq!(export_changes(&rds.commands(), B), (vec![], vec![]), "B has no node");
    for s in &group.snapshots {
        assert!(s.ready_to_use && s.group_snapshot_id == group.group_snapshot_id, "{s:?}");
        let want: &[u8] = if s.source_volume_id == A { b"AAAA" } else { b"BBBB" };
        assert_eq!(read_at(&rds, &file(&s.snapshot_id), 0, 4), want);
    }
    // Idempotent; other volumes under the same name are ALREADY_EXISTS.
    let again = g.create_volume_group_snapshot(req(&[A, B])).await.unwrap().into_inner();
    assert_eq!(again.group_snapshot.unwrap().group_snapshot_id, group.group_snapshot_id);
    let e = g.create_volume_group_snapshot(req(&[A])).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let e = g
        .create_volume_group_snapshot(req(&[A, "pvc-70000000-0000-4000-8000-0000000000ff"]))
        .await
        .unwrap_err();
    assert!(matches!(e.code(), Code::NotFound | Code::AlreadyExists), "{e:?}");
    // A member restores alone.
    let member = group.snapshots.iter().find(|s| s.source_volume_id == B).unwrap();
    let restored = "pvc-70000000-0000-4000-8000-0000000000e1";
    let src = volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
        snapshot_id: member.snapshot_id.clone(),
    });
    for _ in 0..100 {
        if c.create_volume(from_source(restored, GIB, src.clone())).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read_at(&rds, &file(restored), 0, 4), b"BBBB");
    // Get, Delete.
    let got = g
        .get_volume_group_snapshot(GetVolumeGroupSnapshotRequest {
            group_snapshot_id: group.group_snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .group_snapshot
        .unwrap();
    assert!(got.ready_to_use && got.snapshots.len() == 2, "{got:?}");
    let delete = DeleteVolumeGroupSnapshotRequest {
        group_snapshot_id: group.group_snapshot_id.clone(),
        snapshot_ids: group.snapshots.iter().map(|s| s.snapshot_id.clone()).collect(),
        ..Default::default()
    };
    g.delete_volume_group_snapshot(delete.clone()).await.unwrap();
    for s in &group.snapshots {
        assert!(!rds.file_exists(&file(&s.snapshot_id)), "{} removed", s.snapshot_id);
    }
    g.delete_volume_group_snapshot(delete).await.expect("deleting again is OK");
    let e = g
        .get_volume_group_snapshot(GetVolumeGroupSnapshotRequest {
            group_snapshot_id: group.group_snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(read_at(&rds, &file(restored), 0, 4), b"BBBB", "the restore outlives its group");
}

/// ControllerModifyVolume: `compress` is set on the disk at once, the reconnect parameters are
/// recorded and reach the node in the next publish context, a retry with the same values costs
/// one round trip, an immutable key is INVALID_ARGUMENT naming the mutable ones, an unknown
/// volume NOT_FOUND; CreateVolume takes mutable parameters too.
#[tokio::test(flavor = "multi_thread")]
async fn volumes_are_modified_in_place() {
    let (rds, _daemon, mut c) = start_with(&[]).await;
    let mut req = create(A, GIB, &[("reconnectDelay", "5")]);
    req.mutable_parameters = HashMap::from([("compress".to_string(), "yes".to_string())]);
    c.create_volume(req).await.unwrap();
    assert_eq!(disk(&rds, A)["compress"], true, "CreateVolume's mutable parameter");

    let modify = |params: &[(&str, &str)]| ControllerModifyVolumeRequest {
        volume_id: A.into(),
        mutable_parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    c.controller_modify_volume(modify(&[
        ("compress", "no"),
        ("reconnectDelay", "2"),
        ("ctrlLossTmo", "600"),
    ]))
    .await
    .unwrap();
    let d = disk(&rds, A);
    assert_eq!(d["compress"], false, "{d}");
    let comment = d["comment"].as_str().unwrap();
    assert!(
        comment.contains("reconnectDelay=2") && comment.contains("ctrlLossTmo=600"),
        "{comment}"
    );
    let (_, trips) = counted(
        &rds,
        c.controller_modify_volume(modify(&[("compress", "no"), ("reconnectDelay", "2")])),
    )
    .await;
    assert_eq!(trips, 1, "nothing to change: one look");
    let ctx = publish(&mut c, A, "node-a").await;
    assert_eq!(ctx.get("reconnectDelay").map(String::as_str), Some("2"), "{ctx:?}");
    assert_eq!(ctx.get("ctrlLossTmo").map(String::as_str), Some("600"), "{ctx:?}");

    let e = c.controller_modify_volume(modify(&[("volumePath", "/x")])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("compress, migrationTimeoutSeconds, ctrlLossTmo"),
        "{}",
        e.message()
    );
    let e = c.controller_modify_volume(modify(&[("reconnectDelay", "0")])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .controller_modify_volume(ControllerModifyVolumeRequest {
            volume_id: B.into(),
            mutable_parameters: HashMap::from([("compress".into(), "yes".into())]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c.controller_modify_volume(modify(&[])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "mutable_parameters is required");
}

/// A controller that died mid-copy left the source's export withdrawn and the hold in the
/// copy's comment: the snapshotter's next CreateSnapshot gives the export back and takes the
/// copy again from the start, once the hold is older than the bound plus the margin; a young
/// hold (maybe a copy still running in another replica) is UNAVAILABLE and left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_hold_left_by_a_dead_controller_is_given_back() {
    let (rds, _daemon, mut c) = start_with(&[]).await;
    c.create_volume(create(A, GIB, &[])).await.unwrap();
    write_at(&rds, &file(A), 0, b"DATA");
    publish(&mut c, A, "node-a").await;
    let hosts = disk(&rds, A)["nvme-tcp-server-allow-host-name"].as_str().unwrap().to_string();
    let snap = driver::core::snapshots::snapshot_id("interrupted").to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        as i64;
    let held = |since: i64| {
        format!(
            "rds-csi snapshot source={A} created={since} mechanism=disk-copy paused={hosts} held={since} copying=0"
        )
    };
    rds.ros(&format!("/disk set {A} nvme-tcp-export=no"));
    rds.ros(&format!(
        "/disk add type=file slot={snap} file-path=storage-pool/metal-csi/{snap}.img file-size=1G comment=\"{}\"",
        held(now - 5)
    ));
    let e = c.create_snapshot(snap_req("interrupted", A, &[])).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("another controller instance"), "{}", e.message());
    assert_eq!(disk(&rds, A)["nvme-tcp-export"], false, "a young hold is left alone");

    rds.ros(&format!("/disk set {snap} comment=\"{}\"", held(now - 200)));
    let s = snapshot_until(&mut c, "interrupted", A, &[]).await.unwrap();
    assert_eq!(read_at(&rds, &file(&s.snapshot_id), 0, 4), b"DATA");
    let d = disk(&rds, A);
    assert_eq!(d["nvme-tcp-export"], true, "{d}");
    assert_eq!(d["nvme-tcp-server-allow-host-name"], hosts.as_str(), "the recorded hosts");
}

/// DeleteVolume of a clone whose copy died holding its source's writes: the one-line delete
/// leaves such a disk alone (its comment says ` paused=`), and the careful path gives the
/// source its export back before the clone and its record go.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_clone_that_holds_its_source_gives_the_export_back() {
    let (rds, _daemon, mut c) = start_with(&[]).await;
    c.create_volume(create(A, GIB, &[])).await.unwrap();
    publish(&mut c, A, "node-a").await;
    let hosts = disk(&rds, A)["nvme-tcp-server-allow-host-name"].as_str().unwrap().to_string();
    let long_ago =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
            as i64
            - 3600;
    rds.ros(&format!("/disk set {A} nvme-tcp-export=no"));
    rds.ros(&format!(
        "/disk add type=file slot={B} file-path=storage-pool/metal-csi/{B}.img file-size=1G \
         comment=\"rds-csi volume source={A} created={long_ago} mechanism=disk-copy paused={hosts} held={long_ago} copying=0\""
    ));
    c.delete_volume(DeleteVolumeRequest { volume_id: B.into(), ..Default::default() })
        .await
        .unwrap();
    assert!(!rds.file_exists(&file(B)), "the clone is gone");
    let d = disk(&rds, A);
    assert_eq!(d["nvme-tcp-export"], true, "the source's export is back: {d}");
    assert_eq!(d["nvme-tcp-server-allow-host-name"], hosts.as_str());
}

/// `compress` needs RouterOS 7.18: before, CreateVolume and ControllerModifyVolume refuse it
/// with INVALID_ARGUMENT naming the version, and nothing is created; the other mutable
/// parameters still work.
#[tokio::test(flavor = "multi_thread")]
async fn compress_needs_routeros_7_18() {
    let behaviour =
        rds_emulator::exec::Behaviour { version: "7.17".parse().unwrap(), ..Default::default() };
    let (rds, _daemon, mut c) = start_on(support::rds::rds_with(behaviour).await, &[]).await;
    let e = c.create_volume(create(A, GIB, &[("compress", "yes")])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("7.18") && e.message().contains("7.17"), "{}", e.message());
    assert!(!rds.file_exists(&file(A)), "nothing created");
    c.create_volume(create(A, GIB, &[])).await.unwrap();
    let modify = |kv: (&str, &str)| ControllerModifyVolumeRequest {
        volume_id: A.into(),
        mutable_parameters: HashMap::from([(kv.0.to_string(), kv.1.to_string())]),
        ..Default::default()
    };
    let e = c.controller_modify_volume(modify(("compress", "yes"))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    c.controller_modify_volume(modify(("reconnectDelay", "3"))).await.unwrap();
    c.controller_modify_volume(modify(("compress", "no")))
        .await
        .expect("already off: nothing to set");
}
