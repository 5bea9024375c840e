//! What the operator tools show (`rds-csi volumes|snapshots|attachments|orphans`,
//! docs/operations.md "Operator tools"), joined from the RDS's disks and files and, with cluster
//! access, the PVs and VolumeAttachments of this driver; and the RDS orphan rule that the
//! reconciler and `rds-csi orphans` share, so the command shows exactly what the reconciler
//! would do. Pure: no I/O, no clock (the caller passes `now`).

use std::collections::{HashMap, HashSet};

use routeros::{
    ops::{Disk, FileEntry},
    types::FilePath,
};
use serde::Serialize;

use super::{
    fencing::{FENCED_HOST_NQN, host_nqn_for},
    ids,
    snapshots::CopyRecord,
};

/// The migration window of a PV without `migrationTimeoutSeconds` (StorageClass default).
pub const DEFAULT_MIGRATION_TIMEOUT_S: i64 = 300;

/// A PV of this driver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PvRef {
    pub name: String,
    /// `namespace/name` of the bound claim.
    pub claim: Option<String>,
    pub phase: Option<String>,
    /// `migrationTimeoutSeconds` from its volume attributes.
    pub migration_timeout_s: Option<i64>,
}

/// A VolumeAttachment of this driver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttachmentRef {
    pub name: String,
    pub volume: String,
    /// The Kubernetes node name.
    pub node: String,
    pub attached: bool,
    /// Its deletion has begun (the attacher detaches it).
    pub deleting: bool,
    /// The attach or detach error the attacher recorded.
    pub error: Option<String>,
    /// Creation time (unix seconds).
    pub created: Option<i64>,
}

/// What the cluster says, when the tools can read it.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// PVs of this driver by volume handle.
    pub pvs: HashMap<String, PvRef>,
    pub attachments: Vec<AttachmentRef>,
}

impl ClusterView {
    /// The part of the view on the RDS backend `name` (docs/topology.md), keyed by the slots
    /// that RDS knows: the PVs and attachments of other backends are left out (they are not
    /// this RDS's, so none of its disks is theirs, and none of theirs is an orphan here).
    pub fn on_backend(self, name: &str) -> ClusterView {
        let local = |id: &str| match crate::core::topology::split_id(id) {
            (b, slot) if b == name => Some(slot.to_string()),
            _ => None,
        };
        ClusterView {
            pvs: self.pvs.into_iter().filter_map(|(h, p)| Some((local(&h)?, p))).collect(),
            attachments: self
                .attachments
                .into_iter()
                .filter_map(|mut a| {
                    a.volume = local(&a.volume)?;
                    Some(a)
                })
                .collect(),
        }
    }

    /// The volume handles of every PV of this driver (what the orphan rule needs).
    pub fn handles(&self) -> HashSet<String> {
        self.pvs.keys().cloned().collect()
    }

    fn attached_nodes(&self, volume: &str) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .attachments
            .iter()
            .filter(|a| a.volume == volume && a.attached)
            .map(|a| a.node.clone())
            .collect();
        nodes.sort();
        nodes
    }
}

/// A managed disk or file on the RDS that no PV uses, old enough to be an orphan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanCandidate {
    /// `disk` or `file`.
    pub kind: &'static str,
    /// The slot (disk) or the file path (file).
    pub name: String,
    pub file: String,
    /// Seconds since it was made, by the RDS's clock; `None` when unknown (never deleted).
    pub age_s: Option<i64>,
}

/// The file of `e` as a normalized path (no leading slash).
fn norm(p: &str) -> String {
    FilePath::new(p).map(|f| f.as_str().to_string()).unwrap_or_default()
}

/// When a disk was made: its comment's `created=`, else its file's modification time.
fn made(d: &Disk, file_times: &HashMap<String, Option<i64>>) -> Option<i64> {
    ids::comment_created(&d.comment)
        .or_else(|| file_times.get(&norm(d.file.as_deref().unwrap_or(""))).copied().flatten())
}

