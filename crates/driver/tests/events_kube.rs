//! The outcome events of provisioning, expansion and snapshots (docs/observability.md
//! "Kubernetes events"), in process: the controller service over the emulator (real SSH) with
//! kube-rs talking to a mock API server (tower-test) that records every write, so the test
//! asserts the exact events: on which PVC, which reason and action, and that a repeat within
//! the window is not published again.

mod support;

use std::{sync::Arc, time::Duration};

use csi::v1::{controller_server::Controller, *};
use driver::{
    controller::{ControllerService, kube_cluster::KubeCluster},
    metrics::Metrics,
    rpc::RpcRunner,
};
use serde_json::{Value, json};
use support::{
    controller::{GIB, create, snap_req},
    kube::{self as k8s, pv, serve},
    rds::rds,
};
use tonic::Request;

const DRIVER: &str = "rds.csi.srvlab.io";
const A: &str = "pvc-0e0e0e0e-0000-4000-8000-00000000000e";

/// The events posted so far: (reason, action, regarding namespace/name, type, note).
fn events(api: &k8s::ApiServer) -> Vec<(String, String, String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    api.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.method == "POST" && w.path.ends_with("/events"))
        .map(|w| {
            let b = &w.body;
            let regarding =
                format!("{}/{}", s(&b["regarding"]["namespace"]), s(&b["regarding"]["name"]));
            (s(&b["reason"]), s(&b["action"]), regarding, s(&b["type"]), s(&b["note"]))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_expansion_and_snapshots_report_on_the_pvc_once() {
    let rds = rds().await;
    let api = serve(vec![], vec![pv(DRIVER, "pv-a", A, "apps", "data", json!({}))], vec![]);
    let cluster = KubeCluster::start(api.client.clone(), DRIVER, None);
    cluster.wait_ready(Duration::from_secs(5)).await.unwrap();
    let (backend, _conn) = k8s::backend_on(&rds, cluster, true, 0);
    let svc = ControllerService {
        rpc: RpcRunner::new(Metrics::new("test").rpc),
        fleet: Some(Arc::new(driver::controller::Fleet::single(Arc::clone(&backend)))),
    };
    let params =
        [("csi.storage.k8s.io/pvc/namespace", "apps"), ("csi.storage.k8s.io/pvc/name", "data")];

    // Provisioned, then the CO's retry of the same create: one event.
    for _ in 0..2 {
        svc.create_volume(Request::new(create(A, GIB, &params))).await.unwrap();
    }
    let e = events(&api);
    assert_eq!(e.len(), 1, "{e:?}");
    let (reason, action, on, kind, note) = &e[0];
    assert_eq!(
        (reason.as_str(), action.as_str(), on.as_str(), kind.as_str()),
        ("VolumeProvisioned", "Provision", "apps/data", "Normal")
    );
    assert!(note.contains(&format!("file /storage-pool/metal-csi/{A}.img")), "{note}");

    // A create the RDS cannot hold: a Warning with the reason, once for two tries.
    let too_big = "pvc-0f0f0f0f-0000-4000-8000-00000000000f";
    let big =
        [("csi.storage.k8s.io/pvc/namespace", "apps"), ("csi.storage.k8s.io/pvc/name", "huge")];
    for _ in 0..2 {
        let r = svc.create_volume(Request::new(create(too_big, 1000 * GIB, &big))).await;
        assert!(r.is_err());
    }
    let e = events(&api);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(
        (e[1].0.as_str(), e[1].2.as_str(), e[1].3.as_str()),
        ("VolumeProvisioningFailed", "apps/huge", "Warning")
    );
    assert!(e[1].4.contains("failed:"), "{}", e[1].4);

    // Expansion and a snapshot, on the PV's claim.
    let expand = ControllerExpandVolumeRequest {
        volume_id: A.into(),
        capacity_range: Some(CapacityRange { required_bytes: 2 * GIB, limit_bytes: 0 }),
        ..Default::default()
    };
    svc.controller_expand_volume(Request::new(expand)).await.unwrap();
    let snap = svc.create_snapshot(Request::new(snap_req("nightly", A, &[]))).await.unwrap();
    assert!(snap.into_inner().snapshot.unwrap().ready_to_use);
    let e = events(&api);
    let tail: Vec<(&str, &str, &str)> =
        e[2..].iter().map(|e| (e.0.as_str(), e.1.as_str(), e.2.as_str())).collect();
    assert_eq!(
        tail,
        [("VolumeExpanded", "Expand", "apps/data"), ("SnapshotTaken", "Snapshot", "apps/data")]
    );
    assert!(e[2].4.contains(&format!("expanded to {} bytes", 2 * GIB)), "{}", e[2].4);
    assert!(e[3].4.ends_with(": ready"), "{}", e[3].4);
}

/// The node: a stage that fails reports on the PVC of its volume context, a publish that fails
/// on the pod `podInfoOnMount` names; twice the same failure is one event.
#[tokio::test(flavor = "multi_thread")]
async fn node_stage_and_publish_failures_report_on_the_pvc_and_the_pod() {
    use csi::v1::{node_server::Node, volume_capability::access_mode::Mode};
    use driver::{
        metrics::HealMetrics,
        node::{
            NodeService, NodeState,
            config::{DataPlaneKind, NodeConfig},
            kube::NodeKube,
        },
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rds")).unwrap();
    let mut cfg = NodeConfig::embedded(
        DataPlaneKind::Loop,
        Some(dir.path().join("rds")),
        dir.path().join("hostnqn"),
    );
    cfg.node_events = true;
    let mut st = NodeState::new(cfg, HealMetrics::default()).unwrap();
    let api = serve(vec![], vec![], vec![]);
    st.kube = Some(NodeKube::new(api.client.clone(), "node-a", DRIVER));
    let svc = NodeService {
        node_id: "node-a".into(),
        topology: Default::default(),
        rpc: RpcRunner::new(Metrics::new("test").rpc),
        state: Arc::new(st),
    };
    let ctx: std::collections::HashMap<String, String> = [
        ("csi.storage.k8s.io/pvc/namespace", "apps"),
        ("csi.storage.k8s.io/pvc/name", "data"),
        ("volumePath", "/storage-pool/metal-csi/missing.img"),
        ("nqn", &format!("nqn.2000-02.com.mikrotik:{A}")[..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let staging = dir.path().join("staging");
    for _ in 0..2 {
        let stage = NodeStageVolumeRequest {
            volume_id: A.into(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(support::cap(true, Mode::SingleNodeWriter)),
            volume_context: ctx.clone(),
            ..Default::default()
        };
        assert!(svc.node_stage_volume(Request::new(stage)).await.is_err());
    }
    let mut pod_ctx = ctx.clone();
    for (k, v) in [
        ("csi.storage.k8s.io/pod.namespace", "apps"),
        ("csi.storage.k8s.io/pod.name", "web-0"),
        ("csi.storage.k8s.io/pod.uid", "7e57c0de-0000-4000-8000-000000000002"),
    ] {
        pod_ctx.insert(k.into(), v.into());
    }
    let publish = NodePublishVolumeRequest {
        volume_id: A.into(),
        staging_target_path: staging.display().to_string(),
        target_path: dir.path().join("target").display().to_string(),
        volume_capability: Some(support::cap(true, Mode::SingleNodeWriter)),
        volume_context: pod_ctx,
        ..Default::default()
    };
    assert!(svc.node_publish_volume(Request::new(publish)).await.is_err());
    let e = events(&api);
    let view: Vec<(&str, &str, &str, &str)> =
        e.iter().map(|e| (e.0.as_str(), e.1.as_str(), e.2.as_str(), e.3.as_str())).collect();
    assert_eq!(
        view,
        [
            ("VolumeStageFailed", "Stage", "apps/data", "Warning"),
            ("VolumePublishFailed", "Stage", "apps/web-0", "Warning"),
        ],
        "{e:?}"
    );
    assert!(e[0].4.starts_with(&format!("staging {A} on node node-a failed: ")), "{}", e[0].4);
}
