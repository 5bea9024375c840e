//! Several RDS appliances behind one controller (docs/topology.md), black-box: the real
//! binary with a backends file naming two in-process emulators (real SSH), and
//! `serve --emulated-rds DIR --emulated-backends 2`. Placement by topology, by parameter
//! and by capacity; every RPC routed by its id; one backend down while the other serves;
//! capacity per topology segment.

mod support;

use std::{collections::HashMap, time::Duration};

use csi::v1::{
    controller_client::ControllerClient, volume_capability::access_mode::Mode,
    volume_content_source::Type, *,
};
use rds_emulator::model::Kind;
use support::{
    Daemon, cap,
    controller::*,
    rds::{Rds, rds},
};
use tonic::{Code, transport::Channel};

const ZONE: &str = "topology.rds.csi.srvlab.io/zone";

fn zone(z: &str) -> Topology {
    Topology { segments: HashMap::from([(ZONE.to_string(), z.to_string())]) }
}

fn entry(name: &str, rds: &Rds, zone: &str) -> String {
    format!(
        "  - name: {name}\n    address: {}\n    sshKeyFile: {}\n    hostKey: \"{}\"\n    probeIntervalSeconds: 1\n    segments: {{ {ZONE}: {zone} }}\n",
        rds.address,
        rds.key_file.display(),
        rds.fingerprint
    )
}

