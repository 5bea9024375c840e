//! The node's view of this host: mountinfo (read under a deadline), mount and umount through
//! the command runner, device nodes (mknod), statvfs and block devices by `major:minor`.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, fs::FileTypeExt, fs::MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    core::mountinfo::{self, Mount},
    error::ServiceError,
    exec,
};

/// Deadline of a mountinfo read: a mount storm made the Go driver's reads hang (incident 2).
pub const MOUNTINFO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of mountinfo the node reads (about 150,000 mounts): a table larger than this is
/// a mount storm, reported instead of parsed.
pub const MOUNTINFO_MAX_BYTES: u64 = 32 << 20;

/// A block device as sysfs knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// `nvme0n1`, `loop3`.
    pub name: String,
    pub major_minor: (u32, u32),
    pub size: u64,
}

impl BlockDevice {
    pub fn path(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }
}

/// An attachment that passed both guards of the orphan cleanup: inside the managed prefix,
/// and exactly `<nqn prefix><volume id>` (loop: `<volume id>.img` under the loop root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub volume_id: String,
    /// The NQN (loop: the backing file).
    pub key: String,
    pub device: Option<BlockDevice>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub sysfs: PathBuf,
    pub procfs: PathBuf,
    pub command_timeout: Duration,
}

fn internal(msg: impl Into<String>) -> ServiceError {
    ServiceError::Internal(msg.into())
}

