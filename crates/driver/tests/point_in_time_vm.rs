//! Point-in-time snapshots over real NVMe/TCP, in one QEMU VM boot (tools/nvme-vm; this test
//! runs itself again inside with `RDS_CSI_IN_VM=1`). `rds-csi serve --controller --node
//! --emulated-rds DIR --emulated-rds-nvmet 127.0.0.1:4420` is the RDS, the controller and the
//! node; the kernel's nvmet exports the disks and the kernel's initiator connects to them.
//! docs/snapshots.md "Point in time".
//!
//! A writer writes sequence-numbered 4 KiB blocks (O_DIRECT | O_DSYNC, one at a time, each
//! acknowledged before the next) at scattered positions of a published volume while a
//! snapshot is taken; the restored volume must hold a gap-free prefix of the sequence: no
//! block of a later write without every earlier one, and every write acknowledged before the
//! snapshot was asked for. The writer never sees an error, and writes again after the pause.
//!
//! 1. One snapshot of a block volume (raw device).
//! 2. A group snapshot of two filesystem volumes (a file on ext4 each), the writer
//!    alternating between them: both restored members hold prefixes of one instant (the first
//!    volume's prefix equals the second's, or is one longer).
//! 3. The check's sensitivity: a plain copy of the live backing file made while the writer
//!    runs is torn.
//!
//! Needs root and the VM packages (.ci/run installs them); outside CI it prints why it skips.

#[path = "../../../tools/nvme-vm/preflight.rs"]
mod preflight;
mod support;

use std::{
    collections::HashMap,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use csi::v1::{
    controller_client::ControllerClient,
    group_controller_client::GroupControllerClient,
    node_client::NodeClient,
    volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode},
    *,
};
use support::{Daemon, serve_command, vm::Checks};
use tonic::transport::Channel;

const TEST: &str = "snapshots_are_one_instant_on_a_real_kernel";
const BLOCK: u64 = 4096;
const SIZE: u64 = 128 << 20;
const MAGIC: &[u8; 8] = b"RDSCSIPT";
/// Scatters the writes: write `i` goes to block `(i * STRIDE) % blocks` (odd: distinct).
const STRIDE: u64 = 7919;

#[test]
fn snapshots_are_one_instant_on_a_real_kernel() {
    if std::env::var_os("RDS_CSI_IN_VM").is_some() {
        tokio::runtime::Runtime::new().unwrap().block_on(drill());
        return;
    }
    if !preflight::require_vm(&["mkfs.ext4"]) {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/in_vm.sh");
    preflight::run_checks(
        &script,
        &[exe.to_str().unwrap(), TEST],
        &[("NVME_VM_TIMEOUT", "600"), ("NVME_VM_MEM", "3G")],
    );
}

fn cap(block: bool) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume { fs_type: "ext4".into(), ..Default::default() })
        }),
        access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
    }
}

struct Vol {
    id: String,
    block: bool,
    ctx: HashMap<String, String>,
    publish: HashMap<String, String>,
    staging: PathBuf,
    target: PathBuf,
}

