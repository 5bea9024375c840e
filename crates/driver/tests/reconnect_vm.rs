//! The product's core promise, over real NVMe/TCP: a mounted volume stays usable across an
//! RDS outage. In a QEMU VM (tools/nvme-vm) this test runs itself again (`RDS_CSI_IN_VM=1`):
//! `rds-csi serve --controller --node --emulated-rds DIR --emulated-rds-nvmet 127.0.0.1:4420`
//! serves a volume that is published and written; then the target drops the subsystem (as an
//! RDS reboot does), the node reports the volume abnormal ("connecting"), a write issued
//! meanwhile waits instead of failing, the target comes back, the kernel reconnects the same
//! controller, the write completes, the mount is the same device and healthy, all data reads
//! back.
//!
//! Needs root and the VM packages (.ci/run installs them); outside CI it prints why it skips.

#[path = "../../../tools/nvme-vm/preflight.rs"]
mod preflight;
mod support;

use std::{
    collections::HashMap,
    io::Write,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use csi::v1::{
    controller_client::ControllerClient,
    node_client::NodeClient,
    volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode},
    *,
};
use support::{
    Daemon,
    vm::{Checks, NVMET, controllers, port_dir, wait_for},
};

/// The NVMe controller connected to `nqn` (`nvme0`) and its state.
fn controller_of(nqn: &str) -> Option<(String, String)> {
    controllers(nqn).into_iter().next()
}

const TEST: &str = "a_mounted_volume_survives_an_rds_outage";

