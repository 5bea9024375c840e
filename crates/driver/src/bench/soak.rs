//! `rds-csi bench soak`: a seeded schedule of mixed operations against the controller (a
//! real `rds-csi serve` process) and the RDS emulator, with faults injected on the way:
//! connections dropped before and after a command, latency spikes, RouterOS errors, RDS
//! reboots, a full pool, and controller restarts (SIGKILL, then a new process on the same
//! state, and the attacher's re-sync of what is attached).
//!
//! Every step is retried as a CO would until it gives its final answer, and every answer's
//! code must be one CSI allows in that situation. After every step the RDS is compared with
//! what the driver acknowledged ([`super::schedule::check_rds`]: no disk or file it does not
//! account for, one disk per volume and per file, never two nodes on a RWO volume) and every
//! acknowledged write is read back and compared. Then a settle phase unpublishes and
//! deletes everything and the RDS must be empty. A failure names the seed and the shortest
//! failing prefix of the schedule found by running prefixes again.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Args;
use csi::v1::{
    controller_client::ControllerClient, node_client::NodeClient, volume_capability,
    volume_content_source, *,
};
use rds_emulator::emulator::{DropRule, DropWhen, FailRule, Faults};
use tonic::{Code, Status, transport::Channel};

use super::{
    harness::{Harness, NODES},
    schedule::{Action, BLOCK, Data, Fault, Model, Rng, SeenDisk, Step, check_rds, pattern},
};
use crate::tools::Output;

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Steps in the schedule.
    #[arg(long, default_value_t = 1000)]
    pub ops: usize,
    /// Seed of the schedule (the same seed gives the same schedule).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Keep the emulator's state and the controller's log in DIR.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// What a soak run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SoakReport {
    pub seed: u64,
    pub steps: usize,
    pub actions: BTreeMap<String, usize>,
    pub faults: BTreeMap<String, usize>,
    /// Every answer's code, retries included.
    pub codes: BTreeMap<String, usize>,
    pub rpcs: usize,
    pub seconds: f64,
    /// Seconds spent per kind of step (retries and checks included).
    pub seconds_by_step: BTreeMap<String, f64>,
    /// `on`, or why the loop data plane steps were left out (they need root).
    pub loop_plane: String,
}

/// Where and why a soak failed.
#[derive(Debug, Clone)]
pub struct SoakFailure {
    pub seed: u64,
    /// The 0-based step that failed.
    pub step: usize,
    pub what: String,
    /// The shortest prefix found that fails, as steps.
    pub prefix: Vec<String>,
}

impl std::fmt::Display for SoakFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "soak failed at step {} (seed {}): {}", self.step, self.seed, self.what)?;
        writeln!(f, "shortest failing prefix found: {} steps", self.prefix.len())?;
        for (i, s) in self.prefix.iter().enumerate() {
            writeln!(f, "  {i:>4}  {s}")?;
        }
        write!(f, "rerun: rds-csi bench soak --seed {} --ops {}", self.seed, self.prefix.len())
    }
}