/// The RDS orphans (docs/operations.md): managed disks (`pvc-<uuid>` slots whose file is
/// managed, `is_managed`) without a PV and managed `.img` files without a disk or PV, at least
/// `grace_s` old by the RDS's clock (`now_s`); one of unknown age is a candidate too (reported,
/// never deleted). Snapshots and disks a copy is filling are never candidates.
pub fn orphan_candidates(
    disks: &[Disk],
    files: &[FileEntry],
    handles: &HashSet<String>,
    is_managed: impl Fn(&FilePath) -> bool,
    now_s: i64,
    grace_s: i64,
) -> Vec<OrphanCandidate> {
    let file_times: HashMap<String, Option<i64>> =
        files.iter().map(|e| (norm(&e.name), e.modified)).collect();
    let disk_files: HashSet<String> =
        disks.iter().filter_map(|d| d.file.as_deref()).map(norm).collect();
    let mut found = Vec::new();
    for d in disks {
        let Some(file) = d.file.as_deref().and_then(|p| FilePath::new(p).ok()) else { continue };
        if !ids::is_managed_volume_id(&d.slot) || !is_managed(&file) || handles.contains(&d.slot) {
            continue;
        }
        if CopyRecord::from_comment(&d.comment).is_some_and(|r| !r.ready()) {
            continue;
        }
        let age_s = made(d, &file_times).map(|t| now_s.saturating_sub(t));
        found.push(OrphanCandidate {
            kind: "disk",
            name: d.slot.clone(),
            file: file.as_str().to_string(),
            age_s,
        });
    }
    for e in files {
        let name = norm(&e.name);
        if e.kind == "directory" || disk_files.contains(&name) {
            continue;
        }
        let stem = name.rsplit('/').next().and_then(|n| n.strip_suffix(".img")).unwrap_or("");
        if !ids::is_managed_volume_id(stem) || handles.contains(stem) {
            continue;
        }
        let age_s = e.modified.map(|t| now_s.saturating_sub(t));
        found.push(OrphanCandidate { kind: "file", name: name.clone(), file: name, age_s });
    }
    // Younger than the grace period it is not an orphan yet: its PV may be on its way (the
    // provisioner writes it after CreateVolume answers).
    found.retain(|c| c.age_s.is_none_or(|a| a >= grace_s));
    found
}

/// One row of `rds-csi volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeRow {
    pub volume: String,
    /// Bytes; `None` for a leftover file of unknown size.
    pub size: Option<u64>,
    pub file: String,
    pub exported: bool,
    pub nqn: Option<String>,
    /// `namespace/name` of the PVC: from the PV with cluster access, else the disk comment.
    pub pvc: Option<String>,
    pub pv: Option<String>,
    /// Nodes whose VolumeAttachment is attached (cluster access only).
    pub holders: Vec<String>,
    /// The disk's NVMe/TCP allow list (empty: any host).
    pub allowed_hosts: Vec<String>,
    /// The allow list for people: `any host`, `no host (fenced)`, or the nodes it names (the
    /// nodes of the cluster's VolumeAttachments are recognised by their host NQN), `+N` for
    /// hosts not recognised.
    pub allows: String,
    /// `bound` (a PV uses it), `orphan` (no PV, older than the grace period), `new` (no PV
    /// yet, younger), `copying` (a clone or restore is filling it), `leftover-file` (a managed
    /// file without a disk), `unknown` (no cluster access: PVs not read).
    pub state: &'static str,
    pub age_s: Option<i64>,
    /// The volume or snapshot it was copied from.
    pub source: Option<String>,
}

/// `pvc=<ns>/<name>` of a disk comment of this driver.
fn comment_pvc(comment: &str) -> Option<String> {
    let mut words = comment.split_whitespace();
    (words.next()? == "rds-csi").then_some(())?;
    words.find_map(|w| w.strip_prefix("pvc=")).map(str::to_string)
}

