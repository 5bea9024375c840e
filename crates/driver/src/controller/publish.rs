//! ControllerPublishVolume and ControllerUnpublishVolume: attachment fencing (docs/kubevirt.md).
//!
//! The decision (`core::fencing`) reads the holders of a volume: the cluster's record (the
//! VolumeAttachments of this driver with `status.attached`), plus the grants this process made
//! that the attacher has not recorded yet, minus the detaches this process answered that it
//! has not recorded yet. For a settle period after start, VolumeAttachments that existed
//! before this controller and are not attached yet also count: a previous leader may have
//! granted them a moment before it stopped.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use csi::v1::{
    ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
    ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse,
    volume_capability::access_mode::Mode,
};
use routeros::{error::RosError, types::Nqn};

use super::{
    cluster::{Cluster, MemoryCluster, PvcEvent, Recorded},
    volumes::{Backend, key},
};
use crate::{
    core::{
        access,
        fencing::{self, Access, Decision, Holder, Refusal},
        ids,
    },
    error::ServiceError,
    metrics::AttachMetrics,
};

/// How long a grant or a detach answered by this process stands in for the attacher's record
/// (when the cluster records attachments; without Kubernetes the grants are the only record
/// and never expire).
const UNRECORDED_TTL: Duration = Duration::from_secs(120);
/// The allow list of a disk no node may reach (storage fencing with no holder left): an
/// empty list would mean "any host".
pub const FENCED_HOST_NQN: &str = "nqn.2000-02.io.srvlab.rds-csi:fenced";
pub use crate::core::context::publish::{CAPACITY, HOST_NQN, READONLY};

/// A node's host NQN under storage fencing: derived from its node id, so the controller
/// knows it without asking the node (`nqn.2014-08.org.nvmexpress:uuid:<uuid v5>`).
pub fn host_nqn_for(node_id: &str) -> String {
    const NS: uuid::Uuid = uuid::Uuid::from_u128(0x5d3c_3f4e_7a1b_4c2d_9e8f_0a1b_2c3d_4e5f);
    format!("nqn.2014-08.org.nvmexpress:uuid:{}", uuid::Uuid::new_v5(&NS, node_id.as_bytes()))
}

pub struct Fencing {
    pub cluster: Box<dyn Cluster>,
    pub storage_fencing: bool,
    pub settle_s: i64,
    pub metrics: AttachMetrics,
    grants: Mutex<HashMap<(String, String), Grant>>,
    released: Mutex<HashMap<(String, String), Instant>>,
    /// Expired migration windows already reported: (volume, window end).
    pub(super) reported: Mutex<std::collections::HashSet<(String, i64)>>,
    /// `migrationTimeoutSeconds` seen in publishes, for volumes without a PV record.
    timeouts: Mutex<HashMap<String, i64>>,
    /// How long unrecorded grants and releases count; `None`: for ever (no other record).
    unrecorded_ttl: Option<Duration>,
}

/// A grant this process answered: since when, read-only or not, and when (for the TTL).
#[derive(Debug, Clone, Copy)]
struct Grant {
    since: i64,
    readonly: bool,
    at: Instant,
}

impl Default for Fencing {
    fn default() -> Self {
        Fencing::new(Box::new(MemoryCluster::default()), false, 0, AttachMetrics::default())
    }
}

pub(super) fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(msg.into())
}

pub(super) fn time(s: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(s).map_or_else(|_| s.to_string(), |t| t.to_string())
}

impl Fencing {
    pub fn new(
        cluster: Box<dyn Cluster>,
        storage_fencing: bool,
        settle_s: i64,
        metrics: AttachMetrics,
    ) -> Fencing {
        let cluster_ttl = cluster.records_attachments().then_some(UNRECORDED_TTL);
        Fencing {
            cluster,
            storage_fencing,
            settle_s,
            metrics,
            grants: Default::default(),
            released: Default::default(),
            reported: Default::default(),
            timeouts: Default::default(),
            unrecorded_ttl: cluster_ttl,
        }
    }