pub async fn run(args: SoakArgs) -> Result<ExitCode, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
    match soak(&exe, args.ops, args.seed, args.dir.as_deref()).await {
        Ok(report) => {
            match args.output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                ),
                Output::Table => print_report(&report),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            eprintln!("{f}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_report(r: &SoakReport) {
    println!(
        "rds-csi {} soak: seed {}, {} steps, {} RPCs in {:.1} s: every invariant held",
        crate::version::VERSION,
        r.seed,
        r.steps,
        r.rpcs,
        r.seconds
    );
    let line = |m: &BTreeMap<String, usize>| {
        m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    };
    println!("  loop data plane: {}", r.loop_plane);
    println!("  steps:  {}", line(&r.actions));
    println!("  faults: {}", line(&r.faults));
    println!("  codes:  {}", line(&r.codes));
    let secs: Vec<String> = r.seconds_by_step.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
    println!("  seconds by step: {}", secs.join(", "));
}

/// Runs `ops` steps of the schedule of `seed`, then settles and checks; on failure, looks for
/// the shortest failing prefix.
pub async fn soak(
    exe: &Path,
    ops: usize,
    seed: u64,
    dir: Option<&Path>,
) -> Result<SoakReport, SoakFailure> {
    soak_with(exe, ops, seed, dir, None).await
}

/// [`soak`], with a stray file planted on the RDS after step `sabotage` (0-based): the test
/// that the checks catch what they must and that the prefix search finds the step.
pub async fn soak_with(
    exe: &Path,
    ops: usize,
    seed: u64,
    dir: Option<&Path>,
    sabotage: Option<usize>,
) -> Result<SoakReport, SoakFailure> {
    let (step, what) = match run_prefix(exe, ops, seed, dir, sabotage).await {
        Ok(report) => return Ok(report),
        Err(e) => e,
    };
    // The shortest prefix that still fails (bisection; a timing-dependent failure may not
    // come back, then the first failing run's prefix stands).
    let (mut lo, mut hi) = (0, step + 1);
    let mut tries = 0;
    while lo + 1 < hi && tries < 6 {
        tries += 1;
        let mid = (lo + hi) / 2;
        if run_prefix(exe, mid, seed, None, sabotage).await.is_err() { hi = mid } else { lo = mid }
    }
    let mut model = Model::new(loop_plane_missing().is_none());
    let mut rng = Rng::new(seed);
    let prefix = (0..hi)
        .map(|_| {
            let s = model.next_step(&mut rng, seed, &NODES);
            model.apply(&s.action, Some(String::new()));
            format!("{:?} with fault {:?}", s.action, s.fault)
        })
        .collect();
    Err(SoakFailure { seed, step, what, prefix })
}

async fn run_prefix(
    exe: &Path,
    ops: usize,
    seed: u64,
    dir: Option<&Path>,
    sabotage: Option<usize>,
) -> Result<SoakReport, (usize, String)> {
    let temp = tempfile::tempdir().map_err(|e| (0, e.to_string()))?;
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).map_err(|e| (0, format!("{}: {e}", dir.display())))?;
    let mut h = Harness::start(exe, &dir, &[]).await.map_err(|e| (0, e))?;
    let (node, loop_plane) = match loop_plane_missing() {
        None => (Some(NodeClient::new(h.start_node().await.map_err(|e| (0, e))?)), "on".into()),
        Some(why) => (None, format!("off ({why})")),
    };
    let mut s = Soak {
        c: ControllerClient::new(h.channel.clone()),
        h,
        model: Model::new(node.is_some()),
        report: SoakReport { seed, loop_plane, ..Default::default() },
        node,
        dir: dir.clone(),
        contexts: HashMap::new(),
        published: HashMap::new(),
    };
    let result = s.schedule(ops, seed, sabotage).await;
    if result.is_err() {
        s.cleanup().await;
    }
    s.h.stop().await;
    result
}

