//! ControllerPublishVolume / ControllerUnpublishVolume over gRPC, black-box: the real binary
//! against the RDS emulator over SSH, attachment state in memory (`--attachment-state
//! memory`; the Kubernetes source is covered by fencing_kube.rs), with and without storage
//! fencing.

mod support;

use std::{collections::HashMap, time::Duration};

use csi::v1::{controller_client::ControllerClient, volume_capability::access_mode::Mode, *};
use support::{Daemon, cap, rds::rds};
use tonic::{Code, transport::Channel};

const GIB: i64 = 1 << 30;

async fn create(c: &mut ControllerClient<Channel>, name: &str, cap: VolumeCapability) -> Volume {
    c.create_volume(CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
        volume_capabilities: vec![cap],
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .volume
    .unwrap()
}

async fn publish(
    c: &mut ControllerClient<Channel>,
    v: &Volume,
    node: &str,
    cap: &VolumeCapability,
    ctx: &[(&str, &str)],
) -> Result<HashMap<String, String>, tonic::Status> {
    let mut volume_context = v.volume_context.clone();
    volume_context.extend(ctx.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    c.controller_publish_volume(ControllerPublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: node.into(),
        volume_capability: Some(cap.clone()),
        volume_context,
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().publish_context)
}

async fn unpublish(c: &mut ControllerClient<Channel>, v: &Volume, node: &str) {
    c.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: node.into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn start(extra: &[&str]) -> (support::rds::Rds, Daemon, ControllerClient<Channel>) {
    let rds = rds().await;
    let mut flags = rds.flags("ssh");
    // Memory state: the nodes ControllerPublishVolume accepts (any other is NOT_FOUND).
    flags.push("--known-node-id=node-a,node-b,node-c,a,b,c,source,target,third".into());
    flags.extend(extra.iter().map(|s| s.to_string()));
    let daemon = Daemon::start_owned(&flags);
    for _ in 0..200 {
        if daemon.http_get("/readyz").0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = ControllerClient::new(daemon.channel().await);
    (rds, daemon, c)
}

#[tokio::test]
async fn read_write_once_volumes_attach_to_one_node_at_a_time() {
    let (rds, daemon, mut c) = start(&["--storage-fencing=false"]).await;
    let rwo = cap(false, Mode::SingleNodeWriter);
    let v = create(&mut c, "pvc-00000000-0000-4000-8000-0000000000a1", rwo.clone()).await;
    let hosts = rds.emu.with_store(|s| {
        s.disks().iter().find(|d| d.slot == v.volume_id).map(|d| d.nvme.allow_host_name.clone())
    });
    assert_eq!(hosts.as_deref(), Some(""), "without storage fencing: any host, as before");
    let ctx = publish(&mut c, &v, "node-a", &rwo, &[]).await.unwrap();
    assert_eq!(ctx.len(), 4, "{ctx:?}");
    assert_eq!(ctx["capacityBytes"], "1073741824");
    assert_eq!(ctx["nqn"], v.volume_context["nqn"]);
    assert_eq!(ctx["nvmeAddress"], v.volume_context["nvmeAddress"]);
    assert_eq!(ctx["nvmePort"], "4420");
    assert_eq!(publish(&mut c, &v, "node-a", &rwo, &[]).await.unwrap(), ctx, "idempotent");

    let err = publish(&mut c, &v, "node-b", &rwo, &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("attached to node node-a") && err.message().contains("Stop the pod"),
        "{}",
        err.message()
    );
    unpublish(&mut c, &v, "node-a").await;
    unpublish(&mut c, &v, "node-a").await; // not attached: success
    publish(&mut c, &v, "node-b", &rwo, &[]).await.expect("free again");

    // Unknown volume: NOT_FOUND; unpublishing it: success.
    let ghost =
        Volume { volume_id: "pvc-00000000-0000-4000-8000-0000000000ff".into(), ..v.clone() };
    assert_eq!(
        publish(&mut c, &ghost, "node-a", &rwo, &[]).await.unwrap_err().code(),
        Code::NotFound
    );
    unpublish(&mut c, &ghost, "node-a").await;
    // Bad input names the field.
    let mut no_node = publish(&mut c, &v, "", &rwo, &[]).await.unwrap_err();
    assert_eq!((no_node.code(), no_node.message()), (Code::InvalidArgument, "node_id is required"));
    no_node =
        publish(&mut c, &v, "n", &cap(false, Mode::MultiNodeMultiWriter), &[]).await.unwrap_err();
    assert_eq!(no_node.code(), Code::InvalidArgument);

    let body = daemon.http_get("/metrics").1;
    for line in [
        r#"rds_csi_attach_total{outcome="granted"} 2"#,
        r#"rds_csi_attach_total{outcome="already_attached"} 1"#,
        r#"rds_csi_attach_total{outcome="conflict"} 1"#,
        r#"rds_csi_attachment_conflicts_total 1"#,
        r#"rds_csi_detach_total{outcome="detached"} 1"#,
        r#"rds_csi_detach_total{outcome="not_attached"} 2"#,
        "rds_csi_attach_decision_seconds_count 4",
        // The only controller (attachment state in memory) always runs the background loops.
        "rds_csi_leader 1",
        // One RDS round trip per publish that reaches the RDS (reading the disk); the
        // validation failures make none, and unpublish needs none without storage fencing.
        r#"rds_csi_rds_round_trips_per_rpc_count{method="ControllerPublishVolume"} 5"#,
        r#"rds_csi_rds_round_trips_per_rpc_sum{method="ControllerPublishVolume"} 5.0"#,
    ] {
        assert!(body.contains(line), "missing {line}:\n{body}");
    }
    assert!(
        !body.contains(
            r#"rds_csi_rds_round_trips_per_rpc_count{method="ControllerUnpublishVolume"}"#
        ),
        "{body}"
    );
}

#[tokio::test]
async fn block_volumes_attach_to_two_nodes_for_a_live_migration() {
    let (_rds, daemon, mut c) = start(&["--storage-fencing=false"]).await;
    let rwx = cap(true, Mode::MultiNodeMultiWriter);
    let v = create(&mut c, "pvc-00000000-0000-4000-8000-0000000000b1", rwx.clone()).await;
    publish(&mut c, &v, "source", &rwx, &[]).await.unwrap();
    publish(&mut c, &v, "target", &rwx, &[]).await.expect("second node: migration");
    let err = publish(&mut c, &v, "third", &rwx, &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("at most two nodes"), "{}", err.message());
    let body = daemon.http_get("/metrics").1;
    assert!(body.contains("rds_csi_migrations_active 1"), "{body}");
    unpublish(&mut c, &v, "source").await; // migration complete
    let body = daemon.http_get("/metrics").1;
    assert!(body.contains("rds_csi_migrations_active 0"), "{body}");
    assert!(body.contains("rds_csi_migration_duration_seconds_count 1"), "{body}");
    publish(&mut c, &v, "third", &rwx, &[]).await.expect("the next migration");

    // A window that expires: the third node is told what to do.
    let w = create(&mut c, "pvc-00000000-0000-4000-8000-0000000000b2", rwx.clone()).await;
    let short = [("migrationTimeoutSeconds", "1")];
    publish(&mut c, &w, "a", &rwx, &short).await.unwrap();
    publish(&mut c, &w, "b", &rwx, &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = publish(&mut c, &w, "c", &rwx, &short).await.unwrap_err();
    assert!(err.message().contains("migration window (1s) expired"), "{}", err.message());
    publish(&mut c, &w, "b", &rwx, &short).await.expect("a holder publishing again is fine");
}

#[tokio::test]
async fn storage_fencing_allows_only_the_attached_nodes_on_the_disk() {
    let (rds, daemon, mut c) = start(&["--storage-fencing"]).await;
    let allowed = |slot: &str| {
        rds.emu
            .with_store(|s| {
                s.disks().iter().find(|d| d.slot == slot).map(|d| d.nvme.allow_host_name.clone())
            })
            .unwrap()
    };
    let rwx = cap(true, Mode::MultiNodeMultiWriter);
    let v = create(&mut c, "pvc-00000000-0000-4000-8000-0000000000c1", rwx.clone()).await;
    assert_eq!(
        allowed(&v.volume_id),
        "nqn.2000-02.io.srvlab.rds-csi:fenced",
        "a new volume allows no host before its first publish (not any host)"
    );
    let a = publish(&mut c, &v, "node-a", &rwx, &[]).await.unwrap();
    let nqn_a = a["hostNqn"].clone();
    assert!(nqn_a.starts_with("nqn.2014-08.org.nvmexpress:uuid:"), "{a:?}");
    assert_eq!(allowed(&v.volume_id), nqn_a);
    let b = publish(&mut c, &v, "node-b", &rwx, &[]).await.unwrap();
    assert_ne!(b["hostNqn"], nqn_a, "each node has its own host NQN");
    assert_eq!(allowed(&v.volume_id), format!("{nqn_a},{}", b["hostNqn"]));
    unpublish(&mut c, &v, "node-a").await;
    assert_eq!(allowed(&v.volume_id), b["hostNqn"], "the departed node is revoked");
    unpublish(&mut c, &v, "node-b").await;
    assert_eq!(
        allowed(&v.volume_id),
        "nqn.2000-02.io.srvlab.rds-csi:fenced",
        "no holder: no host (an empty list would allow any host)"
    );
    // Storage fencing costs one more round trip per publish (the allow list, set together
    // with the confirming read) and one per unpublish (the list).
    // Unpublishing from a disk that is gone is success (nothing left to fence); this one
    // is not counted below (the metric is read first).
    let body = daemon.http_get("/metrics").1;
    let gone = create(&mut c, "pvc-00000000-0000-4000-8000-0000000000c2", rwx.clone()).await;
    c.delete_volume(DeleteVolumeRequest {
        volume_id: gone.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    unpublish(&mut c, &gone, "node-a").await;
    for line in [
        r#"rds_csi_rds_round_trips_per_rpc_sum{method="ControllerPublishVolume"} 4.0"#,
        r#"rds_csi_rds_round_trips_per_rpc_sum{method="ControllerUnpublishVolume"} 2.0"#,
        r#"rds_csi_rds_round_trips_per_rpc_count{method="ControllerUnpublishVolume"} 2"#,
    ] {
        assert!(body.contains(line), "missing {line}:\n{body}");
    }
}

/// Fencing reads VolumeAttachments by default: outside a cluster the controller refuses to
/// start and says how to run without Kubernetes, rather than fencing nothing.
#[tokio::test]
async fn outside_kubernetes_the_default_state_source_fails_clearly() {
    let rds = rds().await;
    let flags: Vec<String> = rds
        .flags("ssh")
        .into_iter()
        .filter(|f| f != "--attachment-state" && f != "memory")
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = support::serve_command(
        &dir.path().join("csi.sock"),
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .env_remove("KUBECONFIG")
    .env_remove("KUBERNETES_SERVICE_HOST")
    .env("HOME", dir.path())
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Kubernetes API") && err.contains("--attachment-state memory"), "{err}");
}

/// The publish context sends the node to the NVMe address the volume was created with (the
/// StorageClass's `nvmeAddress`, kept in the volume context), not to this controller's
/// default (the management host).
#[tokio::test]
async fn the_publish_context_keeps_the_volumes_nvme_address() {
    let (_rds, _daemon, mut c) = start(&["--storage-fencing=false"]).await;
    let rwo = cap(false, Mode::SingleNodeWriter);
    let v = c
        .create_volume(CreateVolumeRequest {
            name: "pvc-00000000-0000-4000-8000-0000000000d1".into(),
            capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
            volume_capabilities: vec![rwo.clone()],
            parameters: HashMap::from([
                ("nvmeAddress".to_string(), "10.9.9.9".to_string()),
                ("nvmePort".to_string(), "4421".to_string()),
            ]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v.volume_context["nvmeAddress"], "10.9.9.9");
    let ctx = publish(&mut c, &v, "node-a", &rwo, &[]).await.unwrap();
    assert_eq!(ctx["nvmeAddress"], "10.9.9.9", "{ctx:?}");
    assert_eq!(ctx["nvmePort"], "4421", "{ctx:?}");
}
