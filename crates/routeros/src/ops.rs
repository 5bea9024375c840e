//! Typed RDS operations and their typed answers. Pure: no I/O.
//!
//! Each [`Op`] knows how it is written for each transport: one SSH command line (statements
//! joined with `;` so that a mutation and the read that confirms it cost one round trip), or a
//! short sequence of REST requests. Answers are parsed back into [`Answer`] values; sizes are
//! always exact bytes from `size`, never from the lossy `file-size`.

use serde_json::{Map, Value};

use crate::{
    error::RosError,
    syntax::quote,
    types::{FilePath, Nqn, Slot},
};

/// A file disk to create, exported over NVMe/TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDisk {
    pub slot: Slot,
    pub file: FilePath,
    /// Exact bytes (`file-size=<bytes>`: no unit, no rounding).
    pub size: u64,
    pub nqn: Nqn,
    pub port: u16,
    pub comment: String,
    /// Copy the properties (and, where the RDS does so, data) of this disk (`copy-from`).
    pub copy_from: Option<Slot>,
    /// Send `nvme-tcp-server-nqn` (RouterOS 7.21+; before, the NQN is the slot name).
    pub server_nqn_supported: bool,
    /// Export over NVMe/TCP (volumes); snapshot disks are not exported.
    pub export: bool,
    /// With `export`: `nvme-tcp-server-allow-host-name` from the start (empty: not sent, any
    /// host). With storage fencing a new volume allows no node until it is published.
    pub allowed_hosts: Vec<Nqn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateDisk(NewDisk),
    GetDisk(Slot),
    /// Disks whose slot starts with the prefix.
    ListDisks {
        slot_prefix: String,
    },
    SetFileSize {
        slot: Slot,
        size: u64,
    },
    /// Export on/off and the allowed host NQNs (empty = any host).
    SetExport {
        slot: Slot,
        export: bool,
        allowed_hosts: Vec<Nqn>,
    },
    SetComment {
        slot: Slot,
        comment: String,
    },
    /// `compress` (RouterOS 7.18+): the disk's transparent compression.
    SetCompress {
        slot: Slot,
        compress: bool,
    },
    /// Removes the disk item and then its file; both idempotent (missing is fine).
    DeleteDisk {
        slot: Slot,
        file: FilePath,
    },
    /// DeleteVolume's one line: when the disk in `slot` is the plain case (its file is
    /// `<base>/<slot>.img` under one of `bases` and its comment does not match the regex
    /// `keep_comment`), removes it; then removes `<slot>.img` anywhere under `bases` (its
    /// file, or a leftover when there was no disk). Any other disk in the slot is left
    /// alone, nothing is removed, and the line fails with [`KEPT`]: the caller looks.
    DeleteVolumeDisk {
        slot: Slot,
        bases: Vec<FilePath>,
        keep_comment: String,
    },
    RemoveFile(FilePath),
    /// Removes every file named `name` anywhere under the base directories (a leftover of a
    /// delete cut between its two removals); idempotent: nothing found is fine.
    RemoveLeftover {
        bases: Vec<FilePath>,
        name: Slot,
    },
    /// Files strictly under a directory.
    ListFiles {
        under: FilePath,
    },
    /// The pool mounted at a mount point (size, free).
    Pool {
        mount_point: String,
    },
    /// Block copy between two existing disks; `range` = (offset, length) in bytes, the same
    /// offset on both sides (so long copies go in resumable chunks).
    CopyDisk {
        src: Slot,
        dst: Slot,
        range: Option<(u64, u64)>,
    },
    /// `/file/copy` (7.23+).
    CopyFile {
        src: FilePath,
        dst: FilePath,
    },
    System,
    /// `/system clock`: the RDS's date and time (`rds-csi doctor`'s clock check).
    Clock,
    /// `/disk/btrfs/subvolume add` (RouterOS 7.18+): a subvolume, or with `parent` a snapshot
    /// of that subvolume (docs/snapshots.md "btrfs").
    AddSubvolume(NewSubvolume),
    GetSubvolume(Slot),
    /// Removes the subvolume (with what is in it); a missing one is success.
    RemoveSubvolume(Slot),
}

