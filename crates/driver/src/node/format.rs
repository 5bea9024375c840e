//! Format safety (I/O half; the decision is `core::blank`): probe with `blkid -p`, read the
//! sampled regions with O_DIRECT (no stale page cache), retry an unreadable device with
//! backoff, and format only a device proven blank. mkfs never discards (the device may be
//! terabytes over the network) and initialises lazily.

use std::{
    fs::File,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    core::blank::{self, Probe, Samples, Verdict},
    error::ServiceError,
    exec,
};

/// Samples between the first and last MiB: with those two, 18 MiB read per check, a fraction
/// of a second over NVMe/TCP.
const SAMPLES_BETWEEN: u64 = 254;

/// Runs `blkid -p -o export DEVICE` (low-level probe, bypassing the blkid cache).
pub async fn probe(device: &Path, timeout: Duration) -> Probe {
    let d = device.to_string_lossy();
    match exec::run("blkid", &["-p", "-o", "export", &d], timeout).await {
        Ok(out) => blank::classify_blkid(out.code, &out.stdout, &out.stderr),
        Err(e) => Probe::Unreadable(e.to_string()),
    }
}

/// A 4 KiB-aligned buffer, as O_DIRECT needs.
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let buf = vec![0u8; len + 4096];
    let start = buf.as_ptr().align_offset(4096);
    (buf, start)
}

fn read_samples(device: PathBuf, size: u64) -> Samples {
    let open = |direct: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.read(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(&device)
    };
    let file: File = match open(true).or_else(|_| open(false)) {
        Ok(f) => f,
        Err(e) => return Samples::Unreadable(format!("cannot open {}: {e}", device.display())),
    };
    let mut total = 0;
    for (offset, len) in blank::sample_regions(size, SAMPLES_BETWEEN) {
        let (mut buf, start) = aligned(len as usize);
        let region = &mut buf[start..start + len as usize];
        let mut done = 0usize;
        while done < region.len() {
            match file.read_at(&mut region[done..], offset + done as u64) {
                Ok(0) => {
                    return Samples::Unreadable(format!(
                        "short read at byte {} of {}",
                        offset + done as u64,
                        device.display()
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Samples::Unreadable(format!(
                        "read at byte {} of {}: {e}",
                        offset + done as u64,
                        device.display()
                    ));
                }
            }
        }
        if let Some(i) = region.iter().position(|b| *b != 0) {
            return Samples::NonZeroAt(offset + i as u64);
        }
        total += len;
    }
    Samples::AllZero { bytes_read: total }
}

/// One full inspection: probe, then read the samples (under `timeout`).
pub async fn inspect(device: &Path, size: u64, timeout: Duration) -> Verdict {
    let probe = probe(device, timeout).await;
    let samples = if probe == Probe::Nothing {
        let read = tokio::task::spawn_blocking({
            let device = device.to_path_buf();
            move || read_samples(device, size)
        });
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => Samples::Unreadable(e.to_string()),
            Err(_) => Samples::Unreadable(format!(
                "reading samples took more than {}s",
                timeout.as_secs()
            )),
        }
    } else {
        Samples::AllZero { bytes_read: 0 }
    };
    blank::verdict(&probe, &samples)
}

/// Inspects until the verdict is not `Unreadable`, `attempts` times with doubling delays;
/// an unreadable device is refused (UNAVAILABLE, so the CO retries later), never formatted.
pub async fn inspect_with_retries(
    device: &Path,
    size: u64,
    timeout: Duration,
    attempts: u32,
    first_delay: Duration,
) -> Result<Verdict, ServiceError> {
    let mut delay = first_delay;
    let mut last = String::new();
    for attempt in 1..=attempts {
        match inspect(device, size, timeout).await {
            Verdict::Unreadable(why) => {
                tracing::warn!(device = %device.display(), attempt, %why, "device not readable; not formatting");
                last = why;
                if attempt < attempts {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
            v => return Ok(v),
        }
    }
    Err(ServiceError::Unavailable(format!(
        "{} could not be read after {attempts} attempts ({last}); refusing to format it, since an unreadable device is not proof of a blank one. Check the NVMe/TCP connection and retry",
        device.display()
    )))
}

/// `mkfs` for `fs_type` without discard, with lazy initialisation, and without `-F`/`-f`: if
/// mkfs itself finds a signature the probe missed, it refuses (stdin is closed) and so do we.
pub async fn mkfs(device: &Path, fs_type: &str, timeout: Duration) -> Result<(), ServiceError> {
    let d = device.to_string_lossy();
    let (program, args): (&str, Vec<&str>) = match fs_type {
        "ext4" => {
            ("mkfs.ext4", vec!["-q", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", &d])
        }
        "xfs" => ("mkfs.xfs", vec!["-q", "-K", &d]),
        other => {
            return Err(ServiceError::InvalidArgument(format!(
                "filesystem {other:?} is not supported: use ext4 or xfs"
            )));
        }
    };
    exec::run_ok(program, &args, timeout)
        .await
        .map_err(ServiceError::exec(format!("formatting {d} as {fs_type}")))?;
    Ok(())
}
