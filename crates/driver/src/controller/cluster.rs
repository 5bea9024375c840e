//! Where the controller's attachment state lives (docs/kubevirt.md). With Kubernetes
//! ([`super::kube_cluster::KubeCluster`]): the VolumeAttachments of this driver (a watch
//! cache), the PVs (volume handle → PV, migration timeout, claim) and the Nodes (does a
//! holder's node still exist), and the CSINodes (which CSI node ids exist, and the
//! Kubernetes node name of each). Without (`--attachment-state memory`, development and the
//! emulator-only tests): only the grants this process made, which is not HA-safe, and the
//! node ids this process serves or was told about (`--known-node-id`).

use std::collections::HashSet;

use crate::core::fencing::Holder;

/// What the controller needs to know about a volume's PV.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvInfo {
    pub name: String,
    /// `migrationTimeoutSeconds` from the PV's volume attributes.
    pub migration_timeout_s: Option<i64>,
    /// `(namespace, name)` of the bound claim, for events.
    pub claim: Option<(String, String)>,
    /// Whether its access modes allow one node only (anything but ReadWriteMany alone).
    pub exclusive: bool,
}

/// The cluster's record of a volume's attachments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// VolumeAttachments of this driver with `status.attached: true`.
    pub holders: Vec<Holder>,
    /// VolumeAttachments not (yet) attached, created before this controller started: a
    /// previous leader may have granted them without the attacher having recorded it yet.
    pub pending_before_start: Vec<Holder>,
    /// Every PV with this volume handle (normally one; a statically provisioned copy of a
    /// PV makes two, and the strictest access mode among them wins).
    pub pvs: Vec<PvInfo>,
}

impl Recorded {
    /// The PV events and annotations go to.
    pub fn pv(&self) -> Option<&PvInfo> {
        self.pvs.first()
    }

    /// Whether some PV of the volume allows one node only.
    pub fn exclusive(&self) -> bool {
        self.pvs.iter().any(|p| p.exclusive)
    }

    /// The migration window from the PVs' attributes (the shortest, when they differ).
    pub fn migration_timeout_s(&self) -> Option<i64> {
        self.pvs.iter().filter_map(|p| p.migration_timeout_s).min()
    }
}

/// The answer to [`Cluster::claim_report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportClaim {
    /// This instance reports it.
    Claimed,
    /// Reported before (by this instance or another): never again.
    AlreadyReported,
    /// Not decided now (a conflicting write, an unreachable API server): ask again later.
    Retry,
}

/// An event on a PVC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvcEvent {
    pub claim: (String, String),
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

#[async_trait::async_trait]
pub trait Cluster: Send + Sync {
    /// The recorded attachments of `volume_id` (errors when the cache is not usable: the
    /// caller fails closed).
    async fn recorded(&self, volume_id: &str) -> Result<Recorded, String>;
    /// Whether attachments are recorded outside this process (then this process's own
    /// grants only stand in until the record catches up).
    fn records_attachments(&self) -> bool;
    /// Every volume of this driver with its record (for the migration-window sweep).
    fn all_recorded(&self) -> Vec<(String, Recorded)>;
    /// Whether the Node object of CSI node `node` exists.
    fn node_exists(&self, node: &str) -> bool;
    /// Whether `node_id` is a node of this driver (CSI "ControllerPublishVolume": an unknown
    /// node is NOT_FOUND): a CSINode registers it, or (memory) this process knows it.
    fn node_known(&self, node_id: &str) -> bool;
    /// Writes (or with `None` removes) the informational PV annotations; never read back.
    async fn annotate(&self, pv: &str, attached: Option<(&str, &str)>);
    async fn event(&self, event: PvcEvent);
    /// Claims the one report of `key` (an expired migration window) for the volume whose
    /// PV is `pv`, so that of several controller instances, and of a leader and its
    /// successor, exactly one reports it.
    async fn claim_report(&self, pv: Option<&str>, key: &str) -> ReportClaim;
    /// Seconds since this controller's view became usable (for the settle period).
    fn age_s(&self) -> i64;
    /// The volume handles of every PV of this driver; `None` while that is not known (no
    /// Kubernetes, or the cache is not synced yet): the RDS orphan report then waits.
    fn volume_handles(&self) -> Option<HashSet<String>>;
    /// Deletes the VolumeAttachments of this driver that record `volume_id` on CSI node
    /// `node` (a stale attachment; the attacher then calls ControllerUnpublishVolume and
    /// removes its finalizer). Returns their names.
    async fn clear_attachment(&self, volume_id: &str, node: &str) -> Result<Vec<String>, String>;
}

/// No Kubernetes: only this process's grants count; the known nodes are the node ids this
/// process serves and those given with `--known-node-id`.
#[derive(Debug, Default)]
pub struct MemoryCluster {
    pub known_nodes: HashSet<String>,
}

#[async_trait::async_trait]
impl Cluster for MemoryCluster {
    async fn recorded(&self, _volume_id: &str) -> Result<Recorded, String> {
        Ok(Recorded::default())
    }

    fn records_attachments(&self) -> bool {
        false
    }

    fn all_recorded(&self) -> Vec<(String, Recorded)> {
        Vec::new()
    }

    fn node_exists(&self, _node: &str) -> bool {
        true
    }

    fn node_known(&self, node_id: &str) -> bool {
        self.known_nodes.contains(node_id)
    }

    async fn annotate(&self, _pv: &str, _attached: Option<(&str, &str)>) {}

    async fn event(&self, e: PvcEvent) {
        tracing::info!(namespace = %e.claim.0, pvc = %e.claim.1, reason = e.reason, note = %e.note, "event (no Kubernetes: logged only)");
    }

    /// One process, one record: [`super::attachments::Fencing`] remembers what it reported.
    async fn claim_report(&self, _pv: Option<&str>, _key: &str) -> ReportClaim {
        ReportClaim::Claimed
    }

    fn age_s(&self) -> i64 {
        i64::MAX
    }

    fn volume_handles(&self) -> Option<HashSet<String>> {
        None
    }

    async fn clear_attachment(&self, _volume_id: &str, _node: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}