/// A btrfs subvolume to make: `name` on filesystem `fs` (its label), a snapshot of `parent`
/// when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubvolume {
    pub fs: String,
    pub name: Slot,
    pub parent: Option<Slot>,
    pub read_only: bool,
}

/// A `/disk/btrfs/subvolume` item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subvolume {
    pub name: String,
    pub fs: String,
    pub parent: Option<String>,
    pub read_only: bool,
}

impl Op {
    /// Whether the op changes state on the RDS (audit-logged; retried only after looking).
    pub fn is_mutation(&self) -> bool {
        !matches!(
            self,
            Op::GetDisk(_)
                | Op::ListDisks { .. }
                | Op::ListFiles { .. }
                | Op::Pool { .. }
                | Op::System
                | Op::Clock
                | Op::GetSubvolume(_)
        )
    }

    /// Whether the op may run for long on the RDS (block or file copies): it gets the
    /// transport's copy deadline instead of the command deadline.
    pub fn is_long(&self) -> bool {
        matches!(self, Op::CopyDisk { .. } | Op::CopyFile { .. })
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateDisk(_) => "create_disk",
            Op::GetDisk(_) => "get_disk",
            Op::ListDisks { .. } => "list_disks",
            Op::SetFileSize { .. } => "set_file_size",
            Op::SetExport { .. } => "set_export",
            Op::SetComment { .. } => "set_comment",
            Op::SetCompress { .. } => "set_compress",
            Op::DeleteDisk { .. } => "delete_disk",
            Op::DeleteVolumeDisk { .. } => "delete_volume_disk",
            Op::RemoveFile(_) => "remove_file",
            Op::RemoveLeftover { .. } => "remove_leftover",
            Op::ListFiles { .. } => "list_files",
            Op::Pool { .. } => "pool",
            Op::CopyDisk { .. } => "copy_disk",
            Op::CopyFile { .. } => "copy_file",
            Op::System => "system",
            Op::Clock => "clock",
            Op::AddSubvolume(_) => "add_subvolume",
            Op::GetSubvolume(_) => "get_subvolume",
            Op::RemoveSubvolume(_) => "remove_subvolume",
        }
    }

    /// The slot (or file) the op is about, for the audit log.
    pub fn subject(&self) -> String {
        match self {
            Op::CreateDisk(d) => d.slot.to_string(),
            Op::GetDisk(s) | Op::SetFileSize { slot: s, .. } | Op::SetExport { slot: s, .. } => {
                s.to_string()
            }
            Op::SetComment { slot, .. }
            | Op::SetCompress { slot, .. }
            | Op::DeleteDisk { slot, .. }
            | Op::DeleteVolumeDisk { slot, .. } => slot.to_string(),
            Op::CopyDisk { dst, .. } => dst.to_string(),
            Op::RemoveFile(f) | Op::CopyFile { dst: f, .. } | Op::ListFiles { under: f } => {
                f.to_string()
            }
            Op::ListDisks { slot_prefix } => slot_prefix.clone(),
            Op::RemoveLeftover { name, .. } => name.to_string(),
            Op::Pool { mount_point } => mount_point.clone(),
            Op::System | Op::Clock => String::new(),
            Op::AddSubvolume(v) => v.name.to_string(),
            Op::GetSubvolume(name) | Op::RemoveSubvolume(name) => name.to_string(),
        }
    }
}

