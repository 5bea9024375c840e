//! Attachment state from Kubernetes: watch caches (kube-rs reflectors) of VolumeAttachments,
//! PersistentVolumes, Nodes and CSINodes, the informational PV annotations, and PVC events
//! through one recorder per process. VolumeAttachments name Kubernetes nodes; the CSINode of
//! each maps it to this driver's CSI node id, which is what ControllerPublishVolume receives.
//! Decisions never read the annotations (they went stale in the Go driver, incident 6); they
//! read the VolumeAttachments.
//!
//! RBAC: volumeattachments, persistentvolumes, nodes, csinodes: list, watch (never a
//! single get: decisions read the caches); persistentvolumes: patch; events
//! (events.k8s.io): create, patch (docs/kubevirt.md; crates/deploy/tests/rbac.rs checks the
//! manifests grant exactly these).
//! (Leases: [`super::leader`].)

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::{Node, ObjectReference, PersistentVolume},
        storage::v1::{CSINode, VolumeAttachment},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use super::cluster::{Cluster, PvInfo, PvcEvent, Recorded, ReportClaim};
use crate::core::{
    context::{key, publish::READONLY},
    fencing::Holder,
};

/// The event's `action` (events.k8s.io): what the driver was doing.
fn action_of(reason: &str) -> &'static str {
    use super::outcomes::reason::*;
    match reason {
        PROVISIONED | PROVISIONING_FAILED => "Provision",
        EXPANDED | EXPANSION_FAILED => "Expand",
        SNAPSHOT_TAKEN | SNAPSHOT_FAILED => "Snapshot",
        EXPORT_RESTORED => "Heal",
        _ => "Attach",
    }
}

/// Deadline of a PV patch or an event post inside an RPC (both are informational: a slow API
/// server must not hold up an attach).
const API_TIMEOUT: Duration = Duration::from_secs(10);

pub const ANNOTATION_NODE: &str = "rds.csi.srvlab.io/attached-node";
pub const ANNOTATION_AT: &str = "rds.csi.srvlab.io/attached-at";
/// The last expired migration window reported for the PV's volume (the claim of
/// [`Cluster::claim_report`]).
pub const ANNOTATION_REPORTED: &str = "rds.csi.srvlab.io/reported";

pub struct KubeCluster {
    client: Client,
    driver: String,
    vas: Store<VolumeAttachment>,
    pvs: Store<PersistentVolume>,
    nodes: Store<Node>,
    csinodes: Store<CSINode>,
    recorder: Recorder,
    started: Timestamp,
    /// Unix seconds when the caches became ready (0: not yet); the settle period counts from
    /// here, not from process start (a slow first listing must not eat it).
    ready_at: Arc<std::sync::atomic::AtomicI64>,
}

fn cache<K>(api: Api<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(error = %e, "Kubernetes watch error (retrying)");
            }
        }
    });
    reader
}

fn secs(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    t.map_or(0, |t| t.0.as_second())
}

impl KubeCluster {
    /// Starts the watch caches; [`KubeCluster::wait_ready`] waits for their first listing.
    pub fn start(client: Client, driver: &str, instance: Option<String>) -> KubeCluster {
        let reporter = Reporter { controller: "rds-csi-controller".into(), instance };
        let cluster = KubeCluster {
            vas: cache(Api::<VolumeAttachment>::all(client.clone())),
            pvs: cache(Api::<PersistentVolume>::all(client.clone())),
            nodes: cache(Api::<Node>::all(client.clone())),
            csinodes: cache(Api::<CSINode>::all(client.clone())),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            driver: driver.to_string(),
            started: Timestamp::now(),
            ready_at: Arc::default(),
        };
        let (vas, pvs, nodes, csinodes, ready_at) = (
            cluster.vas.clone(),
            cluster.pvs.clone(),
            cluster.nodes.clone(),
            cluster.csinodes.clone(),
            cluster.ready_at.clone(),
        );
        tokio::spawn(async move {
            if vas.wait_until_ready().await.is_ok()
                && pvs.wait_until_ready().await.is_ok()
                && nodes.wait_until_ready().await.is_ok()
                && csinodes.wait_until_ready().await.is_ok()
            {
                ready_at.store(Timestamp::now().as_second().max(1), Ordering::SeqCst);
                tracing::info!(
                    "Kubernetes caches filled: VolumeAttachments, PersistentVolumes, Nodes, CSINodes"
                );
            }
        });
        cluster
    }

