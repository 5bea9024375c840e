//! Attachment fencing with its state in Kubernetes: the controller's publish path (the real
//! `Backend` against the RDS emulator over SSH) with kube-rs talking to a mock API server
//! (tower-test) that serves VolumeAttachments, PVs and Nodes and records the exact requests
//! the driver makes (PV annotations, events).

mod support;

use std::{collections::HashMap, sync::Arc, time::Duration};

use csi::v1::{
    volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode},
    *,
};
use driver::controller::{
    attachments::host_nqn_for,
    backend::Backend,
    cluster::Cluster,
    kube_cluster::{ANNOTATION_AT, ANNOTATION_NODE, KubeCluster},
};
use serde_json::{Value, json};
use support::kube::{self as k8s, ApiServer};

const DRIVER: &str = "rds.csi.srvlab.io";
const GIB: i64 = 1 << 30;

struct World {
    backend: Arc<Backend>,
    api: ApiServer,
    volume: String,
    rds: support::rds::Rds,
    _conn: driver::rds::RdsConnection,
}

fn cap(block_rwx: bool) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block_rwx {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume::default())
        }),
        access_mode: Some(AccessMode {
            mode: if block_rwx { Mode::MultiNodeMultiWriter } else { Mode::SingleNodeWriter }
                as i32,
        }),
    }
}

fn ago(seconds: i64) -> String {
    let t = k8s_openapi::jiff::Timestamp::now().as_second() - seconds;
    k8s_openapi::jiff::Timestamp::from_second(t).unwrap().to_string()
}

/// The emulator with one 1 GiB volume, the controller's backend on it, and the mock API
/// server with `vas` (for the volume's PV `pv-1`) and `nodes`.
async fn world(vas: impl Fn(&str) -> Vec<Value>, nodes: &[&str], settle_s: i64) -> World {
    world_with(Setup { settle_s, ..Setup::default() }, vas, nodes).await
}

/// What else a world has: storage fencing, more PVs of the volume (made from its handle),
/// explicit CSINodes (default: one per Node, CSI node id = node name).
#[derive(Default)]
struct Setup {
    settle_s: i64,
    storage_fencing: bool,
    extra_pvs: Option<fn(&str) -> Vec<Value>>,
    csinodes: Option<Vec<Value>>,
}

async fn world_with(setup: Setup, vas: impl Fn(&str) -> Vec<Value>, nodes: &[&str]) -> World {
    let rds = support::rds::rds().await;
    // Provisioner names are used as they are when they look like `pvc-<uuid>`.
    let volume = "pvc-0a1b2c3d-0000-4000-8000-000000000001".to_string();
    let attrs = json!({ "migrationTimeoutSeconds": "300" });
    let mut pvs = vec![k8s::pv(DRIVER, "pv-1", &volume, "apps", "vm-disk", attrs)];
    pvs.extend(setup.extra_pvs.map(|f| f(&volume)).unwrap_or_default());
    let nodes: Vec<Value> = nodes.iter().map(|n| k8s::node(n)).collect();
    let api = match setup.csinodes {
        Some(csinodes) => k8s::serve_with(vas(&volume), pvs, nodes, csinodes),
        None => k8s::serve(vas(&volume), pvs, nodes),
    };
    let cluster = KubeCluster::start(api.client.clone(), DRIVER, Some("controller-0".into()));
    cluster.wait_ready(Duration::from_secs(5)).await.unwrap();
    let (backend, conn) = k8s::backend_on(&rds, cluster, setup.storage_fencing, setup.settle_s);
    let v = backend
        .create_volume(CreateVolumeRequest {
            name: volume.clone(),
            capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
            volume_capabilities: vec![cap(true)],
            ..Default::default()
        })
        .await
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(v.volume_id, volume);
    World { backend, api, volume, rds, _conn: conn }
}