/// A `/disk` item as the client sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    pub id: String,
    pub slot: String,
    pub kind: String,
    /// `file-path` without the leading slash.
    pub file: Option<String>,
    /// Exact bytes (`size`).
    pub size: u64,
    pub export: bool,
    pub port: Option<u16>,
    pub nqn: Option<String>,
    pub allowed_hosts: Vec<String>,
    pub comment: String,
    pub disabled: bool,
    /// `compress` (RouterOS 7.18+; `None` where the firmware has no such property).
    pub compress: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub kind: String,
    pub size: Option<u64>,
    /// `last-modified` (RouterOS 7.16+; `creation-time` before) as seconds since the epoch,
    /// read as UTC: the RDS clock's time zone is not known to the driver.
    pub modified: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub slot: String,
    pub mount_point: String,
    pub size: u64,
    pub free: u64,
    /// The filesystem (`fs`: xfs, btrfs, ...) and its label (`fs-label`), when printed.
    pub fs: Option<String>,
    pub fs_label: Option<String>,
}

/// `/system clock print`: the RDS's time (read as UTC, like file times) and its zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    /// `date` and `time` as seconds since the epoch, read as UTC.
    pub time: Option<i64>,
    pub zone: String,
    /// `gmt-offset` as printed (`+02:00`), when printed.
    pub gmt_offset: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// `7.21 (stable)` as printed; see [`SystemInfo::version_number`].
    pub version: String,
    pub board: String,
    pub identity: String,
}

impl SystemInfo {
    /// `(major, minor)` of the RouterOS version.
    pub fn version_number(&self) -> Option<(u32, u32)> {
        let num = self.version.split_whitespace().next()?;
        let mut parts = num.split('.');
        Some((
            parts.next()?.parse().ok()?,
            parts.next()?.trim_end_matches(char::is_alphabetic).parse().ok()?,
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done,
    Disk(Disk),
    MaybeDisk(Option<Disk>),
    Disks(Vec<Disk>),
    Files(Vec<FileEntry>),
    Pool(Option<Pool>),
    System(SystemInfo),
    Clock(Clock),
    MaybeSubvolume(Option<Subvolume>),
}

// ---- values from JSON: typed (`:serialize`) or all strings (REST) ------------------------

fn text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(obj: &Map<String, Value>, key: &str) -> Option<u64> {
    match obj.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => crate::values::parse_grouped(s.trim()),
        _ => None,
    }
}

fn boolean(obj: &Map<String, Value>, key: &str) -> bool {
    match obj.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => crate::values::parse_bool(s).unwrap_or(false),
        _ => false,
    }
}

/// A disk from an as-value / REST object.
pub fn disk_from(obj: &Map<String, Value>) -> Result<Disk, RosError> {
    let slot = text(obj, "slot")
        .ok_or_else(|| RosError::Unexpected(format!("disk without slot: {obj:?}")))?;
    let size = number(obj, "size")
        .ok_or_else(|| RosError::Unexpected(format!("disk {slot} without size")))?;
    let nqn = text(obj, "nvme-tcp-server-nqn").filter(|s| !s.is_empty());
    Ok(Disk {
        id: text(obj, ".id").unwrap_or_default(),
        kind: text(obj, "type").unwrap_or_default(),
        file: text(obj, "file-path").map(|p| p.trim_start_matches('/').to_string()),
        size,
        export: boolean(obj, "nvme-tcp-export"),
        port: number(obj, "nvme-tcp-server-port").and_then(|p| u16::try_from(p).ok()),
        nqn,
        allowed_hosts: text(obj, "nvme-tcp-server-allow-host-name")
            .map(|h| {
                h.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_string).collect()
            })
            .unwrap_or_default(),
        comment: text(obj, "comment").unwrap_or_default(),
        disabled: boolean(obj, "disabled"),
        compress: obj.contains_key("compress").then(|| boolean(obj, "compress")),
        slot,
    })
}

pub(crate) fn objects(value: Value) -> Result<Vec<Map<String, Value>>, RosError> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                other => Err(RosError::Unexpected(format!("expected an object, got {other}"))),
            })
            .collect(),
        Value::Object(m) => Ok(vec![m]),
        other => Err(RosError::Unexpected(format!("expected an array, got {other}"))),
    }
}

