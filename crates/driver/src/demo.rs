//! `rds-csi demo`: the driver's main job against the embedded RDS emulator, in one command.
//!
//! Starts the emulator (real SSH on loopback, real files in a temporary directory), starts the
//! real controller against it over SSH, and walks a volume through its life over CSI gRPC on a
//! unix socket: create, write data, snapshot, restore, expand, capacity, list, delete. Every
//! step prints what happened and the RouterOS commands it cost. The node half (NVMe/TCP
//! attach, mount) joins when the node service lands.

use std::{
    collections::HashMap,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::Duration,
};

use csi::v1::{
    controller_client::ControllerClient, identity_client::IdentityClient, volume_capability,
    volume_content_source, *,
};
use rds_emulator::{emulator::Emulator, exec::Behaviour, ssh, store::InitOptions};
use tonic::transport::Channel;

use crate::{
    cli::{Roles, ServeConfig},
    controller::config::ControllerArgs,
    endpoint::Endpoint,
    rds::RdsConfig,
};

const GIB: i64 = 1 << 30;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

struct Step<'a> {
    emu: &'a Emulator,
    seen: usize,
}

impl Step<'_> {
    /// Prints the RouterOS commands sent since the last step.
    fn commands(&mut self) {
        let log = self.emu.command_log();
        for entry in &log[self.seen..] {
            let mut line = entry.command.clone();
            if line.len() > 110 {
                line.truncate(107);
                line.push_str("...");
            }
            println!("      ssh> {line}");
        }
        self.seen = log.len();
    }
}

fn capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(
            volume_capability::MountVolume::default(),
        )),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

