//! The fault-schedule soak (`rds-csi bench soak`, docs/performance.md) with fixed seeds: a
//! real controller process against the RDS emulator over real SSH, a seeded schedule of
//! creates, deletes, expansions, snapshots, restores, clones, publishes to one or two nodes,
//! unpublishes, stages and publishes on the loop data plane with files written, synced and
//! read back through ext4 (root), acknowledged block writes, refused conflicts and
//! controller restarts, with faults
//! injected (dropped connections before and after a command, latency, RouterOS errors,
//! reboots, a full pool). After every step and after the final settle, the RDS must match
//! what the driver acknowledged and every acknowledged write must read back.
//!
//! The long run is a command (`rds-csi bench soak --ops 1000 --seed S`); CI runs these.

mod support;

use std::path::Path;

use driver::bench::soak::{SoakReport, soak, soak_with};

async fn run(seed: u64, ops: usize) -> SoakReport {
    let exe = Path::new(env!("CARGO_BIN_EXE_rds-csi"));
    let report = soak(exe, ops, seed, None).await.unwrap_or_else(|f| panic!("{f}"));
    assert_eq!((report.seed, report.steps), (seed, ops));
    report
}

/// The schedule really ran what it says: every kind of step and fault, and answers other
/// than OK (the faults reached the driver).
fn covered(reports: &[SoakReport], loop_plane: bool) {
    let mut actions = std::collections::BTreeMap::new();
    let mut faults = std::collections::BTreeMap::new();
    let mut codes = std::collections::BTreeMap::new();
    for r in reports {
        for (k, v) in &r.actions {
            *actions.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &r.faults {
            *faults.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &r.codes {
            *codes.entry(k.clone()).or_insert(0) += v;
        }
    }
    for a in [
        "Create",
        "Delete",
        "Expand",
        "Snapshot",
        "DeleteSnapshot",
        "Restore",
        "Clone",
        "Publish",
        "Unpublish",
        "Write",
        "PublishConflict",
        "DeletePublished",
        "RestartController",
    ] {
        assert!(actions.get(a).copied().unwrap_or(0) > 0, "no {a} step in {actions:?}");
    }
    if loop_plane {
        for r in reports {
            assert_eq!(r.loop_plane, "on", "{r:?}");
        }
        for a in ["Stage", "WriteFile", "Unstage"] {
            assert!(actions.get(a).copied().unwrap_or(0) > 0, "no {a} step in {actions:?}");
        }
    }
    for f in ["DropBefore", "DropAfter", "Latency", "Error", "Reboot", "DiskFull"] {
        assert!(faults.get(f).copied().unwrap_or(0) > 0, "no {f} fault in {faults:?}");
    }
    assert!(codes.get("FailedPrecondition").copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(codes.keys().any(|c| c != "Ok" && c != "FailedPrecondition"), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_with_fixed_seeds() {
    // The loop data plane steps need root (loop devices, mkfs, mount): CI has it.
    let loop_plane = support::root_with(
        &["losetup", "blkid", "mkfs.ext4", "mount", "umount"],
        "the soak's loop data plane: loop devices, mkfs, mount",
        "soak",
    );
    let reports = vec![run(1, 150).await, run(2, 150).await];
    covered(&reports, loop_plane);
}

/// The checks catch what they must: a file planted on the RDS before step 5 fails that step,
/// and the prefix search names the six steps that reproduce it.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_file_fails_the_soak_at_its_step() {
    let exe = Path::new(env!("CARGO_BIN_EXE_rds-csi"));
    let f = soak_with(exe, 12, 3, None, Some(5)).await.expect_err("the stray file is seen");
    assert_eq!((f.seed, f.step), (3, 5), "{f}");
    assert!(f.what.contains("stray.img belongs to no disk"), "{f}");
    assert_eq!(f.prefix.len(), 6, "{f}");
    assert!(f.to_string().contains("rerun: rds-csi bench soak --seed 3 --ops 6"), "{f}");
}