fn pool_from(obj: &Map<String, Value>) -> Result<Pool, RosError> {
    let get =
        |k: &str| number(obj, k).ok_or_else(|| RosError::Unexpected(format!("pool without {k}")));
    Ok(Pool {
        slot: text(obj, "slot").unwrap_or_default(),
        mount_point: text(obj, "mount-point").unwrap_or_default(),
        size: get("size")?,
        free: get("free")?,
        fs: text(obj, "fs").filter(|f| !f.is_empty()),
        fs_label: text(obj, "fs-label").filter(|f| !f.is_empty()),
    })
}

pub use crate::values::file_time;

fn file_from(obj: &Map<String, Value>) -> FileEntry {
    FileEntry {
        name: text(obj, "name").unwrap_or_default().trim_start_matches('/').to_string(),
        kind: text(obj, "type").unwrap_or_default(),
        size: number(obj, "size"),
        modified: text(obj, "last-modified")
            .or_else(|| text(obj, "creation-time"))
            .and_then(|t| file_time(&t)),
    }
}

/// Turns the parsed rows of a read into the op's answer.
pub fn answer_from_rows(
    op: &Op,
    rows: Vec<Map<String, Value>>,
    extra: Option<Map<String, Value>>,
) -> Result<Answer, RosError> {
    Ok(match op {
        Op::CreateDisk(d) => {
            let row = rows.first().ok_or_else(|| {
                RosError::Unexpected(format!("disk {} missing right after add", d.slot))
            })?;
            // Never expected (a slot names one item), but two disks in one slot must stop
            // everything rather than hand out one of them.
            if rows.len() > 1 {
                return Err(RosError::Unexpected(format!(
                    "{} disks in slot {} right after add; check /disk print where slot={} by hand",
                    rows.len(),
                    d.slot,
                    d.slot
                )));
            }
            Answer::Disk(disk_from(row)?)
        }
        Op::SetFileSize { slot, .. } => {
            let row = rows.first().ok_or_else(|| RosError::NotFound(format!("disk {slot}")))?;
            Answer::Disk(disk_from(row)?)
        }
        Op::GetDisk(_) => Answer::MaybeDisk(rows.first().map(disk_from).transpose()?),
        Op::ListDisks { slot_prefix } => Answer::Disks(
            rows.iter()
                .map(disk_from)
                .filter(|d| d.as_ref().map_or(true, |d| d.slot.starts_with(slot_prefix.as_str())))
                .collect::<Result<_, _>>()?,
        ),
        Op::ListFiles { under } => Answer::Files(
            rows.iter()
                .map(file_from)
                .filter(|f| FilePath::new(&f.name).is_ok_and(|p| p.is_under(under)))
                .collect(),
        ),
        Op::Pool { .. } => Answer::Pool(rows.first().map(pool_from).transpose()?),
        Op::GetSubvolume(_) => Answer::MaybeSubvolume(rows.first().map(|o| Subvolume {
            name: text(o, "name").unwrap_or_default(),
            fs: text(o, "fs").unwrap_or_default(),
            parent: text(o, "parent").filter(|p| !p.is_empty()),
            read_only: boolean(o, "read-only"),
        })),
        Op::System => {
            let resource =
                rows.first().ok_or_else(|| RosError::Unexpected("no /system resource".into()))?;
            let identity = extra.as_ref().and_then(|m| text(m, "name")).unwrap_or_default();
            Answer::System(SystemInfo {
                version: text(resource, "version").unwrap_or_default(),
                board: text(resource, "board-name").unwrap_or_default(),
                identity,
            })
        }
        Op::Clock => {
            let row =
                rows.first().ok_or_else(|| RosError::Unexpected("no /system clock".into()))?;
            let (date, time) = (text(row, "date"), text(row, "time"));
            Answer::Clock(Clock {
                time: date.zip(time).and_then(|(d, t)| file_time(&format!("{d} {t}"))),
                zone: text(row, "time-zone-name").unwrap_or_default(),
                gmt_offset: text(row, "gmt-offset"),
            })
        }
        _ => Answer::Done,
    })
}

