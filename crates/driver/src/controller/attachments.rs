//! The controller's attachment state for fencing (docs/kubevirt.md): who holds a volume.
//!
//! The decision (`core::fencing`) reads the holders of a volume: the cluster's record (the
//! VolumeAttachments of this driver with `status.attached`), plus the grants this process made
//! that the attacher has not recorded yet, minus the detaches this process answered that it
//! has not recorded yet. For a settle period after start, VolumeAttachments that existed
//! before this controller and are not attached yet also count: a previous leader may have
//! granted them a moment before it stopped. ControllerPublish/Unpublish (publish.rs) and the
//! migration sweep (sweep.rs) read and update it.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::cluster::{Cluster, MemoryCluster, Recorded};
use crate::{
    core::{context::key, fencing::Holder},
    metrics::AttachMetrics,
};

/// How long a grant or a detach answered by this process stands in for the attacher's record
/// (when the cluster records attachments; without Kubernetes the grants are the only record
/// and never expire).
const UNRECORDED_TTL: Duration = Duration::from_secs(120);
pub use crate::core::{
    context::publish::{CAPACITY, HOST_NQN, READONLY},
    fencing::{FENCED_HOST_NQN, host_nqn_for},
};

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

pub(super) use crate::clock::now_s;

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

    pub(super) fn grant(&self, vid: &str, node: &str, since: i64, readonly: bool) {
        let k = (vid.to_string(), node.to_string());
        self.released.lock().expect("released").remove(&k);
        self.grants
            .lock()
            .expect("grants")
            .insert(k, Grant { since, readonly, at: Instant::now() });
    }

    pub(super) fn release(&self, vid: &str, node: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cluster::{PvcEvent, ReportClaim};

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
        async fn claim_report(&self, _: Option<&str>, _: &str) -> ReportClaim {
            ReportClaim::Claimed
        }
        fn age_s(&self) -> i64 {
            i64::MAX
        }
        fn volume_handles(&self) -> Option<std::collections::HashSet<String>> {
            None
        }
        async fn clear_attachment(&self, _: &str, _: &str) -> Result<Vec<String>, String> {
            Ok(Vec::new())
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
