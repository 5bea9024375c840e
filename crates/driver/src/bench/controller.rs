//! `rds-csi bench controller`: the controller's RPCs over its gRPC socket, phase by phase,
//! with the RouterOS round trips each cost (from the controller's own
//! `rds_csi_rds_round_trips_per_rpc` histogram), their latency percentiles, the throughput at
//! N concurrent calls and the controller process's peak memory.
//!
//! The ideal beside each figure is measured in the same run: one RouterOS round trip through
//! the driver (GetCapacity, which costs exactly one) is the unit, so an operation's ideal
//! latency is its round trips times that unit; its ideal throughput is RouterOS running the
//! operation's commands one after another with nothing else in the way (the emulator's own
//! cost of each, timed with a client of its own). With the embedded emulator, `--latency-ms`
//! adds that much to every RouterOS command, as a network and a busy RDS would.

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Args;
use csi::v1::{controller_client::ControllerClient, volume_capability, *};
use futures::StreamExt;
use rds_emulator::emulator::Faults;
use serde_json::json;
use tonic::transport::Channel;

use super::{
    Progress,
    harness::{Harness, NODES, round_trips_of},
    stats::{ms, percentile, ratio},
};
use crate::tools::Output;

#[derive(Debug, Args)]
pub struct ControllerBenchArgs {
    /// Latency the embedded emulator adds to every RouterOS command (ms).
    #[arg(long, default_value_t = 2)]
    pub latency_ms: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Volumes per phase.
    #[arg(long, default_value_t = 40)]
    pub volumes: usize,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Keep the emulator's state and the controller's log in DIR (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Flags for the controller (`rds-csi serve`), after `--`: `--rds-address ... ` for a
    /// real RDS (then no emulator is started and --latency-ms does nothing).
    #[arg(last = true)]
    pub serve_flags: Vec<String>,
}

/// One phase's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseResult {
    pub operation: &'static str,
    pub calls: usize,
    pub round_trips_per_call: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub ideal_ms: f64,
    pub p50_over_ideal: f64,
    pub p50_over_latency: f64,
    pub ops_per_second: f64,
    pub ideal_ops_per_second: f64,
    pub errors: usize,
}

const MIB: i64 = 1 << 20;
/// Every call the bench makes is bounded.
const CALL_LIMIT: Duration = Duration::from_secs(120);

fn mount_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(Default::default())),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

fn volume_name(run: &str, i: usize) -> String {
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{run}-{i}").as_bytes());
    format!("pvc-{id}")
}

struct Bench<'a> {
    h: &'a Harness,
    c: ControllerClient<Channel>,
    concurrency: usize,
    output: Output,
    /// One round trip through the driver (ms), measured before the phases.
    unit_ms: f64,
    latency_ms: f64,
    raw: Option<Raw>,
}

