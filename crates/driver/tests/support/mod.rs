//! Harness for black-box tests: starts the real `rds-csi` binary, follows its JSON log on
//! stderr, and talks to it with a tonic client over its unix socket.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod controller;
pub mod kube;
pub mod node;
pub mod rds;
pub mod vm;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint, Uri};

pub const BIN: &str = env!("CARGO_BIN_EXE_rds-csi");

/// Whether this process is root and has `tools`; otherwise prints why the `suite` tests skip
/// (`root_why`: what root is needed for), and under `CI` fails: they must run there.
pub fn root_with(tools: &[&str], root_why: &str, suite: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    let why = match (root, missing.is_empty()) {
        (true, true) => return true,
        (false, _) => format!("needs root ({root_why})"),
        (_, false) => format!("needs {}", tools.join(", ")),
    };
    assert!(std::env::var_os("CI").is_none(), "the {suite} tests must run in CI: {why}");
    eprintln!("SKIPPED: {why}");
    false
}
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `rds-csi serve`, killed on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// `rds-csi serve` arguments for a fresh socket in a temp dir, plus `extra`.
pub fn serve_command(socket: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-format", "json", "--log-level", "info", "serve"])
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl Daemon {
    /// Starts with controller + node and a metrics server on a free loopback port.
    pub fn start() -> Daemon {
        Self::start_with(&[
            "--controller",
            "--node",
            "--node-id",
            "node-a",
            "--metrics-address",
            "127.0.0.1:0",
        ])
    }

    pub fn start_owned(extra: &[String]) -> Daemon {
        let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        Self::start_with(&refs)
    }

    pub fn start_with(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("plugin").join("csi.sock");
        // A node must not write the test machine's /etc/nvme/hostnqn.
        let host_nqn = format!("--host-nqn-file={}", dir.path().join("hostnqn").display());
        let mut extra = extra.to_vec();
        if extra.contains(&"--node") {
            extra.push(&host_nqn);
        }
        let child = serve_command(&socket, &extra).spawn().expect("spawn rds-csi");
        Self::follow(child, socket, dir)
    }

    pub fn follow(mut child: Child, socket: PathBuf, dir: tempfile::TempDir) -> Daemon {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut daemon = Daemon { child, socket, metrics: None, log, _dir: dir };
        let listening = daemon.wait_for_log("CSI gRPC server listening");
        let metrics_line = daemon
            .log_lines()
            .into_iter()
            .find(|l| l["message"] == "metrics server listening (/metrics, /healthz, /readyz)");
        daemon.metrics = metrics_line.map(|l| l["address"].as_str().unwrap().parse().unwrap());
        assert_eq!(listening["endpoint"], format!("unix://{}", daemon.socket.display()));
        daemon
    }

    /// Parsed JSON log lines so far (non-JSON lines are kept as strings).
    pub fn log_lines(&self) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.clone())))
            .collect()
    }

    pub fn raw_log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for a log line whose message is `message`; panics with the log on timeout or exit.
    pub fn wait_for_log(&mut self, message: &str) -> Value {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|l| l["message"] == message) {
                return line;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("rds-csi exited ({status}) before logging {message:?}:\n{}", self.raw_log());
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} within {START_TIMEOUT:?}:\n{}",
                self.raw_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.socket).await
    }

    /// A channel once CSI Probe says ready (the RDS connected); panics with the log if it
    /// does not within 10 s.
    pub async fn ready_channel(&self) -> Channel {
        let ch = self.channel().await;
        let mut identity = csi::v1::identity_client::IdentityClient::new(ch.clone());
        for _ in 0..200 {
            let probe = identity.probe(csi::v1::ProbeRequest {}).await.unwrap().into_inner();
            if probe.ready == Some(true) {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("Probe never said ready:\n{}", self.raw_log());
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit (bounded). Async, so that the test's own client
    /// connections keep running and can answer the server's HTTP/2 shutdown handshake.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rds-csi still running after {within:?}:\n{}",
                self.raw_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics.expect("metrics server enabled"), path)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tonic channel over a unix socket (the URI is a placeholder; the connector ignores it).
pub async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::1]:50051")
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to the driver's socket")
}

/// Minimal HTTP/1.1 GET with a deadline; returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A volume capability: block or filesystem (default fs type), with `mode`.
pub fn cap(
    block: bool,
    mode: csi::v1::volume_capability::access_mode::Mode,
) -> csi::v1::VolumeCapability {
    use csi::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
    csi::v1::VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume::default())
        }),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}
