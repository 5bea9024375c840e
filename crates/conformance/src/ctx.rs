//! What a rule works with: the gRPC clients of its driver, its directory, and helpers that
//! make volumes the way a CO does while recording everything for the teardown.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use csi::v1::{
    controller_client::ControllerClient,
    identity_client::IdentityClient,
    node_client::NodeClient,
    volume_capability::{
        AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode as Am,
    },
    *,
};
use tonic::{Code, Status, transport::Channel};

use crate::target::{GIB, Mode, NODE, Plane};

/// What a rule made, for the teardown (in creation order).
#[derive(Debug, Default)]
pub(crate) struct Made {
    pub(crate) volumes: Vec<String>,
    pub(crate) snapshots: Vec<String>,
    /// (volume, node)
    pub(crate) published: Vec<(String, String)>,
    /// (volume, staging path)
    pub(crate) staged: Vec<(String, PathBuf)>,
    /// (volume, target path)
    pub(crate) targets: Vec<(String, PathBuf)>,
}

/// What a rule works with.
pub struct Ctx {
    pub mode: Mode,
    pub plane: Plane,
    pub c: ControllerClient<Channel>,
    pub g: csi::v1::group_controller_client::GroupControllerClient<Channel>,
    pub n: NodeClient<Channel>,
    pub id: IdentityClient<Channel>,
    /// The rule's directory (kubelet-like paths live under `kubelet/`).
    pub dir: PathBuf,
    /// The emulated RDS's file tree on this host.
    pub files: PathBuf,
    pub(crate) made: Arc<Mutex<Made>>,
}

impl Ctx {
    pub fn is_block(&self) -> bool {
        self.mode == Mode::Block
    }

