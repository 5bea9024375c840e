//! The Node service, black-box, on real loop devices, mkfs and mounts: the real `rds-csi serve
//! --controller --node --emulated-rds DIR --data-plane loop`, driven over gRPC.
//!
//! Needs root (loop devices, mount) and e2fsprogs, xfsprogs, util-linux, mount (.ci/run installs
//! them). Outside CI without root, each test prints why it is skipped; in CI it fails instead.

mod support;

use std::{
    collections::HashMap,
    os::unix::fs::{FileExt, FileTypeExt, MetadataExt},
    path::Path,
    process::Command,
};

use csi::v1::*;
use support::node::*;
use tonic::Code;

#[tokio::test]
async fn filesystem_volumes_ext4_and_xfs_through_every_rpc_twice() {
    if !root_available() {
        return;
    }
    let mut node = start(&[]).await;
    for fs in ["ext4", "xfs"] {
        let v = node.create(&format!("pvc-fs-{fs}"), false).await;
        let staging = node.staging(&v);
        let c = cap(false, fs, &["noatime"]);
        node.stage(&v, c.clone()).await.unwrap();
        node.stage(&v, c.clone()).await.expect("stage again: idempotent");
        let m = mounts_at(&staging);
        assert_eq!(m.len(), 1, "{fs}: a second stage must not stack mounts");
        assert_eq!(m[0].fs_type, fs);
        for o in ["nosuid", "nodev", "noexec", "noatime"] {
            assert!(m[0].options.iter().any(|x| x == o), "{fs}: {o} missing in {:?}", m[0].options);
        }
        assert_eq!(blkid(&v.file, "TYPE"), fs, "formatted (visible in the RDS file)");
        assert_eq!(loops_of(&v.file).len(), 1);

        let target = node.path(&format!("pod-{fs}/mount"));
        node.publish(&v, &target, c.clone(), false).await.unwrap();
        node.publish(&v, &target, c.clone(), false).await.expect("publish again: idempotent");
        let t = mounts_at(&target);
        assert_eq!(t.len(), 1, "{fs}: no stacked bind mounts");
        assert_eq!(t[0].major_minor, m[0].major_minor, "bind of the staging mount");
        std::fs::write(target.join("hello.txt"), "data that must survive").unwrap();
        assert_eq!(
            std::fs::read_to_string(staging.join("hello.txt")).unwrap(),
            "data that must survive"
        );

        let ro = node.path(&format!("pod-{fs}-ro/mount"));
        node.publish(&v, &ro, c.clone(), true).await.unwrap();
        assert!(mounts_at(&ro)[0].options.iter().any(|o| o == "ro"), "readonly honoured");
        assert!(std::fs::write(ro.join("x"), "y").is_err(), "read-only publish refuses writes");
        let (code_, msg) = code(node.publish(&v, &ro, c.clone(), false).await);
        assert_eq!(code_, Code::AlreadyExists, "{msg}");

        let s = node.stats(&v, &target).await;
        let cond = s.volume_condition.unwrap();
        assert!(!cond.abnormal, "{}", cond.message);
        let bytes = s.usage.iter().find(|u| u.unit == volume_usage::Unit::Bytes as i32).unwrap();
        let inodes = s.usage.iter().find(|u| u.unit == volume_usage::Unit::Inodes as i32).unwrap();
        assert!(bytes.total > GIB / 2 && bytes.total <= GIB && bytes.used > 0, "{bytes:?}");
        assert!(inodes.total > 0 && inodes.used > 0, "{inodes:?}");

        if fs == "ext4" && !has_cap_sys_resource() {
            // ext4 grows online only with CAP_SYS_RESOURCE, which this machine withholds even
            // from root; the error must say so. (The VM test grows ext4 online for real.)
            let status = node.try_grow(&v, &target, 2 * GIB, c.clone()).await.unwrap_err();
            assert_eq!(status.code(), Code::Internal);
            assert!(status.message().contains("CAP_SYS_RESOURCE"), "{}", status.message());
            eprintln!("NOTE: ext4 online growth not checked here: no CAP_SYS_RESOURCE");
        } else {
            let grown = node.grow(&v, &target, 2 * GIB, c.clone()).await;
            assert_eq!(grown, 2 * GIB);
            let s = node.stats(&v, &target).await;
            let after =
                s.usage.iter().find(|u| u.unit == volume_usage::Unit::Bytes as i32).unwrap();
            assert!(after.total > GIB, "{fs}: the filesystem grew online: {after:?}");
        }
        assert_eq!(
            std::fs::read_to_string(target.join("hello.txt")).unwrap(),
            "data that must survive"
        );

        for p in [&target, &ro] {
            node.unpublish(&v, p).await.unwrap();
            node.unpublish(&v, p).await.expect("unpublish again: idempotent");
            assert!(!p.exists(), "the empty target directory is removed");
            assert!(mounts_at(p).is_empty());
        }
        node.unstage(&v).await.unwrap();
        node.unstage(&v).await.expect("unstage again: idempotent");
        assert!(mounts_at(&staging).is_empty());
        assert!(loops_of(&v.file).is_empty(), "detached");

        // Staged again after a full detach: the data is there, nothing is reformatted.
        let uuid = blkid(&v.file, "UUID");
        node.stage(&v, c.clone()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(staging.join("hello.txt")).unwrap(),
            "data that must survive"
        );
        assert_eq!(blkid(&v.file, "UUID"), uuid);
        node.unstage(&v).await.unwrap();
        node.c
            .delete_volume(DeleteVolumeRequest { volume_id: v.id.clone(), ..Default::default() })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn block_volumes_get_a_device_node_never_a_mount() {
    if !root_available() {
        return;
    }
    let mut node = start(&[]).await;
    let v = node.create("pvc-block", true).await;
    let c = cap(true, "", &[]);
    let staging = node.staging(&v);
    node.stage(&v, c.clone()).await.unwrap();
    node.stage(&v, c.clone()).await.unwrap();
    assert!(mounts_at(&staging).is_empty(), "nothing at the staging path for block");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    let loops = loops_of(&v.file);
    assert_eq!(loops.len(), 1);
    let loop_rdev = std::fs::metadata(&loops[0]).unwrap().rdev();

    let target = node.path("pod-b/volumeDevices/dev");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, "").unwrap(); // kubelet may leave an empty file
    node.publish(&v, &target, c.clone(), false).await.unwrap();
    node.publish(&v, &target, c.clone(), false).await.expect("idempotent");
    let meta = std::fs::symlink_metadata(&target).unwrap();
    assert!(meta.file_type().is_block_device());
    assert_eq!(meta.rdev(), loop_rdev, "same major:minor as the volume's device");
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert!(mounts_at(&target).is_empty(), "never a bind mount from /dev");

    let payload = b"raw block write via the published node";
    let f = std::fs::OpenOptions::new().write(true).open(&target).unwrap();
    f.write_all_at(payload, 1 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut back = vec![0u8; payload.len()];
    std::fs::File::open(&v.file).unwrap().read_exact_at(&mut back, 1 << 20).unwrap();
    assert_eq!(&back, payload, "the write reached the RDS file");

    let s = node.stats(&v, &target).await;
    assert_eq!(s.usage[0].total, GIB);
    assert!(!s.volume_condition.unwrap().abnormal);
    assert_eq!(node.grow(&v, &target, 2 * GIB, c.clone()).await, 2 * GIB);

    node.unpublish(&v, &target).await.unwrap();
    node.unpublish(&v, &target).await.unwrap();
    assert!(!target.exists() && target.parent().unwrap().exists(), "only the node file is removed");
    node.unstage(&v).await.unwrap();
    node.unstage(&v).await.unwrap();
    assert!(loops_of(&v.file).is_empty());
}

#[tokio::test]
async fn a_device_that_holds_data_is_never_formatted() {
    if !root_available() {
        return;
    }
    let mut node = start(&[]).await;
    // Raw data without any filesystem signature (a block volume's contents), near the end.
    let v = node.create("pvc-rawdata", false).await;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&v.file)
        .unwrap()
        .write_all_at(b"precious", GIB as u64 - 4096)
        .unwrap();
    let before = std::fs::read(&v.file).unwrap();
    let (c_, msg) = code(node.stage(&v, cap(false, "ext4", &[])).await);
    assert_eq!(c_, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("refusing to format") && msg.contains("non-zero data at byte"), "{msg}");
    assert!(std::fs::read(&v.file).unwrap() == before, "not one byte changed");
    assert!(loops_of(&v.file).is_empty(), "a stage that failed detaches what it attached");

    // An ext4 filesystem asked for as xfs: refused, not reformatted.
    let w = node.create("pvc-wrongfs", false).await;
    let out = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&w.file).output().unwrap();
    assert!(out.status.success());
    let uuid = blkid(&w.file, "UUID");
    let (c_, msg) = code(node.stage(&w, cap(false, "xfs", &[])).await);
    assert_eq!(c_, Code::FailedPrecondition, "{msg}");
    assert!(
        msg.contains("holds a ext4 filesystem") && msg.contains("refusing to reformat"),
        "{msg}"
    );
    assert_eq!(blkid(&w.file, "UUID"), uuid);

    // A partition table (GPT) with zero-looking filesystem area: refused.
    let p = node.create("pvc-gpt", false).await;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf 'label: gpt\\n' | sfdisk -q {}", p.file.display()))
        .output()
        .unwrap();
    if out.status.success() {
        let (c_, msg) = code(node.stage(&p, cap(false, "ext4", &[])).await);
        assert_eq!(c_, Code::FailedPrecondition, "{msg}");
        assert!(msg.contains("PTTYPE=gpt"), "{msg}");
    } else {
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            std::env::var_os("CI").is_none(),
            "sfdisk (fdisk package) is required in CI: {why}"
        );
        eprintln!("SKIPPED the GPT case: sfdisk unavailable: {why}");
    }
}

