//! Snapshot identifiers, the snapshot mechanism, and the disk comment that records a copy's
//! source, time, mechanism and progress (where real RouterOS keeps text: the `comment`).

use std::collections::HashMap;

use routeros::types::Slot;
use uuid::Uuid;

/// The Go driver's snapshot id, so its snapshots are found: `snap-<U>-at-<H>`, U = UUIDv5 of
/// the CSI snapshot name in the DNS namespace, H = U's first 10 hex digits.
pub fn snapshot_id(name: &str) -> Slot {
    let u = Uuid::new_v5(&Uuid::NAMESPACE_DNS, name.as_bytes());
    let h: String = u.simple().to_string().chars().take(10).collect();
    Slot::new(&format!("snap-{}-at-{h}", u.hyphenated())).expect("a valid slot")
}

/// Whether `id` has the form of this driver's (and the Go driver's) snapshot ids:
/// `snap-<uuid>-at-<hex>`, or the Go driver's legacy `snap-<uuid>`.
pub fn is_managed_snapshot_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("snap-") else { return false };
    let (uuid, tail) = match rest.split_once("-at-") {
        Some((u, t)) => (u, Some(t)),
        None => (rest, None),
    };
    let canonical = Uuid::parse_str(uuid).is_ok_and(|u| u.hyphenated().to_string() == uuid);
    canonical
        && tail.is_none_or(|t| {
            !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
}

/// Parses the snapshot id of a request: empty is an error (INVALID_ARGUMENT); an id of
/// another form is `Ok(None)`, a snapshot that does not exist here (DeleteSnapshot answers
/// OK, GetSnapshot NOT_FOUND, ListSnapshots an empty list).
pub fn parse_snapshot_id(id: &str) -> Result<Option<Slot>, String> {
    if id.is_empty() {
        return Err("snapshot_id is required".into());
    }
    Ok(is_managed_snapshot_id(id).then(|| Slot::new(id).expect("snap-<uuid> is a valid slot")))
}

/// A group snapshot's id: `group-<UUIDv5 of the CSI group snapshot name>`. The group itself is
/// no RouterOS item: its members carry `group=<id>` in their comment.
pub fn group_id(name: &str) -> String {
    format!("group-{}", Uuid::new_v5(&Uuid::NAMESPACE_DNS, name.as_bytes()).hyphenated())
}

/// Whether `id` has the form of [`group_id`].
pub fn is_group_id(id: &str) -> bool {
    id.strip_prefix("group-")
        .is_some_and(|u| Uuid::parse_str(u).is_ok_and(|p| p.hyphenated().to_string() == u))
}

/// The id of the member of group snapshot `group_name` taken of `volume_id`: the snapshot id
/// of the name `<group name>/<volume id>`, so a retried group create finds its members.
pub fn member_id(group_name: &str, volume_id: &str) -> Slot {
    snapshot_id(&format!("{group_name}/{volume_id}"))
}

/// How a snapshot's data is copied (VolumeSnapshotClass parameter `mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `/disk copy` block copy into a new unexported disk, in chunks (documented semantics).
    DiskCopy,
    /// `/file/copy` of the backing file (RouterOS 7.23+).
    FileCopy,
    /// The Go driver's `/disk add copy-from=` (UNVERIFIED: documented to copy properties).
    CopyFrom,
    /// A read-only btrfs subvolume snapshot of a volume made with `layout: subvolume`
    /// (RouterOS 7.18+): copy-on-write and atomic.
    Btrfs,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::DiskCopy => "disk-copy",
            Mechanism::FileCopy => "file-copy",
            Mechanism::CopyFrom => "copy-from",
            Mechanism::Btrfs => "btrfs",
        }
    }
    pub fn parse(s: &str) -> Result<Mechanism, String> {
        match s {
            "disk-copy" => Ok(Mechanism::DiskCopy),
            "file-copy" => Ok(Mechanism::FileCopy),
            "copy-from" => Ok(Mechanism::CopyFrom),
            "btrfs" => Ok(Mechanism::Btrfs),
            other => Err(format!(
                "parameter mechanism={other:?} is invalid: use btrfs (default for volumes made with layout: subvolume), \
                 disk-copy (default otherwise), file-copy (RouterOS 7.23+) or copy-from"
            )),
        }
    }
}

