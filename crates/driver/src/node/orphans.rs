//! Orphan cleanup on the node (docs/operations.md): at start and every
//! `--orphan-cleanup-interval-seconds`, a managed attachment (an NVMe subsystem, or a loop
//! device of the loop plane) that nothing uses (no mount, no stacked device, no opener, no
//! loop device over it) for longer than `--orphan-grace-seconds` is disconnected; with
//! `--orphan-dry-run` it is only reported. A kill between connect and mount, or between
//! unmount and disconnect, leaves such attachments when the CO does not repeat the call.
//!
//! Two independent guards before any disconnect: the managed prefix, and the exact form
//! `<nqn prefix><volume id>` (`DataPlane::managed` lists nothing else; `NvmePlane::detach`
//! checks the prefix again). The Go driver's cleaner once disconnected a node's root disk
//! (incident 3). While a mount of a vanished device of the plane exists (a stale mount whose
//! volume cannot be told from sysfs), nothing is disconnected.

use std::{sync::Arc, time::Duration};

use super::{NodeState, holders};
use crate::core::sightings::{Decision, Sightings};

/// What one sweep did with one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub volume_id: String,
    pub key: String,
    pub decision: Decision,
    /// `disconnected`, `would_disconnect`, `disconnect_failed`, `busy` (an RPC holds the
    /// volume) for orphans; empty otherwise.
    pub action: &'static str,
}

/// Runs the cleanup at start and every `interval` until the state is dropped.
pub async fn run(state: std::sync::Weak<NodeState>, interval: Duration) {
    let origin = tokio::time::Instant::now();
    let mut sightings = Sightings::default();
    while let Some(st) = state.upgrade() {
        st.sweep_orphans(&mut sightings, origin.elapsed()).await;
        drop(st);
        tokio::time::sleep(interval).await;
    }
}

impl NodeState {
    /// One sweep at `now` (an offset on the caller's monotonic clock).
    pub async fn sweep_orphans(
        self: &Arc<Self>,
        sightings: &mut Sightings,
        now: Duration,
    ) -> Vec<Outcome> {
        let mounts = match self.host.mounts().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "orphan cleanup skipped: cannot read mountinfo");
                return Vec::new();
            }
        };
        let (managed, refused) = self.plane.managed(&self.host);
        for key in &refused {
            tracing::debug!(%key, "inside the managed prefix but not a volume's exact NQN: never touched");
        }
        let prefix = self.plane.device_prefix();
        let stale = mounts
            .iter()
            .find(|m| m.source.starts_with(prefix) && self.host.block_device(m.major_minor).is_none())
            .map(|m| {
                format!(
                    "the stale mount {} of the vanished device {} exists; its volume cannot be told, so nothing is disconnected until it is repaired or unmounted",
                    m.target, m.source
                )
            });
        let mut seen = Vec::new();
        for m in &managed {
            let used = match (&stale, &m.device) {
                (Some(why), _) => Some(why.clone()),
                (None, None) => None,
                (None, Some(dev)) => {
                    match holders::users_within(
                        &self.host.sysfs,
                        &self.host.procfs,
                        dev,
                        mounts.clone(),
                        Duration::from_secs(10),
                    )
                    .await
                    {
                        Ok(users) if users.is_empty() => None,
                        Ok(users) => Some(users.join("; ")),
                        Err(e) => Some(format!("cannot tell who uses it: {e}")),
                    }
                }
            };
            seen.push((m.key.clone(), used));
        }
        let grace = self.cfg.orphan_grace;
        let decisions = sightings.observe(now, grace, &seen);
        let mut out = Vec::new();
        for (m, (_, decision)) in managed.iter().zip(decisions) {
            let vid = m.volume_id.as_str();
            let action = match &decision {
                Decision::InUse(why) => {
                    tracing::debug!(volume_id = vid, key = %m.key, used_by = %why, "orphan cleanup: in use");
                    ""
                }
                Decision::Waiting { left } => {
                    tracing::info!(volume_id = vid, key = %m.key, left_s = left.as_secs(), "orphan cleanup: unused; disconnected when still unused after the grace period");
                    ""
                }
                Decision::Orphan => self.disconnect_orphan(m).await,
            };
            if !action.is_empty() {
                self.heal.orphan_subsystem(action);
                if action == "disconnected" {
                    sightings.forget(&m.key);
                }
            }
            out.push(Outcome { volume_id: vid.to_string(), key: m.key.clone(), decision, action });
        }
        self.heal.set_orphan_candidates(sightings.waiting() as i64);
        let count = |f: fn(&Decision) -> bool| out.iter().filter(|o| f(&o.decision)).count();
        let (in_use, waiting, orphans) = (
            count(|d| matches!(d, Decision::InUse(_))),
            count(|d| matches!(d, Decision::Waiting { .. })),
            count(|d| matches!(d, Decision::Orphan)),
        );
        for (d, n) in [("in_use", in_use), ("waiting", waiting), ("orphan", orphans)] {
            self.heal.set_orphan_sweep(d, n as i64);
        }
        // One line per sweep accounts for every decision (each in-use one is at debug).
        tracing::info!(
            managed = out.len(),
            in_use,
            waiting,
            orphans,
            never_touched = refused.len(),
            "orphan cleanup: sweep done"
        );
        out
    }

    async fn disconnect_orphan(&self, m: &super::host::Managed) -> &'static str {
        let vid = m.volume_id.as_str();
        let grace = self.cfg.orphan_grace.as_secs();
        if self.cfg.orphan_dry_run {
            tracing::warn!(volume_id = vid, key = %m.key, "orphan cleanup (dry run): unused for {grace}s; would disconnect it");
            return "would_disconnect";
        }
        // An RPC on the volume (a stage about to mount it) wins; the next sweep looks again.
        let Ok(_guard) = self.locks.try_lock(vid, "volume") else { return "busy" };
        // Look once more under the volume's guard: nothing may have started using it.
        if let Some(dev) = self.plane.find(&self.host, vid) {
            let Ok(mounts) = self.host.mounts().await else { return "busy" };
            let users = holders::users(&self.host.sysfs, &self.host.procfs, &dev, &mounts);
            if !users.is_empty() {
                return "busy";
            }
        }
        match self.plane.detach(&self.host, vid).await {
            Ok(()) => {
                tracing::warn!(volume_id = vid, key = %m.key, "orphan cleanup: unused for {grace}s; disconnected");
                "disconnected"
            }
            Err(e) => {
                tracing::error!(volume_id = vid, key = %m.key, error = %e, "orphan cleanup: disconnect failed");
                "disconnect_failed"
            }
        }
    }
}