#[tokio::test]
async fn a_crash_between_mkfs_and_mount_is_finished_without_reformatting() {
    if !root_available() {
        return;
    }
    let mut node = start(&[]).await;
    let v = node.create("pvc-crash", false).await;
    // What a node that crashed right after mkfs leaves behind: the loop device still attached,
    // a fresh filesystem on it, nothing mounted.
    let out = Command::new("losetup").args(["--find", "--show"]).arg(&v.file).output().unwrap();
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-U", "c0ffee00-0000-4000-8000-000000000001", &dev])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    node.stage(&v, cap(false, "ext4", &[])).await.unwrap();
    assert_eq!(
        loops_of(&v.file),
        [dev.as_str()],
        "the attached device is reused, not a second one"
    );
    assert_eq!(
        blkid(Path::new(&dev), "UUID"),
        "c0ffee00-0000-4000-8000-000000000001",
        "not reformatted"
    );
    assert_eq!(mounts_at(&node.staging(&v)).len(), 1);
    node.unstage(&v).await.unwrap();
}

#[tokio::test]
async fn mount_flags_are_whitelisted() {
    if !root_available() {
        return;
    }
    let mut node = start(&[]).await;
    let v = node.create("pvc-flags", false).await;
    for (flag, want) in
        [("exec", "is not allowed"), ("uid=0", "is not supported"), ("suid", "is not allowed")]
    {
        let (c_, msg) = code(node.stage(&v, cap(false, "ext4", &[flag])).await);
        assert_eq!(c_, Code::InvalidArgument, "{flag}: {msg}");
        assert!(msg.contains(want), "{flag}: {msg}");
    }
    assert!(loops_of(&v.file).is_empty(), "bad input is refused before anything is attached");
    let (c_, msg) = code(node.stage(&v, cap(false, "btrfs", &[])).await);
    assert_eq!(c_, Code::InvalidArgument, "{msg}");
}

