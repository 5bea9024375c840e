//! The controller's reconcilers (docs/operations.md), run by the leader only
//! ([`super::leader`]):
//!
//! - **Stale attachments**: a VolumeAttachment whose Node object is gone, or (with storage
//!   fencing) whose node is no longer on the disk's allow list, stale for the whole
//!   `--stale-attachment-grace-seconds`, is cleared: with storage fencing the allow list is
//!   updated first (the departed node cannot come back to the disk), then the
//!   VolumeAttachment is deleted (the attacher calls ControllerUnpublishVolume and removes its
//!   finalizer; a node still running the pod gets a new one and its grant back). Each action
//!   is a `StaleAttachmentCleared` event on the PVC.
//! - **Held exports**: an export a point-in-time copy withdrew and that no running copy holds
//!   any more (the controller died mid-copy) is given back once the hold is older than the
//!   pause bound plus a margin, even if nothing calls for the copy again.
//! - **RDS orphans**: managed disks (`pvc-<uuid>` slots, files under an allowed base path)
//!   without a PV, and managed `.img` files without a disk, older than the grace period by
//!   their age on the RDS (the disk comment's `created=`, else the file's `last-modified`;
//!   never the process's start), are reported. Snapshots (`snap-` slots and files) and disks
//!   with a copy running are never candidates. With `--delete-rds-orphans`, an orphan found by
//!   two reports in a row is deleted (one of unknown age never is).

use std::{
    collections::{HashMap, HashSet},
    sync::Weak,
    time::Duration,
};

use routeros::types::{FilePath, Slot};

use super::{
    attachments::{claim, host_nqn_for, now_s},
    backend::Backend,
    config::Reconcile,
    leader::Leadership,
    outcomes::reason::EXPORT_RESTORED,
};
use crate::core::{
    inventory::{OrphanCandidate, orphan_candidates},
    sightings::{Decision, Sightings},
    snapshots::CopyRecord,
};

/// What the reconcilers remember between runs.
#[derive(Debug, Default)]
pub struct ReconcileState {
    stale: Sightings,
    /// Orphans of the previous report (a deletion needs two reports in a row).
    previous_orphans: HashSet<String>,
    /// The last report, for operators.
    pub last_orphans: Vec<Orphan>,
}

/// A managed disk or file on the RDS that no PV uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// `disk` or `file`.
    pub kind: &'static str,
    /// The slot (disk) or the file path (file).
    pub name: String,
    pub file: String,
    /// Seconds since it was made (by the RDS's clock), when known.
    pub age_s: Option<i64>,
    /// `reported`, `deleted`, `delete_failed`.
    pub action: &'static str,
}

/// Runs the reconcilers every `r.interval` while this instance leads, until the backend is
/// dropped. The first run waits one interval (the caches fill first).
pub async fn run(backend: Weak<Backend>, leadership: Leadership, r: Reconcile) {
    let started = tokio::time::Instant::now();
    let mut state = ReconcileState::default();
    let mut last_orphan_report: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(r.interval).await;
        let Some(b) = backend.upgrade() else { break };
        if !leadership.is_leader() {
            continue;
        }
        b.give_back_stale_holds().await;
        if let Some(grace) = r.stale_attachment_grace {
            b.reconcile_attachments(&mut state, started.elapsed(), grace).await;
        }
        if let Some(every) = r.rds_orphan_interval
            && last_orphan_report.is_none_or(|t| t.elapsed() >= every)
        {
            last_orphan_report = Some(tokio::time::Instant::now());
            b.report_rds_orphans(&mut state, now_s()).await;
        }
    }
}

/// Why an attachment is stale.
fn stale_reason(
    node_exists: bool,
    allowed: Option<&Vec<String>>,
    node: &str,
) -> Option<&'static str> {
    if !node_exists {
        return Some("node_gone");
    }
    match allowed {
        Some(list) if !list.is_empty() && !list.iter().any(|h| *h == host_nqn_for(node)) => {
            Some("grant_lost")
        }
        _ => None,
    }
}