    /// The holders the decision sees (see the module comment).
    pub(super) fn holders(&self, vid: &str, rec: &Recorded) -> Vec<Holder> {
        let mut grants = self.grants.lock().expect("grants");
        let live = |at: &Instant| self.unrecorded_ttl.is_none_or(|ttl| at.elapsed() < ttl);
        grants.retain(|_, g| live(&g.at));
        let mut released = self.released.lock().expect("released");
        released.retain(|_, at| live(at));
        let mut out: Vec<Holder> = Vec::new();
        let settling = self.cluster.age_s() < self.settle_s;
        let pending = rec.pending_before_start.iter().filter(|_| settling);
        for h in rec.holders.iter().chain(pending) {
            if !released.contains_key(&(vid.to_string(), h.node.clone()))
                && !out.iter().any(|o| o.node == h.node)
            {
                out.push(h.clone());
            }
        }
        for ((v, node), g) in grants.iter() {
            if v == vid && !out.iter().any(|o| &o.node == node) {
                out.push(Holder {
                    node: node.clone(),
                    since: g.since,
                    node_exists: self.cluster.node_exists(node),
                    readonly: Some(g.readonly),
                });
            }
        }
        out
    }

    /// The nodes a volume is published to now (CSI `published_node_ids`), sorted.
    pub fn published_nodes(&self, vid: &str, rec: &Recorded) -> Vec<String> {
        let mut nodes: Vec<String> =
            self.holders(vid, rec).into_iter().filter(|h| h.node_exists).map(|h| h.node).collect();
        nodes.sort();
        nodes
    }

    /// The record of every volume with an attachment or a grant of this process (reads only
    /// caches and the grants).
    pub(super) fn all_records(&self) -> HashMap<String, Recorded> {
        let mut records: HashMap<String, Recorded> =
            self.cluster.all_recorded().into_iter().collect();
        let granted: Vec<String> =
            self.grants.lock().expect("grants").keys().map(|(v, _)| v.clone()).collect();
        for v in granted {
            records.entry(v).or_default();
        }
        records
    }

    /// `published_nodes` of every volume that has any (for ListVolumes).
    pub fn all_published(&self) -> HashMap<String, Vec<String>> {
        self.all_records()
            .into_iter()
            .map(|(v, rec)| {
                let nodes = self.published_nodes(&v, &rec);
                (v, nodes)
            })
            .filter(|(_, n)| !n.is_empty())
            .collect()
    }

    /// The volume's migration window: the PV's `migrationTimeoutSeconds`, else the one the
    /// last publish of it carried (remembered for the sweep), else 300 s.
    pub(super) fn window_timeout(
        &self,
        vid: &str,
        rec: &Recorded,
        from_request: Option<i64>,
    ) -> i64 {
        let mut seen = self.timeouts.lock().expect("timeouts");
        if let Some(t) = from_request {
            seen.insert(vid.to_string(), t);
        }
        rec.migration_timeout_s().or_else(|| seen.get(vid).copied()).unwrap_or(300)
    }

    fn grant(&self, vid: &str, node: &str, since: i64, readonly: bool) {
        let k = (vid.to_string(), node.to_string());
        self.released.lock().expect("released").remove(&k);
        self.grants
            .lock()
            .expect("grants")
            .insert(k, Grant { since, readonly, at: Instant::now() });
    }

    fn release(&self, vid: &str, node: &str) {
        let k = (vid.to_string(), node.to_string());
        self.grants.lock().expect("grants").remove(&k);
        self.released.lock().expect("released").insert(k, Instant::now());
    }
}

/// Everything an event needs about the volume's claim.
pub(super) fn claim(rec: &Recorded, ctx: &HashMap<String, String>) -> Option<(String, String)> {
    rec.pv()
        .and_then(|p| p.claim.clone())
        .or_else(|| Some((ctx.get(key::PVC_NAMESPACE)?.clone(), ctx.get(key::PVC_NAME)?.clone())))
}

impl Backend {
    pub(super) async fn emit(
        &self,
        claim: &Option<(String, String)>,
        warning: bool,
        reason: &'static str,
        note: String,
    ) {
        match claim {
            Some(c) => {
                self.fencing
                    .cluster
                    .event(PvcEvent { claim: c.clone(), warning, reason, note })
                    .await
            }
            None => tracing::info!(reason, %note, "event not published: the volume has no PVC"),
        }
    }

    /// Sets the disk's allow list to the host NQNs of `nodes` (storage fencing); an empty
    /// set fences every host out.
    async fn set_allowed(
        &self,
        slot: &routeros::types::Slot,
        nodes: &[String],
    ) -> Result<(), ServiceError> {
        let mut hosts: Vec<Nqn> =
            nodes.iter().map(|n| Nqn::new(&host_nqn_for(n)).expect("valid NQN")).collect();
        if hosts.is_empty() {
            hosts.push(Nqn::new(FENCED_HOST_NQN).expect("valid NQN"));
        }
        self.rds
            .set_export(slot, true, &hosts)
            .await
            .map_err(ServiceError::rds(format!("setting the allowed hosts of {slot}")))?;
        Ok(())
    }