impl Host {
    /// Every mount, from `<procfs>/self/mountinfo`, under [`MOUNTINFO_TIMEOUT`].
    pub async fn mounts(&self) -> Result<Vec<Mount>, ServiceError> {
        let path = self.procfs.join("self/mountinfo");
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            use std::io::Read;
            let mut text = String::new();
            std::fs::File::open(path)?.take(MOUNTINFO_MAX_BYTES + 1).read_to_string(&mut text)?;
            Ok(text)
        });
        match tokio::time::timeout(MOUNTINFO_TIMEOUT, read).await {
            Ok(Ok(Ok(text))) if text.len() as u64 > MOUNTINFO_MAX_BYTES => {
                Err(ServiceError::Unavailable(format!(
                    "mountinfo is larger than {} MiB: a mount storm. Find the stacked mounts (`cut -d' ' -f5 /proc/self/mountinfo | sort | uniq -c | sort -n | tail`) and unmount them",
                    MOUNTINFO_MAX_BYTES >> 20
                )))
            }
            Ok(Ok(Ok(text))) => Ok(mountinfo::parse(&text)),
            Ok(Ok(Err(e))) => Err(internal(format!("cannot read mountinfo: {e}"))),
            Ok(Err(e)) => Err(internal(format!("mountinfo reader failed: {e}"))),
            Err(_) => Err(ServiceError::Unavailable(format!(
                "reading mountinfo took more than {}s (a mount storm?); check `wc -l /proc/self/mountinfo` on the node",
                MOUNTINFO_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The mounts at `target` (stacked mounts: last is on top).
    pub async fn mounts_at(&self, target: &Path) -> Result<Vec<Mount>, ServiceError> {
        let t = target.to_string_lossy();
        Ok(mountinfo::at(&self.mounts().await?, &t).into_iter().cloned().collect())
    }

    /// `mount -t FS -o OPTIONS DEVICE TARGET`.
    pub async fn mount(
        &self,
        device: &Path,
        target: &Path,
        fs_type: &str,
        options: &[String],
    ) -> Result<(), ServiceError> {
        let opts = options.join(",");
        let (d, t) = (device.to_string_lossy(), target.to_string_lossy());
        let mut args = vec!["-t", fs_type];
        if !opts.is_empty() {
            args.extend(["-o", opts.as_str()]);
        }
        args.extend([d.as_ref(), t.as_ref()]);
        exec::run_ok("mount", &args, self.command_timeout)
            .await
            .map_err(ServiceError::exec(format!("mounting {d} at {t}")))?;
        Ok(())
    }

    /// `mount --bind -o OPTIONS SOURCE TARGET` (util-linux applies ro/nosuid/... by a remount).
    pub async fn bind(
        &self,
        source: &Path,
        target: &Path,
        options: &[String],
    ) -> Result<(), ServiceError> {
        let opts = options.join(",");
        let (s, t) = (source.to_string_lossy(), target.to_string_lossy());
        exec::run_ok("mount", &["--bind", "-o", &opts, &s, &t], self.command_timeout)
            .await
            .map_err(ServiceError::exec(format!("bind-mounting {s} at {t}")))?;
        Ok(())
    }

    /// `umount TARGET`; a busy target is FailedPrecondition (something still uses it).
    pub async fn umount(&self, target: &Path) -> Result<(), ServiceError> {
        let t = target.to_string_lossy();
        let out = exec::run("umount", &[&t], self.command_timeout)
            .await
            .map_err(ServiceError::exec(format!("unmounting {t}")))?;
        if out.success() {
            return Ok(());
        }
        let text = out.text();
        if text.contains("busy") {
            return Err(ServiceError::FailedPrecondition(format!(
                "cannot unmount {t}: it is busy ({text}); a process still uses the volume. Stop it and retry"
            )));
        }
        Err(internal(format!("unmounting {t} failed: {text}")))
    }

    /// Unmounts every mount stacked at `target`, top first.
    pub async fn umount_all(&self, target: &Path) -> Result<usize, ServiceError> {
        self.umount_down_to(target, 0).await
    }

    /// Unmounts the top mounts stacked at `target` until `keep` are left (a mount storm is
    /// cleaned down to one); bounded by the count found at the start.
    pub async fn umount_down_to(&self, target: &Path, keep: usize) -> Result<usize, ServiceError> {
        let found = self.mounts_at(target).await?.len();
        let mut n = 0;
        while self.mounts_at(target).await?.len() > keep {
            self.umount(target).await?;
            n += 1;
            if n > found + 1 {
                return Err(internal(format!(
                    "{} stays mounted after {n} unmounts",
                    target.display()
                )));
            }
        }
        Ok(n)
    }

    /// `umount -l TARGET`: only for a stale mount whose device is gone, when a plain unmount
    /// is refused because a process still sits in it (its I/O fails anyway).
    pub async fn umount_lazy(&self, target: &Path) -> Result<(), ServiceError> {
        let t = target.to_string_lossy();
        exec::run_ok("umount", &["-l", &t], self.command_timeout)
            .await
            .map_err(ServiceError::exec(format!("lazily unmounting the stale mount {t}")))?;
        Ok(())
    }

    /// Whether something (a mounted filesystem, an exclusive opener) claims the block device
    /// `dev`: `open(O_EXCL)` on a block device fails with EBUSY exactly then. A mount whose
    /// `major:minor` is `dev`'s but that does not claim it is a stale mount of an older
    /// device that had the same number.
    pub async fn claimed(&self, dev: &BlockDevice) -> Result<bool, ServiceError> {
        let path = dev.path();
        let shown = path.display().to_string();
        let open = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(&path)
        });
        match tokio::time::timeout(Duration::from_secs(10), open).await {
            Ok(Ok(Ok(_))) => Ok(false),
            Ok(Ok(Err(e))) if e.raw_os_error() == Some(libc::EBUSY) => Ok(true),
            Ok(Ok(Err(e))) => {
                Err(internal(format!("cannot open {shown} to see who claims it: {e}")))
            }
            Ok(Err(e)) => Err(internal(format!("open {shown}: {e}"))),
            Err(_) => {
                Err(ServiceError::Unavailable(format!("opening {shown} did not answer within 10s")))
            }
        }
    }

    /// The block device `major:minor`, if it exists (`/sys/dev/block/M:m` links to it).
    pub fn block_device(&self, major_minor: (u32, u32)) -> Option<BlockDevice> {
        let link = self.sysfs.join(format!("dev/block/{}:{}", major_minor.0, major_minor.1));
        let name = std::fs::read_link(link).ok()?.file_name()?.to_string_lossy().into_owned();
        self.block_device_named(&name).filter(|d| d.major_minor == major_minor)
    }

    /// The block device called `name` (`/sys/class/block/NAME`).
    pub fn block_device_named(&self, name: &str) -> Option<BlockDevice> {
        let dir = self.sysfs.join("class/block").join(name);
        let dev = std::fs::read_to_string(dir.join("dev")).ok()?;
        let (a, b) = dev.trim().split_once(':')?;
        let sectors: u64 = std::fs::read_to_string(dir.join("size")).ok()?.trim().parse().ok()?;
        Some(BlockDevice {
            name: name.to_string(),
            major_minor: (a.parse().ok()?, b.parse().ok()?),
            size: sectors * 512,
        })
    }
}

/// `(major, minor)` of a device number.
pub fn split_dev(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

/// The device number of `path` if it is a block device node.
pub fn block_node(path: &Path) -> Option<(u32, u32)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type().is_block_device().then(|| split_dev(meta.rdev()))
}

fn cstring(path: &Path) -> Result<CString, ServiceError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        ServiceError::InvalidArgument(format!("path {} contains a NUL byte", path.display()))
    })
}

