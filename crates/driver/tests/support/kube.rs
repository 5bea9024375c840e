//! A mock Kubernetes API server for kube-rs (tower-test): answers the driver's list requests
//! from fixed objects, holds its watches open, records every other request (PV patches, event
//! posts) with its method, path and body, so tests assert the exact requests.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use driver::{
    controller::{
        attachments::Fencing, backend::Backend, config::ControllerArgs, kube_cluster::KubeCluster,
    },
    metrics::AttachMetrics,
    rds::RdsConfig,
    readiness::{Readiness, ReadyState},
};
use http::{Request, Response};
use kube::client::Body;
use routeros::{
    client::{Rds as RdsClient, RetryPolicy},
    ssh::{HostKeyPolicy, SshOptions},
};
use serde_json::{Value, json};

/// One request the driver made (watches and lists excluded).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Value,
}

pub struct ApiServer {
    pub client: kube::Client,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Every request line (lists and watches too), in order.
    pub lines: Arc<Mutex<Vec<String>>>,
}

fn list(kind: &str, api_version: &str, items: &[Value]) -> Value {
    json!({ "apiVersion": api_version, "kind": format!("{kind}List"), "metadata": { "resourceVersion": "1" }, "items": items })
}

/// A kube client whose API server is `answer(method, path, query, body)` -> (status, JSON).
/// Watches (`watch=true`) are held open and never send; a GET has no body.
pub fn mock_client(
    mut answer: impl FnMut(&str, &str, &str, Value) -> (u16, Value) + Send + 'static,
) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (method, uri) = (req.method().to_string(), req.uri().clone());
            let query = uri.query().unwrap_or("").to_string();
            if query.contains("watch=true") {
                // Recorded like any request, then held: a watch that never sends anything.
                let _ = answer(&method, uri.path(), &query, Value::Null);
                held.push(send);
                continue;
            }
            let body: Value = if method == "GET" {
                Value::Null
            } else {
                let bytes = req.into_body().collect_bytes().await.unwrap();
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            let (code, json) = answer(&method, uri.path(), &query, body);
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&json).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    kube::Client::new(service, "default")
}

/// Serves `vas`, `pvs` and `nodes` (JSON objects) to a kube client, with a CSINode of driver
/// `rds.csi.srvlab.io` for every Node (its CSI node id = the node name).
pub fn serve(vas: Vec<Value>, pvs: Vec<Value>, nodes: Vec<Value>) -> ApiServer {
    let csinodes = nodes
        .iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap();
            csinode(name, "rds.csi.srvlab.io", name)
        })
        .collect();
    serve_with(vas, pvs, nodes, csinodes)
}

/// [`serve`] with explicit CSINodes.
pub fn serve_with(
    vas: Vec<Value>,
    pvs: Vec<Value>,
    nodes: Vec<Value>,
    csinodes: Vec<Value>,
) -> ApiServer {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (seen2, lines2) = (seen.clone(), lines.clone());
    let client = mock_client(move |method, path, query, body| {
        lines2.lock().unwrap().push(format!("{method} {path}?{query}"));
        let record = || {
            seen2.lock().unwrap().push(Seen {
                method: method.to_string(),
                path: path.to_string(),
                body: body.clone(),
            })
        };
        let answer = match (method, path) {
            ("GET", "/apis/storage.k8s.io/v1/volumeattachments") => {
                list("VolumeAttachment", "storage.k8s.io/v1", &vas)
            }
            ("GET", "/api/v1/persistentvolumes") => list("PersistentVolume", "v1", &pvs),
            ("GET", "/api/v1/nodes") => list("Node", "v1", &nodes),
            ("GET", "/apis/storage.k8s.io/v1/csinodes") => {
                list("CSINode", "storage.k8s.io/v1", &csinodes)
            }
            ("PATCH", p) if p.starts_with("/api/v1/persistentvolumes/") => {
                record();
                let name = p.rsplit('/').next().unwrap();
                json!({ "apiVersion": "v1", "kind": "PersistentVolume", "metadata": { "name": name } })
            }
            // The recorder posts an event, then patches it into a series when it repeats.
            ("PATCH", p) if p.contains("/events/") => {
                record();
                json!({ "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": { "name": p.rsplit('/').next().unwrap() }, "eventTime": null, "reason": "x" })
            }
            ("POST", p) if p.ends_with("/events") => {
                record();
                body.clone()
            }
            // A VolumeAttachment with the attacher's finalizer: marked for deletion.
            ("DELETE", p) if p.starts_with("/apis/storage.k8s.io/v1/volumeattachments/") => {
                record();
                let name = p.rsplit('/').next().unwrap();
                let mut va = vas
                    .iter()
                    .find(|v| v["metadata"]["name"] == name)
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                va["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
                va
            }
            _ if query.contains("watch=true") => Value::Null,
            _ => {
                record();
                json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound" })
            }
        };
        (if answer["kind"] == "Status" { 404 } else { 200 }, answer)
    });
    ApiServer { client, seen, lines }
}

/// A VolumeAttachment of `driver` for PV `pv` on `node`, created at `created` (RFC 3339).
pub fn va(driver: &str, name: &str, pv: &str, node: &str, attached: bool, created: &str) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
        "metadata": { "name": name, "creationTimestamp": created, "resourceVersion": "1" },
        "spec": { "attacher": driver, "nodeName": node, "source": { "persistentVolumeName": pv } },
        "status": { "attached": attached }
    })
}

