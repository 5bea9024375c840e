//! `rds-csi demo --backends N` (N ≥ 2): the controller against N emulated RDS appliances
//! (`rds-a` in zone `a`, `rds-b` in zone `b`, ...; `serve --emulated-backends`), walking
//! what several backends change (docs/topology.md): capacity per zone, placement by
//! topology, by the `backend` parameter and by free space, a restore that stays on its
//! source's backend, a clone across backends refused, one listing of all.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use csi::v1::{
    controller_client::ControllerClient, identity_client::IdentityClient,
    volume_content_source::Type, *,
};
use tonic::transport::Channel;

use crate::{
    cli::{Roles, ServeConfig},
    endpoint::Endpoint,
    names::topology_zone_key,
};

const DRIVER: &str = "rds.csi.srvlab.io";
const GIB: i64 = 1 << 30;
const WALK_DEADLINE: Duration = Duration::from_secs(300);

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn zone(z: &str) -> Topology {
    Topology { segments: HashMap::from([(topology_zone_key(DRIVER), z.to_string())]) }
}

fn create(name: &str, gib: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: gib * GIB, limit_bytes: 0 }),
        volume_capabilities: vec![crate::demo::capability("ext4")],
        ..Default::default()
    }
}

fn step(what: &str) {
    println!("\n  {what}");
}

fn result(text: impl std::fmt::Display) {
    println!("    -> {text}");
}

/// Runs the walk; returns an error message on failure.
pub async fn run(backends: u8, keep: Option<PathBuf>) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(err)?;
    let dir = keep.clone().unwrap_or_else(|| tmp.path().join("rds"));
    let socket = tmp.path().join("csi.sock");
    println!(
        "rds-csi {} demo: one controller, {backends} emulated RDS appliances (docs/topology.md)",
        crate::version::VERSION
    );
    let config = ServeConfig {
        endpoint: Endpoint::Unix(socket.clone()),
        roles: Roles { controller: true, node_id: None },
        driver_name: DRIVER.into(),
        topology: HashMap::from([(topology_zone_key(DRIVER), "default".into())]),
        metrics_address: None,
        shutdown_timeout: Duration::from_secs(5),
        rds: None,
        backends: Vec::new(),
        emulated_backends: backends,
        controller: crate::demo::controller_args(true).validate()?,
        rds_probe_interval: Duration::from_secs(1),
        node: None,
        emulated_rds: Some(dir.clone()),
        emulated_rds_nvmet: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::run(config, async {
        let _ = stopped.await;
    }));
    // Every call of the walk, the restore's retries included, within one deadline.
    let outcome = tokio::time::timeout(WALK_DEADLINE, walk(&socket, backends, keep.is_some()))
        .await
        .unwrap_or_else(|_| {
            Err(format!("the walk did not finish within {} s", WALK_DEADLINE.as_secs()))
        });
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    outcome?;
    println!("\ndemo complete: every step above ran through the real CSI gRPC API.");
    if keep.is_some() {
        println!(
            "kept in {0}: each appliance's state in {0}/rds-a, {0}/rds-b, ... (`rds-csi volumes --emulated-rds {0}/rds-b --backend rds-b`)",
            dir.display()
        );
    }
    Ok(())
}

