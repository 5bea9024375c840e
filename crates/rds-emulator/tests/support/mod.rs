//! Harness for black-box tests of the `rds-emulator` binary with OpenSSH's `ssh` client.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_rds-emulator");

/// Whether `tool` is installed; without it a test prints why it is skipped, except in CI,
/// where `.ci/run` installs it and its absence is a failure.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{tool} is required in CI (.ci/run installs it)");
        eprintln!("SKIPPED: {tool} is not installed (apt-get install openssh-client)");
    }
    found
}

/// Keys and config shared by one emulator instance.
pub struct Keys {
    pub dir: tempfile::TempDir,
}

impl Keys {
    /// An ed25519 and an RSA key, both authorized, and one stranger key.
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind) in [("ed25519", "ed25519"), ("rsa", "rsa"), ("stranger", "ed25519")] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-f"])
                .arg(dir.path().join(name))
                .status()
                .unwrap();
            assert!(st.success());
        }
        let mut auth = String::new();
        for name in ["ed25519", "rsa"] {
            auth.push_str(
                &std::fs::read_to_string(dir.path().join(format!("{name}.pub"))).unwrap(),
            );
        }
        std::fs::write(dir.path().join("authorized_keys"), auth).unwrap();
        std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
        Keys { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub struct Emu {
    pub child: Child,
    pub ssh: SocketAddr,
    pub control: SocketAddr,
    pub fingerprint: String,
    pub data: PathBuf,
    /// `https://...` or `http://...` when started with --rest-listen.
    pub rest: Option<String>,
    pub rest_cert_sha256: Option<String>,
}

impl Emu {
    /// Starts the emulator on `data` with the keys authorized and a control API.
    pub fn start(keys: &Keys, data: &Path, extra: &[&str]) -> Emu {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(data)
            .arg("--authorized-keys")
            .arg(keys.path("authorized_keys"))
            .args(["--ssh-listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Until `Emu` owns the child, a panic here must not leave the emulator running.
        let mut guard = KillOnDrop(Some(child));
        let mut lines = BufReader::new(stdout).lines();
        let (mut ssh, mut control, mut fingerprint) = (None, None, String::new());
        let (mut rest, mut rest_cert_sha256) = (None, None);
        for line in lines.by_ref() {
            let line = line.unwrap();
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["listen", "ssh", addr, fp] => {
                    ssh = Some(addr.parse().unwrap());
                    fingerprint = fp.trim_start_matches("host-key=").to_string();
                }
                ["listen", "control", url] => {
                    control = Some(url.trim_start_matches("http://").parse().unwrap())
                }
                ["listen", "rest", url] => rest = Some(url.to_string()),
                ["listen", "rest", url, fp, _file] => {
                    rest = Some(url.to_string());
                    rest_cert_sha256 = Some(fp.trim_start_matches("cert-sha256=").to_string());
                }
                ["READY"] => break,
                _ => panic!("unexpected start-up line {line:?}"),
            }
        }
        let (ssh, control) = (ssh.expect("ssh line"), control.expect("control line"));
        Emu {
            child: guard.0.take().expect("child"),
            ssh,
            control,
            fingerprint,
            data: data.into(),
            rest,
            rest_cert_sha256,
        }
    }

    /// `ssh` with the given key and login name, running `command`.
    pub fn ssh_as(&self, keys: &Keys, key: &str, user: &str, command: &str) -> Output {
        ssh_command(keys, key, user, self.ssh, &[]).arg(command).output().unwrap()
    }

    /// Runs `command` as admin with the ed25519 key; returns (stdout, exit code).
    pub fn run(&self, keys: &Keys, command: &str) -> (String, i32) {
        let out = self.ssh_as(keys, "ed25519", "admin", command);
        (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code().unwrap_or(-1))
    }

    /// curl against the REST API with basic auth (`extra` adds flags); returns (status, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        extra: &[&str],
    ) -> (u16, String) {
        let base = self.rest.as_ref().expect("started with --rest-listen");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-X", method, "-w", "\n%{http_code}"]);
        if base.starts_with("https") {
            cmd.arg("--cacert").arg(self.data.join("rest-cert.pem"));
        }
        cmd.args(extra);
        if let Some(b) = body {
            cmd.args(["-H", "content-type: application/json", "-d", b]);
        }
        let out = cmd.arg(format!("{base}{path}")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Waits (bounded) until `n` connections are open.
    pub fn wait_connections(&self, n: usize) {
        let wanted = format!("\"open\":{n}");
        for _ in 0..250 {
            if self.control("GET", "/connections", "").1.contains(&wanted) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("never saw {n} open connections");
    }

    pub fn control(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(self.control, method, path, body)
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn ssh_command(
    keys: &Keys,
    key: &str,
    user: &str,
    addr: SocketAddr,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-q",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
    ])
    .args(["-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes", "-i"])
    .arg(keys.path(key))
    .args(["-p", &addr.port().to_string()])
    .args(extra)
    .arg(format!("{user}@{}", addr.ip()))
    .stdin(Stdio::null());
    cmd
}

/// Minimal HTTP/1.1 client with a deadline.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).unwrap().parse().unwrap();
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}