    /// CSI "ControllerPublishVolume": makes the volume available to `node_id`, or refuses with
    /// FAILED_PRECONDITION when the fence forbids it (CSI: "volume published to another node
    /// and does not have MULTI_NODE capability"). Publishing again to the same node answers
    /// the same publish context; with the other `readonly` flag it is ALREADY_EXISTS ("Volume
    /// published but is incompatible"). A volume or node this driver does not know is
    /// NOT_FOUND. The publish context carries where to connect (the NVMe address the volume
    /// was created with, from its volume context), the size, `readonly`, and with storage
    /// fencing the host NQN the node must use.
    pub async fn publish(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Result<ControllerPublishVolumeResponse, ServiceError> {
        let slot = ids::parse_volume_id(&req.volume_id).map_err(invalid)?;
        if req.node_id.is_empty() {
            return Err(invalid("node_id is required"));
        }
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| invalid("volume_capability is required"))?;
        access::check(cap).map_err(invalid)?;
        let slot =
            slot.ok_or_else(|| ServiceError::NotFound(ids::foreign_volume(&req.volume_id)))?;
        let (vid, node) = (req.volume_id.as_str(), req.node_id.as_str());
        let migratable = access::is_block(cap)
            && cap
                .access_mode
                .as_ref()
                .is_some_and(|m| m.mode == Mode::MultiNodeMultiWriter as i32);
        let _guard = self.locks.try_lock(vid, "volume")?;
        let f = &self.fencing;
        let started = Instant::now();
        let (disk, _) = self.managed_disk(&slot, "reading volume").await?;
        let rec = f.cluster.recorded(vid).await.map_err(|e| {
            f.metrics.attach("unavailable");
            ServiceError::Unavailable(format!("cannot decide the attachment of {vid}: {e}"))
        })?;
        // The strictest access mode wins: a PV that allows one node keeps the fence closed.
        let access =
            if migratable && !rec.exclusive() { Access::Migratable } else { Access::Exclusive };
        let holders = f.holders(vid, &rec);
        let from_request =
            req.volume_context.get(key::MIGRATION_TIMEOUT).and_then(|v| v.parse().ok());
        let timeout = f.window_timeout(vid, &rec, from_request);
        let now = now_s();
        let outcome = fencing::decide(&holders, node, access, req.readonly, timeout, now);
        f.metrics.decision(started.elapsed());
        let claim = claim(&rec, &req.volume_context);
        for stale in &outcome.stale_ignored {
            let note = format!(
                "VolumeAttachment of {vid} on node {stale} ignored: the Node object no longer exists"
            );
            self.emit(&claim, true, "StaleAttachmentIgnored", note).await;
        }
        let live: Vec<String> =
            holders.iter().filter(|h| h.node_exists).map(|h| h.node.clone()).collect();
        match outcome.decision {
            Decision::Already => f.metrics.attach("already_attached"),
            Decision::Incompatible { published_readonly } => {
                f.metrics.attach("incompatible");
                return Err(ServiceError::AlreadyExists(format!(
                    "volume {vid} is already published to node {node} {}; this call asks for {}. Unpublish it first to change it",
                    if published_readonly { "read-only" } else { "read-write" },
                    if req.readonly { "read-only" } else { "read-write" }
                )));
            }
            Decision::Refuse(r) => return Err(self.refuse(vid, node, timeout, r, &claim).await),
            Decision::Grant { migration } => {
                if !f.cluster.node_known(node) {
                    f.metrics.attach("unknown_node");
                    return Err(ServiceError::NotFound(format!(
                        "node {node:?} is not a node of this driver: {}",
                        if f.cluster.records_attachments() {
                            "no CSINode registers it (is the rds-csi node plugin running there, with --node-id equal to the id the CO uses?)"
                        } else {
                            "it is neither served by this process nor given with --known-node-id"
                        }
                    )));
                }
                if f.storage_fencing {
                    // One set: the departed nodes (stale holders, and any node Kubernetes
                    // forgot) are revoked as the new one is granted.
                    let mut nodes = live.clone();
                    nodes.push(node.to_string());
                    self.set_allowed(&slot, &nodes).await?;
                }
                f.grant(vid, node, now, req.readonly);
                if migration {
                    f.metrics.migration_started();
                    let note = format!(
                        "live migration: {vid} attached to {node} as well as {}; the window closes in {timeout}s",
                        live.join(", ")
                    );
                    self.emit(&claim, false, "MigrationStarted", note).await;
                    f.metrics.attach("granted_migration");
                } else {
                    for pv in &rec.pvs {
                        f.cluster.annotate(&pv.name, Some((node, &time(now)))).await;
                    }
                    f.metrics.attach("granted");
                }
            }
        }
        Ok(ControllerPublishVolumeResponse {
            publish_context: self.publish_context(&disk, &req, node),
        })
    }