impl World {
    async fn publish(
        &self,
        node: &str,
        block_rwx: bool,
    ) -> Result<HashMap<String, String>, tonic::Status> {
        self.backend
            .publish(ControllerPublishVolumeRequest {
                volume_id: self.volume.clone(),
                node_id: node.into(),
                volume_capability: Some(cap(block_rwx)),
                ..Default::default()
            })
            .await
            .map(|r| r.publish_context)
            .map_err(tonic::Status::from)
    }

    async fn unpublish(&self, node: &str) {
        self.backend
            .unpublish(ControllerUnpublishVolumeRequest {
                volume_id: self.volume.clone(),
                node_id: node.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    fn events(&self) -> Vec<Value> {
        self.api
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == "POST")
            .map(|s| s.body.clone())
            .collect()
    }

    fn event_paths(&self) -> Vec<String> {
        self.api
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == "POST")
            .map(|s| s.path.clone())
            .collect()
    }

    fn patches(&self) -> Vec<(String, Value)> {
        self.api
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == "PATCH" && s.path.starts_with("/api/v1/persistentvolumes/"))
            .map(|s| (s.path.clone(), s.body.clone()))
            .collect()
    }
}

#[tokio::test]
async fn a_restarted_controller_fences_from_the_volume_attachments() {
    let w =
        world(|_| vec![k8s::va(DRIVER, "csi-a", "pv-1", "n1", true, &ago(600))], &["n1", "n2"], 0)
            .await;
    // The caches were filled by exactly one list of each kind, then watches.
    let lines = w.api.lines.lock().unwrap().clone();
    for path in [
        "/apis/storage.k8s.io/v1/volumeattachments?",
        "/api/v1/persistentvolumes?",
        "/api/v1/nodes?",
    ] {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with(&format!("GET {path}")) && !l.contains("watch=true"))
                .count(),
            1,
            "{path}: {lines:#?}"
        );
    }

    let err = w.publish("n2", false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("attached to node n1") && err.message().contains("out-of-service"),
        "{}",
        err.message()
    );
    // One event, in the PVC's namespace, about the PVC.
    assert_eq!(w.event_paths(), ["/apis/events.k8s.io/v1/namespaces/apps/events"]);
    let e = &w.events()[0];
    assert_eq!(e["reason"], "AttachmentConflict");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["metadata"]["namespace"], "apps");
    assert_eq!(e["regarding"]["namespace"], "apps");
    assert_eq!(e["regarding"]["name"], "vm-disk");
    assert_eq!(e["regarding"]["kind"], "PersistentVolumeClaim");
    assert_eq!(e["reportingController"], "rds-csi-controller");

    // The holder publishing again: the same context, no new event, no annotation write.
    let ctx = w.publish("n1", false).await.unwrap();
    assert_eq!(ctx["nvmeAddress"], "10.0.0.5");
    assert_eq!(ctx["nvmePort"], "4420");
    assert!(ctx["nqn"].ends_with(&w.volume), "{ctx:?}");
    assert_eq!(w.publish("n1", false).await.unwrap(), ctx);
    assert_eq!(w.events().len(), 1);
    assert!(w.patches().is_empty());
}