/// Parses VolumeSnapshotClass parameters: `mechanism` only; `None` when not given (btrfs for a
/// volume in its own subvolume, else disk-copy).
pub fn parse_params(params: &HashMap<String, String>) -> Result<Option<Mechanism>, String> {
    let mut mechanism = None;
    for (k, v) in params {
        match k.as_str() {
            "mechanism" => mechanism = Some(Mechanism::parse(v)?),
            "csi.storage.k8s.io/volumesnapshot/name"
            | "csi.storage.k8s.io/volumesnapshot/namespace"
            | "csi.storage.k8s.io/volumesnapshotcontent/name" => {}
            other => {
                return Err(format!(
                    "unknown VolumeSnapshotClass parameter {other:?}; accepted: mechanism"
                ));
            }
        }
    }
    Ok(mechanism)
}

/// What the comment of a copied disk (snapshot, restored or cloned volume) records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRecord {
    pub snapshot: bool,
    /// Source volume or snapshot id.
    pub source: String,
    /// Unix seconds.
    pub created: i64,
    pub mechanism: String,
    /// Bytes copied so far; `None` when the copy is complete.
    pub copying: Option<u64>,
    /// While the copy holds the source's writes (docs/snapshots.md "Point in time"): the
    /// source's allowed hosts to restore (empty = any host). A record that still says so
    /// after a controller restart names the export to give back.
    pub paused: Option<Vec<String>>,
    /// When the hold began (unix seconds), with `paused`: a hold younger than the bound may
    /// belong to a copy running in another controller instance.
    pub held_since: Option<i64>,
    /// The group snapshot this snapshot belongs to.
    pub group: Option<String>,
    /// `namespace/name` of a restored or cloned volume's PVC (from csi-provisioner's
    /// `--extra-create-metadata`), for `rds-csi volumes` without cluster access.
    pub pvc: Option<String>,
}

/// A regex (RouterOS `~`) that matches the comment of a disk whose copy withdrew its
/// source's export ([`CopyRecord::paused`]): DeleteVolume gives the export back first.
pub const HOLD_MARK: &str = " paused=";

impl CopyRecord {
    /// The record of a copy about to start: nothing copied, no hold, no group.
    pub fn started(snapshot: bool, source: &str, mechanism: Mechanism, created: i64) -> CopyRecord {
        CopyRecord {
            snapshot,
            source: source.to_string(),
            created,
            mechanism: mechanism.name().into(),
            copying: Some(0),
            paused: None,
            held_since: None,
            group: None,
            pvc: None,
        }
    }

    pub fn ready(&self) -> bool {
        self.copying.is_none()
    }

    pub fn to_comment(&self) -> String {
        let kind = if self.snapshot { "snapshot" } else { "volume" };
        let state = match self.copying {
            Some(n) => format!("copying={n}"),
            None => "ready".into(),
        };
        let mut c = format!(
            "rds-csi {kind} source={} created={} mechanism={}",
            self.source, self.created, self.mechanism
        );
        if let Some(g) = &self.group {
            c.push_str(&format!(" group={g}"));
        }
        if let Some(p) = &self.pvc {
            c.push_str(&format!(" pvc={p}"));
        }
        if let Some(hosts) = &self.paused {
            let hosts = if hosts.is_empty() { "*".to_string() } else { hosts.join(",") };
            c.push_str(&format!(" paused={hosts}"));
            if let Some(t) = self.held_since {
                c.push_str(&format!(" held={t}"));
            }
        }
        c.push(' ');
        c.push_str(&state);
        c
    }