#[test]
fn a_mounted_volume_survives_an_rds_outage() {
    if std::env::var_os("RDS_CSI_IN_VM").is_some() {
        tokio::runtime::Runtime::new().unwrap().block_on(drill());
        return;
    }
    if !preflight::require_vm(&["mkfs.ext4"]) {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/in_vm.sh");
    // Native NVMe multipath on (Debian's default: nvme0n1 head + hidden nvme0c0n1) and off
    // (the namespace is the controller's own nvme0n1): the node finds the device in both.
    preflight::run_checks(&script, &[exe.to_str().unwrap(), TEST], &[("NVME_VM_TIMEOUT", "300")]);
    preflight::run_checks(
        &script,
        &[exe.to_str().unwrap(), TEST],
        &[("NVME_VM_TIMEOUT", "300"), ("NVME_VM_APPEND", "nvme_core.multipath=N")],
    );
}

async fn drill() {
    let mut checks = Checks(0);
    let dir = tempfile::tempdir().unwrap();
    let rds = dir.path().join("rds");
    let daemon = Daemon::start_owned(&[
        "--controller".into(),
        "--node".into(),
        "--node-id".into(),
        "vm-node".into(),
        "--metrics-address".into(),
        "".into(),
        "--emulated-rds".into(),
        rds.display().to_string(),
        "--emulated-rds-nvmet".into(),
        "127.0.0.1:4420".into(),
        "--data-plane".into(),
        "nvme-tcp".into(),
        "--nvme-address".into(),
        "127.0.0.1".into(),
    ]);
    let ch = daemon.ready_channel().await;
    let (mut c, mut n) = (ControllerClient::new(ch.clone()), NodeClient::new(ch));
    let cap = VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
    };
    let v = c
        .create_volume(CreateVolumeRequest {
            name: "pvc-5eed0000-0000-4000-8000-000000000001".into(),
            capacity_range: Some(CapacityRange { required_bytes: 1 << 30, limit_bytes: 0 }),
            volume_capabilities: vec![cap.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let nqn = v.volume_context["nqn"].clone();
    assert_eq!(v.volume_context["ctrlLossTmo"], "-1", "the default: reconnect forever");
    let publish_context = c
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: "vm-node".into(),
            volume_capability: Some(cap.clone()),
            volume_context: v.volume_context.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    let staging = dir.path().join("staging");
    let target = dir.path().join("pod/mount");
    std::fs::create_dir_all(&staging).unwrap();
    n.node_stage_volume(NodeStageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap.clone()),
        volume_context: v.volume_context.clone(),
        publish_context: publish_context.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    n.node_publish_volume(NodePublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap.clone()),
        volume_context: v.volume_context.clone(),
        publish_context,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ctrl, state) = controller_of(&nqn).expect("connected");
    assert_eq!(state, "live");
    let multipath =
        std::fs::read_to_string("/sys/module/nvme_core/parameters/multipath").unwrap_or_default();
    let per_path = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains('c'));
    checks.ok(&format!(
        "native multipath {} ({})",
        multipath.trim(),
        if per_path { "head disk + hidden per-path disk" } else { "the controller's own disk" }
    ));
    let dev_before = std::fs::metadata(&staging).unwrap().dev();
    let mut f = std::fs::File::create(target.join("before.txt")).unwrap();
    f.write_all(b"written before the outage").unwrap();
    f.sync_all().unwrap();
    drop(f);
    checks.ok(&format!("staged, published and written over NVMe/TCP ({ctrl}, live)"));
    let stats = |n: NodeClient<tonic::transport::Channel>, path: PathBuf| {
        let vid = v.volume_id.clone();
        async move {
            let mut n = n;
            n.node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: vid,
                volume_path: path.display().to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .volume_condition
            .unwrap()
        }
    };
    assert!(!stats(n.clone(), target.clone()).await.abnormal);

    // The outage: the target drops the subsystem from its port (its controllers go).
    let link = port_dir().join("subsystems").join(&nqn);
    std::fs::remove_file(&link).unwrap();
    wait_for("the host notices the outage", Duration::from_secs(30), || {
        controller_of(&nqn).is_some_and(|(_, s)| s != "live")
    });
    let (_, state) = controller_of(&nqn).unwrap();
    checks.ok(&format!("outage: {ctrl} is {state}, still present (ctrl_loss_tmo=-1)"));
    let cond = stats(n.clone(), target.clone()).await;
    assert!(cond.abnormal && cond.message.contains(&ctrl), "{cond:?}");
    checks.ok(&format!("NodeGetVolumeStats says abnormal: {}", cond.message));

    // A write during the outage waits (queued), it does not fail.
    let path_b = target.join("during.txt");
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&path_b)?;
        f.write_all(b"written during the outage")?;
        f.sync_all()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!writer.is_finished(), "the fsync returned during the outage");
    checks.ok("an fsync issued during the outage is queued, not failed");

    // The RDS is back: the kernel reconnects the same controller.
    let subsystem = PathBuf::from(format!("{NVMET}/subsystems/{nqn}"));
    std::os::unix::fs::symlink(&subsystem, &link).unwrap();
    wait_for("the host reconnects", Duration::from_secs(30), || {
        controller_of(&nqn).is_some_and(|(_, s)| s == "live")
    });
    assert_eq!(controller_of(&nqn).unwrap().0, ctrl, "the same controller, no new device");
    checks.ok(&format!("reconnected: {ctrl} live again"));
    let started = Instant::now();
    while !writer.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(30), "the queued write did not complete");
        std::thread::sleep(Duration::from_millis(100));
    }
    writer.join().unwrap().expect("the queued write completes without error");
    checks.ok("the queued write completed");
    assert_eq!(
        std::fs::metadata(&staging).unwrap().dev(),
        dev_before,
        "same device under the mount"
    );
    let cond = stats(n.clone(), target.clone()).await;
    assert!(!cond.abnormal, "{cond:?}");
    checks.ok(&format!("healthy again: {}", cond.message));
    let a = std::fs::read_to_string(target.join("before.txt")).unwrap();
    let b = std::fs::read_to_string(target.join("during.txt")).unwrap();
    assert_eq!(
        (a.as_str(), b.as_str()),
        ("written before the outage", "written during the outage")
    );
    checks.ok("both files read back");

    n.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        target_path: target.display().to_string(),
    })
    .await
    .unwrap();
    n.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
    })
    .await
    .unwrap();
    assert!(controller_of(&nqn).is_none(), "disconnected");
    c.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "vm-node".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_volume(DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        secrets: HashMap::new(),
    })
    .await
    .unwrap();
    checks.ok("unpublished, unstaged (disconnected), deleted");
    println!("reconnect drill: {} passed, 0 failed", checks.0);
}
