//! Who still uses a block device, before the node detaches it: mounts (mountinfo), stacked
//! devices (`/sys/block/<dev>/holders`: device-mapper, md) and open file descriptors
//! (`/proc/<pid>/fd/*` whose target is the device node). Never `lsof`: BusyBox's applet
//! ignores its argument and its output was misparsed into a false "in use" (incident 8).

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::Path,
    time::Duration,
};

use super::host::{BlockDevice, split_dev};
use crate::core::mountinfo::Mount;

/// Every user of `dev`, described for an error message; empty = free.
pub fn users(sysfs: &Path, procfs: &Path, dev: &BlockDevice, mounts: &[Mount]) -> Vec<String> {
    let mut out: Vec<String> = mounts
        .iter()
        .filter(|m| m.major_minor == dev.major_minor)
        .map(|m| format!("mounted at {}", m.target))
        .collect();
    if let Ok(entries) =
        std::fs::read_dir(sysfs.join("class/block").join(&dev.name).join("holders"))
    {
        for e in entries.flatten() {
            out.push(format!("held by /dev/{}", e.file_name().to_string_lossy()));
        }
    }
    // A loop device over a device node of this device: kubelet pins a published block
    // volume this way (its backing file is the node it made the volume's device).
    if let Ok(entries) = std::fs::read_dir(sysfs.join("block")) {
        for e in entries.flatten() {
            let Ok(file) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
                continue;
            };
            let file = file.trim().trim_end_matches(" (deleted)");
            if super::host::block_node(Path::new(file)) == Some(dev.major_minor)
                || std::fs::metadata(file).is_ok_and(|m| {
                    m.file_type().is_block_device() && split_dev(m.rdev()) == dev.major_minor
                })
            {
                out.push(format!(
                    "backing loop device /dev/{} ({file})",
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    let Ok(procs) = std::fs::read_dir(procfs) else { return out };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            // metadata() follows the fd's link to the open file itself.
            let Ok(meta) = std::fs::metadata(fd.path()) else { continue };
            if meta.file_type().is_block_device() && split_dev(meta.rdev()) == dev.major_minor {
                let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                out.push(format!("open by process {pid} ({})", comm.trim()));
                break;
            }
        }
    }
    out
}

/// [`users`] off the async threads, bounded by `timeout` (a /proc walk on a busy node).
pub async fn users_within(
    sysfs: &Path,
    procfs: &Path,
    dev: &BlockDevice,
    mounts: Vec<Mount>,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let (s, p, d) = (sysfs.to_path_buf(), procfs.to_path_buf(), dev.clone());
    let task = tokio::task::spawn_blocking(move || users(&s, &p, &d, &mounts));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "checking who uses /dev/{} took more than {}s",
            dev.name,
            timeout.as_secs()
        )),
    }
}
