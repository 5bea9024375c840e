//! The RouterOS client (routeros::client::Rds over SshTransport) against the RDS emulator over
//! real SSH on loopback: every operation, round-trip counts, every fault mode, the session
//! limit, reconnects, and host-key pinning.

mod lab;

use std::{sync::Arc, time::Duration};

use lab::{Lab, detail_format, fast_retry, new_disk, slot};
use rds_emulator::emulator::{DropRule, DropWhen, FailRule, Faults};
use routeros::{
    client::{Rds, RetryPolicy},
    error::RosError,
    ssh::{HostKeyPolicy, SshTransport},
    transport::Transport,
    types::{FilePath, Nqn},
};

#[tokio::test]
async fn every_operation_with_its_round_trips() {
    let lab = Lab::start().await;
    let (rds, t) = lab.rds();
    let want = new_disk("pvc-ops", 3 << 30);

    let disk = rds.create_disk(&want).await.unwrap();
    assert_eq!(
        t.round_trips(),
        1,
        "create = one mutation and its confirming read in one round trip"
    );
    assert_eq!(
        (disk.slot.as_str(), disk.size, disk.export, disk.port),
        ("pvc-ops", 3 << 30, true, Some(4420))
    );
    assert_eq!(disk.nqn.as_deref(), Some("nqn.2000-02.com.mikrotik:pvc-ops"));
    assert_eq!(disk.file.as_deref(), Some("storage-pool/metal-csi/pvc-ops.img"));
    assert_eq!(disk.comment, "rds-csi test pvc-ops");

    assert_eq!(rds.get_disk(&slot("pvc-ops")).await.unwrap(), Some(disk.clone()));
    assert_eq!(rds.get_disk(&slot("pvc-none")).await.unwrap(), None);
    rds.create_disk(&new_disk("other-1", 1 << 20)).await.unwrap();
    let listed = rds.list_disks("pvc-").await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.slot.as_str()).collect::<Vec<_>>(),
        ["pvc-ops"],
        "prefix, not substring"
    );

    let before = t.round_trips();
    let grown = rds.set_file_size(&slot("pvc-ops"), 5 << 30).await.unwrap();
    assert_eq!(
        (grown.size, t.round_trips() - before),
        (5 << 30, 1),
        "resize + exact re-read = 1 round trip"
    );

    let host = Nqn::new("nqn.2014-08.org.nvmexpress:uuid:1111").unwrap();
    rds.set_export(&slot("pvc-ops"), true, std::slice::from_ref(&host)).await.unwrap();
    rds.set_comment(&slot("pvc-ops"), "a \"quoted\" $comment; /disk remove [find]").await.unwrap();
    let d = rds.get_disk(&slot("pvc-ops")).await.unwrap().unwrap();
    assert_eq!(d.allowed_hosts, [host.to_string()]);
    assert_eq!(d.comment, "a \"quoted\" $comment; /disk remove [find]");

    let pool = rds.pool("storage-pool").await.unwrap().unwrap();
    assert_eq!((pool.size, pool.free), (100 << 30, (100 << 30) - (5 << 30) - (1 << 20)));
    assert_eq!(rds.pool("nosuch").await.unwrap(), None);
    let files = rds.list_files(&FilePath::new("storage-pool/metal-csi").unwrap()).await.unwrap();
    assert_eq!(files.len(), 2);
    let sys = rds.system().await.unwrap();
    assert_eq!((sys.version_number(), sys.identity.as_str()), (Some((7, 21)), "RDS"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let clock = rds.clock().await.unwrap();
    assert!(clock.time.is_some_and(|t| t.abs_diff(now as i64) < 5), "{clock:?} vs {now}");
    assert_eq!((clock.zone.as_str(), clock.gmt_offset.as_deref()), ("UTC", Some("+00:00")));

    rds.create_disk(&new_disk("pvc-copy", 5 << 30)).await.unwrap();
    rds.copy_disk(&slot("pvc-ops"), &slot("pvc-copy"), None).await.unwrap();

    let before = t.round_trips();
    let file = FilePath::new("storage-pool/metal-csi/pvc-ops.img").unwrap();
    rds.delete_disk(&slot("pvc-ops"), &file).await.unwrap();
    assert_eq!(t.round_trips() - before, 1, "delete = 1 round trip");
    assert_eq!(rds.get_disk(&slot("pvc-ops")).await.unwrap(), None);
    assert!(
        !lab.emu.with_store(|s| s.file_len("storage-pool/metal-csi/pvc-ops.img").is_some()),
        "file removed"
    );
    rds.delete_disk(&slot("pvc-ops"), &file).await.unwrap();
    assert_eq!(t.state().borrow().clone(), routeros::transport::ConnState::Connected);
}

#[tokio::test]
async fn the_detail_parser_path_works_end_to_end() {
    let lab = Lab::start().await;
    let t = SshTransport::new(detail_format(lab.ssh_options())).unwrap();
    let rds = Rds::new(Arc::new(t.clone()), fast_retry());
    let long = "pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
    let disk = rds.create_disk(&new_disk(long, 10 << 30)).await.unwrap();
    assert_eq!(disk.size, 10 << 30);
    assert_eq!(
        disk.file.as_deref(),
        Some(format!("storage-pool/metal-csi/{long}.img").as_str()),
        "mid-token split undone"
    );
    assert_eq!(disk.nqn.as_deref(), Some(format!("nqn.2000-02.com.mikrotik:{long}").as_str()));
    assert_eq!(rds.list_disks("pvc-").await.unwrap().len(), 1);
    assert_eq!(rds.pool("storage-pool").await.unwrap().unwrap().free, 90 << 30);
    assert_eq!(rds.system().await.unwrap().version_number(), Some((7, 21)));
    assert!(lab.commands().iter().all(|(c, _)| !c.contains(":serialize")));
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_converges_without_a_duplicate() {
    for when in [DropWhen::Before, DropWhen::After] {
        let lab = Lab::start().await;
        let (rds, _) = lab.rds();
        lab.faults(Faults {
            drop: vec![DropRule { pattern: "^/disk add".into(), nth: 1, when }],
            ..Faults::default()
        });
        let disk = rds.create_disk(&new_disk("pvc-drop", 1 << 30)).await.unwrap();
        assert_eq!(disk.size, 1 << 30, "{when:?}");
        let adds = lab.commands().iter().filter(|(c, _)| c.starts_with("/disk add")).count();
        let results: Vec<String> = lab.commands().into_iter().map(|(_, r)| r).collect();
        match when {
            // Nothing was applied: the client looked, found nothing, and created again.
            DropWhen::Before => assert_eq!(adds, 2, "{results:?}"),
            // Applied then dropped: the client looked and found its disk; no second add.
            DropWhen::After => assert_eq!(adds, 1, "{results:?}"),
        }
        assert_eq!(rds.list_disks("pvc-drop").await.unwrap().len(), 1, "exactly one disk");
    }
}

#[tokio::test]
async fn routeros_errors_are_typed_and_not_retried() {
    let lab = Lab::start().await;
    let (rds, t) = lab.rds();
    lab.faults(Faults {
        fail: vec![FailRule {
            pattern: "^/disk add".into(),
            nth: 1,
            error: "failure: not enough disk space".into(),
        }],
        ..Faults::default()
    });
    let err = rds.create_disk(&new_disk("pvc-full", 1 << 30)).await.unwrap_err();
    assert_eq!(err, RosError::NoSpace("failure: not enough disk space".into()));
    assert_eq!(t.round_trips(), 1, "a RouterOS error is an answer, not a transport failure");

    lab.faults(Faults { disk_full: true, ..Faults::default() });
    assert_eq!(
        rds.create_disk(&new_disk("pvc-full", 1 << 30)).await.unwrap_err().label(),
        "no_space"
    );
    lab.faults(Faults::default());
    assert_eq!(
        rds.create_disk(&new_disk("pvc-huge", 200 << 30)).await.unwrap_err().label(),
        "no_space"
    );

    rds.create_disk(&new_disk("pvc-x", 1 << 30)).await.unwrap();
    assert!(
        rds.create_disk(&new_disk("pvc-x", 1 << 30)).await.is_ok(),
        "an identical create converges"
    );
    let mut different = new_disk("pvc-x", 1 << 30);
    different.file = FilePath::new("storage-pool/other/pvc-x.img").unwrap();
    assert_eq!(rds.create_disk(&different).await.unwrap_err().label(), "already_exists");
    assert_eq!(rds.set_file_size(&slot("pvc-nope"), 1).await.unwrap_err().label(), "not_found");
}

#[tokio::test]
async fn timeouts_refused_sessions_and_reboots() {
    let lab = Lab::start().await;
    let mut o = lab.ssh_options();
    o.command_timeout = Duration::from_millis(300);
    let t = SshTransport::new(o).unwrap();
    let short = RetryPolicy {
        deadline: Duration::from_millis(900),
        initial: Duration::from_millis(50),
        max: Duration::from_millis(100),
    };
    let rds = Rds::new(Arc::new(t.clone()), short.clone());
    lab.faults(Faults { latency_ms: 1000, ..Faults::default() });
    assert_eq!(rds.get_disk(&slot("a")).await.unwrap_err().label(), "timeout");

    lab.faults(Faults { refuse_sessions: true, ..Faults::default() });
    let fresh = Rds::new(Arc::new(lab.transport()), short);
    assert_eq!(fresh.get_disk(&slot("a")).await.unwrap_err().label(), "unavailable");

    // A reboot drops the connection; the next call reconnects once the RDS is back.
    lab.faults(Faults::default());
    let (rds, t) = lab.rds();
    rds.get_disk(&slot("a")).await.unwrap();
    lab.emu.reboot(Duration::from_millis(300));
    assert_eq!(rds.get_disk(&slot("a")).await.unwrap(), None, "retried through the reboot");
    assert!(t.state().borrow().is_connected());
    assert!(lab.commands().len() >= 2);
}

#[tokio::test]
async fn the_session_limit_is_held() {
    let lab = Lab::start().await;
    let mut o = lab.ssh_options();
    o.max_sessions = 2;
    let t = SshTransport::new(o).unwrap();
    let rds = Rds::new(Arc::new(t), fast_retry());
    lab.faults(Faults { latency_ms: 200, ..Faults::default() });
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let rds = rds.clone();
            tokio::spawn(async move { rds.get_disk(&slot(&format!("d{i}"))).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), None);
    }
    assert_eq!(lab.emu.peak_in_flight(), 2, "never more than 2 commands at once, and 2 were used");
    let conns: std::collections::BTreeSet<u64> =
        lab.emu.command_log().iter().map(|e| e.conn).collect();
    assert_eq!(conns.len(), 1, "one connection carries every channel");
}

#[tokio::test]
async fn reconnects_after_an_emulator_restart_and_the_monitor_restores_readiness() {
    let mut lab = Lab::start().await;
    let mut o = lab.ssh_options();
    o.probe_interval = Duration::from_millis(100);
    let t = SshTransport::new(o).unwrap();
    let rds = Rds::new(Arc::new(t.clone()), fast_retry());
    rds.create_disk(&new_disk("pvc-keep", 1 << 20)).await.unwrap();
    let monitor = t.spawn_monitor();
    let mut state = t.state();
    lab.restart().await;
    // The monitor notices, reconnects, and the state comes back to Connected.
    let down = tokio::time::timeout(Duration::from_secs(5), state.wait_for(|s| !s.is_connected()))
        .await
        .is_ok();
    assert!(down, "the monitor saw the drop");
    let up = tokio::time::timeout(Duration::from_secs(10), state.wait_for(|s| s.is_connected()))
        .await
        .is_ok();
    assert!(up, "the monitor reconnected");
    assert!(rds.get_disk(&slot("pvc-keep")).await.unwrap().is_some(), "state survived the restart");
    monitor.abort();
}

#[tokio::test]
async fn host_keys_are_pinned() {
    let lab = Lab::start().await;
    let mut o = lab.ssh_options();
    o.host_key =
        HostKeyPolicy::Fingerprint("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let err = SshTransport::new(o).unwrap().run("/system identity print").await.unwrap_err();
    let RosError::PermissionDenied(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains(&lab.fingerprint) && msg.contains("does not match"), "{msg}");
    let mut o = lab.ssh_options();
    o.host_key = HostKeyPolicy::KnownHosts(lab.known_hosts_line.clone());
    assert!(SshTransport::new(o).unwrap().run("/system identity print").await.is_ok());
    let mut o = lab.ssh_options();
    o.host_key = HostKeyPolicy::InsecureSkip;
    assert!(SshTransport::new(o).unwrap().run("/system identity print").await.is_ok());
    let mut o = lab.ssh_options();
    o.user = "nobody".into();
    assert_eq!(
        SshTransport::new(o).unwrap().run("/x").await.unwrap_err().label(),
        "permission_denied"
    );
}

#[tokio::test]
async fn rsa_keys_and_login_suffixes() {
    if std::process::Command::new("ssh-keygen").arg("-?").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "ssh-keygen is required in CI");
        eprintln!("SKIPPED: ssh-keygen is not installed (apt-get install openssh-client)");
        return;
    }
    let lab = Lab::start().await;
    let rsa = lab.dir.path().join("id_rsa");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(made.success());
    let public = russh::keys::load_secret_key(&rsa, None).unwrap().public_key().clone();
    // Authorize the RSA key by restarting the SSH side with it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let host =
        russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).unwrap();
    let opts = rds_emulator::ssh::SshOptions::with_keys(vec![public]);
    let server = tokio::spawn(rds_emulator::ssh::serve(lab.emu.clone(), listener, host, opts));
    let mut o = routeros::ssh::SshOptions::new(
        &addr.to_string(),
        "admin",
        rsa,
        HostKeyPolicy::InsecureSkip,
    );
    o.login_suffix = Some("cet1024w".into());
    let out = SshTransport::new(o).unwrap().run("/system identity print").await.unwrap();
    assert_eq!(out, "  name: RDS\r\n");
    server.abort();
}

