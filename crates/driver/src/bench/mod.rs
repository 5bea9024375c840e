//! `rds-csi bench`: the driver's speed and safety as numbers anyone can reproduce
//! (docs/performance.md). `controller` drives the controller over its gRPC socket and prints
//! RouterOS round trips, latency and throughput beside the ideal measured in the same run;
//! `node` times stage and unstage on the loop data plane beside the raw kernel commands;
//! `soak` runs a seeded schedule of mixed operations with injected faults and checks that
//! nothing was lost, duplicated, exposed or answered with a wrong code.
//!
//! No figure here is asserted by a test (timings vary by machine); the deterministic counts
//! (round trips) are, in the tests that pin them, and the soak's invariants are.

pub mod controller;
pub mod harness;
pub mod node;
pub mod schedule;
pub mod soak;
pub mod stats;

use std::{io::IsTerminal, process::ExitCode, time::Instant};

use clap::{Args, Subcommand};

use crate::tools::Output;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// CreateVolume, ControllerExpandVolume, CreateSnapshot, ControllerPublishVolume,
    /// ControllerUnpublishVolume, DeleteSnapshot and DeleteVolume over the controller's gRPC
    /// socket: round trips, p50/p95/p99 latency, throughput and peak memory, beside the ideal.
    Controller(controller::ControllerBenchArgs),
    /// NodeStageVolume and NodeUnstageVolume on the loop data plane (root): the time of each
    /// step beside the raw kernel commands on the same device.
    Node(node::NodeBenchArgs),
    /// A seeded schedule of mixed operations with injected faults, then the invariants.
    Soak(soak::SoakArgs),
}

pub async fn run(args: BenchArgs) -> Result<ExitCode, String> {
    match args.what {
        BenchCommand::Controller(a) => controller::run(a).await,
        BenchCommand::Node(a) => node::run(a).await,
        BenchCommand::Soak(a) => soak::run(a).await,
    }
}

/// A one-line progress bar on stderr, only when stderr is a terminal and the output is a
/// table (JSON output stays clean for scripts).
pub struct Progress {
    on: bool,
    what: String,
    total: usize,
    done: usize,
    last: Instant,
}

impl Progress {
    pub fn new(output: Output, what: &str, total: usize) -> Progress {
        let on = output == Output::Table && std::io::stderr().is_terminal();
        let p = Progress { on, what: what.to_string(), total, done: 0, last: Instant::now() };
        p.draw();
        p
    }

    pub fn tick(&mut self) {
        self.done += 1;
        if self.done == self.total || self.last.elapsed().as_millis() >= 100 {
            self.last = Instant::now();
            self.draw();
        }
    }

    fn draw(&self) {
        if !self.on {
            return;
        }
        eprint!("\r  {}\x1b[K", stats::bar(&self.what, self.done, self.total, 30));
    }

    pub fn finish(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}
