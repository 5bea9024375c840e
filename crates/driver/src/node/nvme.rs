//! The NVMe/TCP data plane, native: connect by writing the option string to
//! `/dev/nvme-fabrics`, disconnect through `/sys/class/nvme/<ctrl>/delete_controller`, find
//! the namespace by NQN in sysfs (`nvme_sysfs`). nvme-cli is not needed. Every entry point
//! checks that the NQN is inside the managed prefix, independently of start-up validation.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use routeros::types::Nqn;

use super::host::{BlockDevice, Host};
use crate::{
    core::context::key,
    core::fabrics::{self, Connect},
    error::ServiceError,
    nvme_sysfs::{Controller, Sysfs},
};

/// Deadline of one write to /dev/nvme-fabrics (the kernel connects synchronously).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct NvmePlane {
    pub managed_prefix: String,
    /// A volume's NQN is exactly this plus its id (the second guard, `fabrics::is_volume_nqn`).
    pub nqn_prefix: String,
    pub host_nqn: Nqn,
    /// `/dev/nvme-fabrics`.
    pub fabrics: PathBuf,
    pub device_wait: Duration,
}

/// Reads the host NQN from `file`, or generates one (`nqn.2014-08.org.nvmexpress:uuid:<v4>`,
/// as nvme-cli does) and writes it there so it stays the same across restarts.
pub fn host_nqn(file: &Path) -> Result<Nqn, String> {
    match std::fs::read_to_string(file) {
        Ok(s) => Nqn::new(s.trim()).map_err(|e| format!("{}: {e}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let nqn = format!("nqn.2014-08.org.nvmexpress:uuid:{}", uuid::Uuid::new_v4());
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::write(file, format!("{nqn}\n"))
                .map_err(|e| format!("{}: {e}", file.display()))?;
            tracing::info!(file = %file.display(), %nqn, "generated this host's NVMe NQN");
            Nqn::new(&nqn).map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

fn invalid(msg: String) -> ServiceError {
    ServiceError::InvalidArgument(msg)
}

/// The connection parameters of a volume, from its volume context (docs/storageclass.md).
pub fn connect_params(
    ctx: &HashMap<String, String>,
    managed_prefix: &str,
    host_nqn: &Nqn,
) -> Result<Connect, ServiceError> {
    let get = |k: &str| ctx.get(k).map(String::as_str);
    let nqn =
        get(key::NQN).ok_or_else(|| invalid(format!("volume_context has no {:?}", key::NQN)))?;
    let nqn = Nqn::new(nqn).map_err(|e| invalid(format!("volume_context nqn: {e}")))?;
    if !fabrics::managed(managed_prefix, nqn.as_str()) {
        return Err(invalid(format!(
            "NQN {nqn} is outside the managed prefix {managed_prefix}; this node never connects to it (set --managed-nqn-prefix if the controller uses another prefix)"
        )));
    }
    let address = get(key::NVME_ADDRESS).or(get(key::RDS_ADDRESS)).ok_or_else(|| {
        invalid(format!(
            "volume_context has no {:?} (nor {:?})",
            key::NVME_ADDRESS,
            key::RDS_ADDRESS
        ))
    })?;
    let address: IpAddr = address.parse().map_err(|_| {
        invalid(format!("volume_context {}={address:?} is not an IP address; set the StorageClass parameter nvmeAddress to the RDS storage IP", key::NVME_ADDRESS))
    })?;
    let num = |k: &str, default: i64, min: i64, max: i64| -> Result<i64, ServiceError> {
        match get(k) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(invalid(format!(
                    "volume_context {k}={v:?} is invalid: expected {min}..{max}"
                ))),
            },
        }
    };
    Ok(Connect {
        address,
        port: num(key::NVME_PORT, 4420, 1, 65535)? as u16,
        nqn,
        host_nqn: host_nqn.clone(),
        ctrl_loss_tmo: num(key::CTRL_LOSS_TMO, -1, -1, i32::MAX as i64)? as i32,
        reconnect_delay: num(key::RECONNECT_DELAY, 5, 1, 3600)? as u32,
        keep_alive_tmo: match get(key::KEEP_ALIVE_TMO) {
            None => None,
            Some(_) => Some(num(key::KEEP_ALIVE_TMO, 0, 0, 3600)? as u32),
        },
    })
}

/// Deadline of a write to a controller's `delete_controller` or `rescan_controller`: the
/// kernel tears the controller down (or rescans) inside the write, which can hang on a dead
/// connection.
const DELETE_TIMEOUT: Duration = Duration::from_secs(15);

/// Writes `1` to a sysfs attribute off the async threads, bounded by `timeout`.
async fn write_bounded(path: PathBuf, timeout: Duration) -> Result<(), String> {
    let shown = path.display().to_string();
    let write = tokio::task::spawn_blocking(move || std::fs::write(&path, "1"));
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("{shown}: {e}")),
        Ok(Err(e)) => Err(format!("{shown}: {e}")),
        Err(_) => Err(format!("{shown}: no answer within {}s", timeout.as_secs())),
    }
}