#[tokio::test]
async fn migration_windows_are_rebuilt_from_the_newer_attachment_and_the_pv_timeout() {
    // n2 attached 60 s ago: the window (300 s from the PV) is open.
    let open = world(
        |_| {
            vec![
                k8s::va(DRIVER, "csi-a", "pv-1", "n1", true, &ago(7200)),
                k8s::va(DRIVER, "csi-b", "pv-1", "n2", true, &ago(60)),
            ]
        },
        &["n1", "n2", "n3"],
        0,
    )
    .await;
    let err = open.publish("n3", true).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("window open until") && err.message().contains("at most two nodes"),
        "{}",
        err.message()
    );
    assert_eq!(open.events()[0]["reason"], "AttachmentConflict");
    // Both holders publish again: idempotent.
    open.publish("n1", true).await.unwrap();
    open.publish("n2", true).await.unwrap();
    // The source detaches: the migration is complete.
    open.unpublish("n1").await;
    let reasons: Vec<Value> = open.events().iter().map(|e| e["reason"].clone()).collect();
    assert_eq!(reasons, [json!("AttachmentConflict"), json!("MigrationCompleted")]);

    // n2 attached 400 s ago: the window expired; the message says what to do.
    let expired = world(
        |_| {
            vec![
                k8s::va(DRIVER, "csi-a", "pv-1", "n1", true, &ago(7200)),
                k8s::va(DRIVER, "csi-b", "pv-1", "n2", true, &ago(400)),
            ]
        },
        &["n1", "n2", "n3"],
        0,
    )
    .await;
    // After a restart the sweep counts the migrations from the record.
    // The sweep reports the expired window once, without waiting for a third node.
    assert_eq!(
        open.backend.sweep_migrations().await,
        Vec::<String>::new(),
        "open (or completed): nothing to report"
    );
    assert_eq!(expired.backend.sweep_migrations().await, [expired.volume.as_str()]);
    assert_eq!(expired.backend.fencing.metrics.migrations_active(), 1, "rebuilt from the record");
    assert_eq!(expired.backend.sweep_migrations().await, Vec::<String>::new(), "reported once");
    let e = expired.events();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0]["reason"].as_str(), e[0]["type"].as_str()),
        (Some("MigrationFailed"), Some("Warning"))
    );
    assert!(e[0]["note"].as_str().unwrap().contains("did not finish within 300s"), "{}", e[0]);
    let err = expired.publish("n3", true).await.unwrap_err();
    assert!(
        err.message().contains("migration window (300s) expired")
            && err.message().contains("Detach one of the two nodes"),
        "{}",
        err.message()
    );
    // The same reason again: the recorder turns it into a series (a patch of that event).
    let series: Vec<String> = expired
        .api
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "PATCH" && s.path.contains("/events/"))
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(series.len(), 1, "{series:?}");
    assert!(series[0].starts_with("/apis/events.k8s.io/v1/namespaces/apps/events/"), "{series:?}");
}

#[tokio::test]
async fn a_holder_whose_node_is_gone_does_not_block_and_the_pv_is_annotated() {
    let w = world(|_| vec![k8s::va(DRIVER, "csi-a", "pv-1", "gone", true, &ago(600))], &["n2"], 0)
        .await;
    w.publish("n2", false).await.unwrap();
    let e = w.events();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["reason"], "StaleAttachmentIgnored");
    assert!(e[0]["note"].as_str().unwrap().contains("node gone"), "{}", e[0]);
    let p = w.patches();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, "/api/v1/persistentvolumes/pv-1");
    assert_eq!(p[0].1["metadata"]["annotations"][ANNOTATION_NODE], "n2");
    assert!(p[0].1["metadata"]["annotations"][ANNOTATION_AT].is_string());
    // The last detach removes the annotations (merge patch with nulls).
    w.unpublish("n2").await;
    let p = w.patches();
    assert_eq!(p.len(), 2);
    assert_eq!(
        p[1].1,
        json!({ "metadata": { "annotations": { ANNOTATION_NODE: null, ANNOTATION_AT: null } } })
    );
}

#[tokio::test]
async fn a_new_leader_waits_for_grants_its_predecessor_may_have_made() {
    // A VolumeAttachment from before this controller started, not attached yet: during the
    // settle period it blocks another node; without one it does not.
    let vas = |_: &str| vec![k8s::va(DRIVER, "csi-a", "pv-1", "n1", false, &ago(5))];
    let settling = world(vas, &["n1", "n2"], 60).await;
    let err = settling.publish("n2", false).await.unwrap_err();
    assert!(err.message().contains("attached to node n1"), "{}", err.message());
    settling.publish("n1", false).await.expect("the node it may have been granted to gets it");
    let settled = world(vas, &["n1", "n2"], 0).await;
    settled.publish("n2", false).await.unwrap();
}

