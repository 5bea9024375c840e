//! Self-healing on a real host (root, loop devices, real mounts): the node plugin killed with
//! SIGKILL at every crash point of stage, publish, unpublish and unstage, then restarted,
//! converges when the CO repeats its calls (no stacked mount, nothing left attached); the
//! orphan cleanup detaches what a crash left when the CO does not repeat, and never touches
//! a loop device outside its exact form; a mount storm at a staging path is refused and
//! cleaned down to one mount. docs/operations.md.

mod support;

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use csi::v1::node_client::NodeClient;
use support::{
    Daemon,
    node::{Node, Vol, cap, code, loops_of, mounts_at, root_available, start},
    serve_command,
};
use tonic::{Code, transport::Channel};

use driver::crashpoint::POINTS;

/// A node-only `rds-csi serve` on the controller's RDS files (loop plane), optionally
/// with `RDS_CSI_CRASH_POINT`.
fn node_only(files: &Path, crash: Option<&str>, extra: &[&str]) -> Daemon {
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("csi.sock");
    let nqn = format!("--host-nqn-file={}", home.path().join("hostnqn").display());
    let root = files.display().to_string();
    let mut args = vec![
        "--node",
        "--node-id",
        "node-a",
        "--metrics-address",
        "",
        "--data-plane",
        "loop",
        "--loop-root",
        &root,
        "--blank-check-attempts",
        "2",
        "--blank-check-delay-ms",
        "50",
        &nqn,
    ];
    args.extend_from_slice(extra);
    let mut cmd = serve_command(&socket, &args);
    if let Some(p) = crash {
        cmd.env("RDS_CSI_CRASH_POINT", p);
    }
    Daemon::follow(cmd.spawn().unwrap(), socket, home)
}

async fn client(d: &Daemon) -> NodeClient<Channel> {
    NodeClient::new(d.ready_channel().await)
}

fn files(rig: &Node) -> PathBuf {
    rig.dir.path().join("rds/fs")
}

/// The node's steps, in the CO's order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Step {
    Stage,
    Publish,
    Unpublish,
    Unstage,
}

fn step_of(point: &str) -> Step {
    match point.split('.').next().unwrap() {
        "stage" => Step::Stage,
        "publish" => Step::Publish,
        "unpublish" => Step::Unpublish,
        _ => Step::Unstage,
    }
}

async fn run_step(
    rig: &mut Node,
    n: NodeClient<Channel>,
    v: &Vol,
    target: &Path,
    s: Step,
) -> Result<(), tonic::Status> {
    let old = std::mem::replace(&mut rig.n, n);
    let c = cap(false, "ext4", &[]);
    let r = match s {
        Step::Stage => rig.stage(v, c).await,
        Step::Publish => rig.publish(v, target, c, false).await,
        Step::Unpublish => rig.unpublish(v, target).await,
        Step::Unstage => rig.unstage(v).await,
    };
    rig.n = old;
    r
}

fn check_converged(rig: &Node, v: &Vol, target: &Path, done: Step, point: &str) {
    let staging = rig.path(&format!("staging-{}", v.id));
    let (staged, published) = match done {
        Step::Stage => (1, 0),
        Step::Publish => (1, 1),
        Step::Unpublish => (1, 0),
        Step::Unstage => (0, 0),
    };
    assert_eq!(mounts_at(&staging).len(), staged, "{point}: mounts at staging after {done:?}");
    assert_eq!(mounts_at(target).len(), published, "{point}: mounts at target after {done:?}");
    let attached = loops_of(&v.file).len();
    assert_eq!(attached, if done == Step::Unstage { 0 } else { 1 }, "{point}: loop devices");
}

