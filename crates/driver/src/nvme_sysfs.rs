//! NVMe devices by NQN, read from sysfs (an injectable root, so tests use fixtures laid out as
//! the real kernel does; see tools/nvme-vm/REPORT.md). Device names change across reconnects
//! (`nvme1n1` → `nvme1n2`), so the node resolves the NQN every time and never caches a name.
//!
//! The rule that works with native multipath on and off: every `/sys/block/nvme*n*` except the
//! hidden per-path `nvme*c*n*` disks, whose `device/subsysnqn` is the NQN.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// A namespace's block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `nvme0n1`.
    pub name: String,
    /// Size in bytes (`size` counts 512-byte sectors).
    pub size: u64,
    pub major_minor: Option<(u32, u32)>,
}

/// One NVMe controller (`/sys/class/nvme/nvmeN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub name: String,
    pub nqn: String,
    /// `live`, `connecting`, `resetting`, `deleting`, ...
    pub state: String,
    /// `traddr=...,trsvcid=...,src_addr=...`
    pub address: String,
}

fn read(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn is_path_disk(name: &str) -> bool {
    // nvmeXcYnZ: hidden per-path disks under native multipath.
    name.strip_prefix("nvme").is_some_and(|rest| rest.contains('c') && rest.contains('n'))
}

pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// `root` is `/sys` in production.
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// The namespace devices of `nqn` (usually one).
    pub fn namespaces(&self, nqn: &str) -> io::Result<Vec<Namespace>> {
        let mut out = Vec::new();
        let block = self.root.join("block");
        let Ok(entries) = fs::read_dir(&block) else { return Ok(out) };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("nvme") || is_path_disk(&name) {
                continue;
            }
            let dir = block.join(&name);
            if read(&dir.join("device/subsysnqn")).as_deref() != Some(nqn) {
                continue;
            }
            let sectors: u64 = read(&dir.join("size")).and_then(|s| s.parse().ok()).unwrap_or(0);
            let major_minor = read(&dir.join("dev")).and_then(|d| {
                let (a, b) = d.split_once(':')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            });
            out.push(Namespace { name, size: sectors * 512, major_minor });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Controllers connected to `nqn`.
    pub fn controllers(&self, nqn: &str) -> io::Result<Vec<Controller>> {
        let mut out = Vec::new();
        let class = self.root.join("class/nvme");
        let Ok(entries) = fs::read_dir(&class) else { return Ok(out) };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let dir = class.join(&name);
            if read(&dir.join("subsysnqn")).as_deref() != Some(nqn) {
                continue;
            }
            out.push(Controller {
                state: read(&dir.join("state")).unwrap_or_default(),
                address: read(&dir.join("address")).unwrap_or_default(),
                nqn: nqn.to_string(),
                name,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl Controller {
    /// Whether the controller talks to `traddr:trsvcid` ("already connected" only counts then).
    pub fn connects_to(&self, traddr: &str, trsvcid: u16) -> bool {
        let mut addr = None;
        let mut port = None;
        for kv in self.address.split(',') {
            match kv.split_once('=') {
                Some(("traddr", v)) => addr = Some(v),
                Some(("trsvcid", v)) => port = v.parse::<u16>().ok(),
                _ => {}
            }
        }
        addr == Some(traddr) && port == Some(trsvcid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, value: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("{value}\n")).unwrap();
    }

    /// Native multipath on (Debian's default): head disk + hidden per-path disk.
    fn multipath_y(root: &Path) {
        write(root, "block/nvme0n1/device/subsysnqn", "nqn.2000-02.com.mikrotik:pvc-a");
        write(root, "block/nvme0n1/size", "2097152");
        write(root, "block/nvme0n1/dev", "259:0");
        write(root, "block/nvme0c0n1/device/subsysnqn", "nqn.2000-02.com.mikrotik:pvc-a");
        write(root, "block/nvme0c0n1/size", "2097152");
        write(root, "class/nvme/nvme0/subsysnqn", "nqn.2000-02.com.mikrotik:pvc-a");
        write(root, "class/nvme/nvme0/state", "live");
        write(root, "class/nvme/nvme0/address", "traddr=10.0.0.5,trsvcid=4420,src_addr=10.0.0.9");
        // After a reconnect with a stale mount: the same NQN as nvme1n2 (nsid 1).
        write(root, "block/nvme1n2/device/subsysnqn", "nqn.2000-02.com.mikrotik:pvc-b");
        write(root, "block/nvme1n2/size", "4194304");
        // A system disk the driver must never touch.
        write(root, "block/nvme2n1/device/subsysnqn", "nqn.2014-08.org.nvmexpress:uuid:root");
    }

    #[test]
    fn resolves_by_nqn_skipping_per_path_disks() {
        let dir = tempfile::tempdir().unwrap();
        multipath_y(dir.path());
        let sys = Sysfs::new(dir.path());
        let a = sys.namespaces("nqn.2000-02.com.mikrotik:pvc-a").unwrap();
        assert_eq!(
            a,
            [Namespace { name: "nvme0n1".into(), size: 1 << 30, major_minor: Some((259, 0)) }]
        );
        let b = sys.namespaces("nqn.2000-02.com.mikrotik:pvc-b").unwrap();
        assert_eq!(b[0].name, "nvme1n2", "renamed after a reconnect: resolved, never cached");
        assert!(sys.namespaces("nqn.2000-02.com.mikrotik:pvc-none").unwrap().is_empty());
        let c = sys.controllers("nqn.2000-02.com.mikrotik:pvc-a").unwrap();
        assert_eq!((c[0].name.as_str(), c[0].state.as_str()), ("nvme0", "live"));
        assert!(c[0].connects_to("10.0.0.5", 4420));
        assert!(!c[0].connects_to("10.0.0.6", 4420));
        assert!(!c[0].connects_to("10.0.0.5", 4421));
    }

    #[test]
    fn no_sysfs_means_nothing_connected() {
        let sys = Sysfs::new("/nonexistent-sysfs-root");
        assert!(sys.namespaces("nqn.x:y").unwrap().is_empty());
        assert!(sys.controllers("nqn.x:y").unwrap().is_empty());
    }
}