struct Rig {
    dir: tempfile::TempDir,
    daemon: Daemon,
    c: ControllerClient<Channel>,
    g: GroupControllerClient<Channel>,
    n: NodeClient<Channel>,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let socket = home.path().join("csi.sock");
        let rds = dir.path().join("rds");
        let hostnqn = format!("--host-nqn-file={}", dir.path().join("hostnqn").display());
        let args = [
            "--controller",
            "--node",
            "--node-id",
            "vm-node",
            "--metrics-address",
            "",
            "--emulated-rds",
            rds.to_str().unwrap(),
            "--emulated-rds-nvmet",
            "127.0.0.1:4420",
            "--data-plane",
            "nvme-tcp",
            "--nvme-address",
            "127.0.0.1",
            "--min-volume-size",
            "64M",
            "--snapshot-pause-max-seconds",
            "60",
            &hostnqn,
        ];
        let daemon = Daemon::follow(serve_command(&socket, &args).spawn().unwrap(), socket, home);
        let ch = daemon.ready_channel().await;
        Rig {
            dir,
            daemon,
            c: ControllerClient::new(ch.clone()),
            g: GroupControllerClient::new(ch.clone()),
            n: NodeClient::new(ch),
        }
    }

    fn file(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("rds/fs/storage-pool/metal-csi/{id}.img"))
    }

    async fn create(&mut self, name: &str, block: bool, source: Option<String>) -> Vol {
        let req = CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange { required_bytes: SIZE as i64, limit_bytes: 0 }),
            volume_capabilities: vec![cap(block)],
            parameters: HashMap::from([("reconnectDelay".to_string(), "1".to_string())]),
            volume_content_source: source.map(|s| VolumeContentSource {
                r#type: Some(volume_content_source::Type::Snapshot(
                    volume_content_source::SnapshotSource { snapshot_id: s },
                )),
            }),
            ..Default::default()
        };
        let mut volume = None;
        for _ in 0..600 {
            match self.c.create_volume(req.clone()).await {
                Ok(r) => {
                    volume = r.into_inner().volume;
                    break;
                }
                Err(s) if s.code() == tonic::Code::Aborted => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(s) => panic!("CreateVolume {name}: {s:?}"),
            }
        }
        let v = volume.expect("created");
        let root = self.dir.path();
        let staging = root.join("staging").join(&v.volume_id);
        std::fs::create_dir_all(&staging).unwrap();
        let target = root.join("pods").join(&v.volume_id).join(if block { "dev" } else { "mount" });
        Vol {
            id: v.volume_id,
            block,
            ctx: v.volume_context,
            publish: HashMap::new(),
            staging,
            target,
        }
    }

    /// ControllerPublish, NodeStage, NodePublish.
    async fn attach(&mut self, v: &mut Vol) {
        v.publish = self
            .c
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: v.id.clone(),
                node_id: "vm-node".into(),
                volume_capability: Some(cap(v.block)),
                volume_context: v.ctx.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .publish_context;
        self.n
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: v.id.clone(),
                staging_target_path: v.staging.display().to_string(),
                volume_capability: Some(cap(v.block)),
                volume_context: v.ctx.clone(),
                publish_context: v.publish.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        self.n
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: v.id.clone(),
                staging_target_path: v.staging.display().to_string(),
                target_path: v.target.display().to_string(),
                volume_capability: Some(cap(v.block)),
                volume_context: v.ctx.clone(),
                publish_context: v.publish.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn snapshot(&mut self, name: &str, source: &str) -> Snapshot {
        for _ in 0..600 {
            let s = self
                .c
                .create_snapshot(CreateSnapshotRequest {
                    name: name.into(),
                    source_volume_id: source.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .snapshot
                .unwrap();
            if s.ready_to_use {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("snapshot {name} never became ready");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- rds-csi log ---\n{}", self.daemon.raw_log());
        }
    }
}

/// Where write `i` (1-based) of a region of `blocks` blocks lands.
fn position(i: u64, blocks: u64) -> u64 {
    (i * STRIDE) % blocks
}

fn record(i: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&i.to_le_bytes());
    b
}

/// Aligned buffer for O_DIRECT.
struct Aligned(*mut u8);
unsafe impl Send for Aligned {}
impl Aligned {
    fn new() -> Aligned {
        let layout = std::alloc::Layout::from_size_align(BLOCK as usize, BLOCK as usize).unwrap();
        // SAFETY: non-zero size; freed in Drop with the same layout.
        Aligned(unsafe { std::alloc::alloc_zeroed(layout) })
    }
    fn fill(&mut self, data: &[u8]) -> &[u8] {
        // SAFETY: the buffer holds BLOCK bytes and `data` is BLOCK bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.0, BLOCK as usize);
            std::slice::from_raw_parts(self.0, BLOCK as usize)
        }
    }
}
impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(BLOCK as usize, BLOCK as usize).unwrap();
        // SAFETY: allocated in new() with this layout.
        unsafe { std::alloc::dealloc(self.0, layout) }
    }
}

/// A writer over one or more regions (`(file, offset, blocks)`), writing `from + 1, from + 2,
/// …` in turn to each region (write `i` to every region before `i + 1`), synchronously.
struct Writer {
    stop: Arc<AtomicBool>,
    /// Writes acknowledged in every region.
    done: Arc<AtomicU64>,
    /// Longest single write, in microseconds.
    stall_us: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<Result<u64, String>>,
}