impl Backend {
    /// Exports withdrawn by point-in-time copies that no longer run (the controller died
    /// mid-copy, and nothing called for the copy since): given back once the hold is older
    /// than the pause bound plus the margin (docs/snapshots.md "Point in time"). One round
    /// trip (the disk list). Returns the sources given back.
    pub async fn give_back_stale_holds(&self) -> Vec<String> {
        let disks = match self.rds.list_disks("").await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "held exports: cannot list the disks; next run retries");
                return Vec::new();
            }
        };
        let mut given = Vec::new();
        for d in disks {
            let Some(record) = CopyRecord::from_comment(&d.comment).filter(|r| r.paused.is_some())
            else {
                continue;
            };
            if self.copies.is_running(&d.slot) {
                continue;
            }
            let Ok(slot) = Slot::new(&d.slot) else { continue };
            // The copy starts again from the beginning at the next call for it.
            match self.abandon_hold(&slot, &record).await {
                Ok(_) => {
                    let note = format!(
                        "the NVMe/TCP export of {} was withdrawn by a point-in-time copy ({}) whose controller stopped; given back (its nodes reconnect); the copy starts again when it is next asked for",
                        record.source, d.slot
                    );
                    let claim =
                        self.claim_of(&self.external(&record.source), &Default::default()).await;
                    self.emit(&claim, true, EXPORT_RESTORED, note).await;
                    given.push(record.source)
                }
                Err(e) => {
                    tracing::info!(copy = %d.slot, source = %record.source, reason = %e, "held export not given back yet")
                }
            }
        }
        given
    }

    /// One pass of the stale-attachment reconciler at `now` (an offset on the caller's
    /// monotonic clock). Returns `(volume, node, action)` for each attachment acted on.
    pub async fn reconcile_attachments(
        &self,
        state: &mut ReconcileState,
        now: Duration,
        grace: Duration,
    ) -> Vec<(String, String, &'static str)> {
        let f = &self.fencing;
        if !f.cluster.records_attachments() {
            return Vec::new();
        }
        // This backend's volumes only (each backend of the controller reconciles its own).
        let records: HashMap<String, super::cluster::Recorded> =
            f.all_records().into_iter().filter(|(v, _)| self.local(v).is_some()).collect();
        // With storage fencing, who the disks allow (one listing for all volumes), and only
        // when some live node holds a volume (nothing else can have lost its grant).
        let any_live = records.values().any(|r| r.holders.iter().any(|h| h.node_exists));
        let allowed: Option<HashMap<String, Vec<String>>> = if f.storage_fencing && any_live {
            match self.rds.list_disks("pvc-").await {
                Ok(disks) => Some(
                    disks.into_iter().map(|d| (self.external(&d.slot), d.allowed_hosts)).collect(),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "stale attachments: cannot list the disks; only departed nodes are checked");
                    None
                }
            }
        } else {
            None
        };
        let mut seen = Vec::new();
        let mut why = HashMap::new();
        for (vid, rec) in &records {
            // Only what the cluster records, minus what this process just released.
            let live: HashSet<String> = f.holders(vid, rec).into_iter().map(|h| h.node).collect();
            for h in rec.holders.iter().filter(|h| live.contains(&h.node)) {
                let hosts = allowed.as_ref().and_then(|a| a.get(vid.as_str()));
                let key = format!("{vid}@{}", h.node);
                let reason = stale_reason(h.node_exists, hosts, &h.node);
                seen.push((key.clone(), if reason.is_some() { None } else { Some(String::new()) }));
                if let Some(r) = reason {
                    why.insert(key, (vid.clone(), h.node.clone(), r));
                }
            }
        }
        let mut out = Vec::new();
        for (key, decision) in state.stale.observe(now, grace, &seen) {
            let Some((vid, node, reason)) = why.get(&key).cloned() else { continue };
            match decision {
                Decision::Waiting { left } => {
                    tracing::info!(volume_id = %vid, %node, reason, left_s = left.as_secs(), "stale attachment: cleared when still stale after the grace period");
                }
                Decision::Orphan => {
                    let action = self.clear_stale(&records[&vid], &vid, &node, reason).await;
                    self.heal.stale_attachment(action);
                    if action == "deleted" {
                        state.stale.forget(&key);
                    }
                    out.push((vid, node, action));
                }
                Decision::InUse(_) => {}
            }
        }
        out
    }

    async fn clear_stale(
        &self,
        rec: &super::cluster::Recorded,
        vid: &str,
        node: &str,
        reason: &'static str,
    ) -> &'static str {
        let f = &self.fencing;
        let Ok(Some(slot)) = self.parse_volume_id(vid) else { return "failed" };
        let Ok(_guard) = self.locks.try_lock(slot.as_str(), "volume") else { return "busy" };
        if f.storage_fencing && reason == "node_gone" {
            let keep: Vec<String> = f
                .holders(vid, rec)
                .into_iter()
                .filter(|h| h.node != node && h.node_exists)
                .map(|h| h.node)
                .collect();
            match self.set_allowed(&slot, &keep).await {
                Ok(()) => {
                    self.heal.stale_attachment("fenced");
                }
                Err(crate::error::ServiceError::Rds {
                    source: routeros::error::RosError::NotFound(_),
                    ..
                }) => {}
                Err(e) => {
                    tracing::error!(volume_id = vid, node, error = %e, "stale attachment: fencing the disk failed; the VolumeAttachment is kept");
                    return "failed";
                }
            }
        }
        f.release(vid, node);
        let what = match reason {
            "node_gone" => "its Node object no longer exists".to_string(),
            _ => format!("the disk no longer allows the node's host NQN {}", host_nqn_for(node)),
        };
        match f.cluster.clear_attachment(vid, node).await {
            Ok(names) => {
                let note = format!(
                    "VolumeAttachment {} of {vid} on {node} cleared: {what}{}",
                    names.join(", "),
                    if f.storage_fencing && reason == "node_gone" {
                        "; the disk no longer allows that node"
                    } else {
                        ""
                    }
                );
                tracing::warn!(volume_id = vid, node, reason, "{note}");
                self.emit(&claim(rec, &HashMap::new()), true, "StaleAttachmentCleared", note).await;
                "deleted"
            }
            Err(e) => {
                tracing::error!(volume_id = vid, node, error = %e, "stale attachment: deleting the VolumeAttachment failed");
                "failed"
            }
        }
    }

    /// One RDS orphan report at `now_s` (seconds since the epoch, compared with times on the
    /// RDS). Returns the orphans found (also kept in `state.last_orphans`).
    pub async fn report_rds_orphans(&self, state: &mut ReconcileState, now_s: i64) -> Vec<Orphan> {
        let f = &self.fencing;
        let Some(handles) = f.cluster.volume_handles().map(|h| self.local_handles(h)) else {
            tracing::info!(
                "RDS orphan report skipped: the PVs are not known (no Kubernetes, or the cache is not synced)"
            );
            return Vec::new();
        };
        let disks = match self.rds.list_disks("pvc-").await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "RDS orphan report skipped: cannot list the disks");
                return Vec::new();
            }
        };
        let mut files = Vec::new();
        for base in &self.cfg.allowed_base_paths {
            match self.rds.list_files(base).await {
                Ok(mut f) => files.append(&mut f),
                Err(e) => {
                    tracing::warn!(error = %e, base = %base, "RDS orphan report skipped: cannot list the files");
                    return Vec::new();
                }
            }
        }
        let grace = self.cfg.reconcile.rds_orphan_grace_s;
        let found =
            orphan_candidates(&disks, &files, &handles, |f| self.is_managed(f), now_s, grace);
        let mut out = Vec::new();
        let mut now_keys = HashSet::new();
        for OrphanCandidate { kind, name, file, age_s } in found {
            let key = format!("{kind}:{name}");
            let twice = state.previous_orphans.contains(&key);
            now_keys.insert(key);
            let action = if self.cfg.reconcile.delete_rds_orphans && age_s.is_some() && twice {
                self.delete_orphan(kind, &name, &file).await
            } else {
                "reported"
            };
            tracing::warn!(
                kind,
                name = %name,
                file = %file,
                age_s = age_s.unwrap_or(-1),
                action,
                "RDS orphan: a managed {kind} without a PV{}",
                if action == "reported" && !self.cfg.reconcile.delete_rds_orphans {
                    " (reported only; --delete-rds-orphans deletes orphans found twice)"
                } else {
                    ""
                }
            );
            out.push(Orphan { kind, name, file, age_s, action });
        }
        let count =
            |k: &str| out.iter().filter(|o| o.kind == k && o.action != "deleted").count() as i64;
        self.heal.set_rds_orphans(&self.name, "disk", count("disk"));
        self.heal.set_rds_orphans(&self.name, "file", count("file"));
        state.previous_orphans = now_keys;
        state.last_orphans = out.clone();
        out
    }

    /// The PVs' volume handles of this backend, as slots (the orphan rule compares slots).
    fn local_handles(&self, handles: HashSet<String>) -> HashSet<String> {
        handles.iter().filter_map(|h| self.local(h)).map(String::from).collect()
    }

    async fn delete_orphan(&self, kind: &'static str, name: &str, file: &str) -> &'static str {
        // Look again: a PV may have appeared since the listing.
        let handles = self.local_handles(self.fencing.cluster.volume_handles().unwrap_or_default());
        let Ok(path) = FilePath::new(file) else { return "delete_failed" };
        let result = match kind {
            "disk" => {
                if handles.contains(name) {
                    return "reported";
                }
                let Ok(slot) = Slot::new(name) else { return "delete_failed" };
                let Ok(_guard) = self.locks.try_lock(name, "volume") else { return "reported" };
                self.rds.delete_disk(&slot, &path).await
            }
            _ => self.rds.remove_file(&path).await,
        };
        match result {
            Ok(()) => {
                self.heal.rds_orphan_deleted(kind);
                "deleted"
            }
            Err(e) => {
                tracing::error!(kind, name, error = %e, "RDS orphan: deleting failed");
                "delete_failed"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_when_the_node_is_gone_or_its_grant_is() {
        let hosts = vec![host_nqn_for("a")];
        assert_eq!(stale_reason(false, None, "a"), Some("node_gone"));
        assert_eq!(stale_reason(true, Some(&hosts), "a"), None);
        assert_eq!(stale_reason(true, Some(&hosts), "b"), Some("grant_lost"));
        assert_eq!(
            stale_reason(true, Some(&Vec::new()), "b"),
            None,
            "an empty list allows any host"
        );
        assert_eq!(
            stale_reason(true, None, "b"),
            None,
            "without storage fencing only departures count"
        );
    }
}
