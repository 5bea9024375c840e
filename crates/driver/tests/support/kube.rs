//! A mock Kubernetes API server for kube-rs (tower-test): answers the driver's list requests
//! from fixed objects, holds its watches open, records every other request (PV patches, event
//! posts) with its method, path and body, so tests assert the exact requests.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
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
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (seen2, lines2) = (seen.clone(), lines.clone());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (method, uri) = (req.method().to_string(), req.uri().clone());
            let path = uri.path().to_string();
            let query = uri.query().unwrap_or("").to_string();
            lines2.lock().unwrap().push(format!("{method} {path}?{query}"));
            if query.contains("watch=true") {
                held.push(send); // a watch that never sends anything
                continue;
            }
            let body: Value = if method == "GET" {
                Value::Null
            } else {
                let bytes = req.into_body().collect_bytes().await.unwrap();
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            let answer = match (method.as_str(), path.as_str()) {
                ("GET", "/apis/storage.k8s.io/v1/volumeattachments") => {
                    list("VolumeAttachment", "storage.k8s.io/v1", &vas)
                }
                ("GET", "/api/v1/persistentvolumes") => list("PersistentVolume", "v1", &pvs),
                ("GET", "/api/v1/nodes") => list("Node", "v1", &nodes),
                ("GET", "/apis/storage.k8s.io/v1/csinodes") => {
                    list("CSINode", "storage.k8s.io/v1", &csinodes)
                }
                ("PATCH", p) if p.starts_with("/api/v1/persistentvolumes/") => {
                    seen2.lock().unwrap().push(Seen {
                        method,
                        path: path.clone(),
                        body: body.clone(),
                    });
                    let name = p.rsplit('/').next().unwrap();
                    json!({ "apiVersion": "v1", "kind": "PersistentVolume", "metadata": { "name": name } })
                }
                // The recorder posts an event, then patches it into a series when it repeats.
                ("PATCH", p) if p.contains("/events/") => {
                    seen2.lock().unwrap().push(Seen {
                        method,
                        path: path.clone(),
                        body: body.clone(),
                    });
                    json!({ "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": { "name": p.rsplit('/').next().unwrap() }, "eventTime": null, "reason": "x" })
                }
                ("POST", p) if p.ends_with("/events") => {
                    seen2.lock().unwrap().push(Seen {
                        method,
                        path: path.clone(),
                        body: body.clone(),
                    });
                    body
                }
                _ => {
                    seen2.lock().unwrap().push(Seen { method, path: path.clone(), body });
                    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound" })
                }
            };
            let status = if answer["kind"] == "Status" { 404 } else { 200 };
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    ApiServer { client: kube::Client::new(service, "default"), seen, lines }
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
