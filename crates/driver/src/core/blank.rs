//! The format-safety proof (docs/node.md): the node formats a device only when every check
//! below positively says it is blank. Pure: the node adapter runs `blkid -p` and reads the
//! sampled regions, this module decides.
//!
//! The Go driver once reformatted live data because `blkid` exit 1 (device not readable yet)
//! was taken for "no filesystem" (incident 4). Here:
//! - `blkid -p` (low-level probe, no cache) must exit 2, "nothing found". Exit 0 means a
//!   filesystem, RAID member or partition table is there; 8 means ambivalent signatures; any
//!   other code means the probe did not work (unreadable), which is never proof.
//! - The sampled regions (the first and last MiB, where every common superblock, partition
//!   table and RAID label lives, plus evenly spaced samples in between) must read completely
//!   and contain only zero bytes. A new RDS disk is a sparse file and reads as zeros; anything
//!   else has been written to, and is not ours to destroy.

/// What `blkid -p -o export DEVICE` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Exit 0: signatures found (`TYPE=ext4`, `PTTYPE=gpt`, ...).
    Found { fs_type: Option<String>, summary: String },
    /// Exit 2: nothing recognised.
    Nothing,
    /// Exit 8: more than one signature.
    Ambivalent(String),
    /// Anything else: the device could not be probed.
    Unreadable(String),
}

/// Classifies a `blkid -p -o export` run by its exit code and output.
pub fn classify_blkid(code: Option<i32>, stdout: &str, stderr: &str) -> Probe {
    match code {
        Some(0) => {
            let mut fs_type = None;
            let mut keys = Vec::new();
            for line in stdout.lines() {
                let Some((k, v)) = line.split_once('=') else { continue };
                match k {
                    "TYPE" => fs_type = Some(v.to_string()),
                    "DEVNAME" => continue,
                    _ => {}
                }
                if matches!(k, "TYPE" | "PTTYPE" | "USAGE" | "LABEL" | "UUID") {
                    keys.push(format!("{k}={v}"));
                }
            }
            Probe::Found { fs_type, summary: keys.join(" ") }
        }
        Some(2) => Probe::Nothing,
        Some(8) => Probe::Ambivalent(stderr.trim().to_string()),
        other => Probe::Unreadable(format!(
            "blkid exit {}: {}",
            other.map_or("by signal".into(), |c| c.to_string()),
            stderr.trim()
        )),
    }
}

/// Result of reading the sampled regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Samples {
    /// Every byte read was zero.
    AllZero { bytes_read: u64 },
    /// The first non-zero byte found, at this device offset.
    NonZeroAt(u64),
    /// A read failed or came back short.
    Unreadable(String),
}

/// What the node may do with a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Proven blank: format it.
    Blank,
    /// Holds a filesystem of this type: mount it, never format.
    Filesystem(String),
    /// Holds something that is not a filesystem we mount (partition table, RAID member,
    /// raw data): refuse, never format.
    HoldsData(String),
    /// Could not be read: retry later, never format.
    Unreadable(String),
}

/// Offsets and lengths to sample on a device of `size` bytes: the first and last MiB and
/// `between` 64 KiB samples spread evenly in between, all 4 KiB aligned (for O_DIRECT).
pub fn sample_regions(size: u64, between: u64) -> Vec<(u64, u64)> {
    const MIB: u64 = 1 << 20;
    const SAMPLE: u64 = 64 << 10;
    const ALIGN: u64 = 4096;
    let size = size / ALIGN * ALIGN;
    if size <= 2 * MIB {
        return if size == 0 { Vec::new() } else { vec![(0, size)] };
    }
    let mut out = vec![(0, MIB)];
    let inner = size - 2 * MIB;
    if inner >= SAMPLE {
        for i in 1..=between {
            let off = MIB + (inner - SAMPLE) * i / (between + 1);
            out.push((off / ALIGN * ALIGN, SAMPLE));
        }
    }
    out.push((size - MIB, MIB));
    out
}