/// [`VolumeRow::allows`].
fn allows(hosts: &[String], cluster: Option<&ClusterView>) -> String {
    if hosts.is_empty() {
        return "any host".into();
    }
    if hosts.iter().all(|h| h == FENCED_HOST_NQN) {
        return "no host (fenced)".into();
    }
    let nodes: HashMap<String, &str> = cluster
        .map(|c| c.attachments.iter().map(|a| (host_nqn_for(&a.node), a.node.as_str())).collect())
        .unwrap_or_default();
    let mut named: Vec<&str> = hosts.iter().filter_map(|h| nodes.get(h).copied()).collect();
    named.sort();
    named.dedup();
    let unknown = hosts.iter().filter(|h| !nodes.contains_key(*h)).count();
    let mut out = named.join(",");
    if unknown > 0 {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&format!("+{unknown} host(s)"));
    }
    out
}

/// The rows of `rds-csi volumes`: every managed volume disk, and every managed file without a
/// disk, in slot order.
pub fn volumes(
    disks: &[Disk],
    files: &[FileEntry],
    cluster: Option<&ClusterView>,
    is_managed: impl Fn(&FilePath) -> bool,
    now_s: i64,
    grace_s: i64,
) -> Vec<VolumeRow> {
    let file_times: HashMap<String, Option<i64>> =
        files.iter().map(|e| (norm(&e.name), e.modified)).collect();
    let mut rows = Vec::new();
    for d in disks.iter().filter(|d| ids::is_managed_volume_id(&d.slot)) {
        let record = CopyRecord::from_comment(&d.comment);
        let pv = cluster.and_then(|c| c.pvs.get(&d.slot));
        let age_s = made(d, &file_times).map(|t| now_s.saturating_sub(t));
        let state = match (cluster, pv) {
            _ if record.as_ref().is_some_and(|r| !r.ready()) => "copying",
            (None, _) => "unknown",
            (Some(_), Some(_)) => "bound",
            (Some(_), None) if age_s.is_some_and(|a| a < grace_s) => "new",
            (Some(_), None) => "orphan",
        };
        rows.push(VolumeRow {
            volume: d.slot.clone(),
            size: Some(d.size),
            file: norm(d.file.as_deref().unwrap_or("")),
            exported: d.export,
            nqn: d.nqn.clone(),
            pvc: pv.and_then(|p| p.claim.clone()).or_else(|| comment_pvc(&d.comment)),
            pv: pv.map(|p| p.name.clone()),
            holders: cluster.map(|c| c.attached_nodes(&d.slot)).unwrap_or_default(),
            allowed_hosts: d.allowed_hosts.clone(),
            allows: allows(&d.allowed_hosts, cluster),
            state,
            age_s,
            source: record.map(|r| r.source),
        });
    }
    let disk_files: HashSet<String> =
        disks.iter().filter_map(|d| d.file.as_deref()).map(norm).collect();
    for e in files {
        let name = norm(&e.name);
        let stem = name.rsplit('/').next().and_then(|n| n.strip_suffix(".img")).unwrap_or("");
        let managed = FilePath::new(&name).is_ok_and(|f| is_managed(&f));
        if e.kind == "directory"
            || disk_files.contains(&name)
            || !ids::is_managed_volume_id(stem)
            || !managed
        {
            continue;
        }
        let pv = cluster.and_then(|c| c.pvs.get(stem));
        rows.push(VolumeRow {
            volume: stem.to_string(),
            size: e.size,
            file: name.clone(),
            exported: false,
            nqn: None,
            pvc: pv.and_then(|p| p.claim.clone()),
            pv: pv.map(|p| p.name.clone()),
            holders: Vec::new(),
            allowed_hosts: Vec::new(),
            allows: String::new(),
            state: "leftover-file",
            age_s: e.modified.map(|t| now_s.saturating_sub(t)),
            source: None,
        });
    }
    rows.sort_by(|a, b| a.volume.cmp(&b.volume).then(a.state.cmp(b.state)));
    rows
}

/// One row of `rds-csi snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRow {
    pub snapshot: String,
    pub source: Option<String>,
    pub mechanism: Option<String>,
    /// `ready` or `copying`; `unknown` for a snapshot disk without this driver's record.
    pub state: &'static str,
    /// Bytes copied so far, while copying.
    pub copied: Option<u64>,
    pub size: u64,
    pub file: String,
    pub group: Option<String>,
    pub age_s: Option<i64>,
    /// Whether the copy currently holds its source's writes (the export is withdrawn).
    pub holding_writes: bool,
}