    /// Waits until the three caches hold a full listing. (It watches the flag the start-up
    /// task sets rather than waiting on the stores again: a second waiter on a store's
    /// readiness can miss its wake-up.)
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_ready() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "the Kubernetes caches did not fill within {}s",
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.ready_at.load(Ordering::SeqCst) > 0
    }

    /// This driver's CSI node id on Kubernetes node `name` (its CSINode), else the name.
    fn csi_node_id(&self, name: &str) -> String {
        self.csinodes
            .get(&ObjectRef::new(name))
            .and_then(|c| {
                c.spec.drivers.iter().find(|d| d.name == self.driver).map(|d| d.node_id.clone())
            })
            .unwrap_or_else(|| name.to_string())
    }

    /// The Kubernetes node name of CSI node `node_id`.
    fn node_name_of(&self, node_id: &str) -> String {
        self.csinodes
            .state()
            .iter()
            .find(|c| c.spec.drivers.iter().any(|d| d.name == self.driver && d.node_id == node_id))
            .and_then(|c| c.metadata.name.clone())
            .unwrap_or_else(|| node_id.to_string())
    }

    /// The attachments recorded for the PVs of one volume handle.
    fn record_of(&self, pvs: &[Arc<PersistentVolume>], vas: &[Arc<VolumeAttachment>]) -> Recorded {
        let infos: Vec<PvInfo> = pvs.iter().map(|p| pv_info(p)).collect();
        let started = self.started.as_second();
        let mut out = Recorded::default();
        for va in vas {
            let pv = va.spec.source.persistent_volume_name.as_deref();
            if !infos.iter().any(|i| Some(i.name.as_str()) == pv) {
                continue;
            }
            let name = &va.spec.node_name;
            let status = va.status.as_ref();
            let holder = Holder {
                node: self.csi_node_id(name),
                since: secs(va.metadata.creation_timestamp.as_ref()),
                node_exists: self.nodes.get(&ObjectRef::new(name)).is_some(),
                // The attacher keeps ControllerPublishVolume's answer in attachmentMetadata.
                readonly: status.filter(|s| s.attached).map(|s| {
                    s.attachment_metadata
                        .as_ref()
                        .and_then(|m| m.get(READONLY))
                        .is_some_and(|v| v == "true")
                }),
            };
            if status.is_some_and(|s| s.attached) {
                out.holders.push(holder);
            } else if va.metadata.deletion_timestamp.is_none() && holder.since < started {
                out.pending_before_start.push(holder);
            }
        }
        out.pvs = infos;
        out
    }

    /// This driver's VolumeAttachments, grouped by PV name.
    fn attachments_by_pv(&self) -> HashMap<String, Vec<Arc<VolumeAttachment>>> {
        let mut by_pv: HashMap<String, Vec<Arc<VolumeAttachment>>> = HashMap::new();
        for va in self.vas.state() {
            if va.spec.attacher != self.driver {
                continue;
            }
            if let Some(pv) = va.spec.source.persistent_volume_name.clone() {
                by_pv.entry(pv).or_default().push(va);
            }
        }
        by_pv
    }

    /// The volume handle of a PV of this driver.
    fn handle_of<'a>(&self, pv: &'a PersistentVolume) -> Option<&'a str> {
        let c = pv.spec.as_ref()?.csi.as_ref()?;
        (c.driver == self.driver).then_some(c.volume_handle.as_str())
    }

    /// Every PV of this driver, by volume handle (each list sorted by name).
    fn pvs_by_handle(&self) -> HashMap<String, Vec<Arc<PersistentVolume>>> {
        let mut out: HashMap<String, Vec<Arc<PersistentVolume>>> = HashMap::new();
        for pv in self.pvs.state() {
            if let Some(h) = self.handle_of(&pv) {
                out.entry(h.to_string()).or_default().push(pv.clone());
            }
        }
        for pvs in out.values_mut() {
            pvs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        out
    }
}

