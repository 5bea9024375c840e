//! The migration-window sweep: reports windows that expired with both nodes still attached
//! (docs/kubevirt.md), on the leader only ([`super::leader`]), and each window once across
//! every controller instance, including a successor after a failover: the report is claimed
//! on the PV first ([`super::cluster::Cluster::claim_report`]), and only the claim's winner
//! posts the event.

use std::{collections::HashMap, sync::Weak, time::Duration};

use super::{
    attachments::{claim, now_s, time},
    backend::Backend,
    cluster::ReportClaim,
    leader::Leadership,
};
use crate::core::fencing::{self, Holder};

/// How often expired migration windows are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the sweep every `interval` while this instance leads, until the backend is dropped.
pub async fn run(backend: Weak<Backend>, leadership: Leadership, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(b) = backend.upgrade() else { break };
        if leadership.is_leader() {
            b.sweep_migrations().await;
        }
    }
}

impl Backend {
    /// Reports migration windows that expired with both nodes still attached, once each:
    /// a `MigrationFailed` event and `rds_csi_migration_timeouts_total`, even if nothing
    /// tries to attach a third node. Returns the volumes reported.
    pub async fn sweep_migrations(&self) -> Vec<String> {
        let f = &self.fencing;
        let records = f.all_records();
        let now = now_s();
        let mut out = Vec::new();
        let mut active = 0;
        for (vid, rec) in records {
            let live: Vec<Holder> =
                f.holders(&vid, &rec).into_iter().filter(|h| h.node_exists).collect();
            if live.len() != 2 {
                continue;
            }
            active += 1;
            let timeout = f.window_timeout(&vid, &rec, None);
            let end = fencing::window_end(&live.iter().collect::<Vec<_>>(), timeout);
            let key = (vid.clone(), end);
            if now < end || f.reported.lock().expect("reported").contains(&key) {
                continue;
            }
            let pv = rec.pv().map(|p| p.name.clone());
            match f.cluster.claim_report(pv.as_deref(), &format!("migration-window-{end}")).await {
                ReportClaim::Claimed => {}
                ReportClaim::AlreadyReported => {
                    f.reported.lock().expect("reported").insert(key);
                    continue;
                }
                // Not claimed now (a conflict or an unreachable API server): next sweep.
                ReportClaim::Retry => continue,
            }
            f.reported.lock().expect("reported").insert(key);
            f.metrics.migration_timed_out();
            let note = format!(
                "live migration of {vid} between {} and {} did not finish within {timeout}s (window ended {}); detach one of the two nodes",
                live[0].node,
                live[1].node,
                time(end)
            );
            self.emit(&claim(&rec, &HashMap::new()), true, "MigrationFailed", note).await;
            out.push(vid);
        }
        // The cluster's record is the truth after a restart; inc/dec keep it current between.
        f.metrics.set_migrations_active(active);
        out
    }
}
