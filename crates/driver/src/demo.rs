//! `rds-csi demo`: the driver's main job against the embedded RDS emulator, in one command.
//!
//! Starts the emulator in a temporary directory (real SSH on loopback, real files), serves the
//! real controller and node in this process on a unix socket, and drives a volume through its
//! life over CSI gRPC: create → stage → publish → write and read back a file → expand →
//! snapshot → restore into a new volume and read the file there → unpublish → unstage →
//! delete. Each step is printed with its time and the RouterOS commands it cost.
//!
//! The data plane is NVMe/TCP when this kernel can both export (nvmet) and import it (in the
//! project's NVMe VM), else a loop device. Without root there is no mount or loop device: the
//! demo says so and runs the controller steps only.

use std::{
    collections::HashMap,
    os::unix::fs::FileExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use csi::v1::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
    volume_capability, volume_content_source, *,
};
use rds_emulator::emulator::Emulator;
use tonic::transport::Channel;

use crate::{
    cli::{Roles, ServeConfig},
    controller::config::ControllerArgs,
    emulated,
    endpoint::Endpoint,
    node::config::{DataPlaneKind, NodeConfig},
};

const GIB: i64 = 1 << 30;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Prints steps with their duration and the RouterOS commands they sent.
struct Steps<'a> {
    emu: &'a Emulator,
    seen: usize,
    started: Instant,
}

impl Steps<'_> {
    fn begin(&mut self, what: &str) {
        println!("\n  {what}");
        self.started = Instant::now();
    }

    fn done(&mut self, result: &str) {
        println!("    -> {result}  [{} ms]", self.started.elapsed().as_millis());
        let log = self.emu.command_log();
        for entry in &log[self.seen..] {
            let mut line = entry.command.clone();
            if line.len() > 110 {
                line.truncate(107);
                line.push_str("...");
            }
            println!("       ssh> {line}");
        }
        self.seen = log.len();
    }
}

