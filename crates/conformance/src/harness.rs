//! The harness: every rule gets a driver of its own (`rds-csi serve --controller --node
//! --emulated-rds DIR`, a fresh emulated RDS and fresh kubelet-like paths in a temporary
//! directory), a context whose helpers record everything they make, and afterwards a
//! teardown that undoes it in reverse order whatever the rule did, then a check that nothing
//! is left: no mount or loop device under the directory, no volume file on the RDS, no managed
//! NVMe subsystem connected. One failing rule never leaves anything for the next.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use csi::v1::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
    *,
};
use hyper_util::rt::TokioIo;
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint, Uri},
};

use crate::ctx::Made;
pub use crate::{
    ctx::{Ctx, expect_code, mount_cap, mounts_at, must, must_ok},
    target::{GIB, Mode, NODE, OTHER_NODE, Plane, Target},
};

/// Whether this process can run node rules (root, for mounts and loop devices); elsewhere
/// they are skipped with the reason, and under `CI` that is a failure.
pub fn node_rules_possible() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("node rules need root (loop devices, mkfs and mounts)".into());
    }
    for tool in ["losetup", "mkfs.ext4", "mkfs.xfs", "blkid", "mount"] {
        let found = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "node rules need {tool} (apt-get install mount util-linux e2fsprogs xfsprogs)"
            ));
        }
    }
    Ok(())
}