fn create(
    name: &str,
    bytes: i64,
    source: Option<volume_content_source::Type>,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![capability()],
        parameters: HashMap::from([("csi.storage.k8s.io/fstype".into(), "ext4".into())]),
        volume_content_source: source.map(|t| VolumeContentSource { r#type: Some(t) }),
        ..Default::default()
    }
}

async fn channel(socket: &Path) -> Result<Channel, String> {
    let socket = socket.to_path_buf();
    tonic::transport::Endpoint::try_from("http://[::1]:50051")
        .map_err(err)?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(err)
}

/// Runs the demo; returns an error message on failure.
pub async fn run() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(err)?;
    let base = dir.path();
    println!(
        "rds-csi {} demo: the controller against the embedded RDS emulator\n",
        crate::version::VERSION
    );

    // 1. The emulated RDS: SSH on loopback, a 100 GiB pool of sparse files under a temp dir.
    let key_file: PathBuf = base.join("id_ed25519");
    let init = InitOptions { pool_slot: "storage-pool".into(), pool_size: 100 << 30 };
    let emu = Emulator::open(base.join("rds"), &init, Behaviour::default(), None).map_err(err)?;
    let ssh::Loopback { address, fingerprint, .. } =
        ssh::serve_loopback(emu.clone(), &key_file).await?;
    println!(
        "  RDS emulator: SSH {address}, host key {fingerprint}, data in {}",
        base.join("rds").display()
    );

    // 2. The real controller, connected to it over SSH with the host key pinned.
    let socket = base.join("csi.sock");
    let mut ssh_opts = routeros::ssh::SshOptions::new(
        &address.to_string(),
        "admin",
        key_file,
        routeros::ssh::HostKeyPolicy::Fingerprint(fingerprint),
    );
    ssh_opts.probe_interval = Duration::from_secs(1);
    let controller_args = ControllerArgs {
        volume_path: "/storage-pool/metal-csi".into(),
        allowed_base_paths: Vec::new(),
        nvme_address: Some("127.0.0.1".into()),
        nvme_port: 4420,
        nqn_prefix: "nqn.2000-02.com.mikrotik:".into(),
        min_volume_size: 1 << 30,
        max_volume_size: 16 << 40,
    };
    let config = ServeConfig {
        endpoint: Endpoint::Unix(socket.clone()),
        roles: Roles { controller: true, node_id: None },
        driver_name: "rds.csi.srvlab.io".into(),
        topology: HashMap::from([("topology.rds.csi.srvlab.io/zone".into(), "default".into())]),
        metrics_address: None,
        shutdown_timeout: Duration::from_secs(5),
        rds: Some(RdsConfig::Ssh(ssh_opts)),
        controller: controller_args.validate()?,
        rds_probe_interval: Duration::from_secs(1),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::run(config, async {
        let _ = stopped.await;
    }));
    let mut identity = None;
    for _ in 0..100 {
        if let Ok(ch) = channel(&socket).await {
            identity = Some(IdentityClient::new(ch));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut identity = identity.ok_or("the controller did not start")?;
    let info = identity.get_plugin_info(GetPluginInfoRequest {}).await.map_err(err)?.into_inner();
    println!("  controller: {} {} on {}", info.name, info.vendor_version, socket.display());
    for _ in 0..100 {
        if identity.probe(ProbeRequest {}).await.map_err(err)?.into_inner().ready == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("  Probe: ready (connected to the RDS)\n");

    let mut c = ControllerClient::new(channel(&socket).await?);
    let mut step = Step { emu: &emu, seen: emu.command_log().len() };
    let result = walk(&mut c, &mut step, &emu).await;

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    result?;
    println!("\ndemo complete: every step above ran against the emulator over real SSH.");
    println!(
        "Next: the node service (NVMe/TCP attach, format, mount) joins this demo in a later release."
    );
    Ok(())
}

async fn walk(
    c: &mut ControllerClient<Channel>,
    step: &mut Step<'_>,
    emu: &Emulator,
) -> Result<(), String> {
    let name = "pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
    println!("  CreateVolume {name} (10 GiB, filesystem, ReadWriteOnce)");
    let v = c
        .create_volume(create(name, 10 * GIB, None))
        .await
        .map_err(err)?
        .into_inner()
        .volume
        .ok_or("no volume")?;
    println!(
        "    -> {} bytes, NQN {}, file {}",
        v.capacity_bytes, v.volume_context["nqn"], v.volume_context["volumePath"]
    );
    step.commands();
    let file = v.volume_context["volumePath"].trim_start_matches('/').to_string();

    let data = b"hello from rds-csi";
    emu.with_store(|s| -> std::io::Result<()> {
        std::fs::OpenOptions::new().write(true).open(s.host_path(&file))?.write_all_at(data, 4096)
    })
    .map_err(err)?;
    println!(
        "\n  (writing {:?} into the volume's backing file, as a node would over NVMe/TCP)",
        String::from_utf8_lossy(data)
    );

    println!("\n  CreateSnapshot nightly of {name}");
    let snap = CreateSnapshotRequest {
        name: "nightly".into(),
        source_volume_id: name.into(),
        ..Default::default()
    };
    let s =
        c.create_snapshot(snap).await.map_err(err)?.into_inner().snapshot.ok_or("no snapshot")?;
    println!("    -> {} ready_to_use={}", s.snapshot_id, s.ready_to_use);
    step.commands();

    let restored = "pvc-9b2f0c4e-1d2a-4b3c-8d4e-5f6a7b8c9d0e";
    println!("\n  CreateVolume {restored} from snapshot {}", s.snapshot_id);
    let source = volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
        snapshot_id: s.snapshot_id.clone(),
    });
    let r = loop {
        match c.create_volume(create(restored, GIB, Some(source.clone()))).await {
            Ok(r) => break r.into_inner().volume.ok_or("no volume")?,
            Err(status) if status.code() == tonic::Code::Aborted => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(status) => return Err(status.to_string()),
        }
    };
    let restored_file = r.volume_context["volumePath"].trim_start_matches('/').to_string();
    let mut back = vec![0u8; data.len()];
    emu.with_store(|s| -> std::io::Result<()> {
        std::fs::File::open(s.host_path(&restored_file))?.read_exact_at(&mut back, 4096)
    })
    .map_err(err)?;
    println!(
        "    -> {} bytes; the restored file reads back {:?}",
        r.capacity_bytes,
        String::from_utf8_lossy(&back)
    );
    step.commands();

    println!("\n  ControllerExpandVolume {name} to 20 GiB");
    let grow = ControllerExpandVolumeRequest {
        volume_id: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: 20 * GIB, limit_bytes: 0 }),
        volume_capability: Some(capability()),
        ..Default::default()
    };
    let g = c.controller_expand_volume(grow).await.map_err(err)?.into_inner();
    println!(
        "    -> {} bytes, node expansion required: {}",
        g.capacity_bytes, g.node_expansion_required
    );
    step.commands();

    let cap = c.get_capacity(GetCapacityRequest::default()).await.map_err(err)?.into_inner();
    let list = c.list_volumes(ListVolumesRequest::default()).await.map_err(err)?.into_inner();
    println!(
        "\n  GetCapacity: {} GiB free; ListVolumes: {} volumes",
        cap.available_capacity >> 30,
        list.entries.len()
    );
    step.commands();

    println!("\n  DeleteVolume x2, DeleteSnapshot");
    for id in [name, restored] {
        c.delete_volume(DeleteVolumeRequest { volume_id: id.into(), ..Default::default() })
            .await
            .map_err(err)?;
    }
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: s.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .map_err(err)?;
    step.commands();
    let cap = c.get_capacity(GetCapacityRequest::default()).await.map_err(err)?.into_inner();
    println!("    -> pool free again: {} GiB", cap.available_capacity >> 30);
    Ok(())
}
