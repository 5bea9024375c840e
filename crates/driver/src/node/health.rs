//! Is a volume's mount (or device node) still backed by the volume's live device? Stale
//! mounts (docs/operations.md): (a) the mounted device is gone, (b) it is not the device the
//! volume resolves to now (an NVMe controller renumbered after a long outage, or a new device
//! that got the old one's number: its `major:minor` matches but nothing claims it), (c) a
//! read through it fails with EIO or hangs past a deadline.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{LazyLock, Mutex},
    time::Duration,
};

use super::host::{BlockDevice, Host};
use crate::{core::mountinfo::Mount, error::ServiceError};

/// Why a mount is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// The mounted `major:minor` has no device any more.
    DeviceGone { mounted: String },
    /// The volume is now another device.
    DeviceMismatch { mounted: String, current: String },
    /// The volume's device has the mounted number but the mount does not hold it: the mount
    /// belongs to an older device of the same number.
    Replaced { current: String },
    /// A read failed.
    IoError(String),
    /// A read did not answer within the probe deadline.
    IoHang(Duration),
}

impl Stale {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Stale::DeviceGone { .. } => "device_gone",
            Stale::DeviceMismatch { .. } | Stale::Replaced { .. } => "device_mismatch",
            Stale::IoError(_) => "io_error",
            Stale::IoHang(_) => "io_hang",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Stale::DeviceGone { mounted } => format!(
                "stale mount (device_gone): the mounted device {mounted} no longer exists; NodeStageVolume/NodePublishVolume repair it, running pods need a restart"
            ),
            Stale::DeviceMismatch { mounted, current } => format!(
                "stale mount (device_mismatch): the mount uses {mounted} but the volume is now {current}; NodeStageVolume/NodePublishVolume repair it, running pods need a restart"
            ),
            Stale::Replaced { current } => format!(
                "stale mount (device_mismatch): the mount belongs to an older device numbered like /dev/{current}, which it does not hold; NodeStageVolume/NodePublishVolume repair it, running pods need a restart"
            ),
            Stale::IoError(e) => format!("stale mount (io_error): reading the volume failed: {e}"),
            Stale::IoHang(d) => format!(
                "stale mount (io_hang): a read of the volume did not answer within {}s",
                d.as_secs()
            ),
        }
    }
}

/// What backs a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// The volume's current device, held by the mount.
    Live,
    /// Stale: see [`Stale`].
    Stale(Stale),
}

fn mm(m: (u32, u32)) -> String {
    format!("{}:{}", m.0, m.1)
}

/// Whether `mount` is backed by the volume's current device `current` (what the data plane
/// resolves the volume to now, if anything).
pub async fn backing(
    host: &Host,
    mount: &Mount,
    current: Option<&BlockDevice>,
) -> Result<Backing, ServiceError> {
    let Some(at) = host.block_device(mount.major_minor) else {
        return Ok(Backing::Stale(Stale::DeviceGone {
            mounted: format!("{} ({})", mount.source, mm(mount.major_minor)),
        }));
    };
    match current {
        Some(c) if c.major_minor != mount.major_minor => {
            Ok(Backing::Stale(Stale::DeviceMismatch {
                mounted: format!("/dev/{} ({})", at.name, mm(at.major_minor)),
                current: format!("/dev/{}", c.name),
            }))
        }
        Some(c) if !host.claimed(c).await? => {
            Ok(Backing::Stale(Stale::Replaced { current: c.name.clone() }))
        }
        Some(_) => Ok(Backing::Live),
        None => Ok(Backing::Stale(Stale::DeviceMismatch {
            mounted: format!("/dev/{} ({})", at.name, mm(at.major_minor)),
            current: "nothing (the volume has no device on this node)".into(),
        })),
    }
}

/// Devices with a probe still running (a hung read keeps its thread until the kernel answers;
/// at most one per device).
static IN_FLIGHT: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Reads through the volume: the mount's root directory (when `dir` is given) and the first
/// 4 KiB of the device with O_DIRECT, so the page cache cannot answer for a dead device.
pub async fn probe(dir: Option<&Path>, dev: &BlockDevice, timeout: Duration) -> Option<Stale> {
    let key = dev.name.clone();
    if !IN_FLIGHT.lock().expect("probes").insert(key.clone()) {
        return Some(Stale::IoHang(timeout));
    }
    let (dir, path): (Option<PathBuf>, PathBuf) = (dir.map(Path::to_path_buf), dev.path());
    let k = key.clone();
    let task = tokio::task::spawn_blocking(move || {
        let r = read_through(dir.as_deref(), &path);
        IN_FLIGHT.lock().expect("probes").remove(&k);
        r
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(Stale::IoError(e)),
        Ok(Err(e)) => {
            IN_FLIGHT.lock().expect("probes").remove(&key);
            Some(Stale::IoError(e.to_string()))
        }
        Err(_) => Some(Stale::IoHang(timeout)),
    }
}

fn read_through(dir: Option<&Path>, dev: &Path) -> Result<(), String> {
    use std::os::unix::{fs::OpenOptionsExt, io::AsRawFd};
    if let Some(d) = dir {
        let mut entries = std::fs::read_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if let Some(Err(e)) = entries.next() {
            return Err(format!("{}: {e}", d.display()));
        }
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .map_err(|e| format!("{}: {e}", dev.display()))?;
    let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("layout");
    // SAFETY: the layout has a non-zero size; the buffer is freed below.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    if buf.is_null() {
        return Err("out of memory".into());
    }
    // SAFETY: buf holds 4096 writable bytes; the fd is open.
    let n = unsafe { libc::pread(f.as_raw_fd(), buf.cast(), 4096, 0) };
    let err = std::io::Error::last_os_error();
    // SAFETY: allocated above with the same layout.
    unsafe { std::alloc::dealloc(buf, layout) };
    if n < 0 {
        return Err(format!("{}: {err}", dev.display()));
    }
    Ok(())
}
