//! ControllerPublishVolume and ControllerUnpublishVolume: attachment fencing (docs/kubevirt.md),
//! deciding from the attachment state of attachments.rs, and fencing on the RDS (the disk's
//! host allow list).

use std::{collections::HashMap, time::Instant};

use csi::v1::{
    ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
    ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse,
    volume_capability::access_mode::Mode,
};
use routeros::{error::RosError, types::Nqn};

use super::{
    attachments::{FENCED_HOST_NQN, claim, host_nqn_for, now_s, time},
    backend::Backend,
    cluster::{PvcEvent, Recorded},
};
use crate::{
    core::{
        access,
        context::{
            key,
            publish::{CAPACITY, HOST_NQN, READONLY},
        },
        fencing::{self, Access, Decision, Holder, Refusal},
        ids,
    },
    error::ServiceError,
};

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(msg.into())
}

impl Backend {
    pub(super) async fn emit(
        &self,
        claim: &Option<(String, String)>,
        warning: bool,
        reason: &'static str,
        note: String,
    ) {
        let Some(c) = claim else {
            tracing::info!(reason, %note, "event not published: the volume has no PVC");
            return;
        };
        let object = format!("{}/{}", c.0, c.1);
        let publishable = self.events.lock().unwrap_or_else(|p| p.into_inner()).publishable(
            &object,
            reason,
            &note,
            now_s(),
        );
        let Some(note) = publishable else {
            tracing::debug!(reason, %note, "event not published again within the window");
            return;
        };
        self.fencing.cluster.event(PvcEvent { claim: c.clone(), warning, reason, note }).await
    }

    /// Sets the disk's allow list to the host NQNs of `nodes` (storage fencing); an empty
    /// set fences every host out.
    pub(super) async fn set_allowed(
        &self,
        slot: &routeros::types::Slot,
        nodes: &[String],
    ) -> Result<(), ServiceError> {
        // A point-in-time copy has withdrawn the export and gives it back when it ends;
        // changing it now would let writes into the copy.
        if self.copies.holds(slot.as_str()) {
            return Err(ServiceError::Aborted(format!(
                "the writes of {slot} are held for a point-in-time copy (at most --snapshot-pause-max-seconds); the CO retries"
            )));
        }
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
        let slot = self.parse_volume_id(&req.volume_id).map_err(invalid)?;
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
        let _guard = self.locks.try_lock(slot.as_str(), "volume")?;
        // A copy reading the volume (a snapshot or clone) took it at one instant only if no
        // node starts writing it during the copy.
        if let Some(copy) = self.copies.involving(slot.as_str()) {
            return Err(ServiceError::Aborted(format!(
                "volume {vid} is being copied ({copy}); it is attached once the copy ends, the CO retries"
            )));
        }
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
        // ControllerModifyVolume's value (in the disk comment) wins over the volume context.
        let changed = crate::core::mutable::recorded(&disk.comment);
        let from_request = changed
            .get(key::MIGRATION_TIMEOUT)
            .or(req.volume_context.get(key::MIGRATION_TIMEOUT))
            .and_then(|v| v.parse().ok());
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
            publish_context: self.publish_context(&disk, &changed, &req, node),
        })
    }

    /// Where and how the node reaches the volume. The NVMe address and port the volume was
    /// created with (its volume context, from the StorageClass) win over this controller's
    /// defaults, so a volume never silently moves to the management address.
    fn publish_context(
        &self,
        disk: &routeros::ops::Disk,
        changed: &HashMap<String, String>,
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
        // Reconnect parameters changed by ControllerModifyVolume: the node prefers these to
        // the (immutable) volume context at its next stage.
        for (k, v) in changed {
            if k != key::MIGRATION_TIMEOUT {
                out.insert(k.clone(), v.clone());
            }
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
        let Some(slot) = self.parse_volume_id(&req.volume_id).map_err(invalid)? else {
            return Ok(ControllerUnpublishVolumeResponse {});
        };
        let (vid, node) = (req.volume_id.as_str(), req.node_id.as_str());
        let _guard = self.locks.try_lock(slot.as_str(), "volume")?;
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
