//! The controller under measurement: `rds-csi serve --controller` started as a child process
//! (so its memory is its own), against the RDS emulator running in this process (real SSH on
//! loopback, real files) or against a real RDS named by `--rds-*` flags passed through.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use csi::v1::{ProbeRequest, identity_client::IdentityClient};
use rds_emulator::emulator::Emulator;
use routeros::ssh::HostKeyPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::{emulated, rds::RdsConfig};

/// Node ids ControllerPublishVolume accepts in the bench and the soak.
pub const NODES: [&str; 2] = ["bench-node-a", "bench-node-b"];

/// A running controller process and, when embedded, its emulator.
pub struct Harness {
    pub emu: Option<Emulator>,
    /// Where the emulator keeps the RDS's files (the volumes' backing files).
    pub files: Option<PathBuf>,
    /// The emulator's SSH settings (for a raw RouterOS client beside the controller).
    pub ssh: Option<routeros::ssh::SshOptions>,
    /// The `rds-csi` binary the controller runs from.
    exe: PathBuf,
    /// `serve` flags that reach the RDS (the embedded emulator's, or the caller's).
    rds_flags: Vec<String>,
    extra: Vec<String>,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
    pub socket: PathBuf,
    pub metrics: SocketAddr,
    pub channel: Channel,
    /// Peak resident memory of the controller processes that have exited (KiB).
    peak_kib: u64,
    /// The node plugin of [`NODES`]`[0]` on the loop data plane, when started.
    node: Option<tokio::process::Child>,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits (30 s at most) until the plugin on `socket` answers Probe (ready, when
/// `need_ready`: the controller is ready once it reaches the RDS); fails at once when
/// `child` exits. `what` and `log` name it in the error.
pub async fn wait_ready(
    socket: &Path,
    child: &mut tokio::process::Child,
    need_ready: bool,
    what: &str,
    log: &Path,
) -> Result<Channel, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = crate::endpoint::unix_channel(socket).await
            && IdentityClient::new(ch.clone())
                .probe(ProbeRequest {})
                .await
                .is_ok_and(|r| !need_ready || r.into_inner().ready == Some(true))
        {
            return Ok(ch);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the {what} exited ({status}); see {}", log.display()));
        }
        if Instant::now() > deadline {
            return Err(format!("the {what} did not become ready in 30 s; see {}", log.display()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGKILL, then reap (10 s at most).
pub async fn kill(child: Option<tokio::process::Child>) {
    if let Some(mut c) = child {
        let _ = c.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
    }
}

/// Whether the flags name an RDS (then no emulator is started).
pub fn names_rds(extra: &[String]) -> bool {
    extra.iter().any(|a| a.starts_with("--rds-address") || a.starts_with("--rds-rest-url"))
}

impl Harness {
    /// Starts the emulator in `dir/rds` (unless `extra` names an RDS) and the controller
    /// (`exe serve ...`). `extra` goes to `serve` as given (after the harness's own flags, so
    /// it wins).
    pub async fn start(exe: &Path, dir: &Path, extra: &[String]) -> Result<Harness, String> {
        let (emu, files, ssh, rds_flags) = if names_rds(extra) {
            (None, None, None, Vec::new())
        } else {
            let rds = emulated::start(&dir.join("rds"), None).await?;
            let RdsConfig::Ssh(o) = &rds.rds else { unreachable!("the emulator speaks SSH") };
            let HostKeyPolicy::Fingerprint(fp) = &o.host_key else {
                unreachable!("the emulator's host key is pinned")
            };
            let flags = vec![
                format!("--rds-address={}", rds.ssh_address),
                format!("--rds-ssh-key-file={}", o.key_file.display()),
                format!("--rds-host-key={fp}"),
            ];
            (Some(rds.emu), Some(rds.files), Some(o.clone()), flags)
        };
        let mut h = Harness {
            emu,
            files,
            ssh,
            exe: exe.to_path_buf(),
            rds_flags,
            extra: extra.to_vec(),
            dir: dir.to_path_buf(),
            child: None,
            socket: dir.join("csi.sock"),
            metrics: "127.0.0.1:0".parse().expect("address"),
            channel: Channel::from_static("http://[::1]:1").connect_lazy(),
            peak_kib: 0,
            node: None,
        };
        h.spawn().await?;
        Ok(h)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.socket);
        self.metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("controller.log"))
            .map_err(|e| format!("controller log: {e}"))?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("serve")
            .arg("--controller")
            .arg(format!("--endpoint=unix://{}", self.socket.display()))
            .arg(format!("--metrics-address={}", self.metrics))
            .args(["--attachment-state=memory", "--attach-settle-seconds=0"])
            .arg(format!("--known-node-id={}", NODES.join(",")))
            .args(["--min-volume-size=1M", "--log-level=warn", "--shutdown-timeout-seconds=2"])
            .args(&self.rds_flags)
            .args(&self.extra)
            .env_remove("RDS_CSI_EMULATED_RDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("starting the controller: {e}"))?;
        let log = self.dir.join("controller.log");
        let waited = wait_ready(&self.socket, &mut child, true, "controller", &log).await;
        self.child = Some(child);
        self.channel = waited?;
        Ok(())
    }

    /// Starts the node plugin of [`NODES`]`[0]` (`rds-csi serve --node --data-plane loop`)
    /// on the emulator's files, and returns its channel. Needs root.
    pub async fn start_node(&mut self) -> Result<Channel, String> {
        let files = self.files.clone().ok_or("the loop plane needs the embedded emulator")?;
        let socket = self.dir.join("node.sock");
        let log = std::fs::File::create(self.dir.join("node.log"))
            .map_err(|e| format!("node log: {e}"))?;
        let mut child = tokio::process::Command::new(&self.exe)
            .arg("serve")
            .args(["--node", "--node-id", NODES[0], "--data-plane", "loop", "--log-level", "warn"])
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .args(["--metrics-address", "", "--blank-check-attempts", "2"])
            .arg("--loop-root")
            .arg(&files)
            .arg("--host-nqn-file")
            .arg(self.dir.join("hostnqn"))
            .arg("--kubelet-dir")
            .arg(self.dir.join("kubelet"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting the node plugin: {e}"))?;
        let log = self.dir.join("node.log");
        let waited = wait_ready(&socket, &mut child, false, "node plugin", &log).await;
        self.node = Some(child);
        waited
    }

    /// The controller's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Kills the controller (SIGKILL: no goodbye) and starts a new process on the same state.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.peak_kib = self.peak_rss_kib();
        kill(self.child.take()).await;
        self.spawn().await
    }

    /// Stops the controller (SIGKILL after its metrics were read) and the node plugin.
    pub async fn stop(&mut self) {
        self.peak_kib = self.peak_rss_kib();
        kill(self.node.take()).await;
        kill(self.child.take()).await;
    }

    /// The highest resident memory of any controller process so far (VmHWM, KiB).
    pub fn peak_rss_kib(&self) -> u64 {
        let now = self
            .pid()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .and_then(|s| vm_hwm_kib(&s))
            .unwrap_or(0);
        now.max(self.peak_kib)
    }

    /// The controller's `/metrics` text (HTTP/1.0 on loopback, 5 s deadline).
    pub async fn scrape(&self) -> Result<String, String> {
        let get = async {
            let mut s = tokio::net::TcpStream::connect(self.metrics).await?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n").await?;
            let mut body = String::new();
            s.read_to_string(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let text = tokio::time::timeout(Duration::from_secs(5), get)
            .await
            .map_err(|_| "no /metrics answer in 5 s".to_string())?
            .map_err(|e| format!("/metrics: {e}"))?;
        Ok(text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(text))
    }
}

/// `VmHWM:   12345 kB` from /proc/PID/status.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `(sum, count)` of the round-trip histogram of one RPC method in a `/metrics` text.
pub fn round_trips_of(metrics: &str, method: &str) -> (f64, f64) {
    let value = |name: &str| {
        let prefix = format!("rds_csi_rds_round_trips_per_rpc_{name}{{method=\"{method}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_peak_memory_and_round_trips() {
        assert_eq!(vm_hwm_kib("Name:\trds-csi\nVmHWM:\t   23456 kB\nVmRSS:\t 1 kB\n"), Some(23456));
        assert_eq!(vm_hwm_kib("Name: x\n"), None);
        let m = "rds_csi_rds_round_trips_per_rpc_sum{method=\"CreateVolume\"} 12.0\n\
                 rds_csi_rds_round_trips_per_rpc_count{method=\"CreateVolume\"} 12\n\
                 rds_csi_rds_round_trips_per_rpc_sum{method=\"DeleteVolume\"} 24.0\n";
        assert_eq!(round_trips_of(m, "CreateVolume"), (12.0, 12.0));
        assert_eq!(round_trips_of(m, "DeleteVolume"), (24.0, 0.0));
        assert_eq!(round_trips_of(m, "Nope"), (0.0, 0.0));
        assert!(names_rds(&["--rds-address=10.0.0.1".into()]));
        assert!(!names_rds(&["--storage-fencing=false".into()]));
    }
}
