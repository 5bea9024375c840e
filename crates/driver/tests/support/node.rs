//! Harness of the node black-box tests (tests/node.rs): the real binary with an emulated RDS
//! and the loop data plane, gRPC helpers, and readers of what the kernel sees (mountinfo,
//! loop devices in sysfs, blkid). Needs root; see `root_available`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use csi::v1::{
    controller_client::ControllerClient,
    node_client::NodeClient,
    volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode},
    *,
};
use tonic::{Code, transport::Channel};

use super::Daemon;

pub const GIB: i64 = 1 << 30;

/// CAP_SYS_RESOURCE (bit 24) in this process's effective set.
pub fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

pub fn root_available() -> bool {
    super::root_with(
        &["losetup", "mkfs.ext4", "mkfs.xfs", "blkid", "resize2fs", "xfs_growfs"],
        "loop devices and mounts",
        "node",
    )
}

pub struct Node {
    pub _daemon: Daemon,
    pub c: ControllerClient<Channel>,
    pub n: NodeClient<Channel>,
    /// The emulated RDS's state (its files under `fs/`) and the kubelet-like paths.
    pub dir: tempfile::TempDir,
}

pub async fn start(extra: &[&str]) -> Node {
    start_with_path(extra, None).await
}

/// [`start`] with `bin` first on the driver's PATH (stand-ins for the tools it runs).
pub async fn start_with_path(extra: &[&str], bin: Option<&Path>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let rds = dir.path().join("rds");
    let mut args = vec![
        "--controller".to_string(),
        "--node".into(),
        "--node-id".into(),
        "node-a".into(),
        "--metrics-address".into(),
        "".into(),
        "--emulated-rds".into(),
        rds.display().to_string(),
        "--data-plane".into(),
        "loop".into(),
        "--blank-check-attempts".into(),
        "2".into(),
        "--blank-check-delay-ms".into(),
        "50".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let daemon = match bin {
        None => Daemon::start_owned(&args),
        Some(bin) => {
            let home = tempfile::tempdir().unwrap();
            let socket = home.path().join("plugin").join("csi.sock");
            args.push(format!("--host-nqn-file={}", home.path().join("hostnqn").display()));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
            let child = super::serve_command(&socket, &refs).env("PATH", path).spawn().unwrap();
            Daemon::follow(child, socket, home)
        }
    };
    let ch = daemon.ready_channel().await;
    Node { _daemon: daemon, c: ControllerClient::new(ch.clone()), n: NodeClient::new(ch), dir }
}

pub fn cap(block: bool, fs: &str, flags: &[&str]) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                mount_flags: flags.iter().map(|f| f.to_string()).collect(),
                ..Default::default()
            })
        }),
        access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
    }
}

/// A failed test must not leave mounts or loop devices behind: unmount everything under the
/// test's directory (deepest first) and detach loop devices backed by its files.
impl Drop for Node {
    fn drop(&mut self) {
        let root = self.dir.path().display().to_string();
        let mut targets: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|t| t.starts_with(&root))
            .map(String::from)
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in targets {
            let _ = Command::new("umount").arg(&t).status();
        }
        for e in std::fs::read_dir("/sys/block").into_iter().flatten().flatten() {
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file"));
            if backing.is_ok_and(|b| b.starts_with(&root)) {
                let dev = format!("/dev/{}", e.file_name().to_string_lossy());
                let _ = Command::new("losetup").args(["-d", &dev]).status();
            }
        }
    }
}

pub struct Vol {
    pub id: String,
    pub ctx: HashMap<String, String>,
    /// The backing file on this host.
    pub file: PathBuf,
}

impl Node {
    pub async fn create(&mut self, name: &str, block: bool) -> Vol {
        let v = self
            .c
            .create_volume(CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
                volume_capabilities: vec![cap(block, "", &[])],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        let file = self
            .dir
            .path()
            .join("rds/fs")
            .join(v.volume_context["volumePath"].trim_start_matches('/'));
        assert!(file.exists(), "{}", file.display());
        Vol { id: v.volume_id, ctx: v.volume_context, file }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("kubelet").join(name)
    }

    /// kubelet creates the staging directory (CSI: the CO ensures it exists).
    pub fn staging(&self, v: &Vol) -> PathBuf {
        let p = self.path(&format!("staging-{}", v.id));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub async fn stage(&mut self, v: &Vol, cap: VolumeCapability) -> Result<(), tonic::Status> {
        self.stage_with(v, cap, HashMap::new()).await
    }

    pub async fn stage_with(
        &mut self,
        v: &Vol,
        cap: VolumeCapability,
        publish_context: HashMap<String, String>,
    ) -> Result<(), tonic::Status> {
        let staging = self.staging(v);
        self.n
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: v.id.clone(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(cap),
                volume_context: v.ctx.clone(),
                publish_context,
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    pub async fn unstage(&mut self, v: &Vol) -> Result<(), tonic::Status> {
        let staging = self.staging(v);
        self.n
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: v.id.clone(),
                staging_target_path: staging.display().to_string(),
            })
            .await
            .map(|_| ())
    }

    pub async fn publish(
        &mut self,
        v: &Vol,
        target: &Path,
        cap: VolumeCapability,
        ro: bool,
    ) -> Result<(), tonic::Status> {
        let staging = self.staging(v);
        self.n
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: v.id.clone(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(cap),
                readonly: ro,
                volume_context: v.ctx.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    pub async fn unpublish(&mut self, v: &Vol, target: &Path) -> Result<(), tonic::Status> {
        self.n
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: v.id.clone(),
                target_path: target.display().to_string(),
            })
            .await
            .map(|_| ())
    }

    pub async fn stats(&mut self, v: &Vol, path: &Path) -> NodeGetVolumeStatsResponse {
        self.n
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: v.id.clone(),
                volume_path: path.display().to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn grow(&mut self, v: &Vol, path: &Path, bytes: i64, cap: VolumeCapability) -> i64 {
        self.try_grow(v, path, bytes, cap).await.unwrap()
    }

    pub async fn try_grow(
        &mut self,
        v: &Vol,
        path: &Path,
        bytes: i64,
        cap: VolumeCapability,
    ) -> Result<i64, tonic::Status> {
        self.c
            .controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: v.id.clone(),
                capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
                volume_capability: Some(cap.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        self.n
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: v.id.clone(),
                volume_path: path.display().to_string(),
                capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
                volume_capability: Some(cap),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().capacity_bytes)
    }
}

/// Loop devices backed by `file`, from sysfs (running `losetup` would open every loop
/// device and look like a holder to the node of a test running beside this one).
pub fn loops_of(file: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim()) == file)
        })
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .collect();
    out.sort();
    out
}

pub struct MountLine {
    pub fs_type: String,
    pub options: Vec<String>,
    pub major_minor: String,
}

pub fn mounts_at(target: &Path) -> Vec<MountLine> {
    let t = target.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let f: Vec<&str> = head.split(' ').collect();
            (f[4] == t).then(|| MountLine {
                fs_type: tail.split(' ').next().unwrap().to_string(),
                options: f[5].split(',').map(String::from).collect(),
                major_minor: f[2].to_string(),
            })
        })
        .collect()
}

pub fn blkid(dev_or_file: &Path, tag: &str) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-s", tag, "-o", "value"])
        .arg(dev_or_file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn code(r: Result<(), tonic::Status>) -> (Code, String) {
    let s = r.expect_err("an error was expected");
    (s.code(), s.message().to_string())
}