// ---- SSH -------------------------------------------------------------------------------

/// How reads are done over SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFormat {
    /// `:put [:serialize to=json [... print detail as-value ...]]` (RouterOS with `:serialize`).
    Json,
    /// The human `print detail` format, for firmware without `:serialize`.
    Detail,
}

/// `^` + the prefix with regex metacharacters escaped (RouterOS `~` is a regex match).
fn anchored(prefix: &str) -> String {
    let mut re = String::from("^");
    for c in prefix.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            re.push('\\');
        }
        re.push(c);
    }
    re
}

/// A read of `menu` (`/disk`) filtered by `filter` (already quoted), in the chosen format.
fn read(menu: &str, filter: &str, format: ReadFormat) -> String {
    let filter = if filter.is_empty() { String::new() } else { format!(" where {filter}") };
    match format {
        ReadFormat::Json => {
            format!(":put [:serialize to=json [{menu} print detail as-value{filter}]]")
        }
        ReadFormat::Detail => format!("{menu} print detail{filter}"),
    }
}

fn slot_filter(slot: &Slot) -> String {
    format!("slot={}", quote(slot.as_str()))
}

/// The text of the refusal of [`Op::DeleteVolumeDisk`] for a disk that is not the plain case.
pub const KEPT: &str = "rds-csi: kept";

/// Removes every file named `name` anywhere under the `bases`.
fn leftover_line(bases: &[FilePath], name: &str) -> String {
    // Names are [A-Za-z0-9._/-]: only '.' needs escaping in the pattern.
    let esc = |s: &str| s.replace('.', "[.]");
    let dirs: Vec<String> = bases.iter().map(|b| esc(b.as_str())).collect();
    let pattern = format!("^({})/(.+/)?{}$", dirs.join("|"), esc(name));
    format!("/file remove [find name~{}]", quote(&pattern))
}

