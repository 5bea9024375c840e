//! The node plugin's Kubernetes calls (docs/operations.md), only with `--node-events`,
//! `--recover-pods` or `--topology-from-node-labels` (GET its Node, once at start): the PVC
//! of a PV (GET the PV), an event on that PVC, and with
//! `--recover-pods` the pods of this node (LIST with a `spec.nodeName` field selector) and
//! the deletion of one (with its UID as a precondition, so a recreated pod of the same name
//! is never hit). Every call has a deadline.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolume, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Preconditions},
    runtime::events::{Event, EventType, Recorder, Reporter},
};

const API_TIMEOUT: Duration = Duration::from_secs(10);

pub struct NodeKube {
    client: Client,
    recorder: Recorder,
    node_name: String,
    driver: String,
}

/// The reference of the PVC `(namespace, name)`.
pub fn claim_ref(claim: &(String, String)) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: Some(claim.0.clone()),
        name: Some(claim.1.clone()),
        ..Default::default()
    }
}

/// A pod on this node, as `--recover-pods` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The kind/name of its controller owner (Deployment's ReplicaSet, StatefulSet, ...).
    pub controller: Option<String>,
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(API_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {}s", API_TIMEOUT.as_secs())),
    }
}

impl std::fmt::Debug for NodeKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKube").field("node_name", &self.node_name).finish()
    }
}

impl NodeKube {
    pub fn new(client: Client, node_name: &str, driver: &str) -> NodeKube {
        let reporter =
            Reporter { controller: "rds-csi-node".into(), instance: Some(node_name.to_string()) };
        NodeKube {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            node_name: node_name.to_string(),
            driver: driver.to_string(),
        }
    }

    /// `(namespace, name)` of the claim bound to PV `pv`, and its volume handle when the PV
    /// is this driver's.
    pub async fn pv(&self, pv: &str) -> Result<(Option<(String, String)>, Option<String>), String> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let p = bounded(&format!("reading PV {pv}"), api.get(pv)).await?;
        let spec = p.spec.unwrap_or_default();
        let claim = spec.claim_ref.and_then(|c| Some((c.namespace?, c.name?)));
        let handle = spec.csi.filter(|c| c.driver == self.driver).map(|c| c.volume_handle);
        Ok((claim, handle))
    }

    /// An event of the self-healing loops (action `Heal`) on the PVC `claim`.
    pub async fn event(&self, claim: &(String, String), warning: bool, reason: &str, note: String) {
        self.event_on(claim_ref(claim), warning, reason, "Heal", note).await
    }

    /// An event on `reference` (a PVC or a pod) for `action` (`Heal`, `Stage`).
    pub async fn event_on(
        &self,
        reference: ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) =
            bounded("publishing an event", self.recorder.publish(&event, &reference)).await
        {
            tracing::warn!(error = %e, reason, "cannot publish an event");
        }
    }

    /// This node's labels `topology.<driver>/*` (`--topology-from-node-labels`): the
    /// topology segments of the RDS backends it reaches (docs/topology.md).
    pub async fn topology_labels(&self) -> Result<HashMap<String, String>, String> {
        let api: Api<Node> = Api::all(self.client.clone());
        let node =
            bounded(&format!("reading node {}", self.node_name), api.get(&self.node_name)).await?;
        let prefix = format!("topology.{}/", self.driver);
        Ok(node
            .metadata
            .labels
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, v)| k.starts_with(&prefix) && k.len() > prefix.len() && !v.is_empty())
            .collect())
    }

    /// The pod with UID `uid` on this node, if any.
    pub async fn pod(&self, uid: &str) -> Result<Option<PodInfo>, String> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node_name));
        let pods = bounded("listing this node's pods", api.list(&lp)).await?;
        Ok(pods.items.into_iter().find(|p| p.metadata.uid.as_deref() == Some(uid)).map(|p| {
            let m = p.metadata;
            PodInfo {
                namespace: m.namespace.unwrap_or_default(),
                name: m.name.unwrap_or_default(),
                uid: m.uid.unwrap_or_default(),
                controller: m
                    .owner_references
                    .unwrap_or_default()
                    .into_iter()
                    .find(|o| o.controller == Some(true))
                    .map(|o| format!("{}/{}", o.kind, o.name)),
            }
        }))
    }

    /// Deletes `pod` (only that incarnation: its UID is a precondition).
    pub async fn delete_pod(&self, pod: &PodInfo) -> Result<(), String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        bounded(&format!("deleting pod {}/{}", pod.namespace, pod.name), api.delete(&pod.name, &dp))
            .await
            .map(|_| ())
    }
}