impl Bench<'_> {
    /// Calls per second if RouterOS ran the commands one after another and nothing else
    /// took time: one over the emulator's own cost of the operation's commands (its add or
    /// delete line as measured, its other round trips as reads). Against a real RDS, whose
    /// own cost is not known, N calls in flight each costing its ideal latency.
    fn ideal_throughput(&self, operation: &str, rt: f64, ideal_ms: f64) -> f64 {
        match self.raw {
            Some(r) => {
                let own = match operation {
                    "CreateVolume" => r.create_ms + (rt - 1.0).max(0.0) * r.read_ms,
                    "DeleteVolume" => r.delete_ms + (rt - 1.0).max(0.0) * r.read_ms,
                    _ => rt * r.read_ms,
                };
                ratio(1000.0, own)
            }
            None => ratio(self.concurrency as f64 * 1000.0, ideal_ms),
        }
    }

    /// Runs `call(i)` for every i in 0..n, `concurrency` at a time.
    async fn phase<F, Fut>(
        &self,
        operation: &'static str,
        n: usize,
        call: F,
    ) -> Result<PhaseResult, String>
    where
        F: Fn(ControllerClient<Channel>, usize) -> Fut,
        Fut: Future<Output = Result<(), tonic::Status>>,
    {
        let before = round_trips_of(&self.h.scrape().await?, operation).0;
        let mut progress = Progress::new(self.output, operation, n);
        let started = Instant::now();
        let mut samples = Vec::with_capacity(n);
        let mut errors = Vec::new();
        let mut calls = futures::stream::iter(0..n)
            .map(|i| {
                let c = self.c.clone();
                let fut = call(c, i);
                async move {
                    let t = Instant::now();
                    let r = tokio::time::timeout(CALL_LIMIT, fut).await.unwrap_or_else(|_| {
                        Err(tonic::Status::deadline_exceeded("no answer in 120 s"))
                    });
                    (t.elapsed(), r)
                }
            })
            .buffer_unordered(self.concurrency.max(1));
        while let Some((took, r)) = calls.next().await {
            samples.push(took);
            if let Err(s) = r {
                errors.push(format!("{operation}: {:?} {}", s.code(), s.message()));
            }
            progress.tick();
        }
        let wall = started.elapsed();
        progress.finish();
        if let Some(first) = errors.first() {
            eprintln!("  {} of {n} {operation} calls failed; the first: {first}", errors.len());
        }
        let after = round_trips_of(&self.h.scrape().await?, operation).0;
        let rt = ratio(after - before, n as f64);
        let p50 = ms(percentile(&samples, 0.5));
        let ideal = rt * self.unit_ms;
        Ok(PhaseResult {
            operation,
            calls: n,
            round_trips_per_call: rt,
            p50_ms: p50,
            p95_ms: ms(percentile(&samples, 0.95)),
            p99_ms: ms(percentile(&samples, 0.99)),
            ideal_ms: ideal,
            p50_over_ideal: ratio(p50, ideal),
            p50_over_latency: ratio(p50, self.latency_ms),
            ops_per_second: ratio(n as f64, wall.as_secs_f64()),
            ideal_ops_per_second: self.ideal_throughput(operation, rt, ideal),
            errors: errors.len(),
        })
    }
}

/// The emulator's own cost, over a client of its own (SSH, no driver, no added latency):
/// the p50 of a disk read, of the add CreateVolume sends, and of DeleteVolume's one line.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Raw {
    pub read_ms: f64,
    pub create_ms: f64,
    pub delete_ms: f64,
}

async fn raw_commands(h: &Harness, n: usize) -> Result<Option<Raw>, String> {
    use routeros::{ops::NewDisk, types::*};
    let Some(opts) = h.ssh.clone() else { return Ok(None) };
    let t = routeros::ssh::SshTransport::new(opts).map_err(|e| e.to_string())?;
    let rds = routeros::client::Rds::new(std::sync::Arc::new(t), Default::default());
    let e = |e: routeros::error::RosError| e.to_string();
    let base = FilePath::new("storage-pool/metal-csi").expect("a valid path");
    let probe = Slot::new("pvc-bench-probe").expect("a valid slot");
    rds.get_disk(&probe).await.map_err(e)?;
    let (mut reads, mut creates, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        rds.get_disk(&probe).await.map_err(e)?;
        reads.push(t.elapsed());
        let slot = Slot::new(&format!("pvc-bench-probe-{i}")).expect("a valid slot");
        let want = NewDisk {
            file: base.join(&format!("{slot}.img")).map_err(|x| x.to_string())?,
            nqn: Nqn::new(&format!("nqn.2000-02.com.mikrotik:{slot}"))
                .map_err(|x| x.to_string())?,
            slot: slot.clone(),
            size: 16 << 20,
            port: 4420,
            comment: "rds-csi bench probe".into(),
            copy_from: None,
            server_nqn_supported: true,
            export: true,
            allowed_hosts: vec![Nqn::new(crate::core::fencing::FENCED_HOST_NQN).expect("valid")],
        };
        let t = Instant::now();
        rds.create_or_find_disk(&want).await.map_err(e)?;
        creates.push(t.elapsed());
        let t = Instant::now();
        rds.delete_volume_disk(&slot, std::slice::from_ref(&base), " paused=").await.map_err(e)?;
        deletes.push(t.elapsed());
    }
    let p50 = |v: &[Duration]| ms(percentile(v, 0.5));
    Ok(Some(Raw { read_ms: p50(&reads), create_ms: p50(&creates), delete_ms: p50(&deletes) }))
}

