//! The soak's schedule and its model of what must be true. Pure: a seeded generator picks
//! the next step from the model (so a seed always gives the same schedule as long as every
//! step ends the same way), and the checks compare the RDS as read with the model.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::fencing::{FENCED_HOST_NQN, host_nqn_for};

/// SplitMix64: small, seedable, good enough to pick steps.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// The bytes of one acknowledged write: 4 KiB from its seed.
pub const BLOCK: usize = 4096;

pub fn pattern(seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..BLOCK / 8).flat_map(|_| rng.next_u64().to_le_bytes()).collect()
}

/// What the volume holds that was acknowledged: block offset → the seed of its bytes.
pub type Data = BTreeMap<u64, u64>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vol {
    pub size: u64,
    /// RWX block (two nodes during a live migration) instead of RWO mount.
    pub rwx_block: bool,
    pub data: Data,
    /// Nodes the controller acknowledged a publish to, not unpublished since.
    pub grants: BTreeSet<String>,
    /// Staged and published on the first node's loop plane (RWO mount volumes).
    pub staged: bool,
    /// Files written through the filesystem and synced: name → the seed of their bytes.
    pub files: Data,
    /// Holds a filesystem (staged once, or copied from one that did).
    pub formatted: bool,
    /// Filled from a snapshot or a volume: never formatted by the node, so staged only when
    /// its source had a filesystem (a blank copy is refused, docs/node.md).
    pub filled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    pub id: String,
    pub source: String,
    pub size: u64,
    pub data: Data,
    pub files: Data,
    pub formatted: bool,
}

/// What the driver has acknowledged: the truth the RDS must match after every step.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub vols: BTreeMap<String, Vol>,
    /// By snapshot name.
    pub snaps: BTreeMap<String, Snap>,
    counter: u64,
    /// Stage, write files and unstage on the first node's loop data plane (root only).
    pub loop_plane: bool,
}

pub const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The connection drops before the next RouterOS command runs.
    DropBefore,
    /// The next RouterOS command runs, then the connection drops before its answer.
    DropAfter,
    /// Every RouterOS command takes this much longer during the step.
    Latency(u64),
    /// The next RouterOS command answers this error text.
    Error(&'static str),
    /// The RDS drops every connection and refuses new ones for this many ms.
    Reboot(u64),
    /// Every allocation fails as if the pool were full (the first attempt only).
    DiskFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create {
        name: String,
        size: u64,
        rwx_block: bool,
    },
    Delete {
        id: String,
    },
    Expand {
        id: String,
        size: u64,
    },
    Snapshot {
        id: String,
        name: String,
    },
    DeleteSnapshot {
        name: String,
    },
    Restore {
        snap: String,
        name: String,
    },
    Clone {
        id: String,
        name: String,
    },
    Publish {
        id: String,
        node: String,
    },
    Unpublish {
        id: String,
        node: String,
    },
    /// A write to a published RWX block volume, acknowledged: 4 KiB at a block offset.
    Write {
        id: String,
        offset: u64,
        seed: u64,
    },
    /// NodeStageVolume and NodePublishVolume on the first node (loop plane, ext4).
    Stage {
        id: String,
    },
    /// A file written through the mounted filesystem and synced (file and directory).
    WriteFile {
        id: String,
        name: u64,
        seed: u64,
    },
    /// NodeUnpublishVolume and NodeUnstageVolume.
    Unstage {
        id: String,
    },
    /// RWO volume held by one node, published to the other: must be refused.
    PublishConflict {
        id: String,
        node: String,
    },
    /// A published volume deleted: must be refused.
    DeletePublished {
        id: String,
    },
    /// SIGKILL the controller and start a new process on the same state.
    RestartController,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    pub action: Action,
}

const ERRORS: [&str; 2] = ["failure: not enough disk space", "failure: disk is busy"];

impl Model {
    /// An empty model; `loop_plane` adds the stage, file-write and unstage steps.
    pub fn new(loop_plane: bool) -> Model {
        Model { loop_plane, ..Default::default() }
    }