/// A running driver; killed when dropped.
struct Driver {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Driver {
    async fn start(target: &Target, dir: &Path) -> Result<(Driver, Channel), String> {
        let socket = dir.join("csi.sock");
        let log = dir.join("driver.log");
        let mut cmd = tokio::process::Command::new(&target.binary);
        cmd.args(["--log-format", "json", "serve"])
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .args(["--controller", "--node", "--node-id", NODE, "--known-node-id", OTHER_NODE])
            .args(["--metrics-address", "", "--blank-check-attempts", "2"])
            .args(["--blank-check-delay-ms", "50", "--shutdown-timeout-seconds", "10"])
            .arg("--emulated-rds")
            .arg(dir.join("rds"))
            .arg("--host-nqn-file")
            .arg(dir.join("hostnqn"));
        match &target.plane {
            Plane::Loop => cmd.args(["--data-plane", "loop"]),
            Plane::NvmeTcp { nvmet } => cmd
                .args(["--data-plane", "nvme-tcp", "--emulated-rds-nvmet"])
                .arg(nvmet.to_string()),
        };
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file).kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", target.binary.display()))?;
        let mut driver = Driver { child, log };
        for _ in 0..400 {
            if let Ok(Some(status)) = driver.child.try_wait() {
                return Err(format!("the driver exited ({status}):\n{}", driver.log_text()));
            }
            if let Some(ch) = connect(&socket).await {
                let mut id = IdentityClient::new(ch.clone());
                if id.probe(ProbeRequest {}).await.is_ok_and(|p| p.into_inner().ready == Some(true))
                {
                    return Ok((driver, ch));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("the driver did not become ready within 20 s:\n{}", driver.log_text()))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then kill after 15 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

async fn connect(socket: &Path) -> Option<Channel> {
    if !socket.exists() {
        return None;
    }
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::1]:50051")
        .ok()?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .ok()
}

/// The outcome of one rule.
pub type Outcome = Result<(), String>;

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the rule panicked".into())
}

/// A rule: an async check against a fresh driver.
pub type RuleFn = for<'a> fn(&'a mut Ctx) -> futures::future::BoxFuture<'a, ()>;

/// Runs `rule` in `mode` against a fresh driver, tears down what it made, checks that
/// nothing is left. `Err` says what failed (the rule, the teardown's leftovers, or both).
pub async fn run(target: &Target, mode: Mode, rule: RuleFn) -> Outcome {
    let tmp =
        tempfile::Builder::new().prefix("csi-conformance-").tempdir().map_err(|e| e.to_string())?;
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir_all(dir.join("kubelet")).map_err(|e| e.to_string())?;
    let (driver, ch) = Driver::start(target, &dir).await?;
    let made = Arc::new(Mutex::new(Made::default()));
    let ctx = Ctx {
        mode,
        plane: target.plane.clone(),
        c: ControllerClient::new(ch.clone()),
        g: csi::v1::group_controller_client::GroupControllerClient::new(ch.clone()),
        n: NodeClient::new(ch.clone()),
        id: IdentityClient::new(ch),
        dir: dir.clone(),
        files: dir.join("rds/fs"),
        made: made.clone(),
    };
    let (c, n) = (ctx.c.clone(), ctx.n.clone());
    let outcome = tokio::spawn(async move {
        let mut ctx = ctx;
        rule(&mut ctx).await
    })
    .await
    .map_err(|e| if e.is_panic() { panic_text(e.into_panic()) } else { e.to_string() });
    let teardown = teardown(c, n, &made).await;
    let log = driver.log_text();
    driver.stop().await;
    let leftovers = leftovers(&dir);
    force_clean(&dir);
    let mut problems = Vec::new();
    if let Err(e) = outcome {
        problems.push(e);
        problems.push(format!("driver log (last lines):\n{}", tail(&log, 25)));
    }
    if !leftovers.is_empty() {
        problems.push(format!(
            "left behind after the teardown: {}\nteardown errors: {}",
            leftovers.join("; "),
            teardown.join("; ")
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Undoes everything recorded, newest first, with retries for calls a running copy or a
/// concurrent call refuses for a moment. Returns the errors that remained.
async fn teardown(
    c: ControllerClient<Channel>,
    n: NodeClient<Channel>,
    made: &Mutex<Made>,
) -> Vec<String> {
    let m = std::mem::take(&mut *made.lock().expect("made"));
    let mut errors = Vec::new();
    let mut note = |what: String, r: Result<(), Status>| {
        if let Err(s) = r {
            errors.push(format!("{what}: {:?} {}", s.code(), s.message()));
        }
    };
    for (vol, target) in m.targets.iter().rev() {
        let r = retry(|| {
            let mut n = n.clone();
            let req = NodeUnpublishVolumeRequest {
                volume_id: vol.clone(),
                target_path: target.display().to_string(),
            };
            async move { n.node_unpublish_volume(req).await.map(|_| ()) }
        })
        .await;
        note(format!("NodeUnpublishVolume {}", target.display()), r);
    }
    for (vol, staging) in m.staged.iter().rev() {
        let r = retry(|| {
            let mut n = n.clone();
            let req = NodeUnstageVolumeRequest {
                volume_id: vol.clone(),
                staging_target_path: staging.display().to_string(),
            };
            async move { n.node_unstage_volume(req).await.map(|_| ()) }
        })
        .await;
        note(format!("NodeUnstageVolume {vol}"), r);
    }
    for (vol, node) in m.published.iter().rev() {
        let r = retry(|| {
            let mut c = c.clone();
            let req = ControllerUnpublishVolumeRequest {
                volume_id: vol.clone(),
                node_id: node.clone(),
                ..Default::default()
            };
            async move { c.controller_unpublish_volume(req).await.map(|_| ()) }
        })
        .await;
        note(format!("ControllerUnpublishVolume {vol} {node}"), r);
    }
    // Restores copy from snapshots: volumes first (a restore being filled holds its
    // snapshot), then snapshots, then the volumes a snapshot held.
    for pass in 0..2 {
        for vol in m.volumes.iter().rev() {
            let r = retry(|| {
                let mut c = c.clone();
                let req = DeleteVolumeRequest { volume_id: vol.clone(), ..Default::default() };
                async move { c.delete_volume(req).await.map(|_| ()) }
            })
            .await;
            if pass == 1 {
                note(format!("DeleteVolume {vol}"), r);
            }
        }
        for snap in m.snapshots.iter().rev() {
            let r = retry(|| {
                let mut c = c.clone();
                let req = DeleteSnapshotRequest { snapshot_id: snap.clone(), ..Default::default() };
                async move { c.delete_snapshot(req).await.map(|_| ()) }
            })
            .await;
            if pass == 1 {
                note(format!("DeleteSnapshot {snap}"), r);
            }
        }
    }
    errors
}

/// Retries a teardown call while it is ABORTED, UNAVAILABLE or FAILED_PRECONDITION (a
/// running copy, a stage task finishing), for up to 20 s.
async fn retry<F, Fut>(call: F) -> Result<(), Status>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    let mut last = Ok(());
    for _ in 0..40 {
        last = call().await;
        match &last {
            Err(s)
                if matches!(
                    s.code(),
                    Code::Aborted | Code::Unavailable | Code::FailedPrecondition
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            _ => return last,
        }
    }
    last
}

/// Mounts and loop devices under `dir`, volume and snapshot files on the emulated RDS, and
/// managed NVMe subsystems still connected.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let root = dir.display().to_string();
    let mut out: Vec<String> =
        mounts_under(&root).into_iter().map(|t| format!("mount {t}")).collect();
    out.extend(loops_under(&root).into_iter().map(|d| format!("loop device {d}")));
    let pool = dir.join("rds/fs/storage-pool");
    let mut stack = vec![pool];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "img") {
                out.push(format!("file {}", p.display()));
            }
        }
    }
    for e in std::fs::read_dir("/sys/class/nvme").into_iter().flatten().flatten() {
        let nqn = std::fs::read_to_string(e.path().join("subsysnqn")).unwrap_or_default();
        if nqn.trim().starts_with("nqn.2000-02.com.mikrotik:pvc-") {
            out.push(format!(
                "NVMe controller {} ({})",
                e.file_name().to_string_lossy(),
                nqn.trim()
            ));
        }
    }
    out
}

fn mounts_under(root: &str) -> Vec<String> {
    let mut targets: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|t| t.starts_with(root))
        .map(String::from)
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    targets
}

fn loops_under(root: &str) -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| b.starts_with(root))
        })
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .collect()
}

/// After a failed teardown: unmount and detach what is left, so the next rule starts clean.
fn force_clean(dir: &Path) {
    let root = dir.display().to_string();
    for t in mounts_under(&root) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&t).status();
    }
    for d in loops_under(&root) {
        let _ = std::process::Command::new("losetup").args(["-d", &d]).status();
    }
}