/// The decision. Only `Probe::Nothing` together with all-zero samples is proof of blank.
pub fn verdict(probe: &Probe, samples: &Samples) -> Verdict {
    match probe {
        Probe::Found { fs_type: Some(t), .. } if is_filesystem(t) => Verdict::Filesystem(t.clone()),
        Probe::Found { summary, .. } => Verdict::HoldsData(format!("blkid found {summary}")),
        Probe::Ambivalent(m) => Verdict::HoldsData(format!("blkid found several signatures: {m}")),
        Probe::Unreadable(m) => Verdict::Unreadable(m.clone()),
        Probe::Nothing => match samples {
            Samples::AllZero { bytes_read } if *bytes_read > 0 => Verdict::Blank,
            Samples::AllZero { .. } => Verdict::Unreadable("the device reports size 0".into()),
            Samples::NonZeroAt(off) => Verdict::HoldsData(format!(
                "no filesystem signature, but non-zero data at byte {off}"
            )),
            Samples::Unreadable(m) => Verdict::Unreadable(m.clone()),
        },
    }
}

/// Filesystems the node mounts as such (anything else found on a device is data we refuse to touch).
fn is_filesystem(t: &str) -> bool {
    matches!(t, "ext2" | "ext3" | "ext4" | "xfs" | "btrfs")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn only_nothing_plus_zeros_is_blank() {
        let zeros = Samples::AllZero { bytes_read: 4 << 20 };
        assert_eq!(verdict(&Probe::Nothing, &zeros), Verdict::Blank);
        assert!(
            matches!(verdict(&Probe::Nothing, &Samples::NonZeroAt(512)), Verdict::HoldsData(m) if m.contains("512"))
        );
        assert!(matches!(
            verdict(&Probe::Nothing, &Samples::Unreadable("EIO".into())),
            Verdict::Unreadable(_)
        ));
        assert!(matches!(
            verdict(&Probe::Nothing, &Samples::AllZero { bytes_read: 0 }),
            Verdict::Unreadable(_)
        ));
        // blkid exit 1 (the incident): never blank, whatever the samples say.
        let exit1 = classify_blkid(Some(1), "", "");
        assert!(matches!(verdict(&exit1, &zeros), Verdict::Unreadable(_)));
        assert!(matches!(
            verdict(&classify_blkid(None, "", ""), &zeros),
            Verdict::Unreadable(m) if m.contains("signal")
        ));
    }

    #[test]
    fn blkid_outputs() {
        let ext4 = classify_blkid(
            Some(0),
            "DEVNAME=/dev/loop0\nUUID=abc\nTYPE=ext4\nUSAGE=filesystem\n",
            "",
        );
        assert_eq!(verdict(&ext4, &Samples::NonZeroAt(0)), Verdict::Filesystem("ext4".into()));
        let gpt = classify_blkid(Some(0), "DEVNAME=/dev/loop0\nPTUUID=x\nPTTYPE=gpt\n", "");
        assert!(
            matches!(verdict(&gpt, &Samples::AllZero { bytes_read: 1 }), Verdict::HoldsData(m) if m.contains("PTTYPE=gpt"))
        );
        let lvm = classify_blkid(Some(0), "TYPE=LVM2_member\nUSAGE=raid\n", "");
        assert!(
            matches!(verdict(&lvm, &Samples::AllZero { bytes_read: 1 }), Verdict::HoldsData(m) if m.contains("LVM2_member"))
        );
        let amb = classify_blkid(
            Some(8),
            "",
            "ambivalent result (probably more filesystems on the device)",
        );
        assert!(matches!(
            verdict(&amb, &Samples::AllZero { bytes_read: 1 }),
            Verdict::HoldsData(_)
        ));
    }

    #[test]
    fn regions_cover_both_ends() {
        let r = sample_regions(1 << 30, 254);
        assert_eq!(r.len(), 256);
        assert_eq!(r[0], (0, 1 << 20));
        assert_eq!(*r.last().unwrap(), ((1 << 30) - (1 << 20), 1 << 20));
        assert_eq!(sample_regions(0, 30), []);
        assert_eq!(sample_regions(8192, 30), [(0, 8192)]);
    }

    proptest! {
        #[test]
        fn regions_stay_inside_and_aligned(size in 0u64..(1 << 44), between in 0u64..64) {
            for (off, len) in sample_regions(size, between) {
                prop_assert!(off + len <= size);
                prop_assert_eq!(off % 4096, 0);
                prop_assert_eq!(len % 4096, 0);
                prop_assert!(len > 0);
            }
        }

        #[test]
        fn nothing_but_zeros_formats(code in proptest::option::of(-5i32..300), out in ".{0,40}") {
            let probe = classify_blkid(code, &out, "");
            let v = verdict(&probe, &Samples::AllZero { bytes_read: 4096 });
            prop_assert_eq!(v == Verdict::Blank, code == Some(2));
        }
    }
}
