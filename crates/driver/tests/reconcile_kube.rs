//! The controller's reconcilers (docs/operations.md) on the real `Backend` against the RDS
//! emulator over SSH, with kube-rs talking to a mock API server that records the exact
//! requests: stale VolumeAttachments cleared after the grace period (the disk fenced first,
//! the VolumeAttachment deleted, an event), and the RDS orphan report (disks and files
//! without a PV, never snapshots, deleted only when asked, old enough and seen twice).

mod support;

use std::{sync::Arc, time::Duration};

use csi::v1::{
    volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode},
    *,
};
use driver::controller::{
    attachments::{FENCED_HOST_NQN, host_nqn_for},
    backend::Backend,
    kube_cluster::KubeCluster,
    reconcile::ReconcileState,
};
use serde_json::{Value, json};
use support::kube::{self as k8s, ApiServer};

const DRIVER: &str = "rds.csi.srvlab.io";
const VOL: &str = "pvc-0a1b2c3d-0000-4000-8000-0000000000a1";

struct World {
    backend: Arc<Backend>,
    api: ApiServer,
    rds: support::rds::Rds,
    _conn: driver::rds::RdsConnection,
}

fn cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
    }
}

/// The emulator with volume `VOL` (PV `pv-1`), the mock API server with `vas` and `nodes`.
async fn world(vas: Vec<Value>, nodes: &[&str], fencing: bool, delete_orphans: bool) -> World {
    let rds = support::rds::rds().await;
    let pvs = vec![k8s::pv(DRIVER, "pv-1", VOL, "apps", "data", json!({}))];
    let nodes: Vec<Value> = nodes.iter().map(|n| k8s::node(n)).collect();
    let api = k8s::serve(vas, pvs, nodes);
    let cluster = KubeCluster::start(api.client.clone(), DRIVER, Some("controller-0".into()));
    cluster.wait_ready(Duration::from_secs(5)).await.unwrap();
    let (backend, conn) = k8s::backend_on_with(&rds, cluster, fencing, 0, |a| {
        a.delete_rds_orphans = delete_orphans;
        a.rds_orphan_grace_seconds = 3600;
    });
    create(&backend, VOL).await;
    World { backend, api, rds, _conn: conn }
}

async fn create(b: &Arc<Backend>, name: &str) {
    b.create_volume(CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: 1 << 30, limit_bytes: 0 }),
        volume_capabilities: vec![cap()],
        ..Default::default()
    })
    .await
    .unwrap();
}

fn ago(seconds: i64) -> String {
    let t = k8s_openapi::jiff::Timestamp::now().as_second() - seconds;
    k8s_openapi::jiff::Timestamp::from_second(t).unwrap().to_string()
}

impl World {
    fn requests(&self, method: &str) -> Vec<(String, Value)> {
        let seen = self.api.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.method == method)
            .map(|s| (s.path.clone(), s.body.clone()))
            .collect()
    }

    fn allowed(&self, slot: &str) -> String {
        self.rds
            .emu
            .with_store(|s| {
                s.disks().iter().find(|d| d.slot == slot).map(|d| d.nvme.allow_host_name.clone())
            })
            .unwrap()
    }

    fn has_disk(&self, slot: &str) -> bool {
        self.rds.emu.with_store(|s| s.disks().iter().any(|d| d.slot == slot))
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Node `gone` (no Node object) still has an attached VolumeAttachment: nothing happens
/// during the grace period; after it, the disk's allow list drops the node (storage fencing),
/// then exactly one DELETE of that VolumeAttachment and one StaleAttachmentCleared event.
#[tokio::test]
async fn a_departed_nodes_attachment_is_fenced_then_cleared_after_the_grace_period() {
    let vas = vec![k8s::va(DRIVER, "csi-gone", "pv-1", "gone", true, &ago(900))];
    let w = world(vas, &["b"], true, false).await;
    w.rds.ros(&format!(
        "/disk set \"{VOL}\" nvme-tcp-server-allow-host-name=\"{}\"",
        host_nqn_for("gone")
    ));
    let mut state = ReconcileState::default();
    let grace = secs(300);
    let before = w.rds.commands().len();
    assert!(w.backend.reconcile_attachments(&mut state, secs(0), grace).await.is_empty());
    assert_eq!(w.rds.commands().len(), before, "no live holder: no disk listing");
    assert!(w.backend.reconcile_attachments(&mut state, secs(299), grace).await.is_empty());
    assert!(w.requests("DELETE").is_empty(), "nothing within the grace period");
    assert_eq!(w.allowed(VOL), host_nqn_for("gone"));
    let acted = w.backend.reconcile_attachments(&mut state, secs(300), grace).await;
    assert_eq!(acted, [(VOL.to_string(), "gone".to_string(), "deleted")]);
    assert_eq!(w.allowed(VOL), FENCED_HOST_NQN, "fenced first: no node may connect");
    let deletes: Vec<String> = w.requests("DELETE").into_iter().map(|(p, _)| p).collect();
    assert_eq!(deletes, ["/apis/storage.k8s.io/v1/volumeattachments/csi-gone"]);
    let events: Vec<Value> = w.requests("POST").into_iter().map(|(_, b)| b).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "StaleAttachmentCleared");
    assert_eq!(events[0]["regarding"]["name"], "data");
    assert!(events[0]["note"].as_str().unwrap().contains("its Node object no longer exists"));
}

