//! The emulated `/disk` table: items, their properties in RouterOS's print order, and flags.
//! Pure: no I/O (the store computes pool usage and passes it in).

use routeros::values::{group_digits, human_size, yes_no};
use serde::{Deserialize, Serialize};

use crate::version::Version;

/// One `/disk` item. Persisted as JSON in the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Internal id; printed as `*HEX` (`.id`).
    pub id: u32,
    pub slot: String,
    pub comment: String,
    pub disabled: bool,
    pub kind: Kind,
    pub nvme: NvmeExport,
    /// `compress` (7.18+). Modelled as the property only: the emulator stores the data as is.
    #[serde(default)]
    pub compress: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// The storage pool: a mounted RAID whose `size`/`free`/`use` track the files on it.
    Raid(Pool),
    /// `type=file`: a file mounted as a block device.
    File(FileDisk),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub mount_point: String,
    pub size: u64,
    pub fs_uuid: String,
    pub raid_uuid: String,
    /// The pool's filesystem is btrfs (its directory must be a real btrfs mount; subvolumes
    /// are made with btrfs-progs); otherwise xfs.
    #[serde(default)]
    pub btrfs: bool,
}

/// A `/disk/btrfs/subvolume` item: `<pool mount point>/<name>` on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subvolume {
    pub id: u32,
    pub name: String,
    /// The filesystem's label (`<pool slot>-fs`).
    pub fs: String,
    pub parent: Option<String>,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDisk {
    /// As stored: no leading slash (`storage-pool/metal-csi/pvc-x.img`).
    pub path: String,
    /// Size of the backing file in bytes (kept equal to the file's length).
    pub size: u64,
    pub offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeExport {
    pub export: bool,
    pub port: u16,
    /// `nvme-tcp-server-nqn`; empty when unset (then [`Disk::nqn`] applies the default).
    pub nqn: String,
    pub allow_host_name: String,
}

/// How a property's value is written by `print`.
#[derive(Debug, Clone, PartialEq)]
pub enum PropValue {
    /// Double-quoted (`slot="x"`, `model="/p"`, `""`).
    Str(String),
    /// Bare enum or path (`type=file`, `fs=-`, `file-path=/p`).
    Bare(String),
    Bool(bool),
    /// Grouped in `print`, raw in as-value.
    Int(u64),
    /// Lossy human size in `print` (`50.0GiB`), raw bytes in as-value.
    Size(u64),
    /// `use=8%`.
    Percent(u64),
}

impl PropValue {
    /// The value as `print detail` writes it.
    pub fn display(&self) -> String {
        match self {
            PropValue::Str(s) => routeros_quote_for_print(s),
            PropValue::Bare(s) => s.clone(),
            PropValue::Bool(b) => yes_no(*b).to_string(),
            PropValue::Int(n) => group_digits(*n),
            PropValue::Size(n) => human_size(*n),
            PropValue::Percent(n) => format!("{n}%"),
        }
    }

    /// The raw value (terse, as-value, REST, `where` comparisons).
    pub fn raw(&self) -> String {
        match self {
            PropValue::Str(s) | PropValue::Bare(s) => s.clone(),
            PropValue::Bool(b) => b.to_string(),
            PropValue::Int(n) | PropValue::Size(n) | PropValue::Percent(n) => n.to_string(),
        }
    }
}

/// `print` quotes strings with `"` and escapes `"` and `\` inside them.
fn routeros_quote_for_print(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A print flag: its letter, its name in the header, its as-value property name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    pub letter: char,
    pub header: &'static str,
    pub property: &'static str,
}

const fn flag(letter: char, header: &'static str, property: &'static str) -> Flag {
    Flag { letter, header, property }
}

/// Flag groups in column order (spec §1.4). Flags of one group share a print column; the
/// grouping beyond the captured `M, S` and `g, p` pairs is INFERRED (docs/emulator.md).
pub const FLAG_GROUPS: &[&[Flag]] = &[
    &[flag('X', "DISABLED", "disabled")],
    &[flag('A', "ACQUIRED", "acquired")],
    &[flag('E', "EMPTY", "empty")],
    &[flag('B', "BLOCK-DEVICE", "block-device")],
    &[
        flag('M', "MOUNTED", "mounted"),
        flag('F', "FORMATTING", "formatting"),
        flag('S', "SWAP-ENABLED", "swap-enabled"),
    ],
    &[
        flag('f', "RAID-MEMBER-FAILED", "raid-member-failed"),
        flag('r', "RAID-MEMBER", "raid-member"),
    ],
    &[flag('c', "ENCRYPTED", "encrypted")],
    &[
        flag('g', "GUID-PARTITION-TABLE", "guid-partition-table"),
        flag('p', "PARTITION", "partition"),
    ],
    &[flag('t', "NVME-TCP-EXPORT", "nvme-tcp-export")],
    &[flag('i', "ISCSI-EXPORT", "iscsi-export")],
    &[flag('s', "SMB-SHARING", "smb-sharing")],
    &[flag('n', "NFS-SHARING", "nfs-sharing")],
    &[flag('m', "MEDIA-SHARING", "media-sharing")],
];

/// Pool usage, computed by the store from the files on the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub used: u64,
}