fn pv_info(pv: &PersistentVolume) -> PvInfo {
    let spec = pv.spec.as_ref();
    let modes = spec.and_then(|s| s.access_modes.as_ref());
    PvInfo {
        exclusive: !modes.is_some_and(|m| !m.is_empty() && m.iter().all(|m| m == "ReadWriteMany")),
        name: pv.metadata.name.clone().unwrap_or_default(),
        migration_timeout_s: spec
            .and_then(|s| s.csi.as_ref())
            .and_then(|c| c.volume_attributes.as_ref())
            .and_then(|a| a.get(key::MIGRATION_TIMEOUT))
            .and_then(|v| v.trim().parse().ok()),
        claim: spec
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|c| Some((c.namespace.clone()?, c.name.clone()?))),
    }
}

#[async_trait::async_trait]
impl Cluster for KubeCluster {
    async fn recorded(&self, volume_id: &str) -> Result<Recorded, String> {
        if !self.is_ready() {
            return Err("the Kubernetes caches (VolumeAttachments, PVs, Nodes, CSINodes) are not filled yet; retry shortly".into());
        }
        // One pass over each cache, keeping only this volume's PVs and their attachments.
        let mut pvs: Vec<Arc<PersistentVolume>> = self
            .pvs
            .state()
            .into_iter()
            .filter(|pv| self.handle_of(pv) == Some(volume_id))
            .collect();
        if pvs.is_empty() {
            // No PV (yet): nothing can be attached through Kubernetes.
            return Ok(Recorded::default());
        }
        pvs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let names: Vec<&str> = pvs.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
        let vas: Vec<Arc<VolumeAttachment>> = self
            .vas
            .state()
            .into_iter()
            .filter(|va| {
                va.spec.attacher == self.driver
                    && va
                        .spec
                        .source
                        .persistent_volume_name
                        .as_deref()
                        .is_some_and(|n| names.contains(&n))
            })
            .collect();
        Ok(self.record_of(&pvs, &vas))
    }

    fn records_attachments(&self) -> bool {
        true
    }

    fn all_recorded(&self) -> Vec<(String, Recorded)> {
        if !self.is_ready() {
            return Vec::new();
        }
        // Only PVs with attachments can hold a migration: one pass over the attachments.
        let by_pv = self.attachments_by_pv();
        self.pvs_by_handle()
            .into_iter()
            .filter_map(|(handle, pvs)| {
                let vas: Vec<Arc<VolumeAttachment>> = pvs
                    .iter()
                    .filter_map(|p| by_pv.get(p.metadata.name.as_deref()?))
                    .flatten()
                    .cloned()
                    .collect();
                (!vas.is_empty()).then(|| (handle, self.record_of(&pvs, &vas)))
            })
            .collect()
    }

    fn node_exists(&self, node: &str) -> bool {
        self.nodes.get(&ObjectRef::new(&self.node_name_of(node))).is_some()
    }

    fn node_known(&self, node_id: &str) -> bool {
        self.csinodes
            .state()
            .iter()
            .any(|c| c.spec.drivers.iter().any(|d| d.name == self.driver && d.node_id == node_id))
    }