async fn connect(socket: &std::path::Path) -> Result<Channel, String> {
    for _ in 0..200 {
        if let Ok(ch) = crate::endpoint::unix_channel(socket).await {
            let mut id = IdentityClient::new(ch.clone());
            // Probe is ready once one appliance is connected; ListVolumes answers once every
            // one is (it is UNAVAILABLE while any is down).
            let ready = id.probe(ProbeRequest {}).await.map_err(err)?.into_inner().ready;
            let all =
                ControllerClient::new(ch.clone()).list_volumes(ListVolumesRequest::default()).await;
            if ready == Some(true) && all.is_ok() {
                return Ok(ch);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the driver did not become ready".into())
}

async fn walk(socket: &std::path::Path, backends: u8, keep: bool) -> Result<(), String> {
    let mut c = ControllerClient::new(connect(socket).await?);
    let zones: Vec<String> = (0..backends).map(|i| char::from(b'a' + i).to_string()).collect();
    println!(
        "  backends: {}",
        zones.iter().map(|z| format!("rds-{z} (zone {z})")).collect::<Vec<_>>().join(", ")
    );

    step("GetCapacity per zone (what CSIStorageCapacity would publish per segment)");
    for z in &zones {
        let cap = c
            .get_capacity(GetCapacityRequest {
                accessible_topology: Some(zone(z)),
                ..Default::default()
            })
            .await
            .map_err(err)?
            .into_inner();
        result(format!("zone {z}: {} GiB free", cap.available_capacity / GIB));
    }
    let all = c.get_capacity(GetCapacityRequest::default()).await.map_err(err)?.into_inner();
    result(format!("all zones: {} GiB free", all.available_capacity / GIB));

    let mut made = Vec::new();
    step(
        "CreateVolume for a pod in zone a (requisite and preferred: zone a, as WaitForFirstConsumer sends)",
    );
    let mut req = create("data-a", 1);
    req.accessibility_requirements =
        Some(TopologyRequirement { requisite: vec![zone("a")], preferred: vec![zone("a")] });
    let va = c.create_volume(req).await.map_err(err)?.into_inner().volume.unwrap_or_default();
    result(format!("{} on {:?}", va.volume_id, va.accessible_topology[0].segments));
    made.push(va.volume_id.clone());

    step("CreateVolume with StorageClass parameter backend=rds-b");
    let mut req = create("data-b", 2);
    req.parameters.insert("backend".into(), "rds-b".into());
    let vb = c.create_volume(req).await.map_err(err)?.into_inner().volume.unwrap_or_default();
    result(format!(
        "{} (volume context rdsBackend={})",
        vb.volume_id,
        vb.volume_context.get("rdsBackend").map_or("-", String::as_str)
    ));
    made.push(vb.volume_id.clone());

    step("CreateVolume with no constraint: the backend with the most free space");
    let vf = c
        .create_volume(create("data-free", 1))
        .await
        .map_err(err)?
        .into_inner()
        .volume
        .unwrap_or_default();
    result(&vf.volume_id);
    made.push(vf.volume_id.clone());

    step(&format!(
        "CreateSnapshot of {} and a restore: it stays on the source's backend",
        vb.volume_id
    ));
    let snap = c
        .create_snapshot(CreateSnapshotRequest {
            name: "data-b-snap".into(),
            source_volume_id: vb.volume_id.clone(),
            ..Default::default()
        })
        .await
        .map_err(err)?
        .into_inner()
        .snapshot
        .unwrap_or_default();
    result(format!("snapshot {}", snap.snapshot_id));
    let mut req = create("data-b-restored", 2);
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(Type::Snapshot(volume_content_source::SnapshotSource {
            snapshot_id: snap.snapshot_id.clone(),
        })),
    });
    let restored = loop {
        match c.create_volume(req.clone()).await {
            Ok(r) => break r.into_inner().volume.unwrap_or_default(),
            // The snapshot is still being copied: the CO retries, as here.
            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Aborted) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => return Err(err(s)),
        }
    };
    result(format!("restored as {}", restored.volume_id));
    made.push(restored.volume_id.clone());

    step(&format!(
        "A clone of {} into zone a: refused, copies stay inside one appliance",
        vb.volume_id
    ));
    let mut req = create("clone-a", 2);
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(Type::Volume(volume_content_source::VolumeSource {
            volume_id: vb.volume_id.clone(),
        })),
    });
    req.accessibility_requirements =
        Some(TopologyRequirement { requisite: vec![zone("a")], preferred: vec![] });
    match c.create_volume(req).await {
        Err(s) => result(format!("{:?}: {}", s.code(), s.message())),
        Ok(_) => return Err("a clone across backends was accepted".into()),
    }

    step("ListVolumes: one listing over every backend");
    let list = c.list_volumes(ListVolumesRequest::default()).await.map_err(err)?.into_inner();
    for e in list.entries {
        result(e.volume.map(|v| v.volume_id).unwrap_or_default());
    }

    if keep {
        return Ok(());
    }
    step("DeleteSnapshot and DeleteVolume, each on its own appliance");
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .map_err(err)?;
    for id in made {
        c.delete_volume(DeleteVolumeRequest { volume_id: id.clone(), ..Default::default() })
            .await
            .map_err(err)?;
        result(format!("{id} deleted"));
    }
    Ok(())
}
