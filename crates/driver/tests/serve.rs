//! Black-box tests of `rds-csi serve`: the real binary, a tonic client over its unix socket,
//! and its HTTP endpoints. No root needed.

mod support;

use std::{collections::HashMap, process::Command, time::Duration};

use csi::v1::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
    plugin_capability, *,
};
use support::{Daemon, serve_command};
use tonic::Code;

#[tokio::test]
async fn identity_answers_name_version_capabilities_and_readiness() {
    let daemon = Daemon::start();
    let mut identity = IdentityClient::new(daemon.channel().await);

    let info = identity.get_plugin_info(GetPluginInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "rds.csi.srvlab.io");
    let (version, revision) = info.vendor_version.split_once('+').expect("version+revision");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert!(!revision.is_empty());
    assert_eq!(info.manifest["git-revision"], revision);

    let caps = identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let services: Vec<i32> = caps
        .iter()
        .filter_map(|c| match c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    use plugin_capability::{service::Type as S, volume_expansion::Type as E};
    assert_eq!(
        services,
        [
            S::ControllerService as i32,
            S::GroupControllerService as i32,
            S::VolumeAccessibilityConstraints as i32
        ]
    );
    assert!(caps.iter().any(|c| matches!(c.r#type,
        Some(plugin_capability::Type::VolumeExpansion(v)) if v.r#type == E::Online as i32)));

    // A controller without an RDS connection is alive but not ready (CSI Probe: success
    // with ready = false); /readyz says why.
    let probe = identity.probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(false));
    let (status, body) = daemon.http_get("/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("no RDS configured: pass --rds-address"), "{body}");
}

#[tokio::test]
async fn node_only_process_offers_no_controller_service() {
    let daemon = Daemon::start_with(&["--node", "--node-id", "node-b", "--metrics-address", ""]);
    assert_eq!(daemon.metrics, None, "empty --metrics-address disables the HTTP server");
    let channel = daemon.channel().await;
    let probe = IdentityClient::new(channel.clone()).probe(ProbeRequest {}).await.unwrap();
    assert_eq!(probe.into_inner().ready, Some(true), "the node has no backend to wait for");
    let caps = IdentityClient::new(channel.clone())
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let controller = plugin_capability::service::Type::ControllerService as i32;
    assert!(!caps.iter().any(|c| matches!(c.r#type,
        Some(plugin_capability::Type::Service(s)) if s.r#type == controller)));
    let group = plugin_capability::service::Type::GroupControllerService as i32;
    assert!(!caps.iter().any(|c| matches!(c.r#type,
        Some(plugin_capability::Type::Service(s)) if s.r#type == group)));
    let err = ControllerClient::new(channel.clone())
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let err = csi::v1::group_controller_client::GroupControllerClient::new(channel)
        .group_controller_get_capabilities(GroupControllerGetCapabilitiesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn capabilities_list_only_what_works_and_node_info_is_complete() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let controller_caps = ControllerClient::new(channel.clone())
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(controller_caps.capabilities.is_empty(), "{controller_caps:?}");
    let mut node = NodeClient::new(channel);
    let node_caps =
        node.node_get_capabilities(NodeGetCapabilitiesRequest {}).await.unwrap().into_inner();
    use csi::v1::node_service_capability::{Type as NT, rpc::Type as R};
    let node_caps: Vec<i32> = node_caps
        .capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref().map(|NT::Rpc(r)| r.r#type))
        .collect();
    assert_eq!(
        node_caps,
        [
            R::StageUnstageVolume,
            R::GetVolumeStats,
            R::ExpandVolume,
            R::VolumeCondition,
            R::SingleNodeMultiWriter
        ]
        .map(|t| t as i32)
    );
    let info = node.node_get_info(NodeGetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.node_id, "node-a");
    assert_eq!(info.max_volumes_per_node, 0);
    assert_eq!(
        info.accessible_topology.unwrap().segments,
        HashMap::from([("topology.rds.csi.srvlab.io/zone".to_string(), "default".to_string())])
    );
}

#[tokio::test]
async fn volume_rpcs_need_the_rds() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut c = ControllerClient::new(channel.clone());
    // Built volume RPCs need the RDS: without a connection they say so (UNAVAILABLE).
    let no_rds = |r: Result<tonic::Response<_>, tonic::Status>, rpc: &str| {
        let s = r.map(|_: tonic::Response<()>| ()).expect_err(rpc);
        assert_eq!(s.code(), Code::Unavailable, "{rpc}: {s:?}");
        assert!(s.message().contains("no RDS connection"), "{rpc}: {}", s.message());
    };
    no_rds(
        c.create_volume(CreateVolumeRequest::default()).await.map(|_| tonic::Response::new(())),
        "CreateVolume",
    );
    no_rds(
        c.delete_volume(DeleteVolumeRequest::default()).await.map(|_| tonic::Response::new(())),
        "DeleteVolume",
    );
    no_rds(
        c.list_volumes(ListVolumesRequest::default()).await.map(|_| tonic::Response::new(())),
        "ListVolumes",
    );
    no_rds(
        c.controller_publish_volume(ControllerPublishVolumeRequest::default())
            .await
            .map(|_| tonic::Response::new(())),
        "ControllerPublishVolume",
    );
    no_rds(
        c.get_capacity(GetCapacityRequest::default()).await.map(|_| tonic::Response::new(())),
        "GetCapacity",
    );
    no_rds(
        c.controller_modify_volume(ControllerModifyVolumeRequest::default())
            .await
            .map(|_| tonic::Response::new(())),
        "ControllerModifyVolume",
    );
    let mut g = csi::v1::group_controller_client::GroupControllerClient::new(channel.clone());
    no_rds(
        g.create_volume_group_snapshot(CreateVolumeGroupSnapshotRequest::default())
            .await
            .map(|_| tonic::Response::new(())),
        "CreateVolumeGroupSnapshot",
    );
    let caps = g
        .group_controller_get_capabilities(GroupControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    assert!(caps.is_empty(), "no group snapshots without an RDS: {caps:?}");
    no_rds(
        c.create_snapshot(CreateSnapshotRequest::default()).await.map(|_| tonic::Response::new(())),
        "CreateSnapshot",
    );
    no_rds(
        c.list_snapshots(ListSnapshotsRequest::default()).await.map(|_| tonic::Response::new(())),
        "ListSnapshots",
    );
    no_rds(
        c.get_snapshot(GetSnapshotRequest::default()).await.map(|_| tonic::Response::new(())),
        "GetSnapshot",
    );
    // Node RPCs check their request first: an empty one names the missing field.
    let mut n = NodeClient::new(channel);
    let bad = |r: Result<(), tonic::Status>, rpc: &str, field: &str| {
        let s = r.expect_err(rpc);
        assert_eq!(s.code(), Code::InvalidArgument, "{rpc}: {s:?}");
        assert_eq!(s.message(), format!("{field} is required"), "{rpc}");
    };
    fn unit<T>(_: T) {}
    bad(
        n.node_stage_volume(NodeStageVolumeRequest::default()).await.map(unit),
        "NodeStageVolume",
        "volume_id",
    );
    bad(
        n.node_unstage_volume(NodeUnstageVolumeRequest::default()).await.map(unit),
        "NodeUnstageVolume",
        "volume_id",
    );
    bad(
        n.node_publish_volume(NodePublishVolumeRequest::default()).await.map(unit),
        "NodePublishVolume",
        "volume_id",
    );
    bad(
        n.node_unpublish_volume(NodeUnpublishVolumeRequest::default()).await.map(unit),
        "NodeUnpublishVolume",
        "volume_id",
    );
    bad(
        n.node_get_volume_stats(NodeGetVolumeStatsRequest::default()).await.map(unit),
        "NodeGetVolumeStats",
        "volume_id",
    );
    bad(
        n.node_expand_volume(NodeExpandVolumeRequest::default()).await.map(unit),
        "NodeExpandVolume",
        "volume_id",
    );
    let r = NodeStageVolumeRequest { volume_id: "pvc-1".into(), ..Default::default() };
    bad(n.node_stage_volume(r).await.map(unit), "NodeStageVolume", "staging_target_path");
}

#[tokio::test]
async fn metrics_count_rpcs_by_method_and_code_and_health_endpoints_answer() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut identity = IdentityClient::new(channel.clone());
    for _ in 0..3 {
        identity.probe(ProbeRequest {}).await.unwrap();
    }
    let _ =
        ControllerClient::new(channel.clone()).create_volume(CreateVolumeRequest::default()).await;
    let _ = ControllerClient::new(channel)
        .controller_publish_volume(ControllerPublishVolumeRequest::default())
        .await;

    let (status, body) = daemon.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains(r#"rds_csi_grpc_requests_total{method="Probe",code="OK"} 3"#), "{body}");
    assert!(
        body.contains(r#"rds_csi_grpc_requests_total{method="CreateVolume",code="UNAVAILABLE"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(
            r#"rds_csi_grpc_requests_total{method="ControllerPublishVolume",code="UNAVAILABLE"} 1"#
        ),
        "{body}"
    );
    assert!(
        body.contains(r#"rds_csi_grpc_request_duration_seconds_count{method="Probe",code="OK"} 3"#),
        "{body}"
    );
    assert_eq!(daemon.http_get("/healthz"), (200, "ok\n".to_string()));
}

#[tokio::test]
async fn requests_are_logged_in_their_span_with_secrets_redacted() {
    let daemon = Daemon::start();
    let mut node = NodeClient::new(daemon.channel().await);
    let secret_value = "s3cr3t-value-that-must-not-leak";
    let _ = node
        .node_stage_volume(NodeStageVolumeRequest {
            volume_id: "pvc-0123".into(),
            secrets: HashMap::from([("chap-password".to_string(), secret_value.to_string())]),
            ..Default::default()
        })
        .await;
    let _ = node.node_get_info(NodeGetInfoRequest {}).await.unwrap();
    // The failure line is written before the answer is sent, so it is already in the log.
    let log = daemon.raw_log();
    assert!(!log.contains(secret_value), "secret leaked into the log:\n{log}");
    let lines = daemon.log_lines();
    let request = lines
        .iter()
        .find(|l| l["message"] == "request" && l["span"]["method"] == "NodeStageVolume")
        .unwrap_or_else(|| panic!("no request line:\n{log}"));
    assert!(request["request"].as_str().unwrap().contains("chap-password"), "{request}");
    assert!(request["request"].as_str().unwrap().contains(csi::REDACTED), "{request}");
    assert_eq!(request["span"]["volume_id"], "pvc-0123");
    let request_id = request["span"]["request_id"].as_str().unwrap();
    assert_eq!(request_id.len(), 32, "{request}");
    let answer = lines
        .iter()
        .find(|l| l["message"] == "answered with an error" && l["span"]["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no answer line for {request_id}:\n{log}"));
    assert_eq!(answer["code"], "INVALID_ARGUMENT");
    assert_eq!(answer["error"], "staging_target_path is required", "{answer}");
}

#[tokio::test]
async fn second_instance_on_a_live_socket_fails_clearly_and_leaves_the_first_alone() {
    let daemon = Daemon::start();
    let second = serve_command(&daemon.socket, &["--controller", "--metrics-address", ""])
        .output()
        .expect("run second instance");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another process is serving on"), "{stderr}");
    assert!(stderr.contains(&daemon.socket.display().to_string()), "{stderr}");
    // The first instance still owns its socket and answers.
    let info = IdentityClient::new(daemon.channel().await)
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap();
    assert_eq!(info.into_inner().name, "rds.csi.srvlab.io");
}

#[tokio::test]
async fn stale_socket_is_replaced_but_a_regular_file_is_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap()); // dead socket left behind
    let child = serve_command(&socket, &["--controller", "--metrics-address", ""]).spawn().unwrap();
    let daemon = Daemon::follow(child, socket.clone(), dir);
    IdentityClient::new(daemon.channel().await).probe(ProbeRequest {}).await.unwrap();
    drop(daemon);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("csi.sock");
    std::fs::write(&file, "not a socket").unwrap();
    let out = serve_command(&file, &["--controller", "--metrics-address", ""]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a socket");
}

#[tokio::test]
async fn sigterm_and_sigint_remove_the_socket_and_exit_zero() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut daemon = Daemon::start();
        IdentityClient::new(daemon.channel().await).probe(ProbeRequest {}).await.unwrap();
        assert!(daemon.socket.exists());
        daemon.signal(signal);
        let status = daemon.wait_exit(Duration::from_secs(10)).await;
        assert!(status.success(), "signal {signal}: {status}\n{}", daemon.raw_log());
        assert!(!daemon.socket.exists(), "socket left behind after signal {signal}");
        assert!(daemon.log_lines().iter().any(|l| l["message"] == "socket removed"));
    }
}

#[tokio::test]
async fn configuration_comes_from_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("env.sock");
    let child = Command::new(support::BIN)
        .arg("serve")
        .env("RDS_CSI_LOG_FORMAT", "json")
        .env("RDS_CSI_ENDPOINT", format!("unix://{}", socket.display()))
        .env("RDS_CSI_NODE", "true")
        .env("RDS_CSI_NODE_ID", "env-node")
        .env("RDS_CSI_DRIVER_NAME", "rds.example.org")
        .env("RDS_CSI_METRICS_ADDRESS", "")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let daemon = Daemon::follow(child, socket, dir);
    let channel = daemon.channel().await;
    let info = IdentityClient::new(channel.clone())
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap();
    assert_eq!(info.into_inner().name, "rds.example.org");
    let node =
        NodeClient::new(channel).node_get_info(NodeGetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(node.node_id, "env-node");
    assert!(
        node.accessible_topology.unwrap().segments.contains_key("topology.rds.example.org/zone")
    );
}

#[test]
fn bad_flags_are_refused_with_the_fix() {
    let run = |args: &[&str]| {
        let out = Command::new(support::BIN).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["serve", "--endpoint", "unix:///tmp/x.sock"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("pass --controller, --node, or both"), "{err}");
    let (code, err) = run(&["serve", "--node", "--endpoint", "unix:///tmp/x.sock"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--node-id"), "{err}");
    let (code, err) = run(&["serve", "--controller", "--driver-name", "Bad_Name"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("Bad_Name") && err.contains("domain-style"), "{err}");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The README's quickstart: `rds-csi demo` drives controller and node through a volume's life
/// against the embedded emulator (as root: loop devices and real mounts).
#[test]
fn the_quickstart_demo_walks_a_volume_through_its_life() {
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "the demo must run as root in CI");
        eprintln!("SKIPPED: the full demo needs root (loop devices, mounts)");
        return;
    }
    let out = Command::new(support::BIN).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "(Probe: ready)",
        "data plane: loop devices",
        "NodeStageVolume pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b",
        "bind-mounted (nosuid,nodev,noexec)",
        "filesystem now 1984 MiB (volume is healthy)",
        "ready_to_use=true",
        "read the file in the restored volume\n    -> \"hello from rds-csi: written in a pod",
        "unmounted, nothing holds the device, detached",
        "pool free again: 100 GiB",
        "demo complete",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(stdout.contains("ssh> /disk add type=file"), "RouterOS commands are shown:\n{stdout}");
    assert!(stdout.contains(" ms]"), "each step shows its time");
    let tmp = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("  RDS emulator: SSH ").and_then(|r| r.split(" data in ").nth(1))
        })
        .map(|d| d.trim_end_matches("/rds").to_string())
        .expect("data dir printed");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&tmp), "the demo left a mount under {tmp}");
    assert!(!std::path::Path::new(&tmp).exists(), "the demo removed its directory");
}

/// Without root the demo says why and runs the controller steps only.
#[test]
fn the_demo_without_root_runs_the_controller_steps_and_says_why() {
    // As root, run it as `nobody` from a copy of the binary that user can execute.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = if is_root() {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.path().join("rds-csi");
        std::fs::copy(support::BIN, &bin).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(bin).env("TMPDIR", "/tmp");
        c
    } else {
        Command::new(support::BIN)
    };
    let out = cmd.arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "not running as root",
        "controller steps only",
        "the restored file reads back \"hello from rds-csi",
        "-> 2147483648 bytes, node expansion required: true",
        "pool free again: 100 GiB",
        "demo complete",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("NodeStageVolume"), "{stdout}");
}

/// Ctrl-C in the middle of the demo: it stops, unmounts, detaches and removes its directory.
#[test]
fn an_interrupted_demo_cleans_up() {
    use std::io::BufRead;
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "the demo must run as root in CI");
        eprintln!("SKIPPED: the full demo needs root (loop devices, mounts)");
        return;
    }
    let mut child = Command::new(support::BIN)
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut dir = None;
    // Keep reading its output to the end: a closed pipe would end it on its own.
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(d) = line.split(" data in ").nth(1) {
            dir = Some(d.trim_end_matches("/rds").to_string());
        }
        if line.contains("bind-mounted") {
            break; // staged and published: mounts and a loop device exist now
        }
    }
    let dir = dir.expect("the demo prints its directory");
    assert!(std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&dir));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(rest.iter().any(|l| l.contains("cleaning up")), "{rest:?}");
    assert!(!status.success(), "interrupted: not a success");
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&dir),
        "mounts left"
    );
    let loops = std::fs::read_dir("/sys/block").unwrap().flatten().any(|e| {
        std::fs::read_to_string(e.path().join("loop/backing_file"))
            .is_ok_and(|b| b.starts_with(&dir))
    });
    assert!(!loops, "a loop device left attached");
    assert!(!std::path::Path::new(&dir).exists(), "directory left");
}