    /// Where and how the node reaches the volume. The NVMe address and port the volume was
    /// created with (its volume context, from the StorageClass) win over this controller's
    /// defaults, so a volume never silently moves to the management address.
    fn publish_context(
        &self,
        disk: &routeros::ops::Disk,
        req: &ControllerPublishVolumeRequest,
        node: &str,
    ) -> HashMap<String, String> {
        let defaults = self.volume(disk, None).volume_context;
        let mut out: HashMap<String, String> = [key::NVME_ADDRESS, key::NVME_PORT, key::NQN]
            .iter()
            .filter_map(|k| Some((k.to_string(), defaults.get(*k)?.clone())))
            .collect();
        for k in [key::NVME_ADDRESS, key::NVME_PORT] {
            if let Some(v) = req.volume_context.get(k).filter(|v| !v.is_empty()) {
                out.insert(k.to_string(), v.clone());
            }
        }
        if self.fencing.storage_fencing {
            out.insert(HOST_NQN.into(), host_nqn_for(node));
        }
        // The node checks its device against it (volumes only grow, so an older answer
        // kept by the attacher is still a lower bound).
        out.insert(CAPACITY.into(), disk.size.to_string());
        if req.readonly {
            out.insert(READONLY.into(), "true".into());
        }
        out
    }

    async fn refuse(
        &self,
        vid: &str,
        node: &str,
        timeout: i64,
        r: Refusal,
        claim: &Option<(String, String)>,
    ) -> ServiceError {
        let f = &self.fencing;
        let msg = match &r {
            Refusal::HeldElsewhere { holder } => {
                f.metrics.attach("conflict");
                format!(
                    "volume {vid} is attached to node {holder} and its access mode allows one node; it cannot attach to {node} too. \
                     Stop the pod using it on {holder} (Kubernetes then detaches it). If {holder} is down for good, delete its Node \
                     object or taint it node.kubernetes.io/out-of-service=nodeshutdown:NoExecute so that its attachment is removed"
                )
            }
            Refusal::TwoHolders { holders, window_ends } => {
                f.metrics.attach("too_many_nodes");
                format!(
                    "volume {vid} is attached to {} and {} (a live migration, window open until {}); a third node ({node}) cannot attach: at most two nodes, during a migration",
                    holders[0],
                    holders[1],
                    time(*window_ends)
                )
            }
            Refusal::WindowExpired { holders, expired_at } => {
                f.metrics.attach("migration_window_expired");
                format!(
                    "volume {vid} is attached to {} and {} and its migration window ({timeout}s) expired at {}: the migration failed or hangs. \
                     Detach one of the two nodes (finish or cancel the migration) before attaching {node}, or raise migrationTimeoutSeconds in the StorageClass",
                    holders[0],
                    holders[1],
                    time(*expired_at)
                )
            }
        };
        f.metrics.conflict();
        let reason = if matches!(r, Refusal::WindowExpired { .. }) {
            "MigrationFailed"
        } else {
            "AttachmentConflict"
        };
        self.emit(claim, true, reason, msg.clone()).await;
        ServiceError::FailedPrecondition(msg)
    }