impl Writer {
    fn start(regions: Vec<(PathBuf, u64, u64)>, from: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let stall_us = Arc::new(AtomicU64::new(0));
        let (s, d, st) = (stop.clone(), done.clone(), stall_us.clone());
        let handle = std::thread::spawn(move || -> Result<u64, String> {
            let files: Vec<std::fs::File> = regions
                .iter()
                .map(|(p, _, _)| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
                        .open(p)
                        .map_err(|e| format!("{}: {e}", p.display()))
                })
                .collect::<Result<_, _>>()?;
            let mut buf = Aligned::new();
            let mut i = from;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                for (f, (_, offset, blocks)) in files.iter().zip(&regions) {
                    let at = offset + position(i, *blocks) * BLOCK;
                    let t = Instant::now();
                    f.write_all_at(buf.fill(&record(i)), at)
                        .map_err(|e| format!("write {i}: {e}"))?;
                    st.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                d.store(i, Ordering::SeqCst);
            }
            Ok(i)
        });
        Writer { stop, done, stall_us, handle }
    }

    fn wait_for(&self, n: u64, within: Duration) {
        let t = Instant::now();
        while self.done.load(Ordering::SeqCst) < n {
            assert!(!self.handle.is_finished(), "the writer stopped");
            assert!(t.elapsed() < within, "the writer did not reach {n} writes");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let n = self.handle.join().unwrap().expect("the writer never saw an error");
        (n, Duration::from_micros(self.stall_us.load(Ordering::Relaxed)))
    }
}

/// The sequence numbers found in a region of `file`; panics on a block at the wrong place.
fn found(file: &Path, offset: u64, blocks: u64) -> Vec<u64> {
    let f = std::fs::File::open(file).unwrap();
    let mut buf = vec![0u8; BLOCK as usize];
    let mut seqs = Vec::new();
    for b in 0..blocks {
        f.read_exact_at(&mut buf, offset + b * BLOCK).unwrap();
        if &buf[..8] == MAGIC {
            let i = u64::from_le_bytes(buf[8..16].try_into().unwrap());
            assert_eq!(position(i, blocks), b, "record {i} at block {b} of {}", file.display());
            seqs.push(i);
        }
    }
    seqs.sort();
    seqs
}

/// Whether `seqs` is exactly 1..=k (a gap-free prefix); returns k.
fn prefix(seqs: &[u64]) -> Option<u64> {
    seqs.iter().enumerate().all(|(k, i)| *i == k as u64 + 1).then_some(seqs.len() as u64)
}

/// The byte offset and size in blocks of the data file on a mounted filesystem volume.
fn data_file(v: &Vol) -> PathBuf {
    v.target.join("data")
}

/// A zero-filled data file (written, not fallocated: the writer then changes no metadata).
fn prepare_data_file(path: &Path, bytes: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.write_all_at(&vec![0u8; bytes as usize], 0).unwrap();
    f.sync_all().unwrap();
}

