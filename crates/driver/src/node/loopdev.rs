//! The loop data plane: the RDS backing file of a volume, attached through a loop device, for
//! machines without NVMe/TCP (development, CI, the quickstart with the embedded emulator).
//! Loop devices are found by their backing file in sysfs (`/sys/block/loopN/loop/backing_file`),
//! and the node only ever detaches loop devices whose file lies under `--loop-root`.

use std::{
    collections::HashMap,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use super::host::{BlockDevice, Host};
use crate::{core::context::key, error::ServiceError, exec};

#[derive(Debug, Clone)]
pub struct LoopPlane {
    /// Canonical `--loop-root`.
    pub root: PathBuf,
    /// Canonical roots of the backends that have their own (`--emulated-backends`), by name.
    pub backend_roots: HashMap<String, PathBuf>,
}

/// The host file of an RDS path under `root`; `None` when the path would escape it.
pub fn host_file(root: &Path, rds_path: &str) -> Option<PathBuf> {
    let rel = Path::new(rds_path.trim_start_matches('/'));
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

impl LoopPlane {
    pub fn new(root: &Path) -> Result<LoopPlane, String> {
        let root =
            root.canonicalize().map_err(|e| format!("--loop-root {}: {e}", root.display()))?;
        Ok(LoopPlane { root, backend_roots: HashMap::new() })
    }

    /// With a root per backend (each under `root`), chosen by the volume context's backend.
    pub fn with_backend_roots(mut self, roots: &HashMap<String, PathBuf>) -> Result<Self, String> {
        for (name, r) in roots {
            let r = r
                .canonicalize()
                .map_err(|e| format!("loop root of {name} {}: {e}", r.display()))?;
            if !r.starts_with(&self.root) {
                return Err(format!(
                    "loop root of {name} {} is outside {}",
                    r.display(),
                    self.root.display()
                ));
            }
            self.backend_roots.insert(name.clone(), r);
        }
        Ok(self)
    }

    /// The loop devices whose backing file is under the root: `(device, backing file)`.
    fn attached(&self, host: &Host) -> Vec<(BlockDevice, PathBuf)> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(host.sysfs.join("block")) else { return out };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                continue;
            }
            let Ok(file) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
                continue;
            };
            let file = PathBuf::from(file.trim().trim_end_matches(" (deleted)"));
            if !file.starts_with(&self.root) {
                continue;
            }
            if let Some(dev) = host.block_device_named(&name) {
                out.push((dev, file));
            }
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        out
    }

    /// Loop devices of files under the root named `<volume id>.img` (first list) and the
    /// other files under the root (second list, never touched).
    pub fn managed(&self, host: &Host) -> (Vec<super::host::Managed>, Vec<String>) {
        let (mut ok, mut refused) = (Vec::new(), Vec::new());
        for (dev, file) in self.attached(host) {
            let vid = file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".img"))
                .filter(|v| crate::core::ids::is_managed_volume_id(v));
            match vid {
                Some(v) => ok.push(super::host::Managed {
                    volume_id: v.to_string(),
                    key: file.display().to_string(),
                    device: Some(dev),
                }),
                None => refused.push(file.display().to_string()),
            }
        }
        (ok, refused)
    }

    /// The device of `volume_id` (backing file `<volume_id>.img` under the root), if attached.
    pub fn find(&self, host: &Host, volume_id: &str) -> Option<BlockDevice> {
        let want = format!("{volume_id}.img");
        self.attached(host)
            .into_iter()
            .find(|(_, f)| f.file_name().is_some_and(|n| n.to_string_lossy() == want))
            .map(|(d, _)| d)
    }

    /// The volume whose file the loop device `mm` is attached to (`<volume id>.img`).
    pub fn owner(&self, host: &Host, mm: (u32, u32)) -> Option<String> {
        let (_, file) = self.attached(host).into_iter().find(|(d, _)| d.major_minor == mm)?;
        let name = file.file_name()?.to_string_lossy().into_owned();
        name.strip_suffix(".img").map(String::from)
    }

    /// Attaches the volume's file (looking first: an attached file is reused).
    pub async fn attach(
        &self,
        host: &Host,
        volume_id: &str,
        ctx: &HashMap<String, String>,
    ) -> Result<BlockDevice, ServiceError> {
        let rds_path = ctx.get(key::VOLUME_PATH).ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "volume_context has no {:?}: the loop data plane attaches the RDS file it names; was the volume created by this driver?",
                key::VOLUME_PATH
            ))
        })?;
        let root =
            ctx.get(key::BACKEND).and_then(|b| self.backend_roots.get(b)).unwrap_or(&self.root);
        let file = host_file(root, rds_path).ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "volume_context {}={rds_path:?} is not a plain RDS file path",
                key::VOLUME_PATH
            ))
        })?;
        if file.file_name().is_none_or(|n| n.to_string_lossy() != format!("{volume_id}.img")) {
            return Err(ServiceError::InvalidArgument(format!(
                "volume_context {}={rds_path:?} does not belong to volume {volume_id}",
                key::VOLUME_PATH
            )));
        }
        if let Some((dev, _)) = self.attached(host).into_iter().find(|(_, f)| *f == file) {
            return Ok(dev);
        }
        if !file.exists() {
            return Err(ServiceError::NotFound(format!(
                "the backing file of volume {volume_id} ({}) does not exist: was the volume deleted?",
                file.display()
            )));
        }
        let f = file.to_string_lossy();
        let out = exec::run_ok("losetup", &["--find", "--show", &f], host.command_timeout)
            .await
            .map_err(ServiceError::exec(format!("attaching {f} to a loop device")))?;
        let dev = out.stdout.trim().trim_start_matches("/dev/").to_string();
        wait_named(host, &dev, Duration::from_secs(10)).await
    }

    /// Detaches the loop device of `volume_id`, only if its file is under the root.
    pub async fn detach(&self, host: &Host, dev: &BlockDevice) -> Result<(), ServiceError> {
        if !self.attached(host).iter().any(|(d, _)| d.name == dev.name) {
            return Err(ServiceError::Internal(format!(
                "refusing to detach /dev/{}: its backing file is not under the loop root {}",
                dev.name,
                self.root.display()
            )));
        }
        let p = dev.path();
        let p = p.to_string_lossy();
        exec::run_ok("losetup", &["-d", &p], host.command_timeout)
            .await
            .map_err(ServiceError::exec(format!("detaching {p}")))?;
        // While anything still has the device open the kernel only marks it for
        // auto-clear; it goes when the last opener closes it. Wait for that, bounded.
        let started = tokio::time::Instant::now();
        while self.attached(host).iter().any(|(d, _)| d.name == dev.name) {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(ServiceError::Unavailable(format!(
                    "{p} is marked for detach but something still has it open; it detaches when that closes (retry)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Makes the loop device see its file's new size (after ControllerExpandVolume).
    pub async fn refresh_size(&self, host: &Host, dev: &BlockDevice) -> Result<(), ServiceError> {
        let p = dev.path();
        let p = p.to_string_lossy();
        exec::run_ok("losetup", &["-c", &p], host.command_timeout)
            .await
            .map_err(ServiceError::exec(format!("refreshing the size of {p}")))?;
        Ok(())
    }
}

async fn wait_named(
    host: &Host,
    name: &str,
    deadline: Duration,
) -> Result<BlockDevice, ServiceError> {
    let started = tokio::time::Instant::now();
    loop {
        if let Some(d) = host.block_device_named(name)
            && Path::new("/dev").join(name).exists()
        {
            return Ok(d);
        }
        if started.elapsed() > deadline {
            return Err(ServiceError::Internal(format!(
                "loop device {name} did not appear within {}s",
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_paths_stay_under_the_root() {
        let root = Path::new("/srv/rds/fs");
        assert_eq!(
            host_file(root, "/storage-pool/metal-csi/pvc-1.img").unwrap(),
            Path::new("/srv/rds/fs/storage-pool/metal-csi/pvc-1.img")
        );
        assert!(host_file(root, "/storage-pool/../../etc/shadow").is_none());
        assert!(host_file(root, "").is_none());
        assert!(host_file(root, "/").is_none());
        assert!(host_file(root, "a/./b").is_some_and(|p| p.ends_with("a/b")));
    }
}