/// With storage fencing, an attached VolumeAttachment whose node is no longer on the disk's
/// allow list (the grant was lost) is cleared after the grace period; one whose node is on
/// it, and one of a live node without storage fencing, never are.
#[tokio::test]
async fn an_attachment_whose_grant_is_gone_is_cleared_and_a_held_one_never() {
    let vas = vec![k8s::va(DRIVER, "csi-b", "pv-1", "b", true, &ago(900))];
    let w = world(vas.clone(), &["b"], true, false).await;
    w.rds.ros(&format!(
        "/disk set \"{VOL}\" nvme-tcp-server-allow-host-name=\"{}\"",
        host_nqn_for("b")
    ));
    let mut state = ReconcileState::default();
    for t in [0, 100, 1000] {
        assert!(w.backend.reconcile_attachments(&mut state, secs(t), secs(60)).await.is_empty());
    }
    assert!(w.requests("DELETE").is_empty(), "a held grant is never cleared");
    w.rds
        .ros(&format!("/disk set \"{VOL}\" nvme-tcp-server-allow-host-name=\"{FENCED_HOST_NQN}\""));
    assert!(w.backend.reconcile_attachments(&mut state, secs(1001), secs(60)).await.is_empty());
    let acted = w.backend.reconcile_attachments(&mut state, secs(1061), secs(60)).await;
    assert_eq!(acted, [(VOL.to_string(), "b".to_string(), "deleted")]);
    assert_eq!(w.requests("DELETE").len(), 1);
    let events: Vec<Value> = w.requests("POST").into_iter().map(|(_, b)| b).collect();
    assert!(events[0]["note"].as_str().unwrap().contains("no longer allows the node's host NQN"));

    let w = world(vas, &["b"], false, false).await;
    let mut state = ReconcileState::default();
    for t in [0, 1000, 5000] {
        assert!(w.backend.reconcile_attachments(&mut state, secs(t), secs(60)).await.is_empty());
    }
    assert!(w.requests("DELETE").is_empty());
}

/// A disk without a PV and a file without a disk, older than the grace period, are reported
/// with their age; younger ones, the volume with a PV, a snapshot and a disk being filled
/// never are; nothing is deleted without --delete-rds-orphans, and with it only an orphan
/// found by two reports in a row.
#[tokio::test]
async fn orphans_on_the_rds_are_reported_and_deleted_only_when_asked_old_and_seen_twice() {
    let orphan_disk = "pvc-0a1b2c3d-0000-4000-8000-0000000000a2";
    let leftover = "pvc-0a1b2c3d-0000-4000-8000-0000000000a3";
    for delete in [false, true] {
        let w = world(Vec::new(), &[], false, delete).await;
        create(&w.backend, orphan_disk).await;
        create(&w.backend, leftover).await;
        // The disk goes, its file stays (as after a crash half-way through a delete).
        w.rds.ros(&format!("/disk remove [find slot=\"{leftover}\"]"));
        // A disk a copy is still filling (a restore or clone in progress): never a candidate.
        let filling = "pvc-0a1b2c3d-0000-4000-8000-0000000000a4";
        create(&w.backend, filling).await;
        w.rds.ros(&format!(
            "/disk set \"{filling}\" comment=\"rds-csi volume source=snap-x created=1 mechanism=disk-copy copying=0\""
        ));
        w.backend
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id: VOL.into(),
                name: "snap-of-a1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let mut state = ReconcileState::default();
        // Just made (their PVs may be on their way): not orphans yet.
        assert!(w.backend.report_rds_orphans(&mut state, now).await.is_empty());
        // Two hours later (by the RDS's times): orphans, reported the first time whatever
        // the flag.
        let found = w.backend.report_rds_orphans(&mut state, now + 7200).await;
        let mut names: Vec<(&str, &str, &str)> =
            found.iter().map(|o| (o.kind, o.name.as_str(), o.action)).collect();
        names.sort();
        let file = format!("storage-pool/metal-csi/{leftover}.img");
        assert_eq!(names, [("disk", orphan_disk, "reported"), ("file", file.as_str(), "reported")],);
        assert!(
            found.iter().all(|o| o.age_s.is_some_and(|a| (7200..7320).contains(&a))),
            "{found:?}"
        );
        // Found again by the next report.
        let later = w.backend.report_rds_orphans(&mut state, now + 7300).await;
        let deleted = later.iter().filter(|o| o.action == "deleted").count();
        if delete {
            assert_eq!(deleted, 2, "{later:?}");
            assert!(!w.has_disk(orphan_disk));
            assert!(!w.rds.file_exists(&file));
        } else {
            assert_eq!(deleted, 0);
            assert!(w.has_disk(orphan_disk) && w.rds.file_exists(&file));
        }
        assert!(w.has_disk(VOL), "the volume with a PV stays");
        assert!(w.has_disk(filling), "the disk being filled stays");
        assert_eq!(
            w.backend.list_snapshots(ListSnapshotsRequest::default()).await.unwrap().entries.len(),
            1,
            "the snapshot stays"
        );
    }
}

