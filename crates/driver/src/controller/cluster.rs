//! Where the controller's attachment state lives (docs/kubevirt.md). With Kubernetes
//! ([`super::kube_cluster::KubeCluster`]): the VolumeAttachments of this driver (a watch
//! cache), the PVs (volume handle → PV, migration timeout, claim) and the Nodes (does a
//! holder's node still exist). Without (`--attachment-state memory`, development and the
//! emulator-only tests): only the grants this process made, which is not HA-safe.

use crate::core::fencing::Holder;

/// What the controller needs to know about a volume's PV.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvInfo {
    pub name: String,
    /// `migrationTimeoutSeconds` from the PV's volume attributes.
    pub migration_timeout_s: Option<i64>,
    /// `(namespace, name)` of the bound claim, for events.
    pub claim: Option<(String, String)>,
}

/// The cluster's record of a volume's attachments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// VolumeAttachments of this driver with `status.attached: true`.
    pub holders: Vec<Holder>,
    /// VolumeAttachments not (yet) attached, created before this controller started: a
    /// previous leader may have granted them without the attacher having recorded it yet.
    pub pending_before_start: Vec<Holder>,
    pub pv: Option<PvInfo>,
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
    /// Whether the Node object `node` exists.
    fn node_exists(&self, node: &str) -> bool;
    /// Writes (or with `None` removes) the informational PV annotations; never read back.
    async fn annotate(&self, pv: &str, attached: Option<(&str, &str)>);
    async fn event(&self, event: PvcEvent);
    /// Seconds since this controller's view became usable (for the settle period).
    fn age_s(&self) -> i64;
}

/// No Kubernetes: only this process's grants count.
#[derive(Debug, Default)]
pub struct MemoryCluster;

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

    async fn annotate(&self, _pv: &str, _attached: Option<(&str, &str)>) {}

    async fn event(&self, e: PvcEvent) {
        tracing::info!(namespace = %e.claim.0, pvc = %e.claim.1, reason = e.reason, note = %e.note, "event (no Kubernetes: logged only)");
    }

    fn age_s(&self) -> i64 {
        i64::MAX
    }
}