/// Controller states in which the kernel keeps (or is restoring) the connection.
fn usable(state: &str) -> bool {
    matches!(state, "live" | "connecting" | "resetting" | "new")
}

impl NvmePlane {
    fn sysfs(host: &Host) -> Sysfs {
        Sysfs::new(&host.sysfs)
    }

    fn guard(&self, nqn: &str) -> Result<(), ServiceError> {
        if fabrics::managed(&self.managed_prefix, nqn) {
            Ok(())
        } else {
            Err(ServiceError::Internal(format!(
                "refusing to touch NVMe subsystem {nqn}: outside the managed prefix {}",
                self.managed_prefix
            )))
        }
    }

    /// Whether `nqn` is the NQN of `volume_id`: exactly the NQN prefix plus a managed volume
    /// id, inside the managed prefix.
    pub fn is_volume_nqn(&self, volume_id: &str, nqn: &str) -> bool {
        fabrics::is_volume_nqn(&self.nqn_prefix, &self.managed_prefix, volume_id, nqn)
    }

    /// The NQN of `volume_id` when a controller for it is connected.
    pub fn nqn_of(&self, host: &Host, volume_id: &str) -> Option<String> {
        let class = host.sysfs.join("class/nvme");
        let want = format!("{}{volume_id}", self.nqn_prefix);
        if !self.is_volume_nqn(volume_id, &want) {
            return None;
        }
        std::fs::read_dir(class)
            .ok()?
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("subsysnqn")).ok())
            .any(|s| s.trim() == want)
            .then_some(want)
    }

    /// The volume whose namespace is the device `mm` (among connected managed subsystems).
    pub fn owner(&self, host: &Host, mm: (u32, u32)) -> Option<String> {
        let class = host.sysfs.join("class/nvme");
        let mut nqns: Vec<String> = std::fs::read_dir(class)
            .ok()?
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("subsysnqn")).ok())
            .map(|s| s.trim().to_string())
            .filter(|n| fabrics::managed(&self.managed_prefix, n))
            .collect();
        nqns.dedup();
        nqns.into_iter().find_map(|nqn| {
            let hit = Self::sysfs(host)
                .namespaces(&nqn)
                .ok()?
                .iter()
                .any(|ns| ns.major_minor == Some(mm));
            hit.then(|| nqn.strip_prefix(&self.nqn_prefix).map(String::from)).flatten()
        })
    }

    /// Every connected subsystem inside the managed prefix: those of the exact form
    /// `<nqn prefix><volume id>` (first list) and the others (second list, never touched).
    /// Subsystems outside the managed prefix are not even listed.
    pub fn managed(&self, host: &Host) -> (Vec<super::host::Managed>, Vec<String>) {
        let mut nqns: Vec<String> = std::fs::read_dir(host.sysfs.join("class/nvme"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("subsysnqn")).ok())
                    .map(|s| s.trim().to_string())
                    .filter(|n| fabrics::managed(&self.managed_prefix, n))
                    .collect()
            })
            .unwrap_or_default();
        nqns.sort();
        nqns.dedup();
        let (mut ok, mut refused) = (Vec::new(), Vec::new());
        for nqn in nqns {
            match nqn.strip_prefix(&self.nqn_prefix) {
                Some(vid) if self.is_volume_nqn(vid, &nqn) => ok.push(super::host::Managed {
                    volume_id: vid.to_string(),
                    device: self.device(host, &nqn),
                    key: nqn,
                }),
                _ => refused.push(nqn),
            }
        }
        (ok, refused)
    }

    /// The namespace device of `nqn`, if any.
    pub fn device(&self, host: &Host, nqn: &str) -> Option<BlockDevice> {
        let ns = Self::sysfs(host).namespaces(nqn).ok()?.into_iter().next()?;
        Some(BlockDevice { major_minor: ns.major_minor?, size: ns.size, name: ns.name })
    }

    pub fn find(&self, host: &Host, volume_id: &str) -> Option<(String, Option<BlockDevice>)> {
        let nqn = self.nqn_of(host, volume_id)?;
        let dev = self.device(host, &nqn);
        Some((nqn, dev))
    }

    pub fn controllers(&self, host: &Host, nqn: &str) -> Vec<Controller> {
        Self::sysfs(host).controllers(nqn).unwrap_or_default()
    }

    /// Connects (looking first) and waits for the namespace device.
    pub async fn attach(&self, host: &Host, c: &Connect) -> Result<BlockDevice, ServiceError> {
        let nqn = c.nqn.as_str();
        self.guard(nqn)?;
        let addr = c.address.to_string();
        let existing = self.controllers(host, nqn);
        let ours = existing.iter().find(|k| k.connects_to(&addr, c.port) && usable(&k.state));
        match (ours, existing.first()) {
            (Some(k), _) => {
                tracing::info!(controller = %k.name, state = %k.state, %nqn, "already connected; reusing the controller");
            }
            (None, Some(other)) if usable(&other.state) => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "{nqn} is already connected through {} to {} (state {}), not to {addr}:{}; disconnect it (echo 1 > /sys/class/nvme/{}/delete_controller) or fix the volume's nvmeAddress",
                    other.name, other.address, other.state, c.port, other.name
                )));
            }
            _ => self.connect(c).await?,
        }
        self.wait_device(host, nqn).await
    }

    async fn connect(&self, c: &Connect) -> Result<(), ServiceError> {
        let options = c.options();
        let fabrics = self.fabrics.clone();
        tracing::info!(%options, "connecting NVMe/TCP");
        let write = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&fabrics)?;
            f.write_all(options.as_bytes())?;
            let mut answer = String::new();
            let _ = f.read_to_string(&mut answer);
            Ok(answer)
        });
        match tokio::time::timeout(CONNECT_TIMEOUT, write).await {
            Ok(Ok(Ok(answer))) => {
                tracing::info!(answer = %answer.trim(), nqn = %c.nqn, "NVMe/TCP controller created");
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(ServiceError::Unavailable(format!(
                "connecting NVMe/TCP to {}:{} for {}: {e} (is the RDS reachable and the disk exported?)",
                c.address, c.port, c.nqn
            ))),
            Ok(Err(e)) => Err(ServiceError::Internal(format!("NVMe connect task: {e}"))),
            Err(_) => Err(ServiceError::Unavailable(format!(
                "connecting NVMe/TCP to {}:{} did not finish within {}s",
                c.address,
                c.port,
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn wait_device(&self, host: &Host, nqn: &str) -> Result<BlockDevice, ServiceError> {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(d) = self.device(host, nqn)
                && d.size > 0
                && d.path().exists()
            {
                return Ok(d);
            }
            if started.elapsed() > self.device_wait {
                return Err(ServiceError::Unavailable(format!(
                    "connected to {nqn} but no block device with a size appeared within {}s",
                    self.device_wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes every controller of `nqn` and waits until they are gone. A failure is an error.
    pub async fn detach(&self, host: &Host, nqn: &str) -> Result<(), ServiceError> {
        self.guard(nqn)?;
        for k in self.controllers(host, nqn) {
            let path = host.sysfs.join("class/nvme").join(&k.name).join("delete_controller");
            tracing::info!(controller = %k.name, %nqn, "disconnecting NVMe/TCP");
            if let Err(e) = write_bounded(path, DELETE_TIMEOUT).await {
                // Already being deleted by the kernel: fine if it disappears below.
                tracing::warn!(controller = %k.name, error = %e, "delete_controller");
            }
        }
        let started = tokio::time::Instant::now();
        loop {
            let left = self.controllers(host, nqn);
            if left.is_empty() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(15) {
                return Err(ServiceError::Internal(format!(
                    "disconnecting {nqn}: controller(s) {} still present after 15s",
                    left.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks the controller to rescan namespaces (after ControllerExpandVolume).
    pub async fn rescan(&self, host: &Host, nqn: &str) -> Result<(), ServiceError> {
        self.guard(nqn)?;
        for k in self.controllers(host, nqn) {
            let path = host.sysfs.join("class/nvme").join(&k.name).join("rescan_controller");
            write_bounded(path, DELETE_TIMEOUT).await.map_err(ServiceError::Unavailable)?;
        }
        Ok(())
    }

    /// `None` when every controller of `nqn` is live; else why the volume is not healthy.
    pub fn abnormal(&self, host: &Host, nqn: &str) -> Option<String> {
        let ks = self.controllers(host, nqn);
        if ks.is_empty() {
            return Some(format!("no NVMe/TCP controller is connected for {nqn}"));
        }
        ks.iter().find(|k| k.state != "live").map(|k| {
            format!(
                "NVMe/TCP controller {} for {nqn} is {} (the RDS is unreachable; I/O waits up to ctrl_loss_tmo)",
                k.name, k.state
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parameters_from_the_volume_context() {
        let host = Nqn::new("nqn.2014-08.org.nvmexpress:uuid:h").unwrap();
        let p = "nqn.2000-02.com.mikrotik:pvc-";
        let c = connect_params(
            &ctx(&[
                ("nqn", "nqn.2000-02.com.mikrotik:pvc-1"),
                ("nvmeAddress", "10.0.0.5"),
                ("nvmePort", "4421"),
                ("keepAliveTmo", "7"),
            ]),
            p,
            &host,
        )
        .unwrap();
        assert_eq!(
            c.options(),
            "transport=tcp,traddr=10.0.0.5,trsvcid=4421,nqn=nqn.2000-02.com.mikrotik:pvc-1,hostnqn=nqn.2014-08.org.nvmexpress:uuid:h,ctrl_loss_tmo=-1,reconnect_delay=5,keep_alive_tmo=7"
        );
        let e = connect_params(
            &ctx(&[("nqn", "nqn.2000-02.com.mikrotik:nixos-n1"), ("nvmeAddress", "10.0.0.5")]),
            p,
            &host,
        )
        .unwrap_err();
        assert!(e.to_string().contains("outside the managed prefix"), "{e}");
        let e = connect_params(
            &ctx(&[("nqn", "nqn.2000-02.com.mikrotik:pvc-1"), ("nvmeAddress", "rds.local")]),
            p,
            &host,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not an IP address"), "{e}");
        let e = connect_params(
            &ctx(&[
                ("nqn", "nqn.2000-02.com.mikrotik:pvc-1"),
                ("rdsAddress", "10.0.0.1"),
                ("nvmePort", "0"),
            ]),
            p,
            &host,
        )
        .unwrap_err();
        assert!(e.to_string().contains("nvmePort"), "{e}");
    }

    #[test]
    fn host_nqn_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("nvme/hostnqn");
        let a = host_nqn(&f).unwrap();
        assert!(a.as_str().starts_with("nqn.2014-08.org.nvmexpress:uuid:"));
        assert_eq!(host_nqn(&f).unwrap(), a, "persisted");
    }
}
