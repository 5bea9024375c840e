//! Real NVMe/TCP export through the kernel target (nvmet, configfs), for `--nvmet ADDR:PORT`.
//!
//! Every disk with `nvme-tcp-export=yes` (and not disabled) becomes an nvmet subsystem named by
//! its NQN, with namespace 1 backed by its file (file backend, buffered I/O), linked to one
//! TCP port on ADDR:PORT. [`Nvmet::reconcile`] makes configfs match the disk table: it runs at
//! start (an RDS re-exports after a reboot) and after every mutating command.
//!
//! `nvme-tcp-server-allow-host-name` is taken as a comma-separated list of host NQNs (UNKNOWN
//! on real hardware); empty allows any host. Whether revoking a host drops its live
//! connections is UNKNOWN: by default (like nvmet) live connections stay; with
//! `revoke_drops_connections` the subsystem is unlinked from the port and linked again, which
//! makes the kernel delete its controllers.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// The configfs root of the kernel target.
pub const CONFIGFS: &str = "/sys/kernel/config/nvmet";

/// One subsystem the disk table wants exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub nqn: String,
    pub file: PathBuf,
    /// Allowed host NQNs; empty = any host.
    pub hosts: BTreeSet<String>,
}

#[derive(Debug)]
pub struct Nvmet {
    root: PathBuf,
    port_dir: PathBuf,
    revoke_drops_connections: bool,
    /// File size of each exported namespace when last seen by the target.
    sizes: std::sync::Mutex<BTreeMap<String, u64>>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn mkdir(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(|e| {
        io::Error::new(e.kind(), format!("{} -> {}: {e}", link.display(), target.display()))
    })
}

/// Removes a configfs directory or symlink; missing is fine.
fn remove(path: &Path) -> io::Result<()> {
    let result = if path.is_symlink() { fs::remove_file(path) } else { fs::remove_dir(path) };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

impl Nvmet {
    /// Opens the target at `root` and makes sure a TCP port listens on `listen`.
    pub fn open(
        root: &Path,
        listen: SocketAddr,
        revoke_drops_connections: bool,
    ) -> io::Result<Nvmet> {
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is missing: load nvmet-tcp and mount configfs", root.display()),
            ));
        }
        // Reuse the port already bound to this address (a restart), or take a free id.
        let ports = root.join("ports");
        let wanted = (listen.ip().to_string(), listen.port().to_string());
        let existing = entries(&ports).into_iter().find(|id| {
            let p = ports.join(id);
            (read(&p.join("addr_traddr")), read(&p.join("addr_trsvcid"))) == wanted
        });
        let port_dir = match existing {
            Some(id) => ports.join(id),
            None => {
                let used: BTreeSet<u32> =
                    entries(&ports).iter().filter_map(|i| i.parse().ok()).collect();
                let id = (1..).find(|i| !used.contains(i)).expect("a free port id");
                let p = ports.join(id.to_string());
                mkdir(&p)?;
                write(&p.join("addr_trtype"), "tcp")?;
                write(&p.join("addr_adrfam"), if listen.is_ipv4() { "ipv4" } else { "ipv6" })?;
                write(&p.join("addr_traddr"), &wanted.0)?;
                write(&p.join("addr_trsvcid"), &wanted.1)?;
                p
            }
        };
        Ok(Nvmet {
            root: root.to_path_buf(),
            port_dir,
            revoke_drops_connections,
            sizes: Default::default(),
        })
    }

    fn subsystem(&self, nqn: &str) -> PathBuf {
        self.root.join("subsystems").join(nqn)
    }

    /// NQNs currently linked to our port.
    pub fn exported(&self) -> BTreeSet<String> {
        entries(&self.port_dir.join("subsystems")).into_iter().collect()
    }

    fn allowed_hosts(&self, nqn: &str) -> BTreeSet<String> {
        entries(&self.subsystem(nqn).join("allowed_hosts")).into_iter().collect()
    }

    /// Makes configfs match `desired` for the subsystems on our port.
    pub fn reconcile(&self, desired: &[Export]) -> io::Result<()> {
        let want: BTreeMap<&str, &Export> = desired.iter().map(|e| (e.nqn.as_str(), e)).collect();
        for nqn in self.exported() {
            let keep = want.get(nqn.as_str()).is_some_and(|e| self.device_path(&nqn) == e.file);
            if !keep {
                self.unexport(&nqn)?;
            }
        }
        let exported = self.exported();
        for export in desired {
            if exported.contains(&export.nqn) {
                self.set_hosts(export)?;
                self.revalidate_size(export);
            } else {
                self.export(export)?;
            }
        }
        Ok(())
    }

    /// After `/disk set file-size=`: makes the target re-read the file's size, so connected
    /// hosts see the namespace grow (the kernel sends a namespace-changed event). Only when
    /// the size changed since the target last saw it. Best effort: kernels before 5.11 have
    /// no `revalidate_size`.
    fn revalidate_size(&self, e: &Export) {
        let Ok(size) = fs::metadata(&e.file).map(|m| m.len()) else { return };
        let mut sizes = self.sizes.lock().expect("sizes");
        if sizes.insert(e.nqn.clone(), size) == Some(size) {
            return;
        }
        let attr = self.subsystem(&e.nqn).join("namespaces/1/revalidate_size");
        if attr.exists()
            && let Err(err) = write(&attr, "1")
        {
            tracing::warn!(nqn = %e.nqn, error = %err, "nvmet: revalidate_size");
        }
    }

    fn device_path(&self, nqn: &str) -> PathBuf {
        PathBuf::from(read(&self.subsystem(nqn).join("namespaces/1/device_path")))
    }

    fn export(&self, e: &Export) -> io::Result<()> {
        let s = self.subsystem(&e.nqn);
        mkdir(&s)?;
        let ns = s.join("namespaces/1");
        mkdir(&ns)?;
        if read(&ns.join("enable")) == "1" {
            write(&ns.join("enable"), "0")?;
        }
        // Regular files: buffered I/O, since some filesystems (tmpfs) have no O_DIRECT.
        write(&ns.join("buffered_io"), "1")?;
        // The namespace keeps its identity across an unexport and export (a write pause for a
        // point-in-time copy, docs/snapshots.md): the kernel would otherwise draw a new UUID,
        // and a reconnecting initiator drops a namespace whose identifiers changed.
        let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, e.nqn.as_bytes());
        write(&ns.join("device_uuid"), &id.hyphenated().to_string())?;
        write(&ns.join("device_nguid"), &id.hyphenated().to_string())?;
        write(&ns.join("device_path"), &e.file.display().to_string())?;
        write(&ns.join("enable"), "1")?;
        if let Ok(m) = fs::metadata(&e.file) {
            self.sizes.lock().expect("sizes").insert(e.nqn.clone(), m.len());
        }
        self.set_hosts(e)?;
        let link = self.port_dir.join("subsystems").join(&e.nqn);
        if !link.is_symlink() {
            symlink(&s, &link)?;
        }
        tracing::info!(nqn = %e.nqn, file = %e.file.display(), "nvmet: exported");
        Ok(())
    }

    fn set_hosts(&self, e: &Export) -> io::Result<()> {
        let s = self.subsystem(&e.nqn);
        let current = self.allowed_hosts(&e.nqn);
        let revoked: Vec<&String> = current.difference(&e.hosts).collect();
        // The kernel refuses allowed-host links while allow_any_host is 1: switch it off
        // first, and back on only after the last link is gone.
        if !e.hosts.is_empty() {
            write(&s.join("attr_allow_any_host"), "0")?;
        }
        for host in &e.hosts {
            let host_dir = self.root.join("hosts").join(host);
            mkdir(&host_dir)?;
            let link = s.join("allowed_hosts").join(host);
            if !link.is_symlink() {
                symlink(&host_dir, &link)?;
            }
        }
        for host in &revoked {
            remove(&s.join("allowed_hosts").join(host))?;
        }
        if e.hosts.is_empty() {
            write(&s.join("attr_allow_any_host"), "1")?;
        }
        if !revoked.is_empty() && self.revoke_drops_connections {
            // Unlinking the subsystem from the port deletes its controllers on that port.
            let link = self.port_dir.join("subsystems").join(&e.nqn);
            if link.is_symlink() {
                remove(&link)?;
                symlink(&s, &link)?;
            }
        }
        Ok(())
    }

    fn unexport(&self, nqn: &str) -> io::Result<()> {
        let s = self.subsystem(nqn);
        remove(&self.port_dir.join("subsystems").join(nqn))?;
        // A subsystem still linked to another port belongs to someone else: leave it.
        let elsewhere = entries(&self.root.join("ports"))
            .iter()
            .any(|p| self.root.join("ports").join(p).join("subsystems").join(nqn).is_symlink());
        if !elsewhere {
            for host in self.allowed_hosts(nqn) {
                remove(&s.join("allowed_hosts").join(host))?;
            }
            let ns = s.join("namespaces/1");
            if ns.is_dir() {
                write(&ns.join("enable"), "0")?;
                remove(&ns)?;
            }
            remove(&s)?;
        }
        tracing::info!(nqn, "nvmet: unexported");
        Ok(())
    }
}

/// Parses `nvme-tcp-server-allow-host-name`: comma-separated host NQNs, empty = any host.
pub fn parse_hosts(value: &str) -> BTreeSet<String> {
    value.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_string).collect()
}