/// Without a known PV list (the cache not synced), no report is made at all.
#[tokio::test]
async fn no_report_without_the_pv_list() {
    let rds = support::rds::rds().await;
    // An API server that never answers the lists: the caches never fill.
    let client = k8s::mock_client(|_, _, _, _| (500, json!({})));
    let cluster = KubeCluster::start(client, DRIVER, None);
    let (backend, _conn) = k8s::backend_on(&rds, cluster, false, 0);
    create(&backend, VOL).await;
    let mut state = ReconcileState::default();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    assert!(backend.report_rds_orphans(&mut state, now + 86_400).await.is_empty());
}

/// A controller that died while a point-in-time copy held a volume's writes left its export
/// withdrawn and the hold in the copy's comment: the reconciler gives the export back (with
/// the recorded hosts) once the hold is older than the bound plus the margin, never a young
/// one (it may belong to a copy running in another replica), and marks the copy to start
/// again. One round trip when nothing is held.
#[tokio::test]
async fn exports_held_by_a_dead_copy_are_given_back() {
    let w = world(vec![], &[], true, false).await;
    let host = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555";
    let snap = "snap-0a1b2c3d-0000-4000-8000-0000000000f1-at-0a1b2c3d00";
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let held = |since: i64| {
        format!(
            "rds-csi snapshot source={VOL} created={since} mechanism=disk-copy paused={host} held={since} copying=0"
        )
    };
    w.rds.ros(&format!("/disk set {VOL} nvme-tcp-export=no"));
    w.rds.ros(&format!(
        "/disk add type=file slot={snap} file-path=storage-pool/metal-csi/{snap}.img file-size=1G comment=\"{}\"",
        held(now - 10)
    ));
    let before = w.rds.emu.command_log().len();
    assert_eq!(w.backend.give_back_stale_holds().await, Vec::<String>::new(), "a young hold");
    let export = |w: &World| {
        w.rds.emu.with_store(|s| s.disks().iter().find(|d| d.slot == VOL).unwrap().nvme.export)
    };
    assert!(!export(&w), "a young hold stays: its copy may be running elsewhere");
    assert_eq!(w.rds.emu.command_log().len() - before, 1, "one list");
    w.rds.ros(&format!("/disk set {snap} comment=\"{}\"", held(now - 10 - 130 - 10)));
    assert_eq!(w.backend.give_back_stale_holds().await, vec![VOL.to_string()]);
    assert!(export(&w), "the export is back");
    assert_eq!(w.allowed(VOL), host, "with the recorded hosts");
    let comment = w
        .rds
        .emu
        .with_store(|s| s.disks().iter().find(|d| d.slot == snap).unwrap().comment.clone());
    assert!(!comment.contains("paused=") && comment.contains("copying=0"), "{comment}");
    assert_eq!(w.backend.give_back_stale_holds().await, Vec::<String>::new(), "done once");
    // The recovery is an event on the volume's PVC.
    let events: Vec<(String, String)> = w
        .api
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .map(|r| (r.body["reason"].to_string(), r.body["regarding"]["name"].to_string()))
        .collect();
    assert_eq!(events, [("\"HeldExportRestored\"".to_string(), "\"data\"".to_string())]);
}