/// A controller over a backends file with `rds-a` (zone a) and `rds-b` (zone b), plus `extra`.
async fn two(extra: &[&str]) -> (Rds, Rds, Daemon, ControllerClient<Channel>, tempfile::TempDir) {
    let (a, b) = (rds().await, rds().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backends.yaml");
    std::fs::write(
        &file,
        format!("backends:\n{}{}", entry("rds-a", &a, "a"), entry("rds-b", &b, "b")),
    )
    .unwrap();
    let mut flags: Vec<String> = [
        "--controller",
        "--attachment-state",
        "memory",
        "--metrics-address",
        "127.0.0.1:0",
        "--known-node-id",
        "node-1",
        "--backends-file",
    ]
    .map(String::from)
    .into();
    flags.push(file.display().to_string());
    flags.extend(extra.iter().map(|s| s.to_string()));
    let daemon = Daemon::start_owned(&flags);
    wait_ready(&daemon).await;
    let client = ControllerClient::new(daemon.channel().await);
    (a, b, daemon, client, dir)
}

async fn wait_ready(daemon: &Daemon) {
    for _ in 0..200 {
        let (code, body) = daemon.http_get("/readyz");
        if code == 200 && !body.contains("degraded") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not ready: {:?}", daemon.http_get("/readyz"));
}

/// The file disks (volumes and snapshots) on an emulated RDS.
fn slots(rds: &Rds) -> Vec<String> {
    let mut s: Vec<String> = rds.emu.with_store(|s| {
        s.disks()
            .iter()
            .filter(|d| matches!(d.kind, Kind::File(_)))
            .map(|d| d.slot.clone())
            .collect()
    });
    s.sort();
    s
}

/// The pool's free bytes as the emulated RDS reports them.
fn free(rds: &Rds) -> i64 {
    rds.emu.with_store(|s| {
        let pool = s
            .disks()
            .iter()
            .find_map(|d| match &d.kind {
                Kind::Raid(p) => Some(p.clone()),
                Kind::File(_) => None,
            })
            .unwrap();
        pool.size.saturating_sub(s.usage(&pool).used) as i64
    })
}

fn size_of(rds: &Rds, slot: &str) -> u64 {
    rds.emu.with_store(|s| {
        s.disks()
            .iter()
            .find_map(|d| match &d.kind {
                Kind::File(f) if d.slot == slot => Some(f.size),
                _ => None,
            })
            .unwrap()
    })
}

fn topo_req(name: &str, requisite: &[&str], preferred: &[&str]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        accessibility_requirements: Some(TopologyRequirement {
            requisite: requisite.iter().map(|z| zone(z)).collect(),
            preferred: preferred.iter().map(|z| zone(z)).collect(),
        }),
        ..create(name, GIB, &[])
    }
}

async fn make(c: &mut ControllerClient<Channel>, req: CreateVolumeRequest) -> Volume {
    c.create_volume(req).await.unwrap().into_inner().volume.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn placement_routing_and_capacity_across_two_backends() {
    let (a, b, daemon, mut c, _dir) = two(&[]).await;

    // By topology: requisite decides; preferred orders; the answer says where it is.
    let va = make(&mut c, topo_req("vol-a", &["a"], &["a"])).await;
    assert!(va.volume_id.starts_with("rds-a:pvc-"), "{}", va.volume_id);
    assert_eq!(va.accessible_topology, vec![zone("a")]);
    assert_eq!(va.volume_context["rdsBackend"], "rds-a");
    let vb = make(&mut c, topo_req("vol-b", &["a", "b"], &["b", "a"])).await;
    assert!(vb.volume_id.starts_with("rds-b:pvc-"), "{}", vb.volume_id);
    assert_eq!(vb.accessible_topology, vec![zone("b")]);
    let slot = |v: &Volume| v.volume_id.split_once(':').unwrap().1.to_string();
    assert_eq!(slots(&a), vec![slot(&va)]);
    assert_eq!(slots(&b), vec![slot(&vb)]);
    // The retry of a create finds the volume where it is, whatever else changed.
    let again = make(&mut c, topo_req("vol-b", &["a", "b"], &["a", "b"])).await;
    assert_eq!(again.volume_id, vb.volume_id, "idempotent across backends");
    let (k, msg) = code(c.create_volume(topo_req("vol-c", &["c"], &[])).await);
    assert_eq!(k, Code::ResourceExhausted, "{msg}");
    assert!(msg.contains("zone=c") && msg.contains("rds-a") && msg.contains("rds-b"), "{msg}");

    // Round trips of a create with two candidates: the slot and the pool read on each (at
    // the same time), then the one-line add on the chosen one; a named backend is the only
    // candidate: the add alone, as with one RDS.
    let sent = |r: &Rds, from: usize| {
        r.emu.command_log()[from..].iter().filter(|e| !e.command.contains("/system")).count()
    };
    let (from_a, from_b) = (a.emu.command_log().len(), b.emu.command_log().len());
    let vr = make(&mut c, create("vol-r", GIB, &[])).await;
    assert_eq!(sent(&a, from_a) + sent(&b, from_b), 2 + 2 + 1, "{}", vr.volume_id);
    let (from_a, from_b) = (a.emu.command_log().len(), b.emu.command_log().len());
    let vn = make(&mut c, create("vol-n", GIB, &[("backend", "rds-a")])).await;
    assert_eq!((sent(&a, from_a), sent(&b, from_b)), (1, 0), "{}", vn.volume_id);

    // What a backend would refuse is refused with its code, before placement reads anything.
    let mut bad = create("bad", GIB, &[]);
    bad.volume_capabilities.clear();
    assert_eq!(code(c.create_volume(bad).await).0, Code::InvalidArgument);
    let (k, msg) = code(c.create_volume(create("bad", GIB, &[("volumePath", "/etc")])).await);
    assert_eq!(k, Code::InvalidArgument, "{msg}");
    let (k, msg) = code(c.create_volume(create("bad", 1 << 50, &[])).await);
    assert_eq!(k, Code::OutOfRange, "{msg}");

    // By parameter.
    let vp = make(&mut c, create("vol-p", GIB, &[("backend", "rds-b")])).await;
    assert!(vp.volume_id.starts_with("rds-b:"), "{}", vp.volume_id);
    let (k, msg) = code(c.create_volume(create("vol-x", GIB, &[("backend", "rds-z")])).await);
    assert_eq!(k, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("rds-z") && msg.contains("rds-a, rds-b"), "{msg}");
    let mut clash = topo_req("vol-y", &["a"], &[]);
    clash.parameters.insert("backend".into(), "rds-b".into());
    let (k, msg) = code(c.create_volume(clash).await);
    assert_eq!(k, Code::ResourceExhausted, "{msg}");

    // By capacity: rds-a nearly full, so a volume that only rds-b can hold goes there, and
    // one that neither can hold is refused.
    let big = make(&mut c, create("big", 90 * GIB, &[("backend", "rds-a")])).await;
    assert!(big.volume_id.starts_with("rds-a:"));
    let v20 = make(&mut c, create("vol-20", 20 * GIB, &[])).await;
    assert!(v20.volume_id.starts_with("rds-b:"), "only rds-b has room: {}", v20.volume_id);
    let (k, msg) = code(
        c.create_volume(CreateVolumeRequest {
            capacity_range: Some(CapacityRange { required_bytes: 30 * GIB, limit_bytes: 0 }),
            ..topo_req("vol-30", &["a"], &[])
        })
        .await,
    );
    assert_eq!(k, Code::ResourceExhausted, "{msg}");
    assert!(msg.contains("rds-a has"), "{msg}");
    let (k, msg) = code(c.create_volume(create("huge", 200 * GIB, &[])).await);
    assert_eq!(k, Code::ResourceExhausted, "{msg}");

    // Capacity per segment, and in all.
    let cap_of = |t: Option<Topology>| GetCapacityRequest {
        volume_capabilities: vec![cap(false, Mode::SingleNodeWriter)],
        accessible_topology: t,
        ..Default::default()
    };
    let ca = c.get_capacity(cap_of(Some(zone("a")))).await.unwrap().into_inner();
    let cb = c.get_capacity(cap_of(Some(zone("b")))).await.unwrap().into_inner();
    let all = c.get_capacity(cap_of(None)).await.unwrap().into_inner();
    assert_eq!(ca.available_capacity, free(&a));
    assert_eq!(cb.available_capacity, free(&b));
    assert!(ca.available_capacity < cb.available_capacity);
    assert_eq!(all.available_capacity, free(&a) + free(&b));
    assert_eq!(all.maximum_volume_size, cb.maximum_volume_size, "the largest one backend holds");
    let none = c.get_capacity(cap_of(Some(zone("c")))).await.unwrap().into_inner();
    assert_eq!(none.available_capacity, 0);

    // Routing of every RPC by id.
    let vid = vb.volume_id.clone();
    let published = c
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: vid.clone(),
            node_id: "node-1".into(),
            volume_capability: Some(cap(false, Mode::SingleNodeWriter)),
            volume_context: vb.volume_context.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!published.publish_context.is_empty());
    let got = c
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: vid.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.as_ref().unwrap().volume_id, vid);
    assert_eq!(got.status.unwrap().published_node_ids, vec!["node-1".to_string()]);
    let (k, msg) = code(
        c.delete_volume(DeleteVolumeRequest { volume_id: vid.clone(), ..Default::default() }).await,
    );
    assert_eq!(k, Code::FailedPrecondition, "an attached rds-b volume is not deleted: {msg}");
    c.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: vid.clone(),
        node_id: "node-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let validated = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: vid.clone(),
            volume_capabilities: vec![cap(false, Mode::SingleNodeWriter)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(validated.confirmed.is_some());
    let grown = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: vid.clone(),
            capacity_range: Some(CapacityRange { required_bytes: 2 * GIB, limit_bytes: 0 }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 2 * GIB);
    assert_eq!(size_of(&b, &slot(&vb)), 2 << 30);
    c.controller_modify_volume(ControllerModifyVolumeRequest {
        volume_id: vid.clone(),
        mutable_parameters: HashMap::from([("compress".into(), "yes".into())]),
        ..Default::default()
    })
    .await
    .unwrap();
    let snap = c
        .create_snapshot(snap_req("snap-b", &vid, &[]))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(snap.snapshot_id.starts_with("rds-b:snap-"), "{}", snap.snapshot_id);
    assert_eq!(snap.source_volume_id, vid);
    let snap = wait_snapshot(&mut c, &snap.snapshot_id).await;
    let listed = c
        .list_snapshots(ListSnapshotsRequest {
            source_volume_id: vid.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    let all_snaps = c.list_snapshots(ListSnapshotsRequest::default()).await.unwrap().into_inner();
    assert_eq!(all_snaps.entries.len(), 1);
    // Restores and clones stay on their source's backend.
    let restored = make(
        &mut c,
        from_source(
            "restored",
            2 * GIB,
            Type::Snapshot(volume_content_source::SnapshotSource {
                snapshot_id: snap.snapshot_id.clone(),
            }),
        ),
    )
    .await;
    assert!(restored.volume_id.starts_with("rds-b:"), "{}", restored.volume_id);
    let mut cross = from_source(
        "cross",
        2 * GIB,
        Type::Volume(volume_content_source::VolumeSource { volume_id: vid.clone() }),
    );
    cross.parameters.insert("backend".into(), "rds-a".into());
    let (k, msg) = code(c.create_volume(cross).await);
    assert_eq!(k, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("stay on their source's backend") && msg.contains("rds-b"), "{msg}");
    let mut cross = from_source(
        "cross",
        2 * GIB,
        Type::Volume(volume_content_source::VolumeSource { volume_id: vid.clone() }),
    );
    cross.accessibility_requirements =
        Some(TopologyRequirement { requisite: vec![zone("a")], preferred: vec![] });
    let (k, msg) = code(c.create_volume(cross).await);
    assert_eq!(k, Code::InvalidArgument, "{msg}");
    // Group snapshots: one backend per group.
    let (k, msg) = code(
        GroupClient::new(daemon.channel().await)
            .create_volume_group_snapshot(CreateVolumeGroupSnapshotRequest {
                name: "g".into(),
                source_volume_ids: vec![va.volume_id.clone(), vid.clone()],
                ..Default::default()
            })
            .await,
    );
    assert_eq!(k, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("rds-a") && msg.contains("rds-b"), "{msg}");
    // ListVolumes: both backends, one sorted listing, paginated.
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_volumes(ListVolumesRequest { max_entries: 2, starting_token: token })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.entries.into_iter().map(|e| e.volume.unwrap().volume_id));
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(
        ids.len(),
        slots(&a).iter().chain(&slots(&b)).filter(|s| s.starts_with("pvc-")).count()
    );
    assert!(
        ids.iter().any(|i| i.starts_with("rds-a:")) && ids.iter().any(|i| i.starts_with("rds-b:"))
    );

    // An id naming a backend this controller lacks: NOT_FOUND naming it; nothing touched.
    let ghost = format!("rds-z:{}", slot(&va));
    let (k, msg) = code(
        c.delete_volume(DeleteVolumeRequest { volume_id: ghost.clone(), ..Default::default() })
            .await,
    );
    assert_eq!(k, Code::NotFound, "{msg}");
    assert!(msg.contains("\"rds-z\"") && msg.contains("rds-a, rds-b"), "{msg}");
    let (k, _) =
        code(c.controller_get_volume(ControllerGetVolumeRequest { volume_id: ghost }).await);
    assert_eq!(k, Code::NotFound);
    // The same slot under the other backend's name is not that volume.
    let wrong = format!("rds-b:{}", slot(&va));
    let (k, _) =
        code(c.controller_get_volume(ControllerGetVolumeRequest { volume_id: wrong }).await);
    assert_eq!(k, Code::NotFound);
    assert!(slots(&a).contains(&slot(&va)));

    // Deletes go to the right appliance.
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    for v in [&va, &vb, &vp, &big, &v20, &restored, &vr, &vn] {
        c.delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(slots(&a), Vec::<String>::new());
    assert_eq!(slots(&b), Vec::<String>::new());

    // Each backend's connection has its own metrics, labelled.
    let (_, metrics) = daemon.http_get("/metrics");
    for name in ["rds-a", "rds-b"] {
        assert!(
            metrics.contains(&format!("rds_csi_rds_connection_state{{backend=\"{name}\"}} 1")),
            "{metrics}"
        );
    }
}

type GroupClient<T> = csi::v1::group_controller_client::GroupControllerClient<T>;

async fn wait_snapshot(c: &mut ControllerClient<Channel>, id: &str) -> Snapshot {
    for _ in 0..200 {
        let s = c
            .get_snapshot(GetSnapshotRequest { snapshot_id: id.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        if s.ready_to_use {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("snapshot {id} never ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_backend_down_leaves_the_other_serving() {
    let (a, b, daemon, mut c, _dir) = two(&[]).await;
    let va = make(&mut c, create("on-a", GIB, &[("backend", "rds-a")])).await;
    let vb = make(&mut c, create("on-b", GIB, &[("backend", "rds-b")])).await;

    // rds-a goes down (its connections drop, new ones are refused).
    a.emu.reboot(Duration::from_secs(600));
    let mut degraded = String::new();
    for _ in 0..200 {
        let (code, body) = daemon.http_get("/readyz");
        if code == 200 && body.contains("degraded") {
            degraded = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(degraded.contains("backend rds-a") && !degraded.contains("rds-b"), "{degraded}");
    let probe = csi::v1::identity_client::IdentityClient::new(daemon.channel().await)
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true), "rds-b still serves");
    let (_, metrics) = daemon.http_get("/metrics");
    assert!(metrics.contains("rds_csi_rds_connection_state{backend=\"rds-a\"} 0"), "{metrics}");
    assert!(metrics.contains("rds_csi_rds_connection_state{backend=\"rds-b\"} 1"), "{metrics}");

    // rds-b's volumes work; new volumes go to rds-b; rds-a's volumes are unavailable.
    let got = c
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: vb.volume_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.unwrap().volume_id, vb.volume_id);
    let fresh = make(&mut c, create("fresh", GIB, &[])).await;
    assert!(fresh.volume_id.starts_with("rds-b:"), "{}", fresh.volume_id);
    let cap = c.get_capacity(GetCapacityRequest::default()).await.unwrap().into_inner();
    assert_eq!(cap.available_capacity, free(&b), "rds-a counts nothing");
    let err = c
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: va.volume_id.clone() })
        .await
        .unwrap_err();
    assert!(matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded), "{err:?}");
    let (k, msg) = code(c.create_volume(topo_req("only-a", &["a"], &[])).await);
    assert_eq!(k, Code::Unavailable, "the CO retries: {msg}");
    assert!(msg.contains("rds-a cannot be reached"), "{msg}");
    let (k, msg) = code(c.list_volumes(ListVolumesRequest::default()).await);
    assert!(matches!(k, Code::Unavailable | Code::DeadlineExceeded), "{msg}");
    assert!(msg.contains("rds-a"), "a partial listing would say volumes are gone: {msg}");
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_flags_backend_keeps_bare_ids_beside_the_file() {
    // Upgrading from one RDS: the --rds-* flags stay (backend `default`, bare ids), the
    // backends file adds rds-b.
    let (a, b) = (rds().await, rds().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backends.yaml");
    std::fs::write(&file, format!("backends:\n{}", entry("rds-b", &b, "b"))).unwrap();
    let mut flags = a.flags("ssh");
    flags.extend(["--backends-file".to_string(), file.display().to_string()]);
    let daemon = Daemon::start_owned(&flags);
    wait_ready(&daemon).await;
    let mut c = ControllerClient::new(daemon.channel().await);
    let old = make(&mut c, create("old", GIB, &[("backend", "default")])).await;
    assert!(old.volume_id.starts_with("pvc-"), "{}", old.volume_id);
    assert_eq!(old.accessible_topology, vec![zone("default")]);
    assert!(!old.volume_context.contains_key("rdsBackend"));
    let new = make(&mut c, topo_req("new", &["b"], &[])).await;
    assert!(new.volume_id.starts_with("rds-b:pvc-"), "{}", new.volume_id);
    // A volume the Go driver made on the first RDS is found by its bare id.
    a.ros("/disk add type=file file-path=storage-pool/metal-csi/pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b.img file-size=1G slot=pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b nvme-tcp-export=yes nvme-tcp-server-port=4420");
    let go = c
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: "pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(go.volume.unwrap().capacity_bytes, GIB);
    // Both in one file as well as the flags' default: refused at start with the fix.
    std::fs::write(&file, format!("backends:\n{}", entry("default", &b, "b"))).unwrap();
    let out = support::serve_command(
        &dir.path().join("x.sock"),
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("keep one of them"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn emulated_backends_serve_two_zones() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_owned(&[
        "--controller".into(),
        "--metrics-address".into(),
        "127.0.0.1:0".into(),
        "--emulated-rds".into(),
        dir.path().display().to_string(),
        "--emulated-backends".into(),
        "2".into(),
    ]);
    wait_ready(&daemon).await;
    let mut c = ControllerClient::new(daemon.channel().await);
    let va = make(&mut c, topo_req("in-a", &["a"], &[])).await;
    let vb = make(&mut c, topo_req("in-b", &["b"], &[])).await;
    assert!(va.volume_id.starts_with("rds-a:") && vb.volume_id.starts_with("rds-b:"));
    let file = |z: &str, v: &Volume| {
        dir.path().join(format!(
            "rds-{z}/fs/storage-pool/metal-csi/{}.img",
            v.volume_id.split_once(':').unwrap().1
        ))
    };
    assert!(file("a", &va).exists() && file("b", &vb).exists());
    assert!(!file("b", &va).exists() && !file("a", &vb).exists());
}

#[test]
fn the_demo_walks_two_backends() {
    let out = std::process::Command::new(support::BIN)
        .args(["demo", "--backends", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "zone a: 100 GiB free",
        "all zones: 200 GiB free",
        "-> rds-a:pvc-",
        "-> rds-b:pvc-",
        "(volume context rdsBackend=rds-b)",
        "-> snapshot rds-b:snap-",
        "restored as rds-b:pvc-",
        "InvalidArgument: source volume rds-b:pvc-",
        "demo complete",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert_eq!(text.matches(" deleted").count(), 4, "{text}");
}

/// `--topology-from-node-labels`: the node reads its own Node once and reports its labels
/// `topology.<driver>/*` (only those, only non-empty) as segments (a mock API server that
/// checks the exact request).
#[tokio::test]
async fn a_node_reports_the_backends_its_labels_name() {
    use serde_json::json;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let client = support::kube::mock_client(move |method, path, _query, _body| {
        log.lock().unwrap().push(format!("{method} {path}"));
        (
            200,
            json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-7", "labels": {
                "topology.rds.csi.srvlab.io/zone": "a",
                "topology.rds.csi.srvlab.io/rds-b": "true",
                "topology.rds.csi.srvlab.io/": "x",
                "topology.rds.csi.srvlab.io/empty": "",
                "topology.other.driver/zone": "z",
                "kubernetes.io/hostname": "node-7"
            } } }),
        )
    });
    let k = driver::node::kube::NodeKube::new(client, "node-7", "rds.csi.srvlab.io");
    let labels = k.topology_labels().await.unwrap();
    assert_eq!(
        labels,
        HashMap::from([
            ("topology.rds.csi.srvlab.io/zone".to_string(), "a".to_string()),
            ("topology.rds.csi.srvlab.io/rds-b".to_string(), "true".to_string()),
        ])
    );
    assert_eq!(*seen.lock().unwrap(), vec!["GET /api/v1/nodes/node-7".to_string()]);
}

/// The node's loop data plane with `--emulated-backends 2`: a volume of rds-b is staged from
/// rds-b's own files (the volume context names its backend), formatted, mounted, and
/// unstaged; its id carries the backend, its loop device the plain slot's file. Root.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_stages_a_volume_of_the_second_backend() {
    use support::node::{Vol, cap as node_cap, loops_of, mounts_at, root_available, start};
    if !root_available() {
        return;
    }
    let mut n = start(&["--emulated-backends", "2"]).await;
    // Probe is ready with one backend connected; ListVolumes answers once both are.
    for _ in 0..200 {
        if n.c.list_volumes(ListVolumesRequest::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut req = topo_req("staged-b", &["b"], &[]);
    req.volume_capabilities = vec![node_cap(false, "ext4", &[])];
    let v = make(&mut n.c, req).await;
    assert!(v.volume_id.starts_with("rds-b:pvc-"), "{}", v.volume_id);
    let file = n
        .dir
        .path()
        .join("rds/rds-b/fs")
        .join(v.volume_context["volumePath"].trim_start_matches('/'));
    assert!(file.exists(), "{}", file.display());
    let vol = Vol { id: v.volume_id.clone(), ctx: v.volume_context.clone(), file: file.clone() };
    n.stage(&vol, node_cap(false, "ext4", &[])).await.unwrap();
    let staging = n.staging(&vol);
    let mounted = mounts_at(&staging);
    assert_eq!(mounted.len(), 1);
    assert_eq!(mounted[0].fs_type, "ext4");
    assert_eq!(loops_of(&file).len(), 1, "the rds-b file is the one attached");
    // Staging again is idempotent (found by the plain slot's file).
    n.stage(&vol, node_cap(false, "ext4", &[])).await.unwrap();
    assert_eq!(loops_of(&file).len(), 1);
    n.unstage(&vol).await.unwrap();
    assert!(mounts_at(&staging).is_empty());
    assert!(loops_of(&file).is_empty());
}