#[tokio::test]
async fn grants_not_yet_recorded_fence_too() {
    // Nothing recorded: n1 is granted; before the attacher records it, n2 is refused.
    let w = world(|_| Vec::new(), &["n1", "n2"], 0).await;
    w.publish("n1", false).await.unwrap();
    assert_eq!(w.publish("n2", false).await.unwrap_err().code(), tonic::Code::FailedPrecondition);
    w.unpublish("n1").await;
    w.publish("n2", false).await.unwrap();
}

impl World {
    /// The disk's allow list on the emulated RDS.
    fn allowed(&self) -> String {
        let v = self.volume.clone();
        self.rds
            .emu
            .with_store(|s| {
                s.disks().iter().find(|d| d.slot == v).map(|d| d.nvme.allow_host_name.clone())
            })
            .unwrap()
    }
}

#[tokio::test]
async fn a_node_kubernetes_forgot_is_revoked_on_the_rds_when_another_is_granted() {
    // n1 held the volume, then Kubernetes forgot it (its Node deleted; its VolumeAttachment
    // still listed). With storage fencing the grant to n2 sets the allow list to n2 alone, so
    // n1 cannot write when it comes back (its connection reconnects on its own).
    let vas = |_: &str| vec![k8s::va(DRIVER, "csi-a", "pv-1", "n1", true, &ago(600))];
    let w = world_with(Setup { storage_fencing: true, ..Setup::default() }, vas, &["n2"]).await;
    let ctx = w.publish("n2", false).await.unwrap();
    assert_eq!(w.allowed(), host_nqn_for("n2"), "only n2 may connect");
    assert_eq!(ctx["hostNqn"], host_nqn_for("n2"));
    assert!(!w.allowed().contains(&host_nqn_for("n1")));
    // Forgotten entirely (its VolumeAttachment removed by hand, so no ControllerUnpublish ever
    // came): the list still names n1, and the grant to n3 replaces the whole list.
    let w =
        world_with(Setup { storage_fencing: true, ..Setup::default() }, |_| Vec::new(), &["n3"])
            .await;
    w.rds.ros(&format!(
        "/disk set \"{}\" nvme-tcp-server-allow-host-name=\"{}\"",
        w.volume,
        host_nqn_for("n1")
    ));
    w.publish("n3", false).await.unwrap();
    assert_eq!(w.allowed(), host_nqn_for("n3"));
}

#[tokio::test]
async fn an_unreadable_record_never_rewrites_the_allow_list() {
    // A cluster whose caches never fill (the API server does not answer).
    let rds = support::rds::rds().await;
    let (service, _silent) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let cluster = KubeCluster::start(kube::Client::new(service, "default"), DRIVER, None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cluster.age_s(), 0, "the settle period has not started: the caches are not ready");
    let (backend, _conn) = k8s::backend_on(&rds, cluster, true, 15);
    let volume = "pvc-0a1b2c3d-0000-4000-8000-000000000002";
    backend
        .create_volume(CreateVolumeRequest {
            name: volume.into(),
            capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
            volume_capabilities: vec![cap(false)],
            ..Default::default()
        })
        .await
        .unwrap();
    let holder = host_nqn_for("n1");
    rds.ros(&format!("/disk set \"{volume}\" nvme-tcp-server-allow-host-name=\"{holder}\""));
    let err = backend
        .unpublish(ControllerUnpublishVolumeRequest {
            volume_id: volume.into(),
            node_id: "n1".into(),
            ..Default::default()
        })
        .await
        .map_err(tonic::Status::from)
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("left as it is"), "{}", err.message());
    let now = rds
        .emu
        .with_store(|s| {
            s.disks().iter().find(|d| d.slot == volume).map(|d| d.nvme.allow_host_name.clone())
        })
        .unwrap();
    assert_eq!(now, holder, "the allow list is untouched");
    // DeleteVolume cannot tell who holds it either: refused, nothing deleted.
    let err = backend
        .delete_volume(DeleteVolumeRequest { volume_id: volume.into(), ..Default::default() })
        .await
        .map_err(tonic::Status::from)
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
}

