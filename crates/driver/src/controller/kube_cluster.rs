//! Attachment state from Kubernetes: watch caches (kube-rs reflectors) of VolumeAttachments,
//! PersistentVolumes and Nodes, the informational PV annotations, and PVC events through one
//! recorder per process. Decisions never read the annotations (they went stale in the Go
//! driver, incident 6); they read the VolumeAttachments.
//!
//! RBAC: volumeattachments, persistentvolumes, nodes: get, list, watch; persistentvolumes:
//! patch; events (events.k8s.io): create, patch (docs/kubevirt.md).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::{Node, ObjectReference, PersistentVolume},
        storage::v1::VolumeAttachment,
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

use super::cluster::{Cluster, PvInfo, PvcEvent, Recorded};
use crate::{controller::volumes::key, core::fencing::Holder};

/// Deadline of a PV patch or an event post inside an RPC (both are informational: a slow API
/// server must not hold up an attach).
const API_TIMEOUT: Duration = Duration::from_secs(10);

pub const ANNOTATION_NODE: &str = "rds.csi.srvlab.io/attached-node";
pub const ANNOTATION_AT: &str = "rds.csi.srvlab.io/attached-at";

pub struct KubeCluster {
    client: Client,
    driver: String,
    vas: Store<VolumeAttachment>,
    pvs: Store<PersistentVolume>,
    nodes: Store<Node>,
    recorder: Recorder,
    started: Timestamp,
    ready: Arc<AtomicBool>,
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
            recorder: Recorder::new(client.clone(), reporter),
            client,
            driver: driver.to_string(),
            started: Timestamp::now(),
            ready: Arc::default(),
        };
        let (vas, pvs, nodes, ready) = (
            cluster.vas.clone(),
            cluster.pvs.clone(),
            cluster.nodes.clone(),
            cluster.ready.clone(),
        );
        tokio::spawn(async move {
            if vas.wait_until_ready().await.is_ok()
                && pvs.wait_until_ready().await.is_ok()
                && nodes.wait_until_ready().await.is_ok()
            {
                ready.store(true, Ordering::SeqCst);
                tracing::info!(
                    "Kubernetes caches filled: VolumeAttachments, PersistentVolumes, Nodes"
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
        while !self.ready.load(Ordering::SeqCst) {
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

    /// The attachments recorded for `pv`.
    fn record_of(&self, pv: &PersistentVolume, vas: &[Arc<VolumeAttachment>]) -> Recorded {
        let info = pv_info(pv);
        let mut out = Recorded { pv: Some(info.clone()), ..Default::default() };
        let started = self.started.as_second();
        for va in vas {
            if va.spec.source.persistent_volume_name.as_deref() != Some(info.name.as_str()) {
                continue;
            }
            let holder = Holder {
                node: va.spec.node_name.clone(),
                since: secs(va.metadata.creation_timestamp.as_ref()),
                node_exists: self.node_exists(&va.spec.node_name),
            };
            if va.status.as_ref().is_some_and(|s| s.attached) {
                out.holders.push(holder);
            } else if va.metadata.deletion_timestamp.is_none() && holder.since < started {
                out.pending_before_start.push(holder);
            }
        }
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

    fn pv_of(&self, volume_id: &str) -> Option<Arc<PersistentVolume>> {
        self.pvs.state().into_iter().find(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .is_some_and(|c| c.driver == self.driver && c.volume_handle == volume_id)
        })
    }
}

fn pv_info(pv: &PersistentVolume) -> PvInfo {
    let spec = pv.spec.as_ref();
    PvInfo {
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
        if !self.ready.load(Ordering::SeqCst) {
            return Err("the Kubernetes caches (VolumeAttachments, PVs, Nodes) are not filled yet; retry shortly".into());
        }
        let Some(pv) = self.pv_of(volume_id) else {
            // No PV (yet): nothing can be attached through Kubernetes.
            return Ok(Recorded::default());
        };
        let name = pv.metadata.name.clone().unwrap_or_default();
        let vas = self.attachments_by_pv().remove(&name).unwrap_or_default();
        Ok(self.record_of(&pv, &vas))
    }

    fn records_attachments(&self) -> bool {
        true
    }

    fn all_recorded(&self) -> Vec<(String, Recorded)> {
        if !self.ready.load(Ordering::SeqCst) {
            return Vec::new();
        }
        // Only PVs with attachments can hold a migration: one pass over the attachments.
        let by_pv = self.attachments_by_pv();
        self.pvs
            .state()
            .iter()
            .filter_map(|pv| {
                let c = pv.spec.as_ref()?.csi.as_ref()?;
                let vas = by_pv.get(pv.metadata.name.as_deref()?)?;
                (c.driver == self.driver)
                    .then(|| (c.volume_handle.clone(), self.record_of(pv, vas)))
            })
            .collect()
    }

    fn node_exists(&self, node: &str) -> bool {
        self.nodes.get(&ObjectRef::new(node)).is_some()
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
            action: "Attach".into(),
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

    fn age_s(&self) -> i64 {
        Timestamp::now().as_second() - self.started.as_second()
    }
}
