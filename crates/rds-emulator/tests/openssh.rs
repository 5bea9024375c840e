//! The emulator driven by OpenSSH's `ssh`, a client we did not write. Needs `openssh-client`
//! (installed by .ci/run); without it each test prints why it is skipped.

mod support;

use std::{process::Command, time::Duration};

use support::{Emu, Keys, have, ssh_command};

const ADD: &str = r#"/disk add type=file slot=pvc-a file-path=storage-pool/csi/pvc-a.img file-size=1G nvme-tcp-export=yes nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-a""#;

#[test]
fn ed25519_and_rsa_keys_log_in_strangers_do_not() {
    if !have("ssh") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = Emu::start(&keys, data.path(), &[]);
    for key in ["ed25519", "rsa"] {
        let out = emu.ssh_as(&keys, key, "admin", "/system identity print");
        assert!(out.status.success(), "{key}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "  name: RDS\r\n");
    }
    // Terminal flags after `+` in the login name are accepted (RouterOS console login options).
    assert!(
        emu.ssh_as(&keys, "ed25519", "admin+cet1024w", "/system identity print").status.success()
    );
    assert_eq!(
        emu.ssh_as(&keys, "stranger", "admin", "/system identity print").status.code(),
        Some(255)
    );
    assert_eq!(
        emu.ssh_as(&keys, "ed25519", "root", "/system identity print").status.code(),
        Some(255)
    );
}

#[test]
fn password_auth_is_an_option() {
    if !have("ssh") {
        return;
    }
    let keys = Keys::new();
    let askpass = keys.path("askpass.sh");
    std::fs::write(&askpass, "#!/bin/sh\necho s3cret\n").unwrap();
    std::fs::set_permissions(&askpass, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let password_file = keys.path("password");
    let emu = Emu::start(&keys, data.path(), &["--password-file", password_file.to_str().unwrap()]);
    let with_password = |user: &str| {
        Command::new("ssh")
            .args(["-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"])
            .args(["-o", "NumberOfPasswordPrompts=1", "-p", &emu.ssh.port().to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg("/system identity print")
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = with_password("admin");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "  name: RDS\r\n");
    assert_eq!(with_password("nobody").status.code(), Some(255));
}

#[test]
fn commands_errors_and_exit_status_like_routeros() {
    if !have("ssh") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = Emu::start(&keys, data.path(), &[]);
    assert_eq!(emu.run(&keys, ADD), (String::new(), 0));
    // Errors go to stdout with exit status 0 (RouterOS, spec §4).
    assert_eq!(emu.run(&keys, "/disk remove nosuch"), ("no such item\r\n".into(), 0));
    assert_eq!(
        emu.run(&keys, "/disk/frob"),
        ("bad command name frob (line 1 column 7)\r\n".into(), 0)
    );
    let (out, code) = emu.run(&keys, r#"/disk print detail where slot="pvc-a""#);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(
            "Flags: B - BLOCK-DEVICE; t - NVME-TCP-EXPORT\r\n1 Bt type=file slot=\"pvc-a\""
        ),
        "{out}"
    );
    assert!(out.lines().all(|l| l.trim_end_matches('\r').chars().count() <= 80), "{out}");
    let (json, _) = emu.run(
        &keys,
        r#":put [:serialize to=json [/disk print detail as-value where slot="pvc-a"]]"#,
    );
    let v: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
    assert_eq!(v[0]["size"], 1u64 << 30);
    let keys_in_order: Vec<&str> =
        v[0].as_object().unwrap().keys().map(String::as_str).take(3).collect();
    assert_eq!(keys_in_order, [".id", "disabled", "acquired"], "property order is kept");
    // The backing file is real.
    assert_eq!(
        std::fs::metadata(data.path().join("fs/storage-pool/csi/pvc-a.img")).unwrap().len(),
        1 << 30
    );

    // The switch for an exit status on failure.
    drop(emu);
    let emu = Emu::start(&keys, data.path(), &["--error-exit-status", "1", "--line-ending", "lf"]);
    assert_eq!(emu.run(&keys, "/disk remove nosuch"), ("no such item\n".into(), 1));
}

#[test]
fn state_and_host_key_survive_a_restart() {
    if !have("ssh") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = Emu::start(&keys, data.path(), &[]);
    emu.run(&keys, ADD);
    let fingerprint = emu.fingerprint.clone();
    emu.stop();
    let emu = Emu::start(&keys, data.path(), &[]);
    assert_eq!(emu.fingerprint, fingerprint, "an RDS keeps its host key across reboots");
    let (count, _) =
        emu.run(&keys, r#"/disk print count-only where slot="pvc-a" and nvme-tcp-export"#);
    assert_eq!(count, "1\r\n");
}

#[test]
fn many_channels_share_one_connection_and_the_log_counts_them() {
    if !have("ssh") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = Emu::start(&keys, data.path(), &[]);
    let control_path = keys.path("mux");
    let mux = |cmd: &str| {
        let extra = [
            "-o",
            "ControlMaster=auto",
            "-o",
            &format!("ControlPath={}", control_path.display()),
            "-o",
            "ControlPersist=30",
        ];
        ssh_command(&keys, "ed25519", "admin", emu.ssh, &extra).arg(cmd).output().unwrap()
    };
    for _ in 0..3 {
        assert!(mux("/system identity print").status.success());
    }
    let (_, log) = emu.control("GET", "/log", "");
    let log: Vec<serde_json::Value> = serde_json::from_str(&log).unwrap();
    assert_eq!(log.len(), 3, "one log entry per command");
    assert!(
        log.iter().all(|e| e["conn"] == log[0]["conn"]),
        "all three on one connection: {log:?}"
    );
    let _ = Command::new("ssh")
        .arg("-O")
        .arg("exit")
        .arg("-o")
        .arg(format!("ControlPath={}", control_path.display()))
        .arg("x")
        .output();
}

#[test]
fn session_limit_refuses_extra_connections() {
    if !have("ssh") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = Emu::start(&keys, data.path(), &["--max-sessions", "1", "--latency-ms", "1500"]);
    let mut slow = ssh_command(&keys, "ed25519", "admin", emu.ssh, &[])
        .arg("/system identity print")
        .spawn()
        .unwrap();
    // Wait until the first connection is registered, then try a second one.
    emu.wait_connections(1);
    assert_eq!(emu.run(&keys, "/system identity print").1, 255, "second session refused");
    assert!(slow.wait().unwrap().success(), "the first session is unaffected");
}

#[test]
fn injected_errors_drops_reboots_and_disk_full() {
    if !have("ssh") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = Emu::start(&keys, data.path(), &[]);
    let faults = r#"{"fail":[{"pattern":"^/disk add","nth":2,"error":"failure: injected"}],
                     "drop":[{"pattern":"slot=drop-before","when":"before"},{"pattern":"slot=drop-after","when":"after"}]}"#;
    assert_eq!(emu.control("PUT", "/faults", faults).0, 204);
    let add = |slot: &str| {
        format!("/disk add type=file slot={slot} file-path=storage-pool/{slot}.img file-size=1M")
    };
    assert_eq!(emu.run(&keys, &add("one")), (String::new(), 0));
    assert_eq!(
        emu.run(&keys, &add("two")),
        ("failure: injected\r\n".into(), 0),
        "2nd matching command fails"
    );
    assert_eq!(emu.run(&keys, &add("three")), (String::new(), 0), "only the 2nd");
    // A drop before the command: the connection dies and nothing changed.
    assert_eq!(emu.run(&keys, &add("drop-before")).1, 255);
    assert_eq!(emu.run(&keys, "/disk print count-only where slot=drop-before").0, "0\r\n");
    // A drop after it: the connection dies but the disk exists (a retry must converge).
    assert_eq!(emu.run(&keys, &add("drop-after")).1, 255);
    assert_eq!(emu.run(&keys, "/disk print count-only where slot=drop-after").0, "1\r\n");
    let (_, log) = emu.control("GET", "/log", "");
    assert!(
        log.contains("\"dropped-before\"")
            && log.contains("\"dropped-after\"")
            && log.contains("\"injected-error\"")
    );

    assert_eq!(emu.control("PUT", "/faults", r#"{"disk_full":true}"#).0, 204);
    assert_eq!(emu.run(&keys, &add("full")).0, "failure: not enough disk space\r\n");
    assert_eq!(emu.control("PUT", "/faults", r#"{"fail":[{"pattern":"(","error":"x"}]}"#).0, 400);
    assert_eq!(emu.control("DELETE", "/faults", "").0, 204);

    // Reboot: connections are refused for the downtime, then state is all there.
    assert_eq!(emu.control("POST", "/reboot?downtime_ms=1500", "").0, 204);
    assert_eq!(emu.run(&keys, "/system identity print").1, 255, "refused while rebooting");
    std::thread::sleep(Duration::from_millis(1600));
    // one, three and drop-after: the injected error, the early drop and disk-full created nothing.
    assert_eq!(emu.run(&keys, "/disk print count-only where type=file").0, "3\r\n");
}

#[test]
fn reboot_drops_a_connection_mid_command() {
    if !have("ssh") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = Emu::start(&keys, data.path(), &["--latency-ms", "3000"]);
    let slow = ssh_command(&keys, "ed25519", "admin", emu.ssh, &[])
        .arg("/system identity print")
        .spawn()
        .unwrap();
    emu.wait_connections(1);
    assert_eq!(emu.control("POST", "/reboot?downtime_ms=0", "").0, 204);
    let out = slow.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(255), "the client sees the connection drop");
}

#[test]
fn latency_handshake_latency_and_refused_sessions() {
    if !have("ssh") {
        return;
    }
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let emu = Emu::start(&keys, data.path(), &[]);
    let timed = |emu: &Emu| {
        let started = std::time::Instant::now();
        let (_, code) = emu.run(&keys, "/system identity print");
        (started.elapsed(), code)
    };
    // Injected delays are lower bounds on what the client sees (behaviour, not performance).
    assert_eq!(emu.control("PUT", "/faults", r#"{"latency_ms":400,"jitter_ms":100}"#).0, 204);
    let (took, code) = timed(&emu);
    assert_eq!(code, 0);
    assert!(took >= Duration::from_millis(400), "command latency applied: {took:?}");
    assert_eq!(emu.control("PUT", "/faults", r#"{"handshake_latency_ms":500}"#).0, 204);
    let (took, code) = timed(&emu);
    assert_eq!(code, 0);
    assert!(took >= Duration::from_millis(500), "handshake latency applied: {took:?}");
    let (_, log) = emu.control("GET", "/log", "");
    let log: Vec<serde_json::Value> = serde_json::from_str(&log).unwrap();
    assert_eq!(log.len(), 2, "one round trip each");

    assert_eq!(emu.control("PUT", "/faults", r#"{"refuse_sessions":true}"#).0, 204);
    assert_eq!(timed(&emu).1, 255, "new sessions refused");
    assert_eq!(emu.control("DELETE", "/faults", "").0, 204);
    assert_eq!(timed(&emu).1, 0, "accepted again");
}