#[tokio::test]
async fn allow_exec_drops_noexec() {
    if !root_available() {
        return;
    }
    let mut node = start(&["--allow-exec"]).await;
    let v = node.create("pvc-exec", false).await;
    node.stage(&v, cap(false, "ext4", &[])).await.unwrap();
    let m = mounts_at(&node.staging(&v));
    assert!(
        m[0].options.iter().any(|o| o == "nosuid") && !m[0].options.iter().any(|o| o == "noexec"),
        "{:?}",
        m[0].options
    );
    node.unstage(&v).await.unwrap();
}

#[tokio::test]
async fn unstage_refuses_while_the_device_is_used_and_unpublish_never_deletes_data() {
    if !root_available() {
        return;
    }
    let mut node = start(&[]).await;
    let v = node.create("pvc-holders", false).await;
    let c = cap(false, "ext4", &[]);
    node.stage(&v, c.clone()).await.unwrap();
    let target = node.path("pod-h/mount");
    node.publish(&v, &target, c.clone(), false).await.unwrap();

    let (c_, msg) = code(node.unstage(&v).await);
    assert_eq!(c_, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("still mounted at") && msg.contains("pod-h"), "{msg}");
    assert_eq!(mounts_at(&node.staging(&v)).len(), 1, "nothing was unmounted");

    node.unpublish(&v, &target).await.unwrap();
    // A process holding the device open.
    let dev = loops_of(&v.file).pop().unwrap();
    let holder = std::fs::File::open(&dev).unwrap();
    let (c_, msg) = code(node.unstage(&v).await);
    assert_eq!(c_, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains(&format!("open by process {}", std::process::id())), "{msg}");
    assert_eq!(loops_of(&v.file), [dev.as_str()], "still attached");
    drop(holder);
    node.unstage(&v).await.unwrap();
    assert!(loops_of(&v.file).is_empty());

    // Publish without a staged volume: FAILED_PRECONDITION.
    let (c_, msg) = code(node.publish(&v, &target, c.clone(), false).await);
    assert_eq!(c_, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("NodeStageVolume first"), "{msg}");

    // A target that is not mounted but holds files is left alone, never deleted recursively.
    let stray = node.path("pod-stray/mount");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("keep.txt"), "keep").unwrap();
    let (c_, msg) = code(node.unpublish(&v, &stray).await);
    assert_eq!(c_, Code::FailedPrecondition, "{msg}");
    assert_eq!(std::fs::read_to_string(stray.join("keep.txt")).unwrap(), "keep");
}