/// The one SSH command line of an op.
pub fn ssh_line(op: &Op, format: ReadFormat) -> String {
    match op {
        Op::CreateDisk(d) => {
            let mut add = format!(
                "/disk add type=file slot={} file-path={}",
                quote(d.slot.as_str()),
                quote(d.file.as_str())
            );
            if let Some(src) = &d.copy_from {
                add.push_str(&format!(" copy-from={}", quote(src.as_str())));
            }
            add.push_str(&format!(" file-size={}", d.size));
            if d.export {
                add.push_str(&format!(" nvme-tcp-export=yes nvme-tcp-server-port={}", d.port));
                if d.server_nqn_supported {
                    add.push_str(&format!(" nvme-tcp-server-nqn={}", quote(d.nqn.as_str())));
                }
                if !d.allowed_hosts.is_empty() {
                    let hosts: Vec<&str> = d.allowed_hosts.iter().map(Nqn::as_str).collect();
                    add.push_str(&format!(
                        " nvme-tcp-server-allow-host-name={}",
                        quote(&hosts.join(","))
                    ));
                }
            }
            add.push_str(&format!(" comment={}", quote(&d.comment)));
            format!("{add}; {}", read("/disk", &slot_filter(&d.slot), format))
        }
        Op::GetDisk(slot) => read("/disk", &slot_filter(slot), format),
        Op::ListDisks { slot_prefix } => {
            read("/disk", &format!("slot~{}", quote(&anchored(slot_prefix))), format)
        }
        Op::SetFileSize { slot, size } => {
            format!(
                "/disk set {} file-size={size}; {}",
                quote(slot.as_str()),
                read("/disk", &slot_filter(slot), format)
            )
        }
        Op::SetExport { slot, export, allowed_hosts } => {
            let hosts: Vec<&str> = allowed_hosts.iter().map(Nqn::as_str).collect();
            format!(
                "/disk set {} nvme-tcp-export={} nvme-tcp-server-allow-host-name={}",
                quote(slot.as_str()),
                if *export { "yes" } else { "no" },
                quote(&hosts.join(","))
            )
        }
        Op::SetComment { slot, comment } => {
            format!("/disk set {} comment={}", quote(slot.as_str()), quote(comment))
        }
        Op::SetCompress { slot, compress } => {
            format!(
                "/disk set {} compress={}",
                quote(slot.as_str()),
                if *compress { "yes" } else { "no" }
            )
        }
        Op::DeleteDisk { slot, file } => format!(
            "/disk remove [find slot={}]; /file remove [find name={}]",
            quote(slot.as_str()),
            quote(file.as_str())
        ),
        Op::DeleteVolumeDisk { slot, bases, keep_comment } => {
            let s = quote(slot.as_str());
            // `file-path` prints with a leading slash on some firmware: match both spellings.
            let own: Vec<String> = bases
                .iter()
                .flat_map(|b| {
                    let file = format!("{}/{slot}.img", b.as_str());
                    [
                        format!("file-path={}", quote(&file)),
                        format!("file-path={}", quote(&format!("/{file}"))),
                    ]
                })
                .collect();
            let plain = format!("({}) and !(comment~{})", own.join(" or "), quote(keep_comment));
            format!(
                ":if ([:len [/disk find where slot={s} and !({plain})]] > 0) do={{:error {}}}; \
                 /disk remove [find where slot={s}]; {}",
                quote(&format!("{KEPT}: disk {slot} is not removed in one step")),
                leftover_line(bases, &format!("{slot}.img"))
            )
        }
        Op::RemoveFile(file) => format!("/file remove [find name={}]", quote(file.as_str())),
        Op::RemoveLeftover { bases, name } => leftover_line(bases, name.as_str()),
        Op::ListFiles { under } => read(
            "/file",
            &format!("name~{}", quote(&anchored(&format!("{}/", under.as_str())))),
            format,
        ),
        Op::Pool { mount_point } => {
            read("/disk", &format!("mount-point={}", quote(mount_point)), format)
        }
        Op::CopyDisk { src, dst, range } => {
            let mut line =
                format!("/disk copy src={} dst={}", quote(src.as_str()), quote(dst.as_str()));
            if let Some((offset, len)) = range {
                line.push_str(&format!(" src-offset={offset} dst-offset={offset} size={len}"));
            }
            line
        }
        Op::CopyFile { src, dst } => {
            format!("/file/copy {} name={}", quote(src.as_str()), quote(dst.as_str()))
        }
        Op::AddSubvolume(v) => {
            let mut line = format!(
                "/disk/btrfs/subvolume add fs={} name={}",
                quote(&v.fs),
                quote(v.name.as_str())
            );
            if let Some(parent) = &v.parent {
                line.push_str(&format!(
                    " parent={} read-only={}",
                    quote(parent.as_str()),
                    if v.read_only { "yes" } else { "no" }
                ));
            }
            line
        }
        Op::GetSubvolume(name) => {
            read("/disk/btrfs/subvolume", &format!("name={}", quote(name.as_str())), format)
        }
        Op::RemoveSubvolume(name) => {
            format!("/disk/btrfs/subvolume remove [find name={}]", quote(name.as_str()))
        }
        Op::System => match format {
            ReadFormat::Json => ":put [:serialize to=json [/system resource print as-value]]; \
                                 :put [:serialize to=json [/system identity print as-value]]"
                .to_string(),
            ReadFormat::Detail => "/system resource print; /system identity print".to_string(),
        },
        Op::Clock => match format {
            ReadFormat::Json => ":put [:serialize to=json [/system clock print as-value]]".into(),
            ReadFormat::Detail => "/system clock print".into(),
        },
    }
}

#[path = "ops_rest.rs"]
mod rest;
pub use rest::{RestCall, parse_rest, rest_calls, rest_error, rest_tolerates};

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