    pub fn from_comment(comment: &str) -> Option<CopyRecord> {
        let mut words = comment.split_whitespace();
        if words.next()? != "rds-csi" {
            return None;
        }
        let snapshot = match words.next()? {
            "snapshot" => true,
            "volume" => false,
            _ => return None,
        };
        let mut rec = CopyRecord {
            snapshot,
            source: String::new(),
            created: 0,
            mechanism: String::new(),
            copying: None,
            paused: None,
            held_since: None,
            group: None,
            pvc: None,
        };
        for w in words {
            match w.split_once('=') {
                Some(("source", v)) => rec.source = v.into(),
                Some(("created", v)) => rec.created = v.parse().ok()?,
                Some(("mechanism", v)) => rec.mechanism = v.into(),
                Some(("copying", v)) => rec.copying = Some(v.parse().ok()?),
                Some(("group", v)) => rec.group = Some(v.into()),
                Some(("pvc", v)) => rec.pvc = Some(v.into()),
                Some(("held", v)) => rec.held_since = v.parse().ok(),
                Some(("paused", "*")) => rec.paused = Some(Vec::new()),
                Some(("paused", v)) => {
                    rec.paused = Some(v.split(',').map(str::to_string).collect())
                }
                _ if w == "ready" => rec.copying = None,
                _ => {}
            }
        }
        (!rec.source.is_empty()).then_some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_go_driver_rule() {
        let id = snapshot_id("snapshot-1");
        let u = Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"snapshot-1");
        assert_eq!(id.as_str(), format!("snap-{u}-at-{}", &u.simple().to_string()[..10]));
        assert_eq!(snapshot_id("snapshot-1"), id, "deterministic");
        assert_eq!(parse_snapshot_id(id.as_str()), Ok(Some(id.clone())));
        assert_eq!(
            parse_snapshot_id(&format!("snap-{u}")),
            Ok(Some(Slot::new(&format!("snap-{u}")).unwrap())),
            "Go legacy form"
        );
        for foreign in [
            "pvc-1",
            "reallyfakesnapshotid",
            "snap-1",
            "snap-x-at-1",
            &format!("snap-{u}-at-"),
            &format!("snap-{u}-at-XY"),
        ] {
            assert_eq!(parse_snapshot_id(foreign), Ok(None), "{foreign}");
        }
        assert!(parse_snapshot_id("").unwrap_err().contains("required"));
    }

    #[test]
    fn group_ids() {
        let g = group_id("vgs-1");
        assert!(is_group_id(&g) && g.starts_with("group-"), "{g}");
        assert_eq!(group_id("vgs-1"), g, "deterministic");
        assert!(!is_group_id("group-x") && !is_group_id("snap-1") && !is_group_id(""));
        assert_ne!(member_id("vgs-1", "pvc-a"), member_id("vgs-1", "pvc-b"));
        assert!(is_managed_snapshot_id(member_id("vgs-1", "pvc-a").as_str()));
    }

    #[test]
    fn params() {
        assert_eq!(parse_params(&HashMap::new()), Ok(None));
        let m = HashMap::from([("mechanism".to_string(), "file-copy".to_string())]);
        assert_eq!(parse_params(&m), Ok(Some(Mechanism::FileCopy)));
        let m = HashMap::from([("mechanism".to_string(), "btrfs".to_string())]);
        assert_eq!(parse_params(&m), Ok(Some(Mechanism::Btrfs)));
        let bad = HashMap::from([("mechanism".to_string(), "reflink".to_string())]);
        assert!(parse_params(&bad).unwrap_err().contains("disk-copy (default otherwise)"));
    }

    #[test]
    fn comments_round_trip() {
        let r = CopyRecord {
            snapshot: true,
            source: "pvc-1".into(),
            created: 1_795_300_000,
            mechanism: "disk-copy".into(),
            copying: Some(1 << 30),
            paused: None,
            held_since: None,
            group: None,
            pvc: None,
        };
        assert_eq!(
            r.to_comment(),
            "rds-csi snapshot source=pvc-1 created=1795300000 mechanism=disk-copy copying=1073741824"
        );
        assert_eq!(CopyRecord::from_comment(&r.to_comment()), Some(r.clone()));
        let done = CopyRecord { copying: None, ..r };
        assert!(CopyRecord::from_comment(&done.to_comment()).unwrap().ready());
        let restored = CopyRecord { snapshot: false, pvc: Some("db/data".into()), ..done.clone() };
        assert_eq!(
            restored.to_comment(),
            "rds-csi volume source=pvc-1 created=1795300000 mechanism=disk-copy pvc=db/data ready"
        );
        assert_eq!(CopyRecord::from_comment(&restored.to_comment()), Some(restored));
        assert_eq!(CopyRecord::from_comment("rds-csi pvc=ns/x"), None);
        assert_eq!(CopyRecord::from_comment(""), None);
        // A copy holding its source's writes names the hosts to give the export back to.
        for hosts in [vec![], vec!["nqn.a:1".to_string(), "nqn.b:2".to_string()]] {
            let held = CopyRecord {
                paused: Some(hosts.clone()),
                held_since: Some(1_795_300_001),
                group: Some("group-1".into()),
                ..done.clone()
            };
            let back = CopyRecord::from_comment(&held.to_comment()).unwrap();
            assert_eq!(back, held, "{}", held.to_comment());
        }
    }
}
