//! The RouterOS client over REST (HTTPS with the emulator's generated certificate, and plain
//! HTTP) against the in-process emulator: every operation, round trips, errors, trust.

mod lab;

use std::{sync::Arc, time::Duration};

use lab::{Lab, PASSWORD, fast_retry, new_disk, slot};
use rds_emulator::emulator::{DropRule, DropWhen, Faults};
use routeros::{
    client::Rds,
    rest::{RestOptions, RestTransport, TlsTrust},
    transport::Transport,
    types::{FilePath, Nqn},
};

fn rds(url: &str, trust: TlsTrust) -> (Rds, RestTransport) {
    let t = RestTransport::new(RestOptions::new(url, "admin", PASSWORD, trust)).unwrap();
    (Rds::new(Arc::new(t.clone()), fast_retry()), t)
}

#[tokio::test]
async fn every_operation_over_https_with_a_pinned_certificate() {
    let lab = Lab::start().await;
    let server = lab.rest(true, Duration::from_secs(60)).await;
    let (rds, t) =
        rds(&server.base_url, TlsTrust::Fingerprint(server.fingerprint.clone().unwrap()));

    let disk = rds.create_disk(&new_disk("pvc-r", 2 << 30)).await.unwrap();
    assert_eq!((disk.size, disk.export, t.round_trips()), (2 << 30, true, 1), "create = 1 request");
    assert_eq!(disk.nqn.as_deref(), Some("nqn.2000-02.com.mikrotik:pvc-r"));
    assert_eq!(rds.get_disk(&slot("pvc-r")).await.unwrap().unwrap().size, 2 << 30);
    assert_eq!(rds.list_disks("pvc-").await.unwrap().len(), 1);
    let before = t.round_trips();
    assert_eq!(rds.set_file_size(&slot("pvc-r"), 3 << 30).await.unwrap().size, 3 << 30);
    assert_eq!(t.round_trips() - before, 2, "resize = set + re-read");
    let host = Nqn::new("nqn.2014-08.org.nvmexpress:uuid:2222").unwrap();
    rds.set_export(&slot("pvc-r"), true, std::slice::from_ref(&host)).await.unwrap();
    rds.set_comment(&slot("pvc-r"), "quotes \" and $ and ;").await.unwrap();
    let d = rds.get_disk(&slot("pvc-r")).await.unwrap().unwrap();
    assert_eq!(
        (d.allowed_hosts, d.comment.as_str()),
        (vec![host.to_string()], "quotes \" and $ and ;")
    );
    assert_eq!(rds.pool("storage-pool").await.unwrap().unwrap().free, 97 << 30);
    assert_eq!(
        rds.list_files(&FilePath::new("storage-pool/metal-csi").unwrap()).await.unwrap().len(),
        1
    );
    assert_eq!(rds.system().await.unwrap().version_number(), Some((7, 21)));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let clock = rds.clock().await.unwrap();
    assert!(clock.time.is_some_and(|t| t.abs_diff(now as i64) < 5), "{clock:?} vs {now}");

    let before = t.round_trips();
    let file = FilePath::new("storage-pool/metal-csi/pvc-r.img").unwrap();
    rds.delete_disk(&slot("pvc-r"), &file).await.unwrap();
    assert_eq!(t.round_trips() - before, 1, "delete = 1 request (/rest/execute)");
    rds.delete_disk(&slot("pvc-r"), &file).await.unwrap();
    assert_eq!(rds.get_disk(&slot("pvc-r")).await.unwrap(), None);
    assert!(lab.emu.command_log().iter().all(|e| e.transport == "rest"));
}

#[tokio::test]
async fn trust_and_auth_failures_are_clear() {
    let lab = Lab::start().await;
    let server = lab.rest(true, Duration::from_secs(60)).await;
    let (ok, _) = rds(&server.base_url, TlsTrust::CaFile(server.cert_file.clone()));
    assert!(ok.system().await.is_ok(), "the server's own certificate in a CA file is trusted");
    let (bad, _) = rds(&server.base_url, TlsTrust::Fingerprint("00".repeat(32)));
    let err = bad.system().await.unwrap_err();
    assert_eq!(err.label(), "permission_denied", "{err}");
    assert!(err.to_string().contains("does not match the pinned"), "{err}");
    let wrong = RestTransport::new(RestOptions::new(
        &server.base_url,
        "admin",
        "wrong",
        TlsTrust::InsecureSkip,
    ))
    .unwrap();
    let err = Rds::new(Arc::new(wrong), fast_retry()).system().await.unwrap_err();
    assert_eq!(err.label(), "permission_denied");
    assert!(
        RestTransport::new(RestOptions::new("ftp://x", "a", "b", TlsTrust::InsecureSkip)).is_err()
    );
}

#[tokio::test]
async fn plain_http_errors_limits_and_drops() {
    let lab = Lab::start().await;
    let server = lab.rest(false, Duration::from_millis(500)).await;
    let (rds, t) = rds(&server.base_url, TlsTrust::InsecureSkip);
    rds.create_disk(&new_disk("pvc-h", 1 << 30)).await.unwrap();
    assert!(
        rds.create_disk(&new_disk("pvc-h", 1 << 30)).await.is_ok(),
        "identical create converges"
    );
    let mut other = new_disk("pvc-h", 1 << 30);
    other.file = FilePath::new("storage-pool/x/pvc-h.img").unwrap();
    assert_eq!(rds.create_disk(&other).await.unwrap_err().label(), "already_exists");
    assert_eq!(
        rds.create_disk(&new_disk("pvc-big", 500 << 30)).await.unwrap_err().label(),
        "no_space"
    );
    assert_eq!(rds.set_file_size(&slot("pvc-none"), 1).await.unwrap_err().label(), "not_found");

    // A create whose response is cut converges on the disk it made.
    lab.faults(Faults {
        drop: vec![DropRule { pattern: "add".into(), nth: 1, when: DropWhen::After }],
        ..Faults::default()
    });
    assert_eq!(rds.create_disk(&new_disk("pvc-d", 1 << 30)).await.unwrap().size, 1 << 30);
    assert_eq!(rds.list_disks("pvc-d").await.unwrap().len(), 1);

    // RouterOS's own time limit answers `Session closed`, typed as a timeout.
    lab.faults(Faults { latency_ms: 1000, ..Faults::default() });
    let short = routeros::client::RetryPolicy { deadline: Duration::from_secs(2), ..fast_retry() };
    let rds = Rds::new(Arc::new(t.clone()), short);
    let before = t.round_trips();
    assert_eq!(rds.get_disk(&slot("pvc-h")).await.unwrap_err().label(), "timeout");
    assert!(t.round_trips() - before >= 2, "timeouts are retried until the deadline");
}