/// Why the loop data plane steps cannot run here, if they cannot.
fn loop_plane_missing() -> Option<String> {
    if !crate::demo::is_root() {
        return Some("not root: loop devices, mkfs and mount need it".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["losetup", "blkid", "mkfs.ext4", "mount", "umount"]
        .into_iter()
        .find(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .map(|t| format!("{t} not found"))
}

impl Soak {
    async fn schedule(
        &mut self,
        ops: usize,
        seed: u64,
        sabotage: Option<usize>,
    ) -> Result<SoakReport, (usize, String)> {
        let s = self;
        let started = Instant::now();
        let mut rng = Rng::new(seed);
        for i in 0..ops {
            let step = s.model.next_step(&mut rng, seed, &NODES);
            if sabotage == Some(i) {
                let stray =
                    s.h.files.as_ref().expect("emulator files").join(VOLUME_DIR).join("stray.img");
                std::fs::write(&stray, b"planted").map_err(|e| (i, e.to_string()))?;
            }
            s.run_step(&step).await.map_err(|e| (i, format!("{:?}: {e}", step.action)))?;
            s.report.steps += 1;
        }
        s.settle().await.map_err(|e| (ops, format!("settling: {e}")))?;
        s.report.seconds = started.elapsed().as_secs_f64();
        Ok(s.report.clone())
    }
}

struct Soak {
    h: Harness,
    c: ControllerClient<Channel>,
    model: Model,
    report: SoakReport,
    /// The node plugin of `NODES[0]` on the loop plane (root only).
    node: Option<NodeClient<Channel>>,
    dir: PathBuf,
    /// Each volume's context, from CreateVolume (the node needs it).
    contexts: HashMap<String, HashMap<String, String>>,
    /// Each volume's publish context on `NODES[0]`.
    published: HashMap<String, HashMap<String, String>>,
}

/// What an answer carries that a later step needs.
enum Reply {
    Nothing,
    Snapshot(String),
    Volume(HashMap<String, String>),
    Published(HashMap<String, String>),
}

/// How one answer ends a step.
enum Verdict {
    Done(Option<String>),
    Retry,
}

const STEP_DEADLINE: Duration = Duration::from_secs(90);
const VOLUME_DIR: &str = "storage-pool/metal-csi/";

fn cap(rwx_block: bool) -> VolumeCapability {
    use volume_capability::{AccessMode, AccessType, BlockVolume, access_mode::Mode};
    let (access_type, mode) = if rwx_block {
        (AccessType::Block(BlockVolume {}), Mode::MultiNodeMultiWriter)
    } else {
        let mount = volume_capability::MountVolume { fs_type: "ext4".into(), ..Default::default() };
        (AccessType::Mount(mount), Mode::SingleNodeWriter)
    };
    VolumeCapability {
        access_type: Some(access_type),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn name_of<T: std::fmt::Debug>(x: &T) -> String {
    format!("{x:?}").split([' ', '(', '{']).next().unwrap_or("").to_string()
}

impl Soak {
    fn emu(&self) -> &rds_emulator::emulator::Emulator {
        self.h.emu.as_ref().expect("the soak runs on the embedded emulator")
    }

    fn inject(&self, fault: &Fault) {
        let one = |when| Faults {
            drop: vec![DropRule { pattern: ".".into(), nth: 1, when }],
            ..Default::default()
        };
        let faults = match fault {
            Fault::None | Fault::Reboot(_) => Faults::default(),
            Fault::DropBefore => one(DropWhen::Before),
            Fault::DropAfter => one(DropWhen::After),
            Fault::Latency(ms) => Faults { latency_ms: *ms, ..Default::default() },
            Fault::Error(text) => Faults {
                fail: vec![FailRule { pattern: ".".into(), nth: 1, error: text.to_string() }],
                ..Default::default()
            },
            Fault::DiskFull => Faults { disk_full: true, ..Default::default() },
        };
        self.emu().set_faults(faults).expect("valid fault rules");
        if let Fault::Reboot(ms) = fault {
            self.emu().reboot(Duration::from_millis(*ms));
        }
    }

    async fn run_step(&mut self, step: &Step) -> Result<(), String> {
        *self.report.actions.entry(name_of(&step.action)).or_default() += 1;
        let fault =
            if step.action == Action::RestartController { Fault::None } else { step.fault.clone() };
        *self.report.faults.entry(name_of(&fault)).or_default() += 1;
        self.inject(&fault);
        let started = Instant::now();
        let mut first = true;
        let mut wait = Duration::from_millis(20);
        loop {
            let answer = self.attempt(&step.action).await?;
            let code = answer.as_ref().map_or_else(Status::code, |_| Code::Ok);
            *self.report.codes.entry(format!("{code:?}")).or_default() += 1;
            let verdict = self.judge(&step.action, answer, &fault, first)?;
            if first {
                // Faults are one-shot: the CO's retries meet a healthy RDS (after a reboot,
                // one that is coming back).
                self.emu().set_faults(Faults::default()).expect("no rules");
                first = false;
            }
            match verdict {
                Verdict::Done(snapshot_id) => {
                    self.model.apply(&step.action, snapshot_id);
                    *self.report.seconds_by_step.entry(name_of(&step.action)).or_default() +=
                        started.elapsed().as_secs_f64();
                    break;
                }
                Verdict::Retry if started.elapsed() > STEP_DEADLINE => {
                    return Err(format!("no final answer in {STEP_DEADLINE:?} (last: {code:?})"));
                }
                Verdict::Retry => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
            }
        }
        self.check()
    }

    /// One call of the action's RPC (or the write, or the restart).
    async fn attempt(&mut self, action: &Action) -> Result<Result<Option<String>, Status>, String> {
        self.report.rpcs += 1;
        let reply = match action {
            Action::Write { id, offset, seed } => {
                self.write(id, *offset, *seed)?;
                Ok(Reply::Nothing)
            }
            Action::WriteFile { id, name, seed } => {
                self.write_file(id, *name, *seed)?;
                Ok(Reply::Nothing)
            }
            Action::RestartController => {
                self.h.restart().await?;
                self.c = ControllerClient::new(self.h.channel.clone());
                self.resync().await?;
                Ok(Reply::Nothing)
            }
            _ => tokio::time::timeout(Duration::from_secs(60), self.call(action))
                .await
                .map_err(|_| format!("{} had no answer in 60 s", name_of(action)))?,
        };
        Ok(match reply {
            Ok(Reply::Nothing) => Ok(None),
            Ok(Reply::Snapshot(id)) => Ok(Some(id)),
            Ok(Reply::Volume(ctx)) => {
                if let Action::Create { name, .. }
                | Action::Restore { name, .. }
                | Action::Clone { name, .. } = action
                {
                    self.contexts.insert(name.clone(), ctx);
                }
                Ok(None)
            }
            Ok(Reply::Published(ctx)) => {
                if let Action::Publish { id, node } = action
                    && node == NODES[0]
                {
                    self.published.insert(id.clone(), ctx);
                }
                Ok(None)
            }
            Err(status) => Err(status),
        })
    }

    /// The RPCs of an action.
    async fn call(&self, action: &Action) -> Result<Reply, Status> {
        let mut c = self.c.clone();
        match action {
            Action::Create { name, size, rwx_block } => {
                create(&mut c, name, *size, *rwx_block, None).await
            }
            Action::Restore { snap, name } => {
                let s = &self.model.snaps[snap];
                let rwx = self.model.vols.get(&s.source).is_some_and(|v| v.rwx_block);
                let src =
                    volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
                        snapshot_id: s.id.clone(),
                    });
                create(&mut c, name, s.size, rwx, Some(src)).await
            }
            Action::Clone { id, name } => {
                let v = &self.model.vols[id];
                let src =
                    volume_content_source::Type::Volume(volume_content_source::VolumeSource {
                        volume_id: id.clone(),
                    });
                create(&mut c, name, v.size, v.rwx_block, Some(src)).await
            }
            Action::Delete { id } | Action::DeletePublished { id } => c
                .delete_volume(DeleteVolumeRequest { volume_id: id.clone(), ..Default::default() })
                .await
                .map(|_| Reply::Nothing),
            Action::Expand { id, size } => c
                .controller_expand_volume(ControllerExpandVolumeRequest {
                    volume_id: id.clone(),
                    capacity_range: Some(CapacityRange {
                        required_bytes: *size as i64,
                        limit_bytes: 0,
                    }),
                    volume_capability: Some(cap(self.model.vols[id].rwx_block)),
                    ..Default::default()
                })
                .await
                .map(|_| Reply::Nothing),
            Action::Snapshot { id, name } => {
                let r = c
                    .create_snapshot(CreateSnapshotRequest {
                        name: name.clone(),
                        source_volume_id: id.clone(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .snapshot
                    .ok_or_else(|| Status::internal("CreateSnapshot answered no snapshot"))?;
                // Not ready yet: the snapshotter asks again; Aborted stands for "again".
                if r.ready_to_use {
                    Ok(Reply::Snapshot(r.snapshot_id))
                } else {
                    Err(Status::aborted("copying"))
                }
            }
            Action::DeleteSnapshot { name } => c
                .delete_snapshot(DeleteSnapshotRequest {
                    snapshot_id: self.model.snaps[name].id.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| Reply::Nothing),
            Action::Publish { id, node } | Action::PublishConflict { id, node } => c
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: id.clone(),
                    node_id: node.clone(),
                    volume_capability: Some(cap(self.model.vols[id].rwx_block)),
                    volume_context: self.contexts.get(id).cloned().unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map(|r| Reply::Published(r.into_inner().publish_context)),
            Action::Unpublish { id, node } => c
                .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                    volume_id: id.clone(),
                    node_id: node.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| Reply::Nothing),
            Action::Stage { id } => self.stage(id).await.map(|_| Reply::Nothing),
            Action::Unstage { id } => self.unstage(id).await.map(|_| Reply::Nothing),
            Action::Write { .. } | Action::WriteFile { .. } | Action::RestartController => {
                Ok(Reply::Nothing)
            }
        }
    }

    fn paths(&self, id: &str) -> (PathBuf, PathBuf) {
        (self.dir.join("staging").join(id), self.dir.join("target").join(id))
    }

    /// NodeStageVolume, then NodePublishVolume, on `NODES[0]`'s loop plane.
    async fn stage(&self, id: &str) -> Result<(), Status> {
        let mut n = self.node.clone().ok_or_else(|| Status::internal("no node plugin"))?;
        let (staging, target) = self.paths(id);
        let context = self.contexts.get(id).cloned().unwrap_or_default();
        let publish = self.published.get(id).cloned().unwrap_or_default();
        n.node_stage_volume(NodeStageVolumeRequest {
            volume_id: id.into(),
            publish_context: publish.clone(),
            staging_target_path: staging.to_string_lossy().into(),
            volume_capability: Some(cap(false)),
            volume_context: context.clone(),
            ..Default::default()
        })
        .await?;
        n.node_publish_volume(NodePublishVolumeRequest {
            volume_id: id.into(),
            publish_context: publish,
            staging_target_path: staging.to_string_lossy().into(),
            target_path: target.to_string_lossy().into(),
            volume_capability: Some(cap(false)),
            volume_context: context,
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    /// NodeUnpublishVolume, then NodeUnstageVolume.
    async fn unstage(&self, id: &str) -> Result<(), Status> {
        let mut n = self.node.clone().ok_or_else(|| Status::internal("no node plugin"))?;
        let (staging, target) = self.paths(id);
        n.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: id.into(),
            target_path: target.to_string_lossy().into(),
        })
        .await?;
        n.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.to_string_lossy().into(),
        })
        .await?;
        Ok(())
    }

    /// A file written through the published filesystem and synced, with its directory.
    fn write_file(&self, id: &str, name: u64, seed: u64) -> Result<(), String> {
        use std::io::Write;
        let (_, target) = self.paths(id);
        let path = target.join(format!("{name}.dat"));
        let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(&pattern(seed)).map_err(|e| format!("{}: {e}", path.display()))?;
        f.sync_all().map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::File::open(&target)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", target.display()))
    }

    /// Best effort after a failure: nothing staged is left mounted or attached.
    async fn cleanup(&mut self) {
        let staged: Vec<String> =
            self.model.vols.iter().filter(|(_, v)| v.staged).map(|(k, _)| k.clone()).collect();
        for id in staged {
            if let Err(e) = self.unstage(&id).await {
                eprintln!("cleanup: unstaging {id}: {e:?}");
            }
        }
    }

    /// Whether an answer ends the step, asks for a retry, or breaks a rule.
    fn judge(
        &self,
        action: &Action,
        answer: Result<Option<String>, Status>,
        fault: &Fault,
        first: bool,
    ) -> Result<Verdict, String> {
        let refusal =
            matches!(action, Action::PublishConflict { .. } | Action::DeletePublished { .. });
        let status = match answer {
            Ok(_) if refusal => {
                return Err(match action {
                    Action::PublishConflict { id, node } => format!(
                        "RWO volume {id} was granted to {node} while {:?} holds it",
                        self.model.vols[id].grants
                    ),
                    _ => "a published volume was deleted".to_string(),
                });
            }
            Ok(snapshot_id) => return Ok(Verdict::Done(snapshot_id)),
            Err(s) => s,
        };
        let code = status.code();
        if refusal && code == Code::FailedPrecondition {
            return Ok(Verdict::Done(None));
        }
        // What the CO retries: the RDS away or slow, a call still in progress.
        let transient = matches!(code, Code::Unavailable | Code::Aborted | Code::DeadlineExceeded);
        // On the attempt that met the fault: what RouterOS said, mapped.
        let injected = first
            && match fault {
                Fault::Error(text) if text.contains("space") => code == Code::ResourceExhausted,
                Fault::Error(_) => code == Code::Internal,
                Fault::DiskFull => code == Code::ResourceExhausted,
                _ => false,
            };
        if transient || injected {
            Ok(Verdict::Retry)
        } else {
            Err(format!("answered {code:?} ({}) with fault {fault:?}", status.message()))
        }
    }

    /// A write through a published volume: 4 KiB into its file on the RDS.
    fn write(&self, id: &str, offset: u64, seed: u64) -> Result<(), String> {
        let path = self.file_of(id)?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all_at(&pattern(seed), offset).map_err(|e| format!("{}: {e}", path.display()))?;
        f.sync_data().map_err(|e| format!("{}: {e}", path.display()))
    }

    fn file_of(&self, slot: &str) -> Result<PathBuf, String> {
        let disk = self.disks()?.into_iter().find(|d| d.slot == slot);
        let disk = disk.ok_or_else(|| format!("no disk {slot} to write to"))?;
        Ok(self.h.files.as_ref().expect("emulator files").join(&disk.file))
    }

    /// The external-attacher's re-sync after a controller restart: every attachment it
    /// holds is published again, and each must succeed.
    async fn resync(&mut self) -> Result<(), String> {
        let grants: Vec<(String, String, bool)> = self
            .model
            .vols
            .iter()
            .flat_map(|(id, v)| v.grants.iter().map(move |n| (id.clone(), n.clone(), v.rwx_block)))
            .collect();
        for (id, node, rwx) in grants {
            let started = Instant::now();
            loop {
                let r = self
                    .c
                    .controller_publish_volume(ControllerPublishVolumeRequest {
                        volume_id: id.clone(),
                        node_id: node.clone(),
                        volume_capability: Some(cap(rwx)),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(_) => break,
                    Err(s)
                        if matches!(s.code(), Code::Unavailable | Code::Aborted)
                            && started.elapsed() < STEP_DEADLINE =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(s) => {
                        return Err(format!("re-publishing {id} to {node} after a restart: {s:?}"));
                    }
                }
            }
        }
        Ok(())
    }

    fn disks(&self) -> Result<Vec<SeenDisk>, String> {
        let out = self.emu().run_now(":put [:serialize to=json [/disk print detail as-value]]");
        let rows: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(out.output.trim())
                .map_err(|e| format!("disk list: {e}: {}", out.output))?;
        let mut disks = Vec::new();
        for row in &rows {
            let d = routeros::ops::disk_from(row).map_err(|e| e.to_string())?;
            if !(d.slot.starts_with("pvc-") || d.slot.starts_with("snap-")) {
                continue;
            }
            disks.push(SeenDisk {
                file: d.file.clone().unwrap_or_default(),
                slot: d.slot,
                size: d.size,
                export: d.export,
                allowed: d.allowed_hosts,
            });
        }
        Ok(disks)
    }

    fn files(&self) -> Result<Vec<String>, String> {
        let out = self.emu().run_now(":put [:serialize to=json [/file print detail as-value]]");
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(out.output.trim()).map_err(|e| format!("file list: {e}"))?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get("name").and_then(|n| n.as_str()))
            .map(|n| n.trim_start_matches('/').to_string())
            .collect())
    }

    /// The RDS against the model, and every acknowledged write read back.
    fn check(&self) -> Result<(), String> {
        let disks = self.disks()?;
        let bad = check_rds(&self.model, &disks, &self.files()?, VOLUME_DIR);
        if !bad.is_empty() {
            return Err(bad.join("; "));
        }
        let root = self.h.files.as_ref().expect("emulator files");
        let file = |slot: &str| disks.iter().find(|d| d.slot == slot).map(|d| root.join(&d.file));
        let read = |slot: &str, data: &Data| -> Result<(), String> {
            let path = file(slot).ok_or_else(|| format!("{slot} has no file"))?;
            let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for (offset, seed) in data {
                let mut buf = vec![0u8; BLOCK];
                f.read_exact_at(&mut buf, *offset)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if buf != pattern(*seed) {
                    return Err(format!(
                        "{slot}: the acknowledged write at {offset} reads back different bytes"
                    ));
                }
            }
            Ok(())
        };
        for (id, v) in &self.model.vols {
            read(id, &v.data)?;
            if v.staged {
                self.read_files(id, &v.files)?;
            }
        }
        for s in self.model.snaps.values() {
            read(&s.id, &s.data)?;
        }
        Ok(())
    }

    /// Every file acknowledged on a volume, read through its published filesystem (right
    /// after a stage this checks what restores, clones, reboots and restarts kept).
    fn read_files(&self, id: &str, files: &Data) -> Result<(), String> {
        let (_, target) = self.paths(id);
        for (name, seed) in files {
            let path = target.join(format!("{name}.dat"));
            let bytes = std::fs::read(&path).map_err(|e| {
                format!("{id}: the acknowledged file {name}.dat cannot be read ({e})")
            })?;
            if bytes != pattern(*seed) {
                return Err(format!(
                    "{id}: the acknowledged file {name}.dat reads back different bytes"
                ));
            }
        }
        Ok(())
    }

    /// Unpublish everything, delete every snapshot and volume; the RDS must be empty.
    async fn settle(&mut self) -> Result<(), String> {
        self.emu().set_faults(Faults::default()).expect("no rules");
        let steps: Vec<Action> = self
            .model
            .vols
            .iter()
            .filter(|(_, v)| v.staged)
            .map(|(id, _)| Action::Unstage { id: id.clone() })
            .chain(self.model.vols.iter().flat_map(|(id, v)| {
                v.grants.iter().map(move |n| Action::Unpublish { id: id.clone(), node: n.clone() })
            }))
            .chain(self.model.snaps.keys().map(|n| Action::DeleteSnapshot { name: n.clone() }))
            .chain(self.model.vols.keys().map(|id| Action::Delete { id: id.clone() }))
            .collect();
        for action in steps {
            self.run_step(&Step { fault: Fault::None, action }).await?;
        }
        let (disks, files) = (self.disks()?, self.files()?);
        let left: Vec<&String> =
            files.iter().filter(|f| f.starts_with(VOLUME_DIR) && f.ends_with(".img")).collect();
        if !disks.is_empty() || !left.is_empty() {
            return Err(format!(
                "after deleting everything the RDS still has {disks:?} and {left:?}"
            ));
        }
        Ok(())
    }
}

async fn create(
    c: &mut ControllerClient<Channel>,
    name: &str,
    size: u64,
    rwx_block: bool,
    source: Option<volume_content_source::Type>,
) -> Result<Reply, Status> {
    let v = c
        .create_volume(CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange { required_bytes: size as i64, limit_bytes: 0 }),
            volume_capabilities: vec![cap(rwx_block)],
            volume_content_source: source.map(|t| VolumeContentSource { r#type: Some(t) }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .volume
        .ok_or_else(|| Status::internal("CreateVolume answered no volume"))?;
    Ok(Reply::Volume(v.volume_context))
}
