//! The controller's readiness follows its RDS connection: the real `rds-csi` binary against an
//! in-process RDS emulator over real SSH on loopback.

mod support;

use std::time::{Duration, Instant};

use csi::v1::{ProbeRequest, identity_client::IdentityClient};
use support::{
    Daemon,
    rds::{Rds, rds},
};

fn controller(rds: &Rds, host_key: &str) -> Daemon {
    Daemon::start_with(&[
        "--controller",
        "--attachment-state",
        "memory",
        "--metrics-address",
        "127.0.0.1:0",
        "--rds-address",
        &rds.address,
        "--rds-ssh-key-file",
        rds.key_file.to_str().unwrap(),
        "--rds-host-key",
        host_key,
        "--rds-probe-interval-seconds",
        "1",
    ])
}

/// Polls `/readyz` until `pred` holds (bounded).
async fn wait_readyz(
    daemon: &Daemon,
    within: Duration,
    pred: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = daemon.http_get("/readyz");
        if pred(status, &body) {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "readyz stayed {status} {body:?}\n{}", daemon.raw_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_and_readyz_follow_the_rds_connection_through_a_reboot() {
    let rds = rds().await;
    let daemon = controller(&rds, &rds.fingerprint);
    wait_readyz(&daemon, Duration::from_secs(15), |s, _| s == 200).await;
    let probe = IdentityClient::new(daemon.channel().await).probe(ProbeRequest {}).await.unwrap();
    assert_eq!(probe.into_inner().ready, Some(true));
    let (_, metrics) = daemon.http_get("/metrics");
    assert!(metrics.contains("rds_csi_rds_connection_state 1"), "{metrics}");

    rds.emu.reboot(Duration::from_secs(3));
    let (_, body) = wait_readyz(&daemon, Duration::from_secs(10), |s, _| s == 503).await;
    assert!(body.contains("RDS unreachable"), "{body}");
    let probe = IdentityClient::new(daemon.channel().await).probe(ProbeRequest {}).await.unwrap();
    assert_eq!(probe.into_inner().ready, Some(false));

    wait_readyz(&daemon, Duration::from_secs(30), |s, _| s == 200).await;
    let (_, metrics) = daemon.http_get("/metrics");
    assert!(metrics.contains("rds_csi_rds_reconnects_total 1"), "{metrics}");
    assert!(metrics.contains("rds_csi_rds_reconnect_duration_seconds_count 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_host_key_keeps_the_controller_unready_and_says_why() {
    let rds = rds().await;
    let daemon = controller(&rds, "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let (_, body) =
        wait_readyz(&daemon, Duration::from_secs(15), |s, b| s == 503 && b.contains("host key"))
            .await;
    assert!(
        body.contains(&rds.fingerprint) && body.contains("does not match the pinned"),
        "{body}"
    );
    assert!(rds.emu.command_log().is_empty(), "no command reaches an unverified server");
}
