//! Self-healing over real NVMe/TCP, in one QEMU VM boot (tools/nvme-vm; this test runs itself
//! again inside with `RDS_CSI_IN_VM=1`). `rds-csi serve --controller --node --emulated-rds DIR
//! --emulated-rds-nvmet 127.0.0.1:4420` is the RDS, the controller and the node; killing and
//! restarting it restarts all three (the emulator keeps its disks in DIR). docs/operations.md.
//!
//! 1. RDS reboot: the process is stopped, the target's port drops the subsystem for 20 s,
//!    the process starts again; a writer on a mounted filesystem never sees an error and
//!    every record it wrote is there.
//! 2. An outage longer than a finite ctrlLossTmo: the device disappears, stats say abnormal,
//!    unpublish and unstage still clean up, a new stage finds the new device, the data
//!    written before is intact.
//! 3. The node killed (SIGKILL) between connect and mount and between unmount and
//!    disconnect: repeated RPCs converge; the orphan cleanup disconnects what nothing uses;
//!    two "system" subsystems of the same vendor prefix (one even inside the managed
//!    prefix) survive.
//! 4. Stale staging mounts (device gone in 2's outage) repaired by a repeated NodeStage and
//!    by a repeated NodePublish (which also binds the target again).
//!
//! Needs root and the VM packages (.ci/run installs them); outside CI it prints why it skips.

#[path = "../../../tools/nvme-vm/preflight.rs"]
mod preflight;
mod support;

use std::{
    collections::HashMap,
    io::{Read, Write},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use csi::v1::{
    controller_client::ControllerClient,
    node_client::NodeClient,
    volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode},
    *,
};
use support::{
    Daemon, serve_command,
    vm::{Checks, NVMET, controllers, port_dir, wait_for},
};
use tonic::transport::Channel;

const TEST: &str = "volumes_heal_on_a_real_kernel";
const PREFIX: &str = "nqn.2000-02.com.mikrotik:";

#[test]
fn volumes_heal_on_a_real_kernel() {
    if std::env::var_os("RDS_CSI_IN_VM").is_some() {
        tokio::runtime::Runtime::new().unwrap().block_on(drill());
        return;
    }
    if !preflight::require_vm(&["mkfs.ext4"]) {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/in_vm.sh");
    // Ten 1 GiB volumes with ext4 on tmpfs-backed files (tmpfs counts against guest RAM):
    // with the default 1 GiB the serving process died silently mid-run in 2 of 4 runs (most
    // likely the OOM killer); with 3 GiB it has not.
    preflight::run_checks(
        &script,
        &[exe.to_str().unwrap(), TEST],
        &[("NVME_VM_TIMEOUT", "600"), ("NVME_VM_MEM", "3G")],
    );
}

fn unlink_port(nqn: &str) {
    let link = port_dir().join("subsystems").join(nqn);
    if link.exists() {
        std::fs::remove_file(&link).unwrap();
    }
}

fn link_port(nqn: &str) {
    let link = port_dir().join("subsystems").join(nqn);
    if !link.exists() {
        std::os::unix::fs::symlink(format!("{NVMET}/subsystems/{nqn}"), &link).unwrap();
    }
}

fn mounts_at(p: &Path) -> usize {
    let p = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(p.as_str()))
        .count()
}

/// The serving process (RDS emulator + controller + node), restartable on the same state.
struct Rig {
    dir: tempfile::TempDir,
    daemon: Option<Daemon>,
}

impl Rig {
    fn args(&self) -> Vec<String> {
        let rds = self.dir.path().join("rds");
        [
            "--controller",
            "--node",
            "--node-id",
            "vm-node",
            "--metrics-address",
            "",
            "--emulated-rds",
            &rds.display().to_string(),
            "--emulated-rds-nvmet",
            "127.0.0.1:4420",
            "--data-plane",
            "nvme-tcp",
            "--nvme-address",
            "127.0.0.1",
            &format!("--host-nqn-file={}", self.dir.path().join("hostnqn").display()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts the process (optionally with a crash point and extra flags) and connects.
    async fn start(
        &mut self,
        crash: Option<&str>,
        extra: &[&str],
    ) -> (ControllerClient<Channel>, NodeClient<Channel>) {
        let home = tempfile::tempdir().unwrap();
        let socket = home.path().join("csi.sock");
        let mut args = self.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = serve_command(&socket, &refs);
        if let Some(p) = crash {
            cmd.env("RDS_CSI_CRASH_POINT", p);
        }
        let d = Daemon::follow(cmd.spawn().unwrap(), socket, home);
        let ch = d.ready_channel().await;
        self.daemon = Some(d);
        (ControllerClient::new(ch.clone()), NodeClient::new(ch))
    }

    async fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.signal(libc::SIGTERM);
            d.wait_exit(Duration::from_secs(30)).await;
        }
    }

    /// The process died of SIGKILL at its crash point.
    async fn died_at_crash_point(&mut self) {
        let mut d = self.daemon.take().expect("running");
        let status = d.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{}", d.raw_log());
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(|d| d.raw_log()).unwrap_or_default()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let status = self.daemon.as_mut().map(|d| d.child.try_wait());
            eprintln!("--- rds-csi ({status:?}) log ---\n{}", self.log());
        }
    }
}