#[tokio::test]
async fn many_commands_reuse_one_connection_beyond_the_channel_limit() {
    // The emulator allows 10 open channels per connection; channels it closes itself must be
    // released, or the 11th command would be refused and force a reconnect.
    let lab = Lab::start().await;
    let (rds, t) = lab.rds();
    for i in 0..25 {
        assert_eq!(rds.get_disk(&slot(&format!("d{i}"))).await.unwrap(), None);
    }
    assert_eq!(t.round_trips(), 25, "no retries");
    let conns: std::collections::BTreeSet<u64> =
        lab.emu.command_log().iter().map(|e| e.conn).collect();
    assert_eq!(conns.len(), 1, "one connection for all 25 commands");
}

/// Copies look before they are sent again: a block copy whose answer was lost is re-sent only
/// after both disks are seen (the same range again gives the same bytes); a file copy whose
/// answer was lost is done when the destination has the source's size, and sent again when
/// the destination is missing.
#[tokio::test]
async fn copies_whose_answer_is_lost_look_before_they_are_sent_again() {
    let behaviour = rds_emulator::exec::Behaviour {
        version: "7.23".parse().unwrap(),
        ..rds_emulator::exec::Behaviour::default()
    };
    for when in [DropWhen::Before, DropWhen::After] {
        let lab = Lab::start_with(behaviour.clone()).await;
        let (rds, _) = lab.rds();
        rds.create_disk(&new_disk("pvc-src", 1 << 20)).await.unwrap();
        rds.create_disk(&new_disk("pvc-dst", 1 << 20)).await.unwrap();
        lab.faults(Faults {
            drop: vec![DropRule { pattern: "^/disk copy".into(), nth: 1, when }],
            ..Faults::default()
        });
        rds.copy_disk(&slot("pvc-src"), &slot("pvc-dst"), Some((0, 1 << 20))).await.unwrap();
        let cmds: Vec<String> = lab.commands().into_iter().map(|(c, _)| c).collect();
        let copies = cmds.iter().filter(|c| c.starts_with("/disk copy")).count();
        assert_eq!(copies, 2, "{when:?}: sent again: {cmds:?}");
        let resend = cmds.iter().rposition(|c| c.starts_with("/disk copy")).unwrap();
        let looked: Vec<&String> = cmds[..resend].iter().rev().take(2).collect();
        assert!(
            looked.iter().all(|c| c.contains("print")),
            "{when:?}: looked at both disks first: {cmds:?}"
        );

        // /file/copy of a 1 MiB file.
        lab.faults(Faults {
            drop: vec![DropRule { pattern: "^/file/copy".into(), nth: 1, when }],
            ..Faults::default()
        });
        let src = FilePath::new("storage-pool/metal-csi/pvc-src.img").unwrap();
        let dst = FilePath::new("storage-pool/metal-csi/copy.img").unwrap();
        rds.copy_file(&src, &dst).await.unwrap();
        let copies = lab.commands().iter().filter(|(c, _)| c.starts_with("/file/copy")).count();
        match when {
            DropWhen::Before => assert_eq!(copies, 2, "nothing arrived: copied again"),
            DropWhen::After => {
                assert_eq!(copies, 1, "the copy is there, with the source's size: done")
            }
        }
        let files =
            rds.list_files(&FilePath::new("storage-pool/metal-csi").unwrap()).await.unwrap();
        let size = |n: &str| files.iter().find(|f| f.name == n).and_then(|f| f.size);
        assert_eq!(size(dst.as_str()), size(src.as_str()));
    }
}

/// A copy runs under its own deadline, not the command deadline: with every command taking
/// 400 ms and a 200 ms command deadline, a read times out while a block copy completes.
#[tokio::test]
async fn copies_have_their_own_deadline() {
    let lab = Lab::start().await;
    let mut o = lab.ssh_options();
    o.command_timeout = Duration::from_millis(200);
    o.copy_timeout = Duration::from_secs(10);
    let (quick, _) = lab.rds();
    quick.create_disk(&new_disk("pvc-src", 1 << 20)).await.unwrap();
    quick.create_disk(&new_disk("pvc-dst", 1 << 20)).await.unwrap();
    let t = routeros::ssh::SshTransport::new(o).unwrap();
    let rds = routeros::client::Rds::new(
        Arc::new(t),
        routeros::client::RetryPolicy { deadline: Duration::from_millis(100), ..lab::fast_retry() },
    );
    lab.faults(Faults { latency_ms: 400, ..Faults::default() });
    let read = rds.get_disk(&slot("pvc-src")).await.unwrap_err();
    assert!(matches!(read, routeros::error::RosError::Timeout(_)), "{read:?}");
    rds.copy_disk(&slot("pvc-src"), &slot("pvc-dst"), None)
        .await
        .expect("the copy has its own deadline");
}