/// A single-node-writer mount of `fs` (the demo's volumes and `bench node`'s).
pub(crate) fn capability(fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(volume_capability::MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

fn create(
    fs: &str,
    name: &str,
    bytes: i64,
    source: Option<volume_content_source::Type>,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![capability(fs)],
        // As csi-provisioner's --extra-create-metadata passes them: the PVC goes into the
        // disk comment, where `rds-csi volumes` shows it.
        parameters: HashMap::from([
            ("csi.storage.k8s.io/fstype".into(), fs.into()),
            ("csi.storage.k8s.io/pvc/namespace".into(), "demo".into()),
            ("csi.storage.k8s.io/pvc/name".into(), demo_pvc(name).into()),
        ]),
        volume_content_source: source.map(|t| VolumeContentSource { r#type: Some(t) }),
        ..Default::default()
    }
}

/// The demo's PVC names: `data` and, for the restore, `data-restored`.
fn demo_pvc(volume: &str) -> &'static str {
    if volume == SOURCE { "data" } else { "data-restored" }
}

/// The node's tools this demo needs, when absent from PATH.
fn missing_tools(fs: &str) -> Vec<String> {
    let grow = if fs == "xfs" { "xfs_growfs" } else { "resize2fs" };
    let mkfs = format!("mkfs.{fs}");
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["losetup", "blkid", "mount", "umount", mkfs.as_str(), grow]
        .into_iter()
        .filter(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .map(String::from)
        .collect()
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The controller settings of the demos (memory attachment state, no background loops).
pub(crate) fn controller_args(storage_fencing: bool) -> ControllerArgs {
    ControllerArgs {
        volume_path: "/storage-pool/metal-csi".into(),
        allowed_base_paths: Vec::new(),
        nvme_address: Some("127.0.0.1".into()),
        nvme_port: 4420,
        nqn_prefix: "nqn.2000-02.com.mikrotik:".into(),
        min_volume_size: 1 << 30,
        max_volume_size: 16 << 40,
        attachment_state: Some(crate::controller::config::AttachmentState::Memory),
        storage_fencing,
        attach_settle_seconds: 0,
        // The controller-only walk (no node in this process) still publishes to NODE.
        known_node_ids: vec![NODE.to_string()],
        allow_copy_from: false,
        leader_election: false,
        leader_election_namespace: None,
        leader_election_lease_seconds: 15,
        stale_attachment_grace_seconds: 300,
        reconcile_interval_seconds: 60,
        rds_orphan_interval_seconds: 0,
        rds_orphan_grace_seconds: 3600,
        delete_rds_orphans: false,
        // The demo's snapshot holds the writes of its published 2 GiB volume while it is
        // copied; it also runs in the VM under software emulation (tests/node_vm.rs), where
        // the copy can take longer than the 10 s default and would be refused.
        snapshot_pause_max_seconds: 120,
    }
}

/// Runs the demo; returns an error message on failure.
pub async fn run(fs: String, storage_fencing: bool, keep: Option<PathBuf>) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(err)?;
    let base = dir.path();
    let rds_dir = keep.clone().unwrap_or_else(|| base.join("rds"));
    println!(
        "rds-csi {} demo: controller and node against the embedded RDS emulator",
        crate::version::VERSION
    );

    let missing = missing_tools(&fs);
    let plane = match (is_root(), missing.is_empty(), emulated::nvme_tcp_available()) {
        (false, _, _) => {
            println!(
                "\n  NOTE: not running as root, so this demo cannot attach (loop device or NVMe/TCP)\n  \
                 or mount anything: it runs the controller steps only. Run it as root for the\n  \
                 whole lifecycle."
            );
            None
        }
        (true, false, _) => {
            println!(
                "\n  NOTE: {} not found (apt-get install mount util-linux e2fsprogs xfsprogs): the demo\n  \
                 runs the controller steps only.",
                missing.join(", ")
            );
            None
        }
        (true, true, true) => Some(DataPlaneKind::NvmeTcp),
        (true, true, false) => Some(DataPlaneKind::Loop),
    };
    let nvmet =
        (plane == Some(DataPlaneKind::NvmeTcp)).then(|| "127.0.0.1:4420".parse().expect("address"));
    let rds = emulated::start(&rds_dir, nvmet).await?;
    println!("  RDS emulator: SSH {}, data in {}", rds.ssh_address, rds_dir.display());
    match plane {
        Some(DataPlaneKind::NvmeTcp) => {
            println!("  data plane: NVMe/TCP (kernel target on 127.0.0.1:4420, native connect)")
        }
        Some(DataPlaneKind::Loop) => {
            println!("  data plane: loop devices on the RDS files (no NVMe/TCP in this kernel)")
        }
        None => {}
    }

    let socket = base.join("csi.sock");
    let controller_args = controller_args(storage_fencing);
    // The demo's walk is short: no background loops.
    let node =
        plane.map(|kind| NodeConfig::embedded(kind, Some(rds.files.clone()), base.join("hostnqn")));
    let config = ServeConfig {
        endpoint: Endpoint::Unix(socket.clone()),
        roles: Roles { controller: true, node_id: node.as_ref().map(|_| NODE.to_string()) },
        driver_name: "rds.csi.srvlab.io".into(),
        topology: HashMap::from([("topology.rds.csi.srvlab.io/zone".into(), "default".into())]),
        metrics_address: None,
        shutdown_timeout: Duration::from_secs(5),
        rds: Some(rds.rds.clone()),
        backends: Vec::new(),
        emulated_backends: 1,
        controller: controller_args.validate()?,
        rds_probe_interval: Duration::from_secs(1),
        node,
        emulated_rds: None,
        emulated_rds_nvmet: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::run(config, async {
        let _ = stopped.await;
    }));
    let mut identity = None;
    for _ in 0..100 {
        if let Ok(ch) = crate::endpoint::unix_channel(&socket).await {
            identity = Some(IdentityClient::new(ch));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut identity = identity.ok_or("the driver did not start")?;
    let info = identity.get_plugin_info(GetPluginInfoRequest {}).await.map_err(err)?.into_inner();
    for _ in 0..100 {
        if identity.probe(ProbeRequest {}).await.map_err(err)?.into_inner().ready == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  driver: {} {} on {} (Probe: ready)",
        info.name,
        info.vendor_version,
        socket.display()
    );

    let ch = crate::endpoint::unix_channel(&socket).await?;
    let mut steps =
        Steps { emu: &rds.emu, seen: rds.emu.command_log().len(), started: Instant::now() };
    let mut walk = Walk {
        c: ControllerClient::new(ch.clone()),
        n: NodeClient::new(ch),
        base: base.to_path_buf(),
        steps: &mut steps,
        fs,
        files: rds.files.clone(),
        keep: keep.is_some(),
    };
    // Ctrl-C stops the walk, and the cleanup below still unmounts and detaches.
    let result = tokio::select! {
        r = async { if plane.is_some() { walk.full().await } else { walk.controller_only().await } } => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted (SIGINT)".to_string()),
    };
    if result.is_err() && plane.is_some() {
        walk.cleanup().await;
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    result?;
    println!(
        "\ndemo complete: every step above ran through the real CSI gRPC API against the emulator."
    );
    if let Some(dir) = keep {
        println!(
            "kept in {0}: look with `rds-csi volumes --emulated-rds {0}` (and snapshots, doctor)",
            dir.display()
        );
    }
    Ok(())
}

struct Walk<'a, 'e> {
    c: ControllerClient<Channel>,
    n: NodeClient<Channel>,
    base: PathBuf,
    steps: &'a mut Steps<'e>,
    files: PathBuf,
    fs: String,
    /// `--keep`: the restored volume and the snapshot stay.
    keep: bool,
}

const NODE: &str = "demo-node";
const SOURCE: &str = "pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
const RESTORED: &str = "pvc-9b2f0c4e-1d2a-4b3c-8d4e-5f6a7b8c9d0e";
const DATA: &str = "hello from rds-csi: written in a pod, read back after a snapshot restore\n";

impl Walk<'_, '_> {
    async fn create(
        &mut self,
        name: &str,
        bytes: i64,
        source: Option<volume_content_source::Type>,
    ) -> Result<Volume, String> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match self.c.create_volume(create(&self.fs, name, bytes, source.clone())).await {
                Ok(r) => return r.into_inner().volume.ok_or_else(|| "no volume".to_string()),
                // A restore is filled in the background (ABORTED until done), and a snapshot
                // still being copied is UNAVAILABLE: the CO retries both, and so do we.
                Err(s)
                    if matches!(s.code(), tonic::Code::Aborted | tonic::Code::Unavailable)
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(s) => return Err(s.to_string()),
            }
        }
    }

    async fn snapshot(&mut self) -> Result<Snapshot, String> {
        self.steps.begin(&format!("CreateSnapshot nightly of {SOURCE}"));
        let req = CreateSnapshotRequest {
            name: "nightly".into(),
            source_volume_id: SOURCE.into(),
            ..Default::default()
        };
        let s = self
            .c
            .create_snapshot(req)
            .await
            .map_err(err)?
            .into_inner()
            .snapshot
            .ok_or("no snapshot")?;
        self.steps.done(&format!("{} ready_to_use={}", s.snapshot_id, s.ready_to_use));
        Ok(s)
    }

    fn staging(&self, v: &Volume) -> PathBuf {
        self.base.join("kubelet/plugins/staging").join(&v.volume_id)
    }

    fn target(&self, v: &Volume) -> PathBuf {
        self.base.join("kubelet/pods/demo-pod/volumes").join(&v.volume_id)
    }

    async fn stage_and_publish(&mut self, v: &Volume) -> Result<PathBuf, String> {
        let (staging, target) = (self.staging(v), self.target(v));
        std::fs::create_dir_all(&staging).map_err(err)?;
        self.steps.begin(&format!("ControllerPublishVolume {} to {NODE}", v.volume_id));
        let publish_context = self
            .c
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: v.volume_id.clone(),
                node_id: NODE.into(),
                volume_capability: Some(capability(&self.fs)),
                volume_context: v.volume_context.clone(),
                ..Default::default()
            })
            .await
            .map_err(err)?
            .into_inner()
            .publish_context;
        let mut keys: Vec<&String> = publish_context.keys().collect();
        keys.sort();
        self.steps.done(&format!(
            "fenced to {NODE}; publish context: {}",
            keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
        ));
        self.steps.begin(&format!("NodeStageVolume {}", v.volume_id));
        self.n
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: v.volume_id.clone(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(capability(&self.fs)),
                volume_context: v.volume_context.clone(),
                publish_context,
                ..Default::default()
            })
            .await
            .map_err(err)?;
        self.steps.done(&format!(
            "attached, {} checked (formatted only if proven blank), mounted at {}",
            self.fs,
            staging.display()
        ));
        self.steps.begin(&format!("NodePublishVolume {}", v.volume_id));
        self.n
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: v.volume_id.clone(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(capability(&self.fs)),
                volume_context: v.volume_context.clone(),
                ..Default::default()
            })
            .await
            .map_err(err)?;
        self.steps.done(&format!("bind-mounted (nosuid,nodev,noexec) at {}", target.display()));
        Ok(target)
    }

    async fn unpublish_and_unstage(&mut self, v: &Volume) -> Result<(), String> {
        self.steps.begin(&format!("NodeUnpublishVolume + NodeUnstageVolume {}", v.volume_id));
        self.n
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: v.volume_id.clone(),
                target_path: self.target(v).display().to_string(),
            })
            .await
            .map_err(err)?;
        self.n
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: v.volume_id.clone(),
                staging_target_path: self.staging(v).display().to_string(),
            })
            .await
            .map_err(err)?;
        self.c
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: v.volume_id.clone(),
                node_id: NODE.into(),
                ..Default::default()
            })
            .await
            .map_err(err)?;
        self.steps.done("unmounted, nothing holds the device, detached; ControllerUnpublishVolume released the fence");
        Ok(())
    }

    async fn expand_on_rds(&mut self) -> Result<ControllerExpandVolumeResponse, String> {
        let req = ControllerExpandVolumeRequest {
            volume_id: SOURCE.into(),
            capacity_range: Some(CapacityRange { required_bytes: 2 * GIB, limit_bytes: 0 }),
            volume_capability: Some(capability(&self.fs)),
            ..Default::default()
        };
        Ok(self.c.controller_expand_volume(req).await.map_err(err)?.into_inner())
    }

    /// The whole lifecycle, controller and node.
    async fn full(&mut self) -> Result<(), String> {
        self.steps.begin(&format!("CreateVolume {SOURCE} (1 GiB, {}, ReadWriteOnce)", self.fs));
        let v = self.create(SOURCE, GIB, None).await?;
        self.steps.done(&format!(
            "{} bytes, NQN {}, file {}",
            v.capacity_bytes, v.volume_context["nqn"], v.volume_context["volumePath"]
        ));
        let target = self.stage_and_publish(&v).await?;

        self.steps.begin("write a file in the pod's mount, fsync, read it back");
        let file = target.join("hello.txt");
        let f = std::fs::File::create(&file).map_err(err)?;
        f.write_all_at(DATA.as_bytes(), 0).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        let back = std::fs::read_to_string(&file).map_err(err)?;
        if back != DATA {
            return Err(format!("read back {back:?}"));
        }
        self.steps.done(&format!("{:?}", back.trim_end()));

        self.steps.begin(&format!("ControllerExpandVolume + NodeExpandVolume {SOURCE} to 2 GiB"));
        let g = self.expand_on_rds().await?;
        let n = self
            .n
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: SOURCE.into(),
                volume_path: target.display().to_string(),
                capacity_range: Some(CapacityRange { required_bytes: 2 * GIB, limit_bytes: 0 }),
                volume_capability: Some(capability(&self.fs)),
                ..Default::default()
            })
            .await
            .map_err(err)?
            .into_inner();
        let stats = self
            .n
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: SOURCE.into(),
                volume_path: target.display().to_string(),
                ..Default::default()
            })
            .await
            .map_err(err)?
            .into_inner();
        let total = stats.usage.first().map_or(0, |u| u.total);
        let cond = stats.volume_condition.map(|c| c.message).unwrap_or_default();
        self.steps.done(&format!(
            "RDS disk {} bytes, device {} bytes, filesystem now {} MiB ({cond})",
            g.capacity_bytes,
            n.capacity_bytes,
            total >> 20
        ));

        let snap = self.snapshot().await?;
        self.steps.begin(&format!("CreateVolume {RESTORED} from snapshot {}", snap.snapshot_id));
        let source = volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
            snapshot_id: snap.snapshot_id.clone(),
        });
        let r = self.create(RESTORED, 2 * GIB, Some(source)).await?;
        self.steps
            .done(&format!("{} bytes, file {}", r.capacity_bytes, r.volume_context["volumePath"]));
        let restored_target = self.stage_and_publish(&r).await?;
        self.steps.begin("read the file in the restored volume");
        let back = std::fs::read_to_string(restored_target.join("hello.txt")).map_err(err)?;
        if back != DATA {
            return Err(format!("the restored volume reads {back:?}"));
        }
        self.steps.done(&format!("{:?}", back.trim_end()));

        for vol in [&r, &v] {
            self.unpublish_and_unstage(vol).await?;
        }
        self.delete_all(&snap).await
    }

    /// Without root: the controller steps, with the "pod write" done on the backing file.
    async fn controller_only(&mut self) -> Result<(), String> {
        self.steps.begin(&format!("CreateVolume {SOURCE} (1 GiB, {}, ReadWriteOnce)", self.fs));
        let v = self.create(SOURCE, GIB, None).await?;
        self.steps.done(&format!(
            "{} bytes, NQN {}, file {}",
            v.capacity_bytes, v.volume_context["nqn"], v.volume_context["volumePath"]
        ));
        let file = self.files.join(v.volume_context["volumePath"].trim_start_matches('/'));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(err)?
            .write_all_at(DATA.as_bytes(), 4096)
            .map_err(err)?;
        println!("\n  (wrote {:?} into the backing file, as a node would)", DATA.trim_end());
        let snap = self.snapshot().await?;
        self.steps.begin(&format!("CreateVolume {RESTORED} from snapshot {}", snap.snapshot_id));
        let source = volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
            snapshot_id: snap.snapshot_id.clone(),
        });
        let r = self.create(RESTORED, GIB, Some(source)).await?;
        let rfile = self.files.join(r.volume_context["volumePath"].trim_start_matches('/'));
        let mut back = vec![0u8; DATA.len()];
        std::fs::File::open(&rfile).map_err(err)?.read_exact_at(&mut back, 4096).map_err(err)?;
        self.steps.done(&format!(
            "the restored file reads back {:?}",
            String::from_utf8_lossy(&back).trim_end()
        ));
        self.steps.begin(&format!("ControllerExpandVolume {SOURCE} to 2 GiB"));
        let g = self.expand_on_rds().await?;
        self.steps.done(&format!(
            "{} bytes, node expansion required: {}",
            g.capacity_bytes, g.node_expansion_required
        ));
        self.delete_all(&snap).await
    }

    /// After a failure: unpublish and unstage whatever is left, so nothing stays mounted or
    /// attached when the temporary directory goes.
    async fn cleanup(&mut self) {
        println!("\n  cleaning up after the failure");
        for id in [RESTORED, SOURCE] {
            let v = Volume { volume_id: id.into(), ..Default::default() };
            let target = self.target(&v).display().to_string();
            let staging = self.staging(&v).display().to_string();
            let unpublish =
                NodeUnpublishVolumeRequest { volume_id: id.into(), target_path: target };
            let _ = self.n.node_unpublish_volume(unpublish).await;
            let unstage =
                NodeUnstageVolumeRequest { volume_id: id.into(), staging_target_path: staging };
            let _ = self.n.node_unstage_volume(unstage).await;
        }
    }

    async fn delete_all(&mut self, snap: &Snapshot) -> Result<(), String> {
        if self.keep {
            println!("\n  --keep: the volumes and the snapshot stay on the emulated RDS");
            return Ok(());
        }
        self.steps.begin("DeleteVolume x2, DeleteSnapshot");
        for id in [SOURCE, RESTORED] {
            self.c
                .delete_volume(DeleteVolumeRequest { volume_id: id.into(), ..Default::default() })
                .await
                .map_err(err)?;
        }
        self.c
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: snap.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .map_err(err)?;
        let cap =
            self.c.get_capacity(GetCapacityRequest::default()).await.map_err(err)?.into_inner();
        self.steps.done(&format!("pool free again: {} GiB", cap.available_capacity >> 30));
        Ok(())
    }
}