/// A PV of `driver` for `handle`, bound to `ns/claim`, with volume attributes.
pub fn pv(driver: &str, name: &str, handle: &str, ns: &str, claim: &str, attrs: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": { "name": name, "resourceVersion": "1" },
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "csi": { "driver": driver, "volumeHandle": handle, "volumeAttributes": attrs },
            "claimRef": { "namespace": ns, "name": claim, "kind": "PersistentVolumeClaim", "apiVersion": "v1" }
        }
    })
}

/// A CSINode `name` on which `driver` registered `node_id`.
pub fn csinode(name: &str, driver: &str, node_id: &str) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
        "metadata": { "name": name, "resourceVersion": "1" },
        "spec": { "drivers": [ { "name": driver, "nodeID": node_id } ] }
    })
}

pub fn node(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name, "resourceVersion": "1" } })
}

/// A controller backend on `rds` (over SSH) with its fencing state in `cluster`.
pub fn backend_on(
    rds: &super::rds::Rds,
    cluster: KubeCluster,
    storage_fencing: bool,
    settle_s: i64,
) -> (Arc<Backend>, driver::rds::RdsConnection) {
    backend_on_with(rds, cluster, storage_fencing, settle_s, |_| {})
}

/// [`backend_on`] with the controller settings changed by `tweak`.
pub fn backend_on_with(
    rds: &super::rds::Rds,
    cluster: KubeCluster,
    storage_fencing: bool,
    settle_s: i64,
    tweak: impl FnOnce(&mut ControllerArgs),
) -> (Arc<Backend>, driver::rds::RdsConnection) {
    let mut opts = SshOptions::new(
        &rds.address,
        "admin",
        rds.key_file.clone(),
        HostKeyPolicy::Fingerprint(rds.fingerprint.clone()),
    );
    opts.probe_interval = Duration::from_secs(1);
    let conn = RdsConfig::Ssh(opts)
        .start(Readiness::new(ReadyState::NotReady("starting".into())), Duration::from_secs(1))
        .unwrap();
    let client = RdsClient::new(conn.transport.clone(), RetryPolicy::default());
    let args = ControllerArgs {
        volume_path: "/storage-pool/metal-csi".into(),
        allowed_base_paths: Vec::new(),
        nvme_address: Some("10.0.0.5".into()),
        nvme_port: 4420,
        nqn_prefix: "nqn.2000-02.com.mikrotik:".into(),
        min_volume_size: 1 << 30,
        max_volume_size: 16 << 40,
        attachment_state: None,
        storage_fencing,
        attach_settle_seconds: settle_s as u64,
        known_node_ids: Vec::new(),
        allow_copy_from: false,
        leader_election: false,
        leader_election_namespace: None,
        leader_election_lease_seconds: 15,
        stale_attachment_grace_seconds: 300,
        reconcile_interval_seconds: 60,
        rds_orphan_interval_seconds: 0,
        rds_orphan_grace_seconds: 3600,
        delete_rds_orphans: false,
        snapshot_pause_max_seconds: 10,
    };
    let mut args = args;
    tweak(&mut args);
    let mut backend =
        Backend::new(client, args.validate().unwrap(), "127.0.0.1".into(), HashMap::new());
    backend.fencing =
        Fencing::new(Box::new(cluster), storage_fencing, settle_s, AttachMetrics::default()).into();
    (Arc::new(backend), conn)
}

