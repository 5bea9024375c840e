//! Helpers of the controller's black-box suites (tests/controller.rs, tests/snapshots.rs):
//! the real binary against the in-process emulator, requests, and round-trip counting.

use std::time::Duration;

use csi::v1::{controller_client::ControllerClient, volume_capability::access_mode::Mode, *};
use tonic::{Code, transport::Channel};

use super::{
    Daemon, cap,
    rds::{Rds, rds},
};

pub const GIB: i64 = 1 << 30;

pub fn create(name: &str, bytes: i64, params: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![cap(false, Mode::SingleNodeWriter)],
        parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

pub async fn start(transport: &str) -> (Rds, Daemon, ControllerClient<Channel>) {
    start_on(rds().await, transport).await
}

pub async fn start_on(rds: Rds, transport: &str) -> (Rds, Daemon, ControllerClient<Channel>) {
    start_with_flags(rds, transport, &[]).await
}

/// [`start_on`] with `extra` controller flags.
pub async fn start_with_flags(
    rds: Rds,
    transport: &str,
    extra: &[&str],
) -> (Rds, Daemon, ControllerClient<Channel>) {
    let mut flags = rds.flags(transport);
    flags.extend(extra.iter().map(|f| f.to_string()));
    let daemon = Daemon::start_owned(&flags);
    // Ready (connected) and the RouterOS version learnt, so round trips below are the RPCs' own.
    for _ in 0..200 {
        let ready = daemon.http_get("/readyz").0 == 200;
        let version_read = rds.commands().iter().any(|c| c.contains("system"));
        if ready && version_read {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = ControllerClient::new(daemon.channel().await);
    (rds, daemon, client)
}

pub fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let s = r.expect_err("an error");
    (s.code(), s.message().to_string())
}

/// Round trips the emulator saw while running `f`: SSH commands, or REST requests (one REST
/// request may run several commands inside the emulator; each request has its own id).
pub async fn counted<T>(rds: &Rds, f: impl std::future::Future<Output = T>) -> (T, usize) {
    let before = rds.emu.command_log().len();
    let out = f.await;
    let new = rds.emu.command_log().split_off(before);
    let ssh = new.iter().filter(|e| e.transport == "ssh").count();
    let rest: std::collections::BTreeSet<u64> =
        new.iter().filter(|e| e.transport == "rest").map(|e| e.conn).collect();
    // The REST monitor's periodic read may land in the window; it is not the RPC's.
    let probes: std::collections::BTreeSet<u64> = new
        .iter()
        .filter(|e| e.transport == "rest" && e.command.contains("/system/"))
        .map(|e| e.conn)
        .collect();
    (out, ssh + rest.len() - probes.len())
}

/// From /metrics: (observations, observations ≤ `le`) of the round trips of `method`.
pub fn round_trip_metric(daemon: &Daemon, method: &str, le: &str) -> (u64, u64) {
    let (_, text) = daemon.http_get("/metrics");
    let value = |needle: &str, le: Option<&str>| {
        text.lines()
            .find(|l| {
                l.starts_with(needle)
                    && l.contains(&format!("method=\"{method}\""))
                    && le.is_none_or(|le| l.contains(&format!("le=\"{le}\"")))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {needle} for {method}:\n{text}"))
    };
    (
        value("rds_csi_rds_round_trips_per_rpc_count", None),
        value("rds_csi_rds_round_trips_per_rpc_bucket", Some(le)),
    )
}

pub fn write_at(rds: &Rds, file: &str, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let path = rds.emu.with_store(|s| s.host_path(file));
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(data, offset).unwrap();
}

pub fn read_at(rds: &Rds, file: &str, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let path = rds.emu.with_store(|s| s.host_path(file));
    let mut buf = vec![0; len];
    std::fs::File::open(path).unwrap().read_exact_at(&mut buf, offset).unwrap();
    buf
}

pub fn snap_req(name: &str, source: &str, params: &[(&str, &str)]) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

pub fn from_source(
    name: &str,
    bytes: i64,
    source: volume_content_source::Type,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource { r#type: Some(source) }),
        ..create(name, bytes, &[])
    }
}