    /// CSI "ControllerUnpublishVolume": the node no longer needs the volume. A node that does
    /// not hold it, or a volume that does not exist, is success (CSI: "can be safely
    /// regarded as ControllerUnpublished"). Detaching one of two nodes completes a migration.
    /// With storage fencing, an unreadable attachment record is UNAVAILABLE: the allow list
    /// is never rewritten from a guess (it could lock out a node still writing, or keep one).
    pub async fn unpublish(
        &self,
        req: ControllerUnpublishVolumeRequest,
    ) -> Result<ControllerUnpublishVolumeResponse, ServiceError> {
        let Some(slot) = ids::parse_volume_id(&req.volume_id).map_err(invalid)? else {
            return Ok(ControllerUnpublishVolumeResponse {});
        };
        let (vid, node) = (req.volume_id.as_str(), req.node_id.as_str());
        let _guard = self.locks.try_lock(vid, "volume")?;
        let f = &self.fencing;
        let rec = match f.cluster.recorded(vid).await {
            Ok(rec) => rec,
            Err(e) if f.storage_fencing => {
                return Err(ServiceError::Unavailable(format!(
                    "cannot read the attachments of {vid} ({e}); the RDS allow list is left as it is, retry shortly"
                )));
            }
            Err(_) => Recorded::default(),
        };
        let before: Vec<Holder> =
            f.holders(vid, &rec).into_iter().filter(|h| h.node_exists).collect();
        let held = node.is_empty() || before.iter().any(|h| h.node == node);
        let remaining: Vec<String> = before
            .iter()
            .filter(|h| !node.is_empty() && h.node != node)
            .map(|h| h.node.clone())
            .collect();
        if f.storage_fencing {
            match self.set_allowed(&slot, &remaining).await {
                // The disk is gone: nothing left to fence.
                Err(ServiceError::Rds { source: RosError::NotFound(_), .. }) => {}
                other => other?,
            }
        }
        if node.is_empty() {
            // CSI: an empty node_id unpublishes from every node.
            for h in &before {
                f.release(vid, &h.node);
            }
        } else {
            f.release(vid, node);
        }
        let claim = claim(&rec, &HashMap::new());
        if before.len() == 2 && held && remaining.len() == 1 {
            let started = before.iter().map(|h| h.since).max().unwrap_or(0);
            f.metrics.migration_finished(now_s().saturating_sub(started));
            let note =
                format!("live migration of {vid} done: {node} detached, {} keeps it", remaining[0]);
            self.emit(&claim, false, "MigrationCompleted", note).await;
        }
        if remaining.is_empty() {
            for pv in &rec.pvs {
                f.cluster.annotate(&pv.name, None).await;
            }
        }
        f.metrics.detach(if held { "detached" } else { "not_attached" });
        Ok(ControllerUnpublishVolumeResponse {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_kubernetes_grants_are_the_record_and_never_expire() {
        let f = Fencing::default();
        assert_eq!(f.unrecorded_ttl, None);
        f.grant("pvc-1", "n1", 100, false);
        let h = f.holders("pvc-1", &Recorded::default());
        assert_eq!(h.iter().map(|h| h.node.as_str()).collect::<Vec<_>>(), ["n1"]);
        f.release("pvc-1", "n1");
        assert!(f.holders("pvc-1", &Recorded::default()).is_empty());
    }

    struct Recording;

    #[async_trait::async_trait]
    impl Cluster for Recording {
        async fn recorded(&self, _: &str) -> Result<Recorded, String> {
            Ok(Recorded::default())
        }
        fn records_attachments(&self) -> bool {
            true
        }
        fn all_recorded(&self) -> Vec<(String, Recorded)> {
            Vec::new()
        }
        fn node_exists(&self, _: &str) -> bool {
            true
        }
        fn node_known(&self, _: &str) -> bool {
            true
        }
        async fn annotate(&self, _: &str, _: Option<(&str, &str)>) {}
        async fn event(&self, _: PvcEvent) {}
        async fn claim_report(
            &self,
            _: Option<&str>,
            _: &str,
        ) -> super::super::cluster::ReportClaim {
            super::super::cluster::ReportClaim::Claimed
        }
        fn age_s(&self) -> i64 {
            i64::MAX
        }
    }

    #[test]
    fn with_kubernetes_unrecorded_grants_stand_in_for_two_minutes() {
        let mut f = Fencing::new(Box::new(Recording), false, 0, AttachMetrics::default());
        f.grant("pvc-1", "n1", 100, false);
        assert_eq!(f.holders("pvc-1", &Recorded::default()).len(), 1);
        f.grants.lock().unwrap().values_mut().for_each(|g| g.at -= UNRECORDED_TTL);
        assert!(
            f.holders("pvc-1", &Recorded::default()).is_empty(),
            "the VolumeAttachment is the record now"
        );
        // A release hides a recorded holder until the attacher catches up.
        let rec = Recorded {
            holders: vec![Holder {
                node: "n2".into(),
                since: 1,
                node_exists: true,
                readonly: None,
            }],
            ..Default::default()
        };
        f.release("pvc-1", "n2");
        assert!(f.holders("pvc-1", &rec).is_empty());
        f.unrecorded_ttl = Some(Duration::ZERO);
        assert_eq!(f.holders("pvc-1", &rec).len(), 1);
    }
}