/// Times `n` GetCapacity calls one after another: the cost of one round trip through the
/// driver (gRPC, the controller, one RouterOS command).
async fn unit(c: &mut ControllerClient<Channel>, n: usize) -> Result<Duration, String> {
    let mut samples = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        tokio::time::timeout(CALL_LIMIT, c.get_capacity(GetCapacityRequest::default()))
            .await
            .map_err(|_| "GetCapacity: no answer in 120 s".to_string())?
            .map_err(|s| s.to_string())?;
        samples.push(t.elapsed());
    }
    Ok(percentile(&samples, 0.5))
}

pub async fn run(args: ControllerBenchArgs) -> Result<ExitCode, String> {
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
    let mut h = Harness::start(&exe, &dir, &args.serve_flags).await?;
    let embedded = h.emu.is_some();
    let raw = raw_commands(&h, 30).await?;
    if let Some(emu) = &h.emu {
        emu.set_faults(Faults { latency_ms: args.latency_ms, ..Default::default() })?;
    }
    let mut c = ControllerClient::new(h.channel.clone());
    // Warm up (the first call opens the SSH sessions), then measure the unit.
    unit(&mut c, 3).await?;
    let unit_ms = ms(unit(&mut c, 20).await?);
    let latency_ms = if embedded { args.latency_ms as f64 } else { unit_ms };
    let b = Bench {
        h: &h,
        c,
        concurrency: args.concurrency,
        output: args.output,
        unit_ms,
        latency_ms,
        raw,
    };
    let run = format!("bench-{}", crate::clock::now_s());
    let n = args.volumes;
    let names: Vec<String> = (0..n).map(|i| volume_name(&run, i)).collect();
    let ids: Vec<String> = names.clone();
    let mut phases = Vec::new();

    phases.push(
        b.phase("CreateVolume", n, |mut c, i| {
            let req = CreateVolumeRequest {
                name: names[i].clone(),
                capacity_range: Some(CapacityRange { required_bytes: 16 * MIB, limit_bytes: 0 }),
                volume_capabilities: vec![mount_cap()],
                ..Default::default()
            };
            async move { c.create_volume(req).await.map(|_| ()) }
        })
        .await?,
    );
    phases.push(
        b.phase("ControllerExpandVolume", n, |mut c, i| {
            let req = ControllerExpandVolumeRequest {
                volume_id: ids[i].clone(),
                capacity_range: Some(CapacityRange { required_bytes: 32 * MIB, limit_bytes: 0 }),
                volume_capability: Some(mount_cap()),
                ..Default::default()
            };
            async move { c.controller_expand_volume(req).await.map(|_| ()) }
        })
        .await?,
    );
    let snap_ids = std::sync::Mutex::new(HashMap::new());
    phases.push(
        b.phase("CreateSnapshot", n, |mut c, i| {
            let req = CreateSnapshotRequest {
                name: format!("{run}-snap-{i}"),
                source_volume_id: ids[i].clone(),
                ..Default::default()
            };
            let snap_ids = &snap_ids;
            async move {
                // The snapshotter calls again until the copy is ready; so does the bench.
                loop {
                    let s = c.create_snapshot(req.clone()).await?.into_inner().snapshot;
                    let s = s.ok_or_else(|| tonic::Status::internal("no snapshot"))?;
                    if s.ready_to_use {
                        snap_ids.lock().expect("ids").insert(i, s.snapshot_id);
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
        .await?,
    );
    phases.push(
        b.phase("ControllerPublishVolume", n, |mut c, i| {
            let req = ControllerPublishVolumeRequest {
                volume_id: ids[i].clone(),
                node_id: NODES[0].into(),
                volume_capability: Some(mount_cap()),
                ..Default::default()
            };
            async move { c.controller_publish_volume(req).await.map(|_| ()) }
        })
        .await?,
    );
    phases.push(
        b.phase("ControllerUnpublishVolume", n, |mut c, i| {
            let req = ControllerUnpublishVolumeRequest {
                volume_id: ids[i].clone(),
                node_id: NODES[0].into(),
                ..Default::default()
            };
            async move { c.controller_unpublish_volume(req).await.map(|_| ()) }
        })
        .await?,
    );
    let snaps = snap_ids.lock().expect("ids").clone();
    phases.push(
        b.phase("DeleteSnapshot", n, |mut c, i| {
            let req = DeleteSnapshotRequest {
                snapshot_id: snaps.get(&i).cloned().unwrap_or_default(),
                ..Default::default()
            };
            async move { c.delete_snapshot(req).await.map(|_| ()) }
        })
        .await?,
    );
    phases.push(
        b.phase("DeleteVolume", n, |mut c, i| {
            let req = DeleteVolumeRequest { volume_id: ids[i].clone(), ..Default::default() };
            async move { c.delete_volume(req).await.map(|_| ()) }
        })
        .await?,
    );
    drop(b);
    let rss_kib = h.peak_rss_kib();
    h.stop().await;
    let failed = phases.iter().map(|p| p.errors).sum::<usize>();
    let target = if embedded {
        format!("embedded emulator over SSH, {} ms added per RouterOS command", args.latency_ms)
    } else {
        "the RDS named by the serve flags".to_string()
    };
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "target": target,
                "volumes": n,
                "concurrency": args.concurrency,
                "latency_ms": args.latency_ms,
                "round_trip_unit_ms": unit_ms,
                "raw_emulator": raw,
                "controller_peak_rss_kib": rss_kib,
                "phases": phases,
            }))
            .map_err(|e| e.to_string())?
        ),
        Output::Table => print_table(&target, &args, unit_ms, raw, rss_kib, &phases),
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_table(
    target: &str,
    args: &ControllerBenchArgs,
    unit_ms: f64,
    raw: Option<Raw>,
    rss_kib: u64,
    phases: &[PhaseResult],
) {
    println!(
        "rds-csi {} bench controller: {} volumes, {} calls in flight; {target}",
        crate::version::VERSION,
        args.volumes,
        args.concurrency
    );
    if let Some(r) = raw {
        println!(
            "the emulator alone (its own SSH client, no added latency, p50): a disk read {:.3} ms, \
             CreateVolume's add {:.3} ms, DeleteVolume's line {:.3} ms",
            r.read_ms, r.create_ms, r.delete_ms
        );
    }
    println!(
        "one RouterOS round trip through the driver (GetCapacity p50): {unit_ms:.2} ms = the unit of the ideal\n"
    );
    println!(
        "{:<26} {:>6} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>10} {:>8}",
        "OPERATION",
        "RT/OP",
        "P50 ms",
        "P95 ms",
        "P99 ms",
        "IDEAL ms",
        "P50/IDL",
        "OPS/s",
        "IDEAL OPS",
        "OPS/IDL"
    );
    for p in phases {
        println!(
            "{:<26} {:>6.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>7.2}x {:>9.1} {:>10.1} {:>7.2}x{}",
            p.operation,
            p.round_trips_per_call,
            p.p50_ms,
            p.p95_ms,
            p.p99_ms,
            p.ideal_ms,
            p.p50_over_ideal,
            p.ops_per_second,
            p.ideal_ops_per_second,
            ratio(p.ops_per_second, p.ideal_ops_per_second),
            if p.errors > 0 { format!("  {} FAILED", p.errors) } else { String::new() }
        );
    }
    println!("\ncontroller peak RSS (VmHWM): {:.1} MiB", rss_kib as f64 / 1024.0);
}
