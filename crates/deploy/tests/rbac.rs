//! Least privilege: the driver's own roles in the manifests grant exactly the Kubernetes
//! calls the code makes. The code's Kubernetes side (the watch caches, the PV annotations,
//! the report claim, events, leader election and its release) runs against a mock API
//! server (tower-test) that records every request; each request is mapped to its RBAC
//! (API group, resource, verb) and must be granted, and every granted verb must be used.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use deploy::helm;
use driver::controller::{
    cluster::{Cluster, PvcEvent},
    kube_cluster::KubeCluster,
    leader::Elector,
};
use driver::{core::lease::Timing, tools::cluster::ClusterReader};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

const DRIVER: &str = "rds.csi.srvlab.io";
const NS: &str = "kube-system";

type Access = (String, String, String); // (group, resource, verb)
/// Every request's access, with its namespace.
type Calls = Arc<Mutex<Vec<(Access, Option<String>)>>>;

/// The RBAC access a request needs, and whether it is namespaced.
fn access(method: &str, path: &str, query: &str) -> (Access, Option<String>) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts[0] {
        "api" => ("", &parts[2..]),
        _ => (parts[1], &parts[3..]),
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let resource = match rest {
        [r] | [r, _] => r.to_string(),
        [r, _, sub] => format!("{r}/{sub}"),
        _ => panic!("unexpected path {path}"),
    };
    let named = rest.len() >= 2;
    let verb = match (method, named) {
        ("GET", _) if query.contains("watch=true") => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => panic!("unexpected method {method}"),
    };
    ((group.to_string(), resource, verb.to_string()), ns)
}