    async fn annotate(&self, pv: &str, attached: Option<(&str, &str)>) {
        let value = match attached {
            Some((node, at)) => {
                serde_json::json!({ "metadata": { "annotations": { ANNOTATION_NODE: node, ANNOTATION_AT: at } } })
            }
            None => {
                serde_json::json!({ "metadata": { "annotations": { ANNOTATION_NODE: null, ANNOTATION_AT: null } } })
            }
        };
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let (params, merge) = (PatchParams::default(), Patch::Merge(&value));
        let patch = api.patch(pv, &params, &merge);
        match tokio::time::timeout(API_TIMEOUT, patch).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(pv, error = %e, "cannot write the informational PV annotations")
            }
            Err(_) => tracing::warn!(pv, "the PV annotation patch timed out"),
        }
    }

    async fn event(&self, e: PvcEvent) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some(e.claim.0.clone()),
            name: Some(e.claim.1.clone()),
            ..Default::default()
        };
        let event = Event {
            type_: if e.warning { EventType::Warning } else { EventType::Normal },
            reason: e.reason.into(),
            note: Some(e.note),
            action: action_of(e.reason).into(),
            secondary: None,
        };
        match tokio::time::timeout(API_TIMEOUT, self.recorder.publish(&event, &reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, reason = e.reason, "cannot publish an event")
            }
            Err(_) => tracing::warn!(reason = e.reason, "publishing an event timed out"),
        }
    }

    /// The claim is a write of the key into the PV's annotation, conditional on the
    /// resourceVersion the cache holds: of two instances racing, the second gets 409 (and
    /// sees the key in its cache later); a successor reads the key and never reports again.
    async fn claim_report(&self, pv: Option<&str>, key: &str) -> ReportClaim {
        let Some(pv) = pv else { return ReportClaim::Claimed };
        let Some(cached) = self.pvs.get(&ObjectRef::new(pv)) else { return ReportClaim::Retry };
        if cached
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REPORTED))
            .map(String::as_str)
            == Some(key)
        {
            return ReportClaim::AlreadyReported;
        }
        let Some(version) = cached.metadata.resource_version.clone() else {
            return ReportClaim::Retry;
        };
        let value = serde_json::json!({ "metadata": {
            "resourceVersion": version, "annotations": { ANNOTATION_REPORTED: key } } });
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let (params, merge) = (PatchParams::default(), Patch::Merge(&value));
        match tokio::time::timeout(API_TIMEOUT, api.patch(pv, &params, &merge)).await {
            Ok(Ok(_)) => ReportClaim::Claimed,
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => ReportClaim::Retry,
            Ok(Err(e)) => {
                tracing::warn!(pv, error = %e, "cannot claim a report on the PV (next sweep)");
                ReportClaim::Retry
            }
            Err(_) => ReportClaim::Retry,
        }
    }

    fn age_s(&self) -> i64 {
        match self.ready_at.load(Ordering::SeqCst) {
            0 => 0,
            at => Timestamp::now().as_second() - at,
        }
    }

    fn volume_handles(&self) -> Option<std::collections::HashSet<String>> {
        self.is_ready().then(|| self.pvs_by_handle().into_keys().collect())
    }

    async fn clear_attachment(&self, volume_id: &str, node: &str) -> Result<Vec<String>, String> {
        let pvs: Vec<String> = self
            .pvs_by_handle()
            .remove(volume_id)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let node_name = self.node_name_of(node);
        let names: Vec<String> = self
            .vas
            .state()
            .iter()
            .filter(|va| {
                va.spec.attacher == self.driver
                    && va.spec.node_name == node_name
                    && va.metadata.deletion_timestamp.is_none()
                    && va
                        .spec
                        .source
                        .persistent_volume_name
                        .as_ref()
                        .is_some_and(|p| pvs.contains(p))
            })
            .filter_map(|va| va.metadata.name.clone())
            .collect();
        let api: Api<VolumeAttachment> = Api::all(self.client.clone());
        for name in &names {
            match tokio::time::timeout(API_TIMEOUT, api.delete(name, &Default::default())).await {
                Ok(Ok(_)) => {}
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => {}
                Ok(Err(e)) => return Err(format!("deleting VolumeAttachment {name}: {e}")),
                Err(_) => {
                    return Err(format!(
                        "deleting VolumeAttachment {name}: no answer within {}s",
                        API_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        Ok(names)
    }
}
