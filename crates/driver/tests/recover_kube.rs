//! The node's health check of pods' volume mounts (docs/operations.md), in process, on a real
//! loop device and real mounts (root), with kube-rs talking to a mock API server (tower-test)
//! that checks the exact requests: a healthy mount makes no call; a stale one (the mount is
//! not the volume's device any more) posts one StaleMount event on the PVC and, with
//! `--recover-pods`, deletes the pod with its UID as a precondition when a controller owns
//! it, or only reports it when none does; the same finding is not acted on twice.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
};

use driver::{
    metrics::HealMetrics,
    node::{
        NodeState,
        config::{DataPlaneKind, NodeConfig},
        kube::NodeKube,
        recovery::Seen,
    },
};
use serde_json::{Value, json};
use support::{kube::mock_client, node::root_available};

const DRIVER: &str = "rds.csi.srvlab.io";
const VID: &str = "pvc-0a1b2c3d-0000-4000-8000-0000000000f1";
const UID: &str = "7e57c0de-0000-4000-8000-000000000001";

fn config(dir: &Path, recover: bool) -> NodeConfig {
    let mut c =
        NodeConfig::embedded(DataPlaneKind::Loop, Some(dir.join("rds")), dir.join("hostnqn"));
    c.node_events = true;
    c.recover_pods = recover;
    c.kubelet_dir = dir.join("kubelet");
    c
}

type Log = Arc<Mutex<Vec<(String, String, Value)>>>;