/// One API server that several clients (controller instances) share, with state: Leases
/// (create, get, replace with resourceVersion preconditions, as the API server checks them),
/// PVs (merge patches, with a resourceVersion precondition when the patch carries one), and
/// the other lists fixed. Records every write with the client that made it.
#[derive(Clone, Default)]
pub struct SharedApi {
    pub state: Arc<Mutex<Shared>>,
}

#[derive(Default)]
pub struct Shared {
    pub leases: HashMap<String, Value>,
    pub pvs: Vec<Value>,
    pub vas: Vec<Value>,
    pub nodes: Vec<Value>,
    pub csinodes: Vec<Value>,
    /// (client, method, path, body) of every write, in order.
    pub writes: Vec<(String, String, String, Value)>,
    next_version: u64,
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason }),
    )
}

impl Shared {
    fn version(&mut self) -> String {
        self.next_version += 1;
        (100 + self.next_version).to_string()
    }

    fn answer(&mut self, who: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        if method != "GET" {
            self.writes.push((who.into(), method.into(), path.into(), body.clone()));
        }
        let lease_prefix = "/apis/coordination.k8s.io/v1/namespaces/";
        match (method, path) {
            ("GET", "/apis/storage.k8s.io/v1/volumeattachments") => {
                (200, list("VolumeAttachment", "storage.k8s.io/v1", &self.vas))
            }
            ("GET", "/api/v1/persistentvolumes") => {
                (200, list("PersistentVolume", "v1", &self.pvs))
            }
            ("GET", "/api/v1/nodes") => (200, list("Node", "v1", &self.nodes)),
            ("GET", "/apis/storage.k8s.io/v1/csinodes") => {
                (200, list("CSINode", "storage.k8s.io/v1", &self.csinodes))
            }
            ("GET", p) if p.starts_with(lease_prefix) => match self.leases.get(p) {
                Some(l) => (200, l.clone()),
                None => status(404, "NotFound"),
            },
            ("POST", p) if p.starts_with(lease_prefix) && p.ends_with("/leases") => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let key = format!("{p}/{name}");
                if self.leases.contains_key(&key) {
                    return status(409, "AlreadyExists");
                }
                let mut l = body;
                l["metadata"]["resourceVersion"] = json!(self.version());
                self.leases.insert(key, l.clone());
                (201, l)
            }
            ("PUT", p) if p.starts_with(lease_prefix) => {
                let Some(current) = self.leases.get(p) else { return status(404, "NotFound") };
                if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return status(409, "Conflict");
                }
                let mut l = body;
                l["metadata"]["resourceVersion"] = json!(self.version());
                self.leases.insert(p.to_string(), l.clone());
                (200, l)
            }
            ("PATCH", p) if p.starts_with("/api/v1/persistentvolumes/") => {
                let name = p.rsplit('/').next().unwrap().to_string();
                let version = self.version();
                let Some(pv) = self.pvs.iter_mut().find(|v| v["metadata"]["name"] == name) else {
                    return status(404, "NotFound");
                };
                let wanted = &body["metadata"]["resourceVersion"];
                if !wanted.is_null() && *wanted != pv["metadata"]["resourceVersion"] {
                    return status(409, "Conflict");
                }
                if let Some(a) = body["metadata"]["annotations"].as_object() {
                    for (k, v) in a {
                        pv["metadata"]["annotations"][k] = v.clone();
                    }
                }
                pv["metadata"]["resourceVersion"] = json!(version);
                (200, pv.clone())
            }
            ("POST", p) if p.ends_with("/events") => (201, body),
            ("PATCH", p) if p.contains("/events/") => (
                200,
                json!({ "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": { "name": p.rsplit('/').next().unwrap() }, "eventTime": null, "reason": "x" }),
            ),
            _ => status(404, "NotFound"),
        }
    }
}

impl SharedApi {
    /// A kube client for instance `who` of this API server (its watches never send).
    pub fn client(&self, who: &str) -> kube::Client {
        let (state, who) = (self.state.clone(), who.to_string());
        mock_client(move |method, path, query, body| {
            if query.contains("watch=true") {
                return (200, Value::Null);
            }
            state.lock().unwrap().answer(&who, method, path, body)
        })
    }

    /// The writes of `method` to paths containing `part`, as (client, path, body).
    pub fn writes(&self, method: &str, part: &str) -> Vec<(String, String, Value)> {
        let s = self.state.lock().unwrap();
        s.writes
            .iter()
            .filter(|(_, m, p, _)| m == method && p.contains(part))
            .map(|(w, _, p, b)| (w.clone(), p.clone(), b.clone()))
            .collect()
    }
}