/// A mock API server recording every request as its access: lists hold one PV, watches
/// stay open, writes are echoed, the Lease does not exist until created.
fn api() -> (kube::Client, Calls) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut lease: Option<Value> = None;
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().to_string(), req.uri().path().to_string());
            let query = req.uri().query().unwrap_or("").to_string();
            let (a, ns) = access(&method, &path, &query);
            record.lock().unwrap().push((a.clone(), ns));
            if a.2 == "watch" {
                held.push(send);
                continue;
            }
            let body: Value = if method == "GET" {
                Value::Null
            } else {
                let bytes = req.into_body().collect_bytes().await.unwrap();
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            let items = match a.1.as_str() {
                "persistentvolumes" => {
                    vec![json!({ "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": { "name": "pv-1", "resourceVersion": "1" },
                    "spec": { "csi": { "driver": DRIVER, "volumeHandle": "pvc-1" } } })]
                }
                "volumeattachments" => {
                    vec![json!({ "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
                    "metadata": { "name": "va-1", "resourceVersion": "1" },
                    "spec": { "attacher": DRIVER, "nodeName": "node-1", "source": { "persistentVolumeName": "pv-1" } },
                    "status": { "attached": true } })]
                }
                _ => Vec::new(),
            };
            let (code, answer) = match (a.2.as_str(), a.1.as_str()) {
                ("list", r) => (
                    200,
                    json!({ "kind": "List", "apiVersion": "v1", "metadata": { "resourceVersion": "1" }, "items": items, "r": r }),
                ),
                ("get", "leases") => match &lease {
                    Some(l) => (200, l.clone()),
                    None => (
                        404,
                        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound" }),
                    ),
                },
                ("create" | "update", "leases") => {
                    let mut l = body;
                    l["metadata"]["resourceVersion"] = json!("2");
                    lease = Some(l.clone());
                    (200, l)
                }
                ("patch", "events") => (
                    200,
                    json!({ "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": { "name": "e" }, "eventTime": null, "reason": "x" }),
                ),
                ("patch", "persistentvolumes") => (200, items[0].clone()),
                ("delete", "volumeattachments") => (
                    200,
                    json!({ "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
                        "metadata": { "name": "va-1", "resourceVersion": "2", "deletionTimestamp": "2026-01-01T00:00:00Z" },
                        "spec": { "attacher": DRIVER, "nodeName": "node-1", "source": { "persistentVolumeName": "pv-1" } } }),
                ),
                _ => (200, body),
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (kube::Client::new(service, NS), seen)
}

/// The rules of the `kind` (ClusterRole, Role) called `name` in `objects` (empty when there
/// is none).
fn rules(objects: &[Value], kind: &str, name: &str) -> BTreeSet<Access> {
    let mut out = BTreeSet::new();
    let Some(role) = objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    else {
        return out;
    };
    for r in role["rules"].as_array().unwrap() {
        for g in r["apiGroups"].as_array().unwrap() {
            for res in r["resources"].as_array().unwrap() {
                for v in r["verbs"].as_array().unwrap() {
                    out.insert((
                        g.as_str().unwrap().into(),
                        res.as_str().unwrap().into(),
                        v.as_str().unwrap().into(),
                    ));
                }
            }
        }
    }
    out
}

/// The rules of the driver's own ClusterRole and Role in the rendered chart.
fn granted() -> (BTreeSet<Access>, BTreeSet<Access>) {
    let objects = helm(&json!({})).unwrap();
    let (c, r) = (
        rules(&objects, "ClusterRole", "rds-csi-driver"),
        rules(&objects, "Role", "rds-csi-driver"),
    );
    assert!(!c.is_empty() && !r.is_empty(), "the driver's roles are rendered");
    (c, r)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_driver_roles_grant_exactly_the_calls_the_code_makes() {
    let (client, seen) = api();
    // Fencing state: the watch caches, then every write the controller makes.
    let cluster = KubeCluster::start(client.clone(), DRIVER, Some("controller-0".into()));
    cluster.wait_ready(Duration::from_secs(5)).await.unwrap();
    cluster.annotate("pv-1", Some(("node-1", "2026-01-01T00:00:00Z"))).await;
    cluster.annotate("pv-1", None).await;
    let event = |note: &str| PvcEvent {
        claim: ("apps".into(), "data".into()),
        warning: true,
        reason: "AttachmentConflict",
        note: note.into(),
    };
    cluster.event(event("first")).await;
    cluster.event(event("first")).await; // the same again: a series (a patch)
    cluster.claim_report(Some("pv-1"), "migration-window-1").await;
    // The stale-attachment reconciler clears a VolumeAttachment.
    assert_eq!(cluster.clear_attachment("pvc-1", "node-1").await.unwrap(), ["va-1"]);
    // Leader election: create, read, renew; then the release on shutdown.
    let timing = Timing::for_lease(Duration::from_secs(2)).unwrap();
    let (elector, leadership) =
        Elector::new(client.clone(), NS, "rds-csi-srvlab-io-controller", "controller-0", timing);
    let (api, name, identity) = elector.release_handle();
    let task = tokio::spawn(elector.run());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(leadership.is_leader());
    task.abort();
    Elector::release(&api, &name, &identity, Duration::from_secs(2)).await;
    // The operator tools, run in the controller pod with its service account.
    let tools = ClusterReader::new(client.clone(), DRIVER, Duration::from_secs(5));
    assert_eq!(tools.view().await.unwrap().attachments.len(), 1);
    let _ = tools.csidriver().await; // the mock answers no CSIDriver body: only the call counts
    tools.images(NS).await.unwrap();

    let (cluster_role, role) = granted();
    let calls = seen.lock().unwrap().clone();
    let mut used = BTreeSet::new();
    let mut denied = Vec::new();
    for (a, ns) in &calls {
        let ok = cluster_role.contains(a) || (ns.as_deref() == Some(NS) && role.contains(a));
        if !ok {
            denied.push(format!("{a:?} in {ns:?}"));
        }
        used.insert(a.clone());
    }
    assert!(denied.is_empty(), "calls the roles do not grant: {denied:?}");
    let unused: Vec<&Access> = cluster_role.union(&role).filter(|a| !used.contains(*a)).collect();
    assert!(unused.is_empty(), "granted but never used: {unused:?}");
    // The calls themselves, so that a change of the code's calls is seen here.
    let verbs: BTreeSet<String> = used.iter().map(|(g, r, v)| format!("{g}/{r}:{v}")).collect();
    assert_eq!(
        verbs.into_iter().collect::<Vec<_>>(),
        [
            "/nodes:list",
            "/nodes:watch",
            "/persistentvolumes:list",
            "/persistentvolumes:patch",
            "/persistentvolumes:watch",
            "/pods:list",
            "coordination.k8s.io/leases:create",
            "coordination.k8s.io/leases:get",
            "coordination.k8s.io/leases:update",
            "events.k8s.io/events:create",
            "events.k8s.io/events:patch",
            "storage.k8s.io/csidrivers:get",
            "storage.k8s.io/csinodes:list",
            "storage.k8s.io/csinodes:watch",
            "storage.k8s.io/volumeattachments:delete",
            "storage.k8s.io/volumeattachments:list",
            "storage.k8s.io/volumeattachments:watch",
        ]
    );
}

/// The node plugin's calls (node/kube.rs) against its ClusterRole: with the defaults (events
/// on, pod recovery off) PV reads and events only; with recoverPods also the node's pods
/// (list) and their deletion; with topologyFromNodeLabels its Node (get); with all off no
/// role, no binding and no token.
#[tokio::test(flavor = "multi_thread")]
async fn the_node_role_grants_exactly_the_node_calls() {
    use driver::node::kube::{NodeKube, PodInfo};
    let (client, seen) = api();
    let k = NodeKube::new(client, "node-1", DRIVER);
    let _ = k.pv("pv-1").await;
    // The same event again: a series (a patch).
    for _ in 0..2 {
        k.event(&("apps".into(), "data".into()), true, "StaleMount", "x".into()).await;
    }
    let with_events: BTreeSet<Access> =
        seen.lock().unwrap().iter().map(|(a, _)| a.clone()).collect();
    let _ = k.pod("u-1").await;
    let pod = PodInfo {
        namespace: "apps".into(),
        name: "web-0".into(),
        uid: "u-1".into(),
        controller: None,
    };
    let _ = k.delete_pod(&pod).await;
    let recovering: BTreeSet<Access> =
        seen.lock().unwrap().iter().map(|(a, _)| a.clone()).collect();
    let _ = k.topology_labels().await;
    let all: BTreeSet<Access> = seen.lock().unwrap().iter().map(|(a, _)| a.clone()).collect();

    let defaults = helm(&json!({})).unwrap();
    assert_eq!(rules(&defaults, "ClusterRole", "rds-csi-node"), with_events);
    let recover = helm(&json!({ "node": { "recoverPods": true } })).unwrap();
    assert_eq!(rules(&recover, "ClusterRole", "rds-csi-node"), recovering);
    let labels =
        helm(&json!({ "node": { "recoverPods": true, "topologyFromNodeLabels": true } })).unwrap();
    assert_eq!(rules(&labels, "ClusterRole", "rds-csi-node"), all);
    let only_labels =
        helm(&json!({ "node": { "events": false, "topologyFromNodeLabels": true } })).unwrap();
    let sa = only_labels
        .iter()
        .find(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == "rds-csi-node")
        .unwrap();
    assert_eq!(sa["automountServiceAccountToken"], true, "the labels need a token");
    let verbs: BTreeSet<String> = all.iter().map(|(g, r, v)| format!("{g}/{r}:{v}")).collect();
    assert_eq!(
        verbs.into_iter().collect::<Vec<_>>(),
        [
            "/nodes:get",
            "/persistentvolumes:get",
            "/pods:delete",
            "/pods:list",
            "events.k8s.io/events:create",
            "events.k8s.io/events:patch"
        ]
    );

    let off = helm(&json!({ "node": { "events": false, "recoverPods": false } })).unwrap();
    assert!(rules(&off, "ClusterRole", "rds-csi-node").is_empty());
    let sa = off
        .iter()
        .find(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == "rds-csi-node")
        .unwrap();
    assert_eq!(sa["automountServiceAccountToken"], false);
    let bound: Vec<&Value> = off
        .iter()
        .filter(|o| o["kind"].as_str().unwrap_or("").ends_with("Binding"))
        .flat_map(|b| b["subjects"].as_array().unwrap())
        .filter(|s| s["name"] == "rds-csi-node")
        .collect();
    assert!(bound.is_empty(), "{bound:?}");
}