#[tokio::test]
async fn the_strictest_access_mode_among_the_pvs_wins() {
    // pv-1 (ReadWriteMany) is held by n1; a second PV of the same handle says ReadWriteOnce:
    // a ReadWriteMany block publish to n2 is refused as for a single-node volume.
    fn rwo_copy(handle: &str) -> Vec<Value> {
        let mut pv = k8s::pv(DRIVER, "pv-2", handle, "apps", "copy", json!({}));
        pv["spec"]["accessModes"] = json!(["ReadWriteOnce"]);
        vec![pv]
    }
    let vas = |_: &str| vec![k8s::va(DRIVER, "csi-a", "pv-1", "n1", true, &ago(60))];
    let w = world_with(Setup { extra_pvs: Some(rwo_copy), ..Setup::default() }, vas, &["n1", "n2"])
        .await;
    let err = w.publish("n2", true).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("allows one node"), "{}", err.message());
    // Holders come from every PV of the handle: an attachment of pv-2 fences too.
    let vas = |_: &str| vec![k8s::va(DRIVER, "csi-b", "pv-2", "n1", true, &ago(60))];
    let w = world_with(Setup { extra_pvs: Some(rwo_copy), ..Setup::default() }, vas, &["n1", "n2"])
        .await;
    assert_eq!(w.publish("n2", false).await.unwrap_err().code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn kubernetes_node_names_map_to_csi_node_ids_through_csinode() {
    // The node plugin on Kubernetes node host-1 registered CSI node id csi-1.
    let csinodes = vec![
        k8s::csinode("host-1", DRIVER, "csi-1"),
        k8s::csinode("host-2", DRIVER, "csi-2"),
        k8s::csinode("host-3", "other.csi.example", "csi-3"),
    ];
    let vas = |_: &str| vec![k8s::va(DRIVER, "csi-a", "pv-1", "host-1", true, &ago(60))];
    let setup = Setup { csinodes: Some(csinodes), ..Setup::default() };
    let w = world_with(setup, vas, &["host-1", "host-2", "host-3"]).await;
    w.publish("csi-1", false).await.expect("the holder, by its CSI node id");
    let err = w.publish("csi-2", false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("attached to node csi-1"), "{}", err.message());
    // A node id no CSINode of this driver registers: NOT_FOUND (once nothing holds it).
    w.unpublish("csi-1").await;
    for unknown in ["csi-3", "host-1", "nowhere"] {
        let err = w.publish(unknown, false).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{unknown}: {}", err.message());
    }
    w.publish("csi-2", false).await.expect("a registered node");
}

#[tokio::test]
async fn a_volume_with_an_attachment_is_never_deleted() {
    // The VolumeAttachment is the record: DeleteVolume refuses, naming the node, and the disk
    // stays; detached (no attachment left), it is deleted.
    let vas = |_: &str| vec![k8s::va(DRIVER, "csi-a", "pv-1", "n1", true, &ago(60))];
    let w = world(vas, &["n1"], 0).await;
    let err = w
        .backend
        .delete_volume(DeleteVolumeRequest { volume_id: w.volume.clone(), ..Default::default() })
        .await
        .map_err(tonic::Status::from)
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("n1"), "{}", err.message());
    assert!(w.rds.file_exists(&format!("storage-pool/metal-csi/{}.img", w.volume)));
    let free = world(|_| Vec::new(), &["n1"], 0).await;
    free.backend
        .delete_volume(DeleteVolumeRequest { volume_id: free.volume.clone(), ..Default::default() })
        .await
        .unwrap();
    assert!(!free.rds.file_exists(&format!("storage-pool/metal-csi/{}.img", free.volume)));
}