/// The rows of `rds-csi snapshots`: every snapshot disk of this driver, in id order.
pub fn snapshots(disks: &[Disk], now_s: i64) -> Vec<SnapshotRow> {
    let mut rows: Vec<SnapshotRow> = disks
        .iter()
        .filter(|d| super::snapshots::is_managed_snapshot_id(&d.slot))
        .map(|d| {
            let r = CopyRecord::from_comment(&d.comment);
            SnapshotRow {
                snapshot: d.slot.clone(),
                source: r.as_ref().map(|r| r.source.clone()),
                mechanism: r.as_ref().map(|r| r.mechanism.clone()),
                state: match &r {
                    Some(r) if r.ready() => "ready",
                    Some(_) => "copying",
                    None => "unknown",
                },
                copied: r.as_ref().and_then(|r| r.copying),
                size: d.size,
                file: norm(d.file.as_deref().unwrap_or("")),
                group: r.as_ref().and_then(|r| r.group.clone()),
                age_s: r.as_ref().map(|r| now_s.saturating_sub(r.created)),
                holding_writes: r.as_ref().is_some_and(|r| r.paused.is_some()),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.snapshot.cmp(&b.snapshot));
    rows
}

/// One row of `rds-csi attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachmentRow {
    pub attachment: String,
    pub volume: String,
    pub node: String,
    pub pvc: Option<String>,
    pub attached: bool,
    pub deleting: bool,
    pub error: Option<String>,
    /// The storage fence: `allowed` (the node's host NQN is on the disk's allow list),
    /// `any-host` (empty list), `fenced-out` (not on it), `no-disk` (the disk is gone),
    /// `unknown` (the RDS was not read).
    pub fence: &'static str,
    /// With two attached nodes (a live migration): seconds left of its window (negative:
    /// expired; the controller refuses further attaches and reports MigrationFailed).
    pub migration_left_s: Option<i64>,
}

/// The rows of `rds-csi attachments`: every VolumeAttachment of this driver with the storage
/// fence of its node (`host_nqn` maps a node to its host NQN) and the migration window.
pub fn attachments(
    cluster: &ClusterView,
    disks: Option<&[Disk]>,
    host_nqn: impl Fn(&str) -> String,
    now_s: i64,
) -> Vec<AttachmentRow> {
    let by_slot: HashMap<&str, &Disk> =
        disks.unwrap_or_default().iter().map(|d| (d.slot.as_str(), d)).collect();
    let mut rows: Vec<AttachmentRow> = cluster
        .attachments
        .iter()
        .map(|a| {
            let fence = match (disks, by_slot.get(a.volume.as_str())) {
                (None, _) => "unknown",
                (Some(_), None) => "no-disk",
                (Some(_), Some(d)) if d.allowed_hosts.is_empty() => "any-host",
                (Some(_), Some(d)) if d.allowed_hosts.contains(&host_nqn(&a.node)) => "allowed",
                (Some(_), Some(_)) => "fenced-out",
            };
            let pv = cluster.pvs.get(&a.volume);
            let live: Vec<&AttachmentRef> = cluster
                .attachments
                .iter()
                .filter(|o| o.volume == a.volume && o.attached && !o.deleting)
                .collect();
            let migration_left_s = (live.len() >= 2).then(|| {
                let since = live.iter().filter_map(|o| o.created).max().unwrap_or(now_s);
                let window =
                    pv.and_then(|p| p.migration_timeout_s).unwrap_or(DEFAULT_MIGRATION_TIMEOUT_S);
                window - now_s.saturating_sub(since)
            });
            AttachmentRow {
                attachment: a.name.clone(),
                volume: a.volume.clone(),
                node: a.node.clone(),
                pvc: pv.and_then(|p| p.claim.clone()),
                attached: a.attached,
                deleting: a.deleting,
                error: a.error.clone(),
                fence,
                migration_left_s,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.volume.cmp(&b.volume).then(a.node.cmp(&b.node)));
    rows
}

#[cfg(test)]
#[path = "inventory_tests.rs"]
mod tests;