    /// The capability of this run with access mode `am`.
    pub fn cap_with(&self, am: Am) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(match self.mode {
                Mode::Block => AccessType::Block(BlockVolume {}),
                Mode::Mount => {
                    AccessType::Mount(MountVolume { fs_type: "ext4".into(), ..Default::default() })
                }
            }),
            access_mode: Some(AccessMode { mode: am as i32 }),
        }
    }

    /// The capability of this run (SINGLE_NODE_WRITER, ext4 for mount).
    pub fn cap(&self) -> VolumeCapability {
        self.cap_with(Am::SingleNodeWriter)
    }

    /// A CreateVolume request for `name`, 1 GiB, this run's capability.
    pub fn create_req(&self, name: &str) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
            volume_capabilities: vec![self.cap()],
            ..Default::default()
        }
    }

    /// Records a volume id for the teardown.
    pub fn made_volume(&self, id: &str) {
        let mut m = self.made.lock().expect("made");
        if !m.volumes.iter().any(|v| v == id) {
            m.volumes.push(id.to_string());
        }
    }

    pub fn made_snapshot(&self, id: &str) {
        let mut m = self.made.lock().expect("made");
        if !m.snapshots.iter().any(|v| v == id) {
            m.snapshots.push(id.to_string());
        }
    }

    /// CreateVolume that must succeed (recorded).
    pub async fn create_with(&mut self, req: CreateVolumeRequest) -> Volume {
        let what = req.name.clone();
        let v = must(self.c.create_volume(req).await, &format!("CreateVolume {what}"))
            .volume
            .expect("volume");
        self.made_volume(&v.volume_id);
        v
    }

    pub async fn create(&mut self, name: &str) -> Volume {
        let req = self.create_req(name);
        self.create_with(req).await
    }

    /// ControllerPublishVolume to `node` (recorded).
    pub async fn controller_publish(
        &mut self,
        v: &Volume,
        node: &str,
        cap: VolumeCapability,
        readonly: bool,
    ) -> Result<HashMap<String, String>, Status> {
        let req = ControllerPublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: node.into(),
            volume_capability: Some(cap),
            readonly,
            volume_context: v.volume_context.clone(),
            ..Default::default()
        };
        let r = self.c.controller_publish_volume(req).await.map(|r| r.into_inner().publish_context);
        if r.is_ok() {
            let mut m = self.made.lock().expect("made");
            let key = (v.volume_id.clone(), node.to_string());
            if !m.published.contains(&key) {
                m.published.push(key);
            }
        }
        r
    }

    /// ControllerPublishVolume to this node that must succeed.
    pub async fn publish(&mut self, v: &Volume) -> HashMap<String, String> {
        let cap = self.cap();
        must_ok(self.controller_publish(v, NODE, cap, false).await, "ControllerPublishVolume")
    }

    /// The staging directory of `v` (created, as kubelet does).
    pub fn staging(&self, v: &Volume) -> PathBuf {
        let p = self.dir.join("kubelet/staging").join(&v.volume_id);
        std::fs::create_dir_all(&p).expect("staging dir");
        p
    }

    /// A target path in a fresh pod directory (its parent exists, as kubelet makes it).
    pub fn target(&self, pod: &str) -> PathBuf {
        let parent = self.dir.join("kubelet/pods").join(pod);
        std::fs::create_dir_all(&parent).expect("pod dir");
        parent.join("volume")
    }

    pub fn stage_req(
        &self,
        v: &Volume,
        pc: &HashMap<String, String>,
        cap: VolumeCapability,
    ) -> NodeStageVolumeRequest {
        NodeStageVolumeRequest {
            volume_id: v.volume_id.clone(),
            publish_context: pc.clone(),
            staging_target_path: self.staging(v).display().to_string(),
            volume_capability: Some(cap),
            volume_context: v.volume_context.clone(),
            ..Default::default()
        }
    }

    /// NodeStageVolume (recorded on success).
    pub async fn stage_with(&mut self, req: NodeStageVolumeRequest) -> Result<(), Status> {
        let (vol, path) = (req.volume_id.clone(), PathBuf::from(&req.staging_target_path));
        let r = self.n.node_stage_volume(req).await.map(|_| ());
        let mut m = self.made.lock().expect("made");
        if r.is_ok() && !m.staged.iter().any(|(v, p)| v == &vol && p == &path) {
            m.staged.push((vol, path));
        }
        r
    }

    pub async fn stage(&mut self, v: &Volume, pc: &HashMap<String, String>) -> Result<(), Status> {
        let req = self.stage_req(v, pc, self.cap());
        self.stage_with(req).await
    }

    pub fn node_publish_req(
        &self,
        v: &Volume,
        pc: &HashMap<String, String>,
        target: &Path,
        cap: VolumeCapability,
        readonly: bool,
    ) -> NodePublishVolumeRequest {
        NodePublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            publish_context: pc.clone(),
            staging_target_path: self.staging(v).display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(cap),
            readonly,
            volume_context: v.volume_context.clone(),
            ..Default::default()
        }
    }

    /// NodePublishVolume (recorded on success).
    pub async fn node_publish_with(&mut self, req: NodePublishVolumeRequest) -> Result<(), Status> {
        let (vol, path) = (req.volume_id.clone(), PathBuf::from(&req.target_path));
        let r = self.n.node_publish_volume(req).await.map(|_| ());
        let mut m = self.made.lock().expect("made");
        if r.is_ok() && !m.targets.iter().any(|(v, p)| v == &vol && p == &path) {
            m.targets.push((vol, path));
        }
        r
    }

    pub async fn node_publish(
        &mut self,
        v: &Volume,
        pc: &HashMap<String, String>,
        target: &Path,
    ) -> Result<(), Status> {
        let req = self.node_publish_req(v, pc, target, self.cap(), false);
        self.node_publish_with(req).await
    }

    /// A volume made usable the way a CO does it: created, published to this node, staged,
    /// published at a pod's target. Returns the volume, its publish context and the target.
    pub async fn up(&mut self, name: &str) -> (Volume, HashMap<String, String>, PathBuf) {
        let v = self.create(name).await;
        let pc = self.publish(&v).await;
        must_ok(self.stage(&v, &pc).await, "NodeStageVolume");
        let target = self.target(&format!("pod-{name}"));
        must_ok(self.node_publish(&v, &pc, &target).await, "NodePublishVolume");
        (v, pc, target)
    }

    /// CreateSnapshot of `source`, polled until ready (recorded).
    pub async fn snapshot(&mut self, name: &str, source: &str) -> Snapshot {
        for _ in 0..240 {
            let req = CreateSnapshotRequest {
                source_volume_id: source.into(),
                name: name.into(),
                ..Default::default()
            };
            let s = must(self.c.create_snapshot(req).await, "CreateSnapshot")
                .snapshot
                .expect("snapshot");
            self.made_snapshot(&s.snapshot_id);
            if s.ready_to_use {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("snapshot {name} of {source} never became ready");
    }

    /// The backing file of `v` on this host (the emulated RDS's file tree).
    pub fn file_of(&self, v: &Volume) -> PathBuf {
        self.files.join(v.volume_context["volumePath"].trim_start_matches('/'))
    }

    /// The capability of this run with a filesystem type (mount) and access mode.
    pub fn cap_fs(&self, fs: &str, am: Am) -> VolumeCapability {
        let mut cap = self.cap_with(am);
        if let Some(AccessType::Mount(m)) = &mut cap.access_type {
            m.fs_type = fs.into();
        }
        cap
    }

    /// Whether anything of `v` is attached on this host: a loop device on its file, or an
    /// NVMe controller of its NQN.
    pub fn attached(&self, v: &Volume) -> bool {
        let file = self.file_of(v).display().to_string();
        let nqn = v.volume_context.get("nqn").cloned().unwrap_or_default();
        let loops = std::fs::read_dir("/sys/block").into_iter().flatten().flatten().any(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| b.trim() == file)
        });
        let nvme = std::fs::read_dir("/sys/class/nvme").into_iter().flatten().flatten().any(|e| {
            std::fs::read_to_string(e.path().join("subsysnqn")).is_ok_and(|n| n.trim() == nqn)
        });
        loops || nvme
    }

    /// Forgets a recorded target (the rule unpublished it itself).
    pub fn forget_target(&self, target: &Path) {
        self.made.lock().expect("made").targets.retain(|(_, p)| p != target);
    }
}

/// A filesystem capability, whatever the run's mode.
pub fn mount_cap(fs: &str, am: Am) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: am as i32 }),
    }
}

/// The answer of a call that must succeed; panics naming the call and the status.
pub fn must<T>(r: Result<tonic::Response<T>, Status>, what: &str) -> T {
    match r {
        Ok(r) => r.into_inner(),
        Err(s) => panic!("{what} failed: {:?}: {}", s.code(), s.message()),
    }
}

pub fn must_ok<T>(r: Result<T, Status>, what: &str) -> T {
    r.unwrap_or_else(|s| panic!("{what} failed: {:?}: {}", s.code(), s.message()))
}

/// Asserts that `r` failed with `code`; returns the message.
pub fn expect_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, what: &str) -> String {
    match r {
        Ok(v) => panic!("{what}: expected {code:?}, got OK ({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {}", s.message());
            assert!(!s.message().is_empty(), "{what}: an error must say what was wrong");
            s.message().to_string()
        }
    }
}

/// Mounts at exactly `target` (from /proc/self/mountinfo): (options, major:minor).
pub fn mounts_at(target: &Path) -> Vec<(Vec<String>, String)> {
    let t = target.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&t.as_str()))
                .then(|| (f[5].split(',').map(String::from).collect(), f[2].to_string()))
        })
        .collect()
}