impl Disk {
    /// `*1F`.
    pub fn dot_id(&self) -> String {
        format!("*{:X}", self.id)
    }

    /// The NQN the disk is exported under: `nvme-tcp-server-nqn`, else (7.21+, UNKNOWN default)
    /// `nqn.2000-02.com.mikrotik:<slot>`; before 7.21 the slot name itself (VERIFIED).
    pub fn nqn(&self, version: Version) -> String {
        if !self.nvme.nqn.is_empty() && version.has_server_nqn() {
            self.nvme.nqn.clone()
        } else if version.has_server_nqn() {
            format!("nqn.2000-02.com.mikrotik:{}", self.slot)
        } else {
            self.slot.clone()
        }
    }

    /// Flags that are set on this item.
    pub fn flags(&self) -> Vec<char> {
        let mut set = Vec::new();
        if self.disabled {
            set.push('X');
        }
        set.push('B');
        if matches!(self.kind, Kind::Raid(_)) {
            set.push('M');
        }
        if self.nvme.export {
            set.push('t');
        }
        set
    }

    /// Properties in `print detail` order (spec §1.5), for `version`.
    pub fn properties(&self, version: Version, usage: Usage) -> Vec<(&'static str, PropValue)> {
        use PropValue::*;
        let mut p: Vec<(&'static str, PropValue)> = Vec::new();
        let type_name = match self.kind {
            Kind::Raid(_) => "raid",
            Kind::File(_) => "file",
        };
        p.push(("type", Bare(type_name.into())));
        p.push(("slot", Str(self.slot.clone())));
        p.push(("slot-default", Str(String::new())));
        p.push(("parent", Str(String::new())));
        match &self.kind {
            Kind::Raid(pool) => {
                let free = pool.size.saturating_sub(usage.used);
                p.push(("fs-label", Str(format!("{}-fs", self.slot))));
                p.push(("fs-uuid", Str(pool.fs_uuid.clone())));
                p.push(("fs", Bare(if pool.btrfs { "btrfs" } else { "xfs" }.into())));
                p.push(("model", Str("RAID0 striped".into())));
                p.push(("size", Int(pool.size)));
                p.push(("free", Int(free)));
                p.push(("total-inodes", Int(pool.size / 10_240)));
                p.push(("free-inodes", Int(free / 10_240)));
                p.push(("use", Percent((usage.used * 100).div_ceil(pool.size.max(1)))));
                p.push(("mount-point", Str(pool.mount_point.clone())));
                p.push(("mount-filesystem", Bool(true)));
            }
            Kind::File(file) => {
                p.push(("fs", Bare("-".into())));
                p.push(("model", Str(format!("/{}", file.path))));
                p.push(("size", Int(file.size)));
                p.push(("mount-filesystem", Bool(false)));
            }
        }
        p.push(("mount-read-only", Bool(false)));
        if version.has_compress() {
            p.push(("compress", Bool(self.compress)));
        }
        p.push(("sector-size", Int(512)));
        if let Kind::Raid(_) = &self.kind {
            p.push(("raid-type", Bare("0".into())));
            p.push(("raid-device-count", Int(4)));
            p.push(("raid-max-component-size", Bare("none".into())));
            p.push(("raid-chunk-size", Bare("256K".into())));
        }
        p.push(("raid-master", Bare("none".into())));
        if let Kind::Raid(pool) = &self.kind {
            p.push(("state", Str("clean".into())));
            p.push(("raid-uuid", Str(pool.raid_uuid.clone())));
        }
        p.push(("nvme-tcp-export", Bool(self.nvme.export)));
        if self.nvme.export {
            p.push(("nvme-tcp-server-port", Int(u64::from(self.nvme.port))));
            if version.has_server_nqn() {
                p.push(("nvme-tcp-server-nqn", Str(self.nvme.nqn.clone())));
            }
            p.push(("nvme-tcp-server-allow-host-name", Str(self.nvme.allow_host_name.clone())));
        }
        for name in ["iscsi-export", "nfs-sharing", "smb-sharing", "media-sharing"] {
            p.push((name, Bool(false)));
        }
        p.push(("media-interface", Bare("none".into())));
        p.push(("swap", Bool(false)));
        if let Kind::File(file) = &self.kind {
            p.push(("file-path", Bare(format!("/{}", file.path))));
            p.push(("file-size", Size(file.size)));
            p.push(("file-offset", Int(file.offset)));
        }
        p
    }

    /// Properties for as-value/REST/`where`: `.id`, every property, `comment`, and every flag
    /// as a boolean property (VERIFIED: `mounted` is a boolean in as-value).
    pub fn value_properties(&self, version: Version, usage: Usage) -> Vec<(String, PropValue)> {
        let mut out = vec![(".id".to_string(), PropValue::Bare(self.dot_id()))];
        let props = self.properties(version, usage);
        let set = self.flags();
        for group in FLAG_GROUPS {
            for f in *group {
                if !props.iter().any(|(k, _)| *k == f.property) {
                    out.push((f.property.to_string(), PropValue::Bool(set.contains(&f.letter))));
                }
            }
        }
        out.extend(props.into_iter().map(|(k, v)| (k.to_string(), v)));
        out.push(("comment".to_string(), PropValue::Str(self.comment.clone())));
        out
    }
}