/// Creates a block device node for `major:minor` at `path` (mode 0660, or 0440 read-only).
/// Block volumes are published this way, never by bind-mounting from /dev (incident 2).
pub fn mknod_block(
    path: &Path,
    major_minor: (u32, u32),
    read_only: bool,
) -> Result<(), ServiceError> {
    let c = cstring(path)?;
    let mode = libc::S_IFBLK | if read_only { 0o440 } else { 0o660 };
    // SAFETY: c is a valid NUL-terminated path; makedev is arithmetic.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major_minor.0, major_minor.1)) };
    if rc != 0 {
        return Err(internal(format!(
            "mknod {} ({}:{}): {}",
            path.display(),
            major_minor.0,
            major_minor.1,
            std::io::Error::last_os_error()
        )));
    }
    // mknod honours the umask; set the mode exactly.
    let c_mode = if read_only { 0o440 } else { 0o660 };
    // SAFETY: as above.
    if unsafe { libc::chmod(c.as_ptr(), c_mode) } != 0 {
        return Err(internal(format!(
            "chmod {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Filesystem usage of a mounted path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub total: u64,
    pub available: u64,
    pub used: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    pub inodes_used: u64,
}

/// statvfs(3) of `path`, run off the async threads under `timeout` (a dead mount can block).
pub async fn statvfs(path: &Path, timeout: Duration) -> Result<FsUsage, ServiceError> {
    let c = cstring(path)?;
    let p = path.display().to_string();
    let call = tokio::task::spawn_blocking(move || {
        // SAFETY: zeroed statvfs is a valid out-parameter; c is NUL-terminated.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let f = s.f_frsize as u64;
        let total = s.f_blocks as u64 * f;
        let free = s.f_bfree as u64 * f;
        Ok(FsUsage {
            total,
            available: s.f_bavail as u64 * f,
            used: total.saturating_sub(free),
            inodes: s.f_files as u64,
            inodes_free: s.f_ffree as u64,
            inodes_used: (s.f_files as u64).saturating_sub(s.f_ffree as u64),
        })
    });
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(Ok(u))) => Ok(u),
        Ok(Ok(Err(e))) => Err(internal(format!("statvfs {p}: {e}"))),
        Ok(Err(e)) => Err(internal(format!("statvfs {p}: {e}"))),
        Err(_) => Err(ServiceError::Unavailable(format!(
            "statvfs {p} did not answer within {}s: the mount may be dead",
            timeout.as_secs()
        ))),
    }
}