    fn fresh(&mut self, seed: u64, what: &str) -> String {
        self.counter += 1;
        let id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("soak-{seed}-{what}-{}", self.counter).as_bytes(),
        );
        match what {
            "vol" => format!("pvc-{id}"),
            _ => format!("soak-{what}-{}", &id.simple().to_string()[..12]),
        }
    }

    fn published(&self) -> Vec<(String, String)> {
        self.vols
            .iter()
            .flat_map(|(id, v)| v.grants.iter().map(move |n| (id.clone(), n.clone())))
            .collect()
    }

    /// The next step, chosen from what exists.
    pub fn next_step(&mut self, rng: &mut Rng, seed: u64, nodes: &[&str; 2]) -> Step {
        let fault = match rng.below(100) {
            0..=59 => Fault::None,
            60..=67 => Fault::DropBefore,
            68..=75 => Fault::DropAfter,
            76..=81 => Fault::Latency(50 + rng.below(250) as u64),
            82..=89 => Fault::Error(ERRORS[rng.below(ERRORS.len())]),
            90..=93 => Fault::Reboot(100 + rng.below(400) as u64),
            _ => Fault::DiskFull,
        };
        let ids: Vec<String> = self.vols.keys().cloned().collect();
        let free: Vec<String> =
            self.vols.iter().filter(|(_, v)| v.grants.is_empty()).map(|(k, _)| k.clone()).collect();
        let published = self.published();
        // The CO unstages before it unpublishes.
        let unpublishable: Vec<(String, String)> = published
            .iter()
            .filter(|(id, n)| !(self.vols[id].staged && n == nodes[0]))
            .cloned()
            .collect();
        let block: Vec<(String, String)> =
            published.iter().filter(|(id, _)| self.vols[id].rwx_block).cloned().collect();
        let stageable: Vec<String> = self
            .vols
            .iter()
            .filter(|(_, v)| {
                self.loop_plane
                    && !v.rwx_block
                    && !v.staged
                    && v.grants.contains(nodes[0])
                    && (v.formatted || !v.filled)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let staged: Vec<String> =
            self.vols.iter().filter(|(_, v)| v.staged).map(|(k, _)| k.clone()).collect();
        let snaps: Vec<String> = self.snaps.keys().cloned().collect();
        loop {
            let action = match rng.below(100) {
                0..=17 => Some(Action::Create {
                    name: self.fresh(seed, "vol"),
                    size: (4 + rng.below(12) as u64) * MIB,
                    rwx_block: rng.chance(25),
                }),
                18..=25 if ids.len() > 3 => {
                    rng.pick(&free).map(|id| Action::Delete { id: id.clone() })
                }
                26..=31 => rng.pick(&ids).map(|id| Action::Expand {
                    id: id.clone(),
                    size: self.vols[id].size + (1 + rng.below(4) as u64) * MIB,
                }),
                32..=38 => rng
                    .pick(&ids)
                    .cloned()
                    .map(|id| Action::Snapshot { id, name: self.fresh(seed, "snap") }),
                39..=42 if snaps.len() > 2 => {
                    rng.pick(&snaps).map(|n| Action::DeleteSnapshot { name: n.clone() })
                }
                43..=47 => rng
                    .pick(&snaps)
                    .cloned()
                    .map(|snap| Action::Restore { snap, name: self.fresh(seed, "vol") }),
                48..=51 => rng
                    .pick(&ids)
                    .cloned()
                    .map(|id| Action::Clone { id, name: self.fresh(seed, "vol") }),
                52..=63 => rng.pick(&ids).and_then(|id| {
                    let v = &self.vols[id];
                    let limit = if v.rwx_block { 2 } else { 1 };
                    // Mostly the first node: its loop plane stages what it is given.
                    let node = if rng.chance(70) { nodes[0] } else { nodes[1] };
                    (v.grants.len() < limit && !v.grants.contains(node))
                        .then(|| Action::Publish { id: id.clone(), node: node.into() })
                }),
                64..=71 => rng
                    .pick(&unpublishable)
                    .map(|(id, node)| Action::Unpublish { id: id.clone(), node: node.clone() }),
                72..=76 => rng.pick(&stageable).map(|id| Action::Stage { id: id.clone() }),
                77..=81 => rng.pick(&staged).map(|id| Action::WriteFile {
                    id: id.clone(),
                    name: rng.next_u64() % 64,
                    seed: rng.next_u64(),
                }),
                82..=83 => rng.pick(&staged).map(|id| Action::Unstage { id: id.clone() }),
                84..=85 => rng.pick(&block).map(|(id, _)| {
                    let v = &self.vols[id];
                    Action::Write {
                        id: id.clone(),
                        offset: rng.below((v.size / BLOCK as u64) as usize) as u64 * BLOCK as u64,
                        seed: rng.next_u64(),
                    }
                }),
                86..=89 => rng.pick(&published).and_then(|(id, node)| {
                    let other = nodes.iter().find(|n| **n != node.as_str())?;
                    (!self.vols[id].rwx_block).then(|| Action::PublishConflict {
                        id: id.clone(),
                        node: other.to_string(),
                    })
                }),
                90..=92 => {
                    rng.pick(&published).map(|(id, _)| Action::DeletePublished { id: id.clone() })
                }
                93..=95 => Some(Action::RestartController),
                _ => None,
            };
            if let Some(action) = action {
                return Step { fault, action };
            }
        }
    }

    /// Records what an acknowledged action changed.
    pub fn apply(&mut self, action: &Action, snapshot_id: Option<String>) {
        match action {
            Action::Create { name, size, rwx_block } => {
                self.vols.insert(
                    name.clone(),
                    Vol {
                        size: *size,
                        rwx_block: *rwx_block,
                        data: Data::new(),
                        grants: BTreeSet::new(),
                        staged: false,
                        files: Data::new(),
                        formatted: false,
                        filled: false,
                    },
                );
            }
            Action::Delete { id } => {
                self.vols.remove(id);
            }
            Action::Expand { id, size } => {
                if let Some(v) = self.vols.get_mut(id) {
                    v.size = v.size.max(*size);
                }
            }
            Action::Snapshot { id, name } => {
                let v = &self.vols[id];
                let snap = Snap {
                    id: snapshot_id.unwrap_or_default(),
                    source: id.clone(),
                    size: v.size,
                    data: v.data.clone(),
                    files: v.files.clone(),
                    formatted: v.formatted,
                };
                self.snaps.insert(name.clone(), snap);
            }
            Action::DeleteSnapshot { name } => {
                self.snaps.remove(name);
            }
            Action::Restore { snap, name } => {
                let s = &self.snaps[snap];
                let source_rwx = self.vols.get(&s.source).is_some_and(|v| v.rwx_block);
                let vol = Vol {
                    size: s.size,
                    rwx_block: source_rwx,
                    data: s.data.clone(),
                    grants: BTreeSet::new(),
                    staged: false,
                    files: s.files.clone(),
                    formatted: s.formatted,
                    filled: true,
                };
                self.vols.insert(name.clone(), vol);
            }
            Action::Clone { id, name } => {
                let v = &self.vols[id];
                let vol = Vol { grants: BTreeSet::new(), staged: false, filled: true, ..v.clone() };
                self.vols.insert(name.clone(), vol);
            }
            Action::Publish { id, node } => {
                if let Some(v) = self.vols.get_mut(id) {
                    v.grants.insert(node.clone());
                }
            }
            Action::Unpublish { id, node } => {
                if let Some(v) = self.vols.get_mut(id) {
                    v.grants.remove(node);
                }
            }
            Action::Write { id, offset, seed } => {
                if let Some(v) = self.vols.get_mut(id) {
                    v.data.insert(*offset, *seed);
                }
            }
            Action::Stage { id } | Action::Unstage { id } => {
                if let Some(v) = self.vols.get_mut(id) {
                    v.staged = matches!(action, Action::Stage { .. });
                    v.formatted |= v.staged;
                }
            }
            Action::WriteFile { id, name, seed } => {
                if let Some(v) = self.vols.get_mut(id) {
                    v.files.insert(*name, *seed);
                }
            }
            Action::PublishConflict { .. }
            | Action::DeletePublished { .. }
            | Action::RestartController => {}
        }
    }
}

/// A disk as read from the RDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenDisk {
    pub slot: String,
    pub file: String,
    pub size: u64,
    pub export: bool,
    pub allowed: Vec<String>,
}

