//! `rds-csi bench node`: NodeStageVolume and NodeUnstageVolume on the loop data plane, timed
//! beside the raw kernel commands the same steps need (`losetup`, `blkid -p`, the same
//! `mkfs` arguments, `mount`, `umount`, `losetup -d`) run on a device of the same size in the
//! same run, so the ratio is the driver's own overhead (gRPC, its looks, its checks).
//!
//! The driver runs as a child `rds-csi serve --controller --node --emulated-rds DIR
//! --data-plane loop`; it needs root (loop devices, mkfs, mount). The NVMe/TCP plane is
//! timed in the project's VM runs (docs/performance.md), not here.

use std::{
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use clap::Args;
use csi::v1::{controller_client::ControllerClient, node_client::NodeClient, *};
use serde_json::json;
use tonic::transport::Channel;

use super::stats::{ms, percentile, ratio};
use crate::demo::capability as cap;
use crate::tools::Output;

#[derive(Debug, Args)]
pub struct NodeBenchArgs {
    /// Volumes staged (each: stage with mkfs, unstage, stage again, unstage).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Filesystem.
    #[arg(long, value_parser = ["ext4", "xfs"], default_value = "ext4")]
    pub fs_type: String,
    /// Volume size (MiB).
    #[arg(long, default_value_t = 512)]
    pub size_mib: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

const NODE: &str = "bench-node";
const LIMIT: Duration = Duration::from_secs(120);

/// The timings of one run, in the order of [`ROWS`].
type Times = [Duration; 4];
const ROWS: [(&str, &str); 4] = [
    ("NodeStageVolume, new volume", "losetup + blkid -p + mkfs + mount"),
    ("NodeUnstageVolume", "umount + losetup -d"),
    ("NodeStageVolume, existing filesystem", "losetup + blkid -p + mount"),
    ("NodeUnstageVolume", "umount + losetup -d"),
];
const RAW_STEPS: [&str; 6] = ["losetup", "blkid -p", "mkfs", "mount", "umount", "losetup -d"];

async fn tool(program: &str, args: &[&str]) -> Result<(String, Duration), String> {
    let t = Instant::now();
    let out = crate::exec::run(program, args, LIMIT).await.map_err(|e| e.to_string())?;
    // blkid -p exits 2 on a blank device: that is its answer, not a failure.
    let blank = program == "blkid" && out.code == Some(2);
    if !out.success() && !blank {
        return Err(format!("{program} {}: {}", args.join(" "), out.text()));
    }
    Ok((out.stdout.trim().to_string(), t.elapsed()))
}

fn mkfs_args(fs: &str, dev: &str) -> (&'static str, Vec<String>) {
    // The driver's own arguments (node/format.rs), so both sides do the same work.
    match fs {
        "xfs" => ("mkfs.xfs", vec!["-q".into(), "-K".into(), dev.into()]),
        _ => (
            "mkfs.ext4",
            vec![
                "-q".into(),
                "-E".into(),
                "nodiscard,lazy_itable_init=1,lazy_journal_init=1".into(),
                dev.into(),
            ],
        ),
    }
}

/// The raw commands on a file of the same size: per step, and as the four rows.
async fn raw_run(dir: &Path, fs: &str, size: u64) -> Result<([Duration; 6], Times), String> {
    let file = dir.join("raw.img");
    let mnt = dir.join("raw-mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let f = std::fs::File::create(&file).map_err(|e| e.to_string())?;
    f.set_len(size).map_err(|e| e.to_string())?;
    let (file_s, mnt_s) = (file.to_string_lossy().to_string(), mnt.to_string_lossy().to_string());
    let mut steps = [Duration::ZERO; 6];
    let mut rows = [Duration::ZERO; 4];
    for pass in 0..2 {
        let (dev, attach) = tool("losetup", &["--find", "--show", &file_s]).await?;
        let (_, probe) = tool("blkid", &["-p", &dev]).await?;
        let mut made = Duration::ZERO;
        if pass == 0 {
            let (program, args) = mkfs_args(fs, &dev);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            made = tool(program, &args).await?.1;
        }
        let (_, mounted) = tool("mount", &["-t", fs, &dev, &mnt_s]).await?;
        let (_, unmounted) = tool("umount", &[&mnt_s]).await?;
        let (_, detached) = tool("losetup", &["-d", &dev]).await?;
        if pass == 0 {
            steps = [attach, probe, made, mounted, unmounted, detached];
        }
        rows[pass * 2] = attach + probe + made + mounted;
        rows[pass * 2 + 1] = unmounted + detached;
    }
    let _ = std::fs::remove_file(&file);
    Ok((steps, rows))
}

struct Driver {
    child: tokio::process::Child,
    ch: Channel,
}

async fn start(dir: &Path) -> Result<Driver, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let socket = dir.join("csi.sock");
    let log = std::fs::File::create(dir.join("driver.log")).map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .arg("serve")
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .args(["--controller", "--node", "--node-id", NODE, "--metrics-address", ""])
        .args(["--data-plane", "loop", "--log-level", "warn"])
        .arg("--emulated-rds")
        .arg(dir.join("rds"))
        .arg("--host-nqn-file")
        .arg(dir.join("hostnqn"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the driver: {e}"))?;
    let log = dir.join("driver.log");
    let ch = super::harness::wait_ready(&socket, &mut child, true, "driver", &log).await?;
    Ok(Driver { child, ch })
}

async fn driver_run(
    d: &Driver,
    dir: &Path,
    i: usize,
    fs: &str,
    size: u64,
) -> Result<Times, String> {
    let err = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    let mut c = ControllerClient::new(d.ch.clone());
    let mut n = NodeClient::new(d.ch.clone());
    let name = format!(
        "pvc-{}",
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("bench-node-{i}").as_bytes())
    );
    let v = c
        .create_volume(CreateVolumeRequest {
            name: name.clone(),
            capacity_range: Some(CapacityRange { required_bytes: size as i64, limit_bytes: 0 }),
            volume_capabilities: vec![cap(fs)],
            ..Default::default()
        })
        .await
        .map_err(err)?
        .into_inner()
        .volume
        .ok_or("no volume")?;
    let publish = c
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: NODE.into(),
            volume_capability: Some(cap(fs)),
            volume_context: v.volume_context.clone(),
            ..Default::default()
        })
        .await
        .map_err(err)?
        .into_inner();
    let staging = dir.join(format!("staging-{i}"));
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    let stage = NodeStageVolumeRequest {
        volume_id: v.volume_id.clone(),
        publish_context: publish.publish_context,
        staging_target_path: staging.to_string_lossy().into(),
        volume_capability: Some(cap(fs)),
        volume_context: v.volume_context.clone(),
        ..Default::default()
    };
    let unstage = NodeUnstageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: staging.to_string_lossy().into(),
    };
    let mut times = [Duration::ZERO; 4];
    for pass in 0..2 {
        let t = Instant::now();
        n.node_stage_volume(stage.clone()).await.map_err(err)?;
        times[pass * 2] = t.elapsed();
        let t = Instant::now();
        n.node_unstage_volume(unstage.clone()).await.map_err(err)?;
        times[pass * 2 + 1] = t.elapsed();
    }
    c.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: NODE.into(),
        ..Default::default()
    })
    .await
    .map_err(err)?;
    c.delete_volume(DeleteVolumeRequest { volume_id: v.volume_id, ..Default::default() })
        .await
        .map_err(err)?;
    Ok(times)
}