#[tokio::test]
async fn stats_report_a_lost_connection_as_abnormal() {
    if !root_available() {
        return;
    }
    let mut node = start(&[]).await;
    let v = node.create("pvc-health", false).await;
    let c = cap(false, "ext4", &[]);
    node.stage(&v, c.clone()).await.unwrap();
    let staging = node.staging(&v);
    let s = node.stats(&v, &staging).await;
    let cond = s.volume_condition.unwrap();
    assert!(!cond.abnormal, "{}", cond.message);
    // The loop device no longer leads to the volume's file (as when an NVMe/TCP controller
    // is lost): the mount still answers statvfs, the condition says what is wrong.
    let moved = v.file.with_extension("moved");
    std::fs::rename(&v.file, &moved).unwrap();
    let s = node.stats(&v, &staging).await;
    let cond = s.volume_condition.unwrap();
    assert!(cond.abnormal && cond.message.contains("has no loop device"), "{}", cond.message);
    std::fs::rename(&moved, &v.file).unwrap();
    assert!(!node.stats(&v, &staging).await.volume_condition.unwrap().abnormal);

    let status = node
        .n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: v.id.clone(),
            volume_path: node.path("nowhere").display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    node.unstage(&v).await.unwrap();
}

#[tokio::test]
async fn a_device_smaller_than_the_published_size_is_refused() {
    if !root_available() {
        return;
    }
    let mut node = start(&[]).await;
    let v = node.create("pvc-size", false).await;
    let big = HashMap::from([("capacityBytes".to_string(), (2 * GIB).to_string())]);
    let (c_, msg) = code(node.stage_with(&v, cap(false, "ext4", &[]), big).await);
    assert_eq!(c_, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("is 1073741824 bytes but the volume is 2147483648 bytes"), "{msg}");
    assert!(loops_of(&v.file).is_empty(), "detached again");
    assert_eq!(blkid(&v.file, "TYPE"), "", "nothing was formatted");
    let exact = HashMap::from([("capacityBytes".to_string(), GIB.to_string())]);
    node.stage_with(&v, cap(false, "ext4", &[]), exact).await.unwrap();
    node.unstage(&v).await.unwrap();
}

/// A CO that gives up on NodeStageVolume (its deadline, a restart) never kills mkfs half-way:
/// the stage runs to its end, the retry is ABORTED meanwhile and then finds the volume staged
/// with a whole filesystem. mkfs.xfs is wrapped so that it first leaves the device half
/// written (junk at its start), waits a second, then formats: a stage cut during that second
/// and killed would leave a device that is never blank again, refused for ever.
#[tokio::test]
async fn a_cancelled_stage_still_formats_and_mounts_whole() {
    if !root_available() {
        return;
    }
    let bin = tempfile::tempdir().unwrap();
    let real = String::from_utf8(
        Command::new("sh").args(["-c", "command -v mkfs.xfs"]).output().unwrap().stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let wrapper = bin.path().join("mkfs.xfs");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor dev; do :; done\nprintf 'half-formatted' | dd of=\"$dev\" bs=512 conv=notrunc status=none\nsleep 1\nexec {real} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let mut node = start_with_path(&[], Some(bin.path())).await;
    let v = node.create("pvc-cancel", false).await;
    let staging = node.staging(&v);
    let req = NodeStageVolumeRequest {
        volume_id: v.id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap(false, "xfs", &[])),
        volume_context: v.ctx.clone(),
        ..Default::default()
    };
    let mut cut = tonic::Request::new(req.clone());
    cut.set_timeout(std::time::Duration::from_millis(500));
    let status = node.n.node_stage_volume(cut).await.unwrap_err();
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    let mut answers = Vec::new();
    for _ in 0..100 {
        match node.n.node_stage_volume(req.clone()).await {
            Ok(_) => {
                answers.push(Code::Ok);
                break;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::Aborted, "the retry waits for the stage: {s:?}");
                answers.push(s.code());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(answers.last(), Some(&Code::Ok), "{answers:?}");
    let m = mounts_at(&staging);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].fs_type, "xfs");
    std::fs::write(staging.join("ok"), b"whole").unwrap();
    node.unstage(&v).await.unwrap();
    assert_eq!(blkid(&v.file, "TYPE"), "xfs");
}
