//! The `rds-csi` binary. All logic lives in the `driver` library.

use std::process::ExitCode;

use clap::Parser;
use driver::{
    cli::{Cli, Command},
    server, telemetry, tools,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and the operator tools print their own output; their logs stay quiet unless a
    // level is asked for.
    let explicit_level = std::env::args().any(|a| a.starts_with("--log-level"))
        || std::env::var_os("RDS_CSI_LOG_LEVEL").is_some();
    let level = if !matches!(cli.command, Command::Serve(_)) && !explicit_level {
        "warn"
    } else {
        cli.log_level.as_str()
    };
    if let Err(e) = telemetry::init(cli.log_format, level) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let args = match cli.command {
        Command::Serve(args) => *args,
        Command::Demo(demo) => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let walk = async {
                if demo.backends > 1 {
                    driver::demo_backends::run(demo.backends, demo.keep).await
                } else {
                    driver::demo::run(demo.fs_type, demo.storage_fencing, demo.keep).await
                }
            };
            return match runtime.block_on(walk) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: demo failed: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Bench(bench) => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            return tools::exit(runtime.block_on(driver::bench::run(bench)));
        }
        tool => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            return tools::exit(runtime.block_on(async {
                match &tool {
                    Command::Volumes(a) => tools::listing::volumes(a).await,
                    Command::Snapshots(a) => tools::listing::snapshots(a).await,
                    Command::Attachments(a) => tools::listing::attachments(a).await,
                    Command::Orphans(a) => tools::orphans::run(a).await,
                    Command::Doctor(a) => tools::doctor::run(a).await,
                    Command::Serve(_) | Command::Demo(_) | Command::Bench(_) => {
                        unreachable!("handled above")
                    }
                }
            }));
        }
    };
    let config = match args.validate() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let shutdown = server::termination_signal()?;
        server::run(config, shutdown).await
    });
    match outcome {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
