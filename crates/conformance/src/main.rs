//! `csi-conformance`: runs the CSI spec-rule suite against the `rds-csi` binary, every rule
//! with a driver of its own, and prints one line per rule and the verdict
//! (`N passed, M failed`). The VM run (native NVMe/TCP) uses it; so can anyone.
//!
//! ```text
//! csi-conformance [--mode mount|block|both] [--node-only] [--list] [RULE...]
//! ```
//! The driver is `RDS_CSI_BIN` (default: `rds-csi` beside this binary); the data plane is
//! loop devices, or NVMe/TCP with `CONFORMANCE_DATA_PLANE=nvme-tcp` (and
//! `CONFORMANCE_NVMET=ADDR:PORT`, default 127.0.0.1:4420).

use conformance::{Mode, Target, harness, rules};

#[tokio::main]
async fn main() {
    let mut modes = vec![Mode::Mount, Mode::Block];
    let mut only = Vec::new();
    let mut list = false;
    let mut node_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mode" => {
                modes = match args.next().as_deref() {
                    Some("mount") => vec![Mode::Mount],
                    Some("block") => vec![Mode::Block],
                    Some("both") => vec![Mode::Mount, Mode::Block],
                    other => fail(&format!("--mode takes mount, block or both, not {other:?}")),
                }
            }
            "--list" => list = true,
            // The rules that exercise the node's data plane (the VM run: TCG is slow, and the
            // controller-only rules run the same there as on the host).
            "--node-only" => node_only = true,
            "-h" | "--help" => {
                println!(
                    "usage: csi-conformance [--mode mount|block|both] [--node-only] [--list] [RULE...]"
                );
                return;
            }
            s if s.starts_with('-') => fail(&format!("unknown option {s}")),
            rule => only.push(rule.to_string()),
        }
    }
    let rules: Vec<_> = rules()
        .into_iter()
        .filter(|r| only.is_empty() || only.iter().any(|o| o == r.name))
        .filter(|r| r.node || !node_only)
        .collect();
    if rules.is_empty() {
        fail("no rule matches");
    }
    if list {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let mut rpc = "";
        for r in &rules {
            if r.rpc != rpc {
                rpc = r.rpc;
                let _ = writeln!(out, "{rpc}");
            }
            // A closed pipe (`| head`) ends the listing quietly.
            if writeln!(out, "  {:<44} {}", r.name, r.text).is_err() {
                return;
            }
        }
        return;
    }
    let target = Target::from_env();
    let node_ok = harness::node_rules_possible();
    println!(
        "csi-conformance: {} rules, modes {:?}, driver {}, data plane {:?}",
        rules.len(),
        modes,
        target.binary.display(),
        target.plane
    );
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for mode in modes {
        for r in &rules {
            let name = format!("{}/{}", mode.name(), r.name);
            if r.node
                && let Err(why) = &node_ok
            {
                skipped += 1;
                println!("skip - {name}: {why}");
                continue;
            }
            let started = std::time::Instant::now();
            match harness::run(&target, mode, r.run).await {
                Ok(()) => {
                    passed += 1;
                    println!("ok - {name} ({:.1}s)", started.elapsed().as_secs_f64());
                }
                Err(e) => {
                    failed += 1;
                    println!("FAILED - {name} ({}: {})\n{}", r.rpc, r.text, indent(&e));
                }
            }
        }
    }
    if skipped > 0 {
        println!("{skipped} skipped");
    }
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

fn fail(msg: &str) -> ! {
    eprintln!("csi-conformance: {msg}");
    std::process::exit(2);
}