/// The RDS against the model: every disk and file accounted for, one disk per volume and
/// per file, sizes, exports, and each volume's allow list exactly its grants (RWO: one).
pub fn check_rds(model: &Model, disks: &[SeenDisk], files: &[String], dir: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut by_slot: BTreeMap<&str, &SeenDisk> = BTreeMap::new();
    let mut by_file: BTreeMap<&str, &str> = BTreeMap::new();
    for d in disks {
        if by_slot.insert(&d.slot, d).is_some() {
            bad.push(format!("two disks in slot {}", d.slot));
        }
        if let Some(other) = by_file.insert(&d.file, &d.slot) {
            bad.push(format!("disks {other} and {} share the file {}", d.slot, d.file));
        }
    }
    let snap_ids: BTreeMap<&str, &Snap> =
        model.snaps.values().map(|s| (s.id.as_str(), s)).collect();
    for d in disks {
        if !model.vols.contains_key(&d.slot) && !snap_ids.contains_key(d.slot.as_str()) {
            bad.push(format!("disk {} ({}) is not accounted for", d.slot, d.file));
        }
    }
    for (id, v) in &model.vols {
        let Some(d) = by_slot.get(id.as_str()) else {
            bad.push(format!("volume {id} was acknowledged but has no disk"));
            continue;
        };
        if d.size < v.size {
            bad.push(format!("volume {id}: disk of {} bytes, acknowledged {}", d.size, v.size));
        }
        let limit = if v.rwx_block { 2 } else { 1 };
        if v.grants.len() > limit {
            bad.push(format!("volume {id} granted to {} nodes: {:?}", v.grants.len(), v.grants));
        }
        let mut want: Vec<String> = v.grants.iter().map(|n| host_nqn_for(n)).collect();
        if want.is_empty() {
            want.push(FENCED_HOST_NQN.to_string());
        }
        want.sort();
        let mut seen = d.allowed.clone();
        seen.sort();
        if !d.export || seen != want {
            bad.push(format!(
                "volume {id}: export {} allowing {seen:?}, but granted to {:?}",
                d.export, v.grants
            ));
        }
    }
    for s in model.snaps.values() {
        match by_slot.get(s.id.as_str()) {
            None => bad.push(format!("snapshot {} was acknowledged but has no disk", s.id)),
            Some(d) if d.export => bad.push(format!("snapshot {} is exported", s.id)),
            Some(_) => {}
        }
    }
    let wanted: BTreeSet<&str> = disks.iter().map(|d| d.file.as_str()).collect();
    for f in files {
        if f.starts_with(dir) && f.ends_with(".img") && !wanted.contains(f.as_str()) {
            bad.push(format!("file {f} belongs to no disk"));
        }
    }
    bad
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