async fn drill() {
    let mut checks = Checks(0);
    let mut rig = Rig::start().await;

    // 1. A block volume under a writer, snapshotted, restored.
    let mut a = rig.create("pvc-9a7e0000-0000-4000-8000-00000000000a", true, None).await;
    rig.attach(&mut a).await;
    let blocks = SIZE / BLOCK;
    let writer = Writer::start(vec![(a.target.clone(), 0, blocks)], 0);
    writer.wait_for(200, Duration::from_secs(120));
    let asked_at = writer.done.load(Ordering::SeqCst);
    let t = Instant::now();
    let snap = rig.snapshot("pit-block", &a.id).await;
    let took = t.elapsed();
    let ready_at = writer.done.load(Ordering::SeqCst);
    writer.wait_for(ready_at + 200, Duration::from_secs(120));
    let (written, stall) = writer.finish();
    let block_written = written;
    let restored = rig
        .create("pvc-9a7e0000-0000-4000-8000-0000000000a1", true, Some(snap.snapshot_id.clone()))
        .await;
    let seqs = found(&rig.file(&restored.id), 0, blocks);
    let k = prefix(&seqs).unwrap_or_else(|| {
        panic!("torn: {} records, not 1..k: first gaps {:?}", seqs.len(), gaps(&seqs))
    });
    assert!(
        k >= asked_at,
        "every write acknowledged before the snapshot is in it ({k} < {asked_at})"
    );
    // The one write in flight when the export was withdrawn may be in the copy (it reached
    // the target, its completion did not reach the writer): crash-consistent either way.
    assert!(k <= ready_at + 1, "nothing written after it was ready ({k} > {ready_at} + 1)");
    checks.ok(&format!(
        "block snapshot: a gap-free prefix of {k} writes (asked after {asked_at}, ready after {ready_at}; {written} in all); snapshot took {:.1}s, longest write stall {:.1}s, no write error",
        took.as_secs_f64(),
        stall.as_secs_f64()
    ));

    // 2. A group snapshot of two filesystem volumes under one alternating writer.
    let mut b = rig.create("pvc-9a7e0000-0000-4000-8000-00000000000b", false, None).await;
    let mut c = rig.create("pvc-9a7e0000-0000-4000-8000-00000000000c", false, None).await;
    rig.attach(&mut b).await;
    rig.attach(&mut c).await;
    let data = 16u64 << 20;
    prepare_data_file(&data_file(&b), data);
    prepare_data_file(&data_file(&c), data);
    let dblocks = data / BLOCK;
    let writer = Writer::start(vec![(data_file(&b), 0, dblocks), (data_file(&c), 0, dblocks)], 0);
    writer.wait_for(100, Duration::from_secs(120));
    let asked_at = writer.done.load(Ordering::SeqCst);
    let t = Instant::now();
    let group = loop {
        let g = rig
            .g
            .create_volume_group_snapshot(CreateVolumeGroupSnapshotRequest {
                name: "pit-group".into(),
                source_volume_ids: vec![b.id.clone(), c.id.clone()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .group_snapshot
            .unwrap();
        if g.ready_to_use {
            break g;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "group never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = t.elapsed();
    let ready_at = writer.done.load(Ordering::SeqCst);
    writer.wait_for(ready_at + 100, Duration::from_secs(120));
    let (written, stall) = writer.finish();
    let mut prefixes = HashMap::new();
    for (i, s) in group.snapshots.iter().enumerate() {
        let mut r = rig
            .create(
                &format!("pvc-9a7e0000-0000-4000-8000-0000000000b{i}"),
                false,
                Some(s.snapshot_id.clone()),
            )
            .await;
        rig.attach(&mut r).await;
        // The restored filesystem's data file, read through the kernel's NVMe/TCP device.
        let seqs = found(&data_file(&r), 0, dblocks);
        let k = prefix(&seqs).unwrap_or_else(|| {
            panic!("member of {} torn: gaps {:?}", s.source_volume_id, gaps(&seqs))
        });
        prefixes.insert(s.source_volume_id.clone(), k);
    }
    let (kb, kc) = (prefixes[&b.id], prefixes[&c.id]);
    assert!(
        kb == kc || kb == kc + 1,
        "one instant: {kb} writes in the first volume, {kc} in the second"
    );
    assert!(kc >= asked_at && kb <= ready_at + 1, "{asked_at} ≤ {kc} ≤ {kb} ≤ {ready_at} + 1");
    checks.ok(&format!(
        "group snapshot of two ext4 volumes: prefixes of {kb} and {kc} writes, one instant (asked after {asked_at}, ready after {ready_at}; {written} in all); took {:.1}s, longest write stall {:.1}s, no write error",
        took.as_secs_f64(),
        stall.as_secs_f64()
    ));

    // 3. Sensitivity: a plain, slow copy of the live backing file is torn (the writer goes
    // on with the sequence where the first part stopped, at new places).
    let file = rig.file(&a.id);
    let writer = Writer::start(vec![(a.target.clone(), 0, blocks)], block_written);
    writer.wait_for(block_written + 100, Duration::from_secs(120));
    let copy = rig.dir.path().join("plain-copy.img");
    {
        let src = std::fs::File::open(&file).unwrap();
        let dst = std::fs::File::create(&copy).unwrap();
        let mut buf = vec![0u8; 4 << 20];
        let mut at = 0;
        while at < SIZE {
            src.read_exact_at(&mut buf, at).unwrap();
            dst.write_all_at(&buf, at).unwrap();
            at += buf.len() as u64;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = writer.finish();
    let seqs = found(&copy, 0, blocks);
    assert!(prefix(&seqs).is_none(), "a plain copy of a live volume is torn (the check can fail)");
    checks.ok(&format!(
        "a plain copy of the live file is torn: {} records with gaps {:?}",
        seqs.len(),
        &gaps(&seqs)[..gaps(&seqs).len().min(3)]
    ));
    println!("point-in-time drill: {} passed, 0 failed", checks.0);
}

/// The first missing sequence numbers of `seqs`.
fn gaps(seqs: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut want = 1;
    for i in seqs {
        while want < *i && out.len() < 5 {
            out.push(want);
            want += 1;
        }
        want = i + 1;
    }
    out
}