/// For every crash point: run the CO's calls until the node dies there, restart it, repeat
/// the call that failed and go on; at every step the state is exactly what it should be.
#[tokio::test]
async fn a_node_killed_at_any_point_converges_when_the_co_repeats() {
    if !root_available() {
        return;
    }
    let mut rig = start(&[]).await;
    for (i, point) in POINTS.iter().enumerate() {
        let v = rig.create(&format!("pvc-crash-{i}"), false).await;
        let target = rig.path(&format!("pod-{i}/mount"));
        let mut node =
            node_only(&files(&rig), Some(point), &["--orphan-cleanup-interval-seconds", "0"]);
        let crash_at = step_of(point);
        for s in [Step::Stage, Step::Publish, Step::Unpublish, Step::Unstage] {
            let r = run_step(&mut rig, client(&node).await, &v, &target, s).await;
            if s == crash_at {
                let err = r.expect_err("the call dies with the process");
                let status = node.wait_exit(Duration::from_secs(10)).await;
                assert_eq!(status.signal(), Some(libc::SIGKILL), "{point}: {err:?}");
                node = node_only(&files(&rig), None, &["--orphan-cleanup-interval-seconds", "0"]);
                run_step(&mut rig, client(&node).await, &v, &target, s)
                    .await
                    .unwrap_or_else(|e| panic!("{point}: the repeated {s:?} failed: {e:?}"));
            } else {
                r.unwrap_or_else(|e| panic!("{point}: {s:?} failed: {e:?}"));
            }
            check_converged(&rig, &v, &target, s, point);
            if s == Step::Publish {
                std::fs::write(target.join("data"), point).unwrap();
            }
        }
        // The data written while published is on the volume.
        let probe = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-o",
                "ro,loop",
                &v.file.display().to_string(),
                &probe.path().display().to_string(),
            ])
            .status()
            .unwrap();
        assert!(ok.success());
        let data = std::fs::read_to_string(probe.path().join("data"));
        Command::new("umount").arg(probe.path()).status().unwrap();
        assert_eq!(data.unwrap(), *point);
        println!("ok - killed at {point}: converged");
    }
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Killed between attach and mount, and the CO never comes back (the pod was deleted): the
/// orphan cleanup detaches the device; a loop device of a file under the loop root that is
/// not a volume (`system.img`) and one of a mounted volume survive; in dry-run only reports.
#[tokio::test]
async fn the_orphan_cleanup_detaches_only_unused_managed_devices() {
    if !root_available() {
        return;
    }
    let mut rig = start(&[]).await;
    let orphan = rig.create("pvc-orphan", false).await;
    let kept = rig.create("pvc-kept", false).await;
    let node = node_only(
        &files(&rig),
        Some("stage.attached"),
        &["--orphan-cleanup-interval-seconds", "0"],
    );
    let r =
        run_step(&mut rig, client(&node).await, &orphan, Path::new("/nonexistent"), Step::Stage)
            .await;
    assert!(r.is_err());
    drop(node);
    assert_eq!(loops_of(&orphan.file).len(), 1, "the crash left the device attached");
    // A mounted volume, and a "system" loop device inside the loop root.
    let node = node_only(&files(&rig), None, &["--orphan-cleanup-interval-seconds", "0"]);
    run_step(&mut rig, client(&node).await, &kept, Path::new("/nonexistent"), Step::Stage)
        .await
        .unwrap();
    drop(node);
    let system = files(&rig).join("system.img");
    std::fs::write(&system, vec![0u8; 1 << 20]).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show", &system.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let system_dev = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // Dry run: reported, nothing detached.
    let mut dry = node_only(
        &files(&rig),
        None,
        &[
            "--orphan-cleanup-interval-seconds",
            "1",
            "--orphan-grace-seconds",
            "0",
            "--orphan-dry-run",
        ],
    );
    let line = dry.wait_for_log("orphan cleanup (dry run): unused for 0s; would disconnect it");
    assert_eq!(line["volume_id"], orphan.id.as_str(), "{line}");
    assert_eq!(loops_of(&orphan.file).len(), 1, "dry run detaches nothing");
    // Every decision of a sweep is accounted for in one line.
    let sweep = dry.wait_for_log("orphan cleanup: sweep done");
    let counts: Vec<i64> = ["managed", "in_use", "waiting", "orphans", "never_touched"]
        .iter()
        .map(|k| sweep[*k].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [2, 1, 0, 1, 1], "{sweep}");
    drop(dry);

    // For real, with a grace period: the first sweep only starts the clock.
    let mut node = node_only(
        &files(&rig),
        None,
        &["--orphan-cleanup-interval-seconds", "1", "--orphan-grace-seconds", "2"],
    );
    let line = node.wait_for_log(
        "orphan cleanup: unused; disconnected when still unused after the grace period",
    );
    assert_eq!(line["volume_id"], orphan.id.as_str(), "{line}");
    assert_eq!(loops_of(&orphan.file).len(), 1, "not before the grace period");
    wait_for("the orphan is detached", Duration::from_secs(20), || {
        loops_of(&orphan.file).is_empty()
    });
    node.wait_for_log("orphan cleanup: unused for 2s; disconnected");
    assert_eq!(loops_of(&kept.file).len(), 1, "the mounted volume keeps its device");
    assert_eq!(mounts_at(&rig.path(&format!("staging-{}", kept.id))).len(), 1);
    assert!(
        std::fs::read_to_string(format!(
            "/sys/block/{}/loop/backing_file",
            system_dev.trim_start_matches("/dev/")
        ))
        .is_ok_and(|f| f.trim() == system.display().to_string()),
        "the system loop device survives"
    );
    Command::new("losetup").args(["-d", &system_dev]).status().unwrap();
    let node_client = client(&node).await;
    run_step(&mut rig, node_client, &kept, Path::new("/nonexistent"), Step::Unstage).await.unwrap();
    println!("ok - orphan detached after the grace period; mounted volume and system device kept");
}

/// A staging path with many stacked mounts (a mount storm): NodeStageVolume refuses with an
/// error naming it and unmounts down to one; the retry succeeds and publishes.
#[tokio::test]
async fn a_mount_storm_is_refused_and_cleaned_down_to_one() {
    if !root_available() {
        return;
    }
    let mut rig = start(&[]).await;
    let v = rig.create("pvc-storm", false).await;
    rig.stage(&v, cap(false, "ext4", &[])).await.unwrap();
    let staging = rig.path(&format!("staging-{}", v.id));
    let s = staging.display().to_string();
    for _ in 0..20 {
        assert!(Command::new("mount").args(["--bind", &s, &s]).status().unwrap().success());
    }
    assert_eq!(mounts_at(&staging).len(), 21);
    let (c, msg) = code(rig.stage(&v, cap(false, "ext4", &[])).await);
    assert_eq!(c, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("had 21 mounts stacked") && msg.contains("mount storm"), "{msg}");
    assert_eq!(mounts_at(&staging).len(), 1, "cleaned down to one");
    rig.stage(&v, cap(false, "ext4", &[])).await.unwrap();
    let target = rig.path("pod-storm/mount");
    rig.publish(&v, &target, cap(false, "ext4", &[]), false).await.unwrap();
    // Two stacked at the target (not a storm): cleaned to one, the call succeeds.
    let t = target.display().to_string();
    assert!(Command::new("mount").args(["--bind", &s, &t]).status().unwrap().success());
    rig.publish(&v, &target, cap(false, "ext4", &[]), false).await.unwrap();
    assert_eq!(mounts_at(&target).len(), 1);
    rig.unpublish(&v, &target).await.unwrap();
    rig.unstage(&v).await.unwrap();
    assert!(loops_of(&v.file).is_empty());
}