/// The API: PV `pv-f1` of this driver bound to `apps/data`; the pod `UID` on node-a
/// (`web-0`, owned by StatefulSet `web` when `owned`).
fn api(owned: bool) -> (kube::Client, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let client = mock_client(move |method, path, query, body| {
        l.lock().unwrap().push((method.to_string(), format!("{path}?{query}"), body.clone()));
        match (method, path) {
            ("GET", "/api/v1/persistentvolumes/pv-f1") => (
                200,
                json!({ "apiVersion": "v1", "kind": "PersistentVolume", "metadata": { "name": "pv-f1" },
                    "spec": { "csi": { "driver": DRIVER, "volumeHandle": VID },
                              "claimRef": { "namespace": "apps", "name": "data" } } }),
            ),
            ("GET", "/api/v1/pods") => {
                let owners = if owned {
                    json!([{ "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s", "controller": true }])
                } else {
                    json!([])
                };
                (
                    200,
                    json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                        { "metadata": { "name": "web-0", "namespace": "apps", "uid": UID, "ownerReferences": owners } }
                    ] }),
                )
            }
            ("DELETE", "/api/v1/namespaces/apps/pods/web-0") => (
                200,
                json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web-0", "namespace": "apps", "uid": UID } }),
            ),
            ("POST", p) if p.ends_with("/events") => (201, body),
            _ => (
                404,
                json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound" }),
            ),
        }
    });
    (client, log)
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A volume file attached, formatted, staged and bound at the pod's volume path.
struct Rig {
    dir: tempfile::TempDir,
    dev: String,
    staging: PathBuf,
    target: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("rds/storage-pool");
        std::fs::create_dir_all(&files).unwrap();
        let file = files.join(format!("{VID}.img"));
        sh(&format!("truncate -s 64M {}", file.display()));
        let dev = sh(&format!("losetup -f --show {}", file.display()));
        sh(&format!("mkfs.ext4 -q {dev}"));
        let staging = dir.path().join("kubelet/plugins/staging");
        let target =
            dir.path().join(format!("kubelet/pods/{UID}/volumes/kubernetes.io~csi/pv-f1/mount"));
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        sh(&format!("mount {dev} {}", staging.display()));
        sh(&format!("mount --bind {} {}", staging.display(), target.display()));
        Rig { dir, dev, staging, target }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for p in [&self.target, &self.staging] {
            let _ = Command::new("umount").arg(p).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn state(rig: &Rig, recover: bool, owned: bool) -> (Arc<NodeState>, Log) {
    let mut st = NodeState::new(config(rig.dir.path(), recover), HealMetrics::default()).unwrap();
    let (client, log) = api(owned);
    st.kube = Some(NodeKube::new(client, "node-a", DRIVER));
    (Arc::new(st), log)
}

fn calls(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|(m, p, _)| format!("{m} {p}")).collect()
}

#[tokio::test]
async fn a_stale_pod_mount_is_reported_and_its_pod_recreated() {
    if !root_available() {
        return;
    }
    let rig = Rig::new();
    let (st, log) = state(&rig, true, true);
    let mut seen = Seen::default();
    assert!(st.check_published(&mut seen).await.is_empty(), "healthy");
    assert!(calls(&log).is_empty(), "a healthy mount makes no API call: {:?}", calls(&log));

    // The volume's file is now another one (as an NVMe namespace replaced by a new device):
    // the pod's mount is of a device that is not the volume's any more.
    let file = rig.dir.path().join(format!("rds/storage-pool/{VID}.img"));
    std::fs::rename(&file, file.with_extension("old")).unwrap();
    let found = st.check_published(&mut seen).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    assert_eq!((f.pod_uid.as_str(), f.pv.as_str(), f.reason), (UID, "pv-f1", "device_mismatch"));
    assert_eq!(f.recovery, "deleted");
    let c = calls(&log);
    let pv_reads = c.iter().filter(|x| x.starts_with("GET /api/v1/persistentvolumes/")).count();
    assert_eq!(pv_reads, 1, "the PV is read once per finding: {c:?}");
    assert!(
        c.contains(&"GET /api/v1/pods?&fieldSelector=spec.nodeName%3Dnode-a".to_string()),
        "{c:?}"
    );
    let deletes: Vec<Value> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _, _)| m == "DELETE")
        .map(|(_, p, b)| json!({ "path": p, "body": b }))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0]["path"], "/api/v1/namespaces/apps/pods/web-0?");
    assert_eq!(deletes[0]["body"]["preconditions"]["uid"], UID, "only that incarnation");
    let events: Vec<Value> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _, _)| m == "POST")
        .map(|(_, _, b)| b.clone())
        .collect();
    let reasons: Vec<&str> = events.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["StaleMount", "PodRecovered"]);
    assert!(
        events.iter().all(|e| e["regarding"]["kind"] == "PersistentVolumeClaim"
            && e["regarding"]["name"] == "data")
    );
    assert!(events[1]["note"].as_str().unwrap().contains("StatefulSet/web recreates it"));

    // The same finding again: nothing more.
    let before = calls(&log).iter().filter(|c| !c.starts_with("GET")).count();
    st.check_published(&mut seen).await;
    let after = calls(&log).iter().filter(|c| !c.starts_with("GET")).count();
    assert_eq!(before, after, "acted once");
    std::fs::rename(file.with_extension("old"), &file).unwrap();
}

#[tokio::test]
async fn a_pod_without_a_controller_is_only_reported_and_nothing_without_the_flag() {
    if !root_available() {
        return;
    }
    let rig = Rig::new();
    let file = rig.dir.path().join(format!("rds/storage-pool/{VID}.img"));
    std::fs::rename(&file, file.with_extension("old")).unwrap();
    let (st, log) = state(&rig, true, false);
    let found = st.check_published(&mut Seen::default()).await;
    assert_eq!(found[0].recovery, "no_controller");
    assert!(calls(&log).iter().all(|c| !c.starts_with("DELETE")), "{:?}", calls(&log));
    let reasons: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _, _)| m == "POST")
        .map(|(_, _, b)| b["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["StaleMount", "StaleMountNeedsRestart"]);

    let (st, log) = state(&rig, false, true);
    let found = st.check_published(&mut Seen::default()).await;
    assert_eq!((found[0].reason, found[0].recovery), ("device_mismatch", ""));
    assert!(calls(&log).iter().all(|c| !c.starts_with("DELETE") && !c.contains("/pods")));
    std::fs::rename(file.with_extension("old"), &file).unwrap();
}