fn cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
    }
}

/// A volume and its kubelet-like paths.
#[derive(Clone)]
struct Vol {
    id: String,
    ctx: HashMap<String, String>,
    publish: HashMap<String, String>,
    staging: PathBuf,
    target: PathBuf,
}

impl Vol {
    fn nqn(&self) -> String {
        self.ctx["nqn"].clone()
    }
}

async fn create(
    c: &mut ControllerClient<Channel>,
    root: &Path,
    name: &str,
    params: &[(&str, &str)],
) -> Vol {
    let v = c
        .create_volume(CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange { required_bytes: 1 << 30, limit_bytes: 0 }),
            volume_capabilities: vec![cap()],
            parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let publish = c
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: "vm-node".into(),
            volume_capability: Some(cap()),
            volume_context: v.volume_context.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    let staging = root.join("staging").join(&v.volume_id);
    std::fs::create_dir_all(&staging).unwrap();
    let target = root.join("pods").join(&v.volume_id).join("mount");
    Vol { id: v.volume_id, ctx: v.volume_context, publish, staging, target }
}

async fn stage(n: &mut NodeClient<Channel>, v: &Vol) -> Result<(), tonic::Status> {
    n.node_stage_volume(NodeStageVolumeRequest {
        volume_id: v.id.clone(),
        staging_target_path: v.staging.display().to_string(),
        volume_capability: Some(cap()),
        volume_context: v.ctx.clone(),
        publish_context: v.publish.clone(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

async fn publish(n: &mut NodeClient<Channel>, v: &Vol) -> Result<(), tonic::Status> {
    n.node_publish_volume(NodePublishVolumeRequest {
        volume_id: v.id.clone(),
        staging_target_path: v.staging.display().to_string(),
        target_path: v.target.display().to_string(),
        volume_capability: Some(cap()),
        volume_context: v.ctx.clone(),
        publish_context: v.publish.clone(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

async fn unpublish(n: &mut NodeClient<Channel>, v: &Vol) -> Result<(), tonic::Status> {
    n.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: v.id.clone(),
        target_path: v.target.display().to_string(),
    })
    .await
    .map(|_| ())
}

async fn unstage(n: &mut NodeClient<Channel>, v: &Vol) -> Result<(), tonic::Status> {
    n.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: v.id.clone(),
        staging_target_path: v.staging.display().to_string(),
    })
    .await
    .map(|_| ())
}

async fn condition(n: &mut NodeClient<Channel>, v: &Vol, path: &Path) -> VolumeCondition {
    n.node_get_volume_stats(NodeGetVolumeStatsRequest {
        volume_id: v.id.clone(),
        volume_path: path.display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .volume_condition
    .unwrap()
}

fn write_synced(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// Connects this host to a subsystem the test exports itself (a node's "system" disk), on
/// its own port 127.0.0.1:4421 (the emulator owns what is on 4420).
fn export_system(nqn: &str, file: &Path) {
    let port = PathBuf::from(format!("{NVMET}/ports/9"));
    if !port.exists() {
        std::fs::create_dir_all(&port).unwrap();
        for (k, v) in [
            ("addr_trtype", "tcp"),
            ("addr_adrfam", "ipv4"),
            ("addr_traddr", "127.0.0.1"),
            ("addr_trsvcid", "4421"),
        ] {
            std::fs::write(port.join(k), v).unwrap();
        }
    }
    let sub = PathBuf::from(format!("{NVMET}/subsystems/{nqn}"));
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("attr_allow_any_host"), "1").unwrap();
    let ns = sub.join("namespaces/1");
    std::fs::create_dir_all(&ns).unwrap();
    std::fs::write(file, vec![0u8; 16 << 20]).unwrap();
    // tmpfs has no O_DIRECT.
    std::fs::write(ns.join("buffered_io"), "1").unwrap();
    std::fs::write(ns.join("device_path"), file.display().to_string()).unwrap();
    std::fs::write(ns.join("enable"), "1").unwrap();
    std::os::unix::fs::symlink(&sub, port.join("subsystems").join(nqn)).unwrap();
    let opts = format!("transport=tcp,traddr=127.0.0.1,trsvcid=4421,nqn={nqn}");
    let mut f =
        std::fs::OpenOptions::new().read(true).write(true).open("/dev/nvme-fabrics").unwrap();
    f.write_all(opts.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = f.read_to_string(&mut answer);
    wait_for("the system subsystem connects", Duration::from_secs(20), || {
        controllers(nqn).iter().any(|(_, s)| s == "live")
    });
}

async fn drill() {
    let mut checks = Checks(0);
    let mut rig = Rig { dir: tempfile::tempdir().unwrap(), daemon: None };
    let root = rig.dir.path().to_path_buf();
    let (mut c, mut n) = rig.start(None, &[]).await;

    // 1. RDS reboot under a writer.
    let a = create(&mut c, &root, "pvc-4ea10000-0000-4000-8000-00000000000a", &[]).await;
    stage(&mut n, &a).await.unwrap();
    publish(&mut n, &a).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (path, flag) = (a.target.join("records"), stop.clone());
    let writer = std::thread::spawn(move || -> Result<u64, String> {
        let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        let mut i = 0u64;
        while !flag.load(Ordering::Relaxed) {
            writeln!(f, "record {i}").map_err(|e| format!("write {i}: {e}"))?;
            f.sync_data().map_err(|e| format!("fsync {i}: {e}"))?;
            i += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(i)
    });
    std::thread::sleep(Duration::from_secs(2));
    rig.stop().await;
    unlink_port(&a.nqn());
    wait_for("the host notices the RDS is gone", Duration::from_secs(30), || {
        controllers(&a.nqn()).iter().any(|(_, s)| s != "live")
    });
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    assert!(!writer.is_finished(), "the writer stopped during the outage: {:?}", writer.join());
    // The emulator starts again on the same state and exports the disk again.
    let (c2, n2) = rig.start(None, &[]).await;
    (c, n) = (c2, n2);
    wait_for("the host reconnects", Duration::from_secs(60), || {
        let k = controllers(&a.nqn());
        !k.is_empty() && k.iter().all(|(_, s)| s == "live")
    });
    let outage = down.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap().expect("the writer saw no error");
    let text = std::fs::read_to_string(a.target.join("records")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, written, "every record is there");
    assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("record {i}")), "in order");
    assert!(!condition(&mut n, &a, &a.target).await.abnormal);
    checks.ok(&format!(
        "RDS reboot ({}s without the port, process restarted): {written} synced records, no error, all there",
        outage.as_secs()
    ));

    // 2 and 4. An outage longer than ctrlLossTmo=5 for three volumes.
    let tmo = [("ctrlLossTmo", "5"), ("reconnectDelay", "1")];
    let g = create(&mut c, &root, "pvc-4ea10000-0000-4000-8000-00000000000b", &tmo).await;
    let e = create(&mut c, &root, "pvc-4ea10000-0000-4000-8000-00000000000c", &tmo).await;
    let f = create(&mut c, &root, "pvc-4ea10000-0000-4000-8000-00000000000d", &tmo).await;
    for v in [&g, &e, &f] {
        stage(&mut n, v).await.unwrap();
        publish(&mut n, v).await.unwrap();
        write_synced(&v.target.join("before.txt"), &format!("{} before the outage", v.id));
    }
    for v in [&g, &e, &f] {
        unlink_port(&v.nqn());
    }
    wait_for("ctrl_loss_tmo removes the controllers", Duration::from_secs(60), || {
        [&g, &e, &f].iter().all(|v| controllers(&v.nqn()).is_empty())
    });
    let cond = condition(&mut n, &g, &g.target).await;
    assert!(cond.abnormal, "{cond:?}");
    checks.ok(&format!("ctrl loss: controllers gone; stats abnormal: {}", cond.message));
    for v in [&g, &e, &f] {
        link_port(&v.nqn());
    }
    unpublish(&mut n, &g).await.unwrap();
    unstage(&mut n, &g).await.unwrap();
    assert_eq!((mounts_at(&g.staging), mounts_at(&g.target)), (0, 0));
    checks.ok("unpublish and unstage cleaned up after the device vanished");
    stage(&mut n, &g).await.unwrap();
    publish(&mut n, &g).await.unwrap();
    let text = std::fs::read_to_string(g.target.join("before.txt")).unwrap();
    assert_eq!(text, format!("{} before the outage", g.id));
    assert!(!condition(&mut n, &g, &g.target).await.abnormal);
    checks.ok("a new stage found the new device; the data from before is intact");

    // 4. Repair by a repeated NodeStage, then by a repeated NodePublish.
    stage(&mut n, &e).await.unwrap();
    assert_eq!(mounts_at(&e.staging), 1, "one mount, not stacked");
    let text = std::fs::read_to_string(e.staging.join("before.txt")).unwrap();
    assert_eq!(text, format!("{} before the outage", e.id));
    assert!(!condition(&mut n, &e, &e.staging).await.abnormal);
    checks.ok("a repeated NodeStage repaired the stale staging mount");
    publish(&mut n, &f).await.unwrap();
    assert_eq!((mounts_at(&f.staging), mounts_at(&f.target)), (1, 1));
    let text = std::fs::read_to_string(f.target.join("before.txt")).unwrap();
    assert_eq!(text, format!("{} before the outage", f.id));
    assert!(!condition(&mut n, &f, &f.target).await.abnormal);
    checks.ok("a repeated NodePublish repaired the staging mount and bound the target again");
    for v in [&a, &g, &e, &f] {
        // e's old target still holds the dead mount: unpublish removes it too.
        unpublish(&mut n, v).await.unwrap();
        unstage(&mut n, v).await.unwrap();
        assert!(controllers(&v.nqn()).is_empty(), "{} disconnected", v.id);
    }
    checks.ok("all unpublished, unstaged and disconnected");

    // 3. Crashes between connect and mount and between unmount and disconnect.
    let system = format!("{PREFIX}nixos-vm-node");
    let inside = format!("{PREFIX}pvc-system-disk");
    export_system(&system, &root.join("system.img"));
    export_system(&inside, &root.join("inside.img"));
    let vols: Vec<Vol> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(
                create(&mut c, &root, &format!("pvc-4ea10000-0000-4000-8000-00000000010{i}"), &[])
                    .await,
            );
        }
        v
    };
    let (rep, orphan_new, unst, orphan_old) = (&vols[0], &vols[1], &vols[2], &vols[3]);
    for v in [unst, orphan_old] {
        stage(&mut n, v).await.unwrap();
    }
    rig.stop().await;
    for v in [rep, orphan_new] {
        let (_, mut n) =
            rig.start(Some("stage.attached"), &["--orphan-cleanup-interval-seconds", "0"]).await;
        assert!(stage(&mut n, v).await.is_err());
        rig.died_at_crash_point().await;
        assert!(
            !controllers(&v.nqn()).is_empty() && mounts_at(&v.staging) == 0,
            "connected, not mounted"
        );
    }
    for v in [unst, orphan_old] {
        let (_, mut n) =
            rig.start(Some("unstage.unmounted"), &["--orphan-cleanup-interval-seconds", "0"]).await;
        assert!(unstage(&mut n, v).await.is_err());
        rig.died_at_crash_point().await;
        assert!(
            !controllers(&v.nqn()).is_empty() && mounts_at(&v.staging) == 0,
            "unmounted, connected"
        );
    }
    checks.ok("killed twice between connect and mount, twice between unmount and disconnect");
    // The CO repeats its calls well within the grace period (15 s from the restart); as a CO
    // does, a call that finds the volume busy (ABORTED) is retried.
    let (_, mut n) = rig
        .start(None, &["--orphan-cleanup-interval-seconds", "1", "--orphan-grace-seconds", "15"])
        .await;
    let started = Instant::now();
    loop {
        match stage(&mut n, rep).await {
            Err(e)
                if e.code() == tonic::Code::Aborted
                    && started.elapsed() < Duration::from_secs(30) =>
            {
                std::thread::sleep(Duration::from_millis(500));
            }
            r => break r.unwrap(),
        }
    }
    assert_eq!(mounts_at(&rep.staging), 1);
    unstage(&mut n, unst).await.unwrap();
    assert!(controllers(&unst.nqn()).is_empty());
    checks.ok("the repeated NodeStage and NodeUnstage converged");
    wait_for("the orphan cleanup disconnects the two leftovers", Duration::from_secs(60), || {
        controllers(&orphan_new.nqn()).is_empty() && controllers(&orphan_old.nqn()).is_empty()
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(controllers(&rep.nqn()).len(), 1, "the mounted volume stays connected");
    assert_eq!(mounts_at(&rep.staging), 1);
    for s in [&system, &inside] {
        assert!(controllers(s).iter().any(|(_, st)| st == "live"), "{s} survived:\n{}", rig.log());
    }
    checks.ok("orphan cleanup disconnected both leftovers; the mounted volume and both system subsystems survive");
    unstage(&mut n, rep).await.unwrap();
    rig.stop().await;
    println!("heal drill: {} passed, 0 failed", checks.0);
}