pub async fn run(args: NodeBenchArgs) -> Result<ExitCode, String> {
    if !crate::demo::is_root() {
        return Err("bench node attaches loop devices, formats and mounts: run it as root".into());
    }
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir: PathBuf = temp.path().to_path_buf();
    let size = args.size_mib << 20;
    let d = start(&dir).await?;
    let (mut drv, mut raw, mut steps) = (Vec::new(), Vec::new(), Vec::new());
    let mut progress = super::Progress::new(args.output, "stage/unstage runs", args.runs);
    let mut failure = None;
    for i in 0..args.runs {
        let one = driver_run(&d, &dir, i, &args.fs_type, size);
        let one = tokio::time::timeout(LIMIT * 4, one)
            .await
            .unwrap_or_else(|_| Err(format!("run {i} took longer than {:?}", LIMIT * 4)));
        match one {
            Ok(t) => drv.push(t),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        let (s, r) = raw_run(&dir, &args.fs_type, size).await?;
        raw.push(r);
        steps.push(s);
        progress.tick();
    }
    progress.finish();
    super::harness::kill(Some(d.child)).await;
    if let Some(e) = failure {
        return Err(format!(
            "bench node: {e} (driver log in {})",
            dir.join("driver.log").display()
        ));
    }
    let median =
        |runs: &[Times], k: usize| percentile(&runs.iter().map(|t| t[k]).collect::<Vec<_>>(), 0.5);
    let step_median =
        |k: usize| percentile(&steps.iter().map(|s: &[Duration; 6]| s[k]).collect::<Vec<_>>(), 0.5);
    let rows: Vec<serde_json::Value> = ROWS
        .iter()
        .enumerate()
        .map(|(k, (rpc, cmds))| {
            let (a, b) = (ms(median(&drv, k)), ms(median(&raw, k)));
            json!({"rpc": rpc, "driver_ms": a, "raw": cmds, "raw_ms": b, "ratio": ratio(a, b)})
        })
        .collect();
    let raw_steps: Vec<serde_json::Value> = RAW_STEPS
        .iter()
        .enumerate()
        .map(|(k, s)| json!({"command": s, "ms": ms(step_median(k))}))
        .collect();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "fs_type": args.fs_type, "size_mib": args.size_mib, "runs": args.runs,
                "rows": rows, "raw_steps": raw_steps,
            }))
            .map_err(|e| e.to_string())?
        ),
        Output::Table => {
            println!(
                "rds-csi {} bench node: loop data plane, {} MiB {}, median of {} runs",
                crate::version::VERSION,
                args.size_mib,
                args.fs_type,
                args.runs
            );
            println!(
                "\n{:<38} {:>10}  {:<36} {:>8} {:>7}",
                "RPC", "DRIVER ms", "RAW COMMANDS", "RAW ms", "RATIO"
            );
            for r in &rows {
                println!(
                    "{:<38} {:>10.1}  {:<36} {:>8.1} {:>6.2}x",
                    r["rpc"].as_str().unwrap_or(""),
                    r["driver_ms"].as_f64().unwrap_or(0.0),
                    r["raw"].as_str().unwrap_or(""),
                    r["raw_ms"].as_f64().unwrap_or(0.0),
                    r["ratio"].as_f64().unwrap_or(0.0)
                );
            }
            let line: Vec<String> = raw_steps
                .iter()
                .map(|s| {
                    format!(
                        "{} {:.1} ms",
                        s["command"].as_str().unwrap_or(""),
                        s["ms"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            println!("\nraw steps (new volume): {}", line.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
