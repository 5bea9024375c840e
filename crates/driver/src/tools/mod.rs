//! Operator tools (docs/operations.md "Operator tools"): `rds-csi volumes`, `snapshots`,
//! `attachments`, `orphans` and `doctor`. They take the same RDS connection flags and
//! `RDS_CSI_*` environment as `serve` (so `kubectl exec` into the controller pod just works),
//! read the cluster through a kubeconfig or the pod's service account when there is one,
//! print a table (or `-o json`), and give every RouterOS and Kubernetes call a deadline.
//!
//! The joins and the orphan rule are pure ([`crate::core::inventory`]); this module does the
//! reading ([`session`], [`cluster`]), the printing ([`table`]) and the asking ([`orphans`]).

pub mod cluster;
pub mod doctor;
pub mod listing;
pub mod orphans;
pub mod session;
pub mod table;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, ValueEnum};

use crate::{controller::config::ControllerArgs, rds::RdsArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

/// The flags every operator tool takes.
#[derive(Debug, Clone, Args)]
pub struct ToolArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// CSI driver name (the PVs and VolumeAttachments of this driver are read).
    #[arg(long, env = "RDS_CSI_DRIVER_NAME", default_value = "rds.csi.srvlab.io")]
    pub driver_name: String,

    /// The RDS emulator whose state is in DIR: reached over the SSH endpoint a running
    /// `rds-csi serve --emulated-rds DIR` (or `demo --keep DIR`) left there, else opened in
    /// this process. Replaces the --rds-* flags.
    #[arg(long, env = "RDS_CSI_EMULATED_RDS", value_name = "DIR")]
    pub emulated_rds: Option<PathBuf>,

    /// Kubeconfig to read the cluster with (default: $KUBECONFIG, ~/.kube/config, or the
    /// pod's service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Do not read the cluster: RDS state only (PVC names from the disk comments).
    #[arg(long, conflicts_with = "kubeconfig")]
    pub no_cluster: bool,

    /// Deadline of each RouterOS and Kubernetes call (seconds).
    #[arg(long, default_value_t = 20)]
    pub call_timeout_seconds: u64,

    /// With several RDS appliances (docs/topology.md): the backend whose RDS the --rds-*
    /// flags reach. Its volumes' ids are `<backend>:pvc-...` in the cluster (bare on
    /// `default`): without the right name every bound volume of it would look like an orphan.
    #[arg(long, default_value = "default")]
    pub backend: String,

    #[command(flatten)]
    pub rds: RdsArgs,

    #[command(flatten)]
    pub controller: ControllerArgs,
}

impl ToolArgs {
    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_seconds.clamp(1, 600))
    }
}

/// `rds-csi orphans`.
#[derive(Debug, Clone, Args)]
pub struct OrphansArgs {
    #[command(flatten)]
    pub tool: ToolArgs,
    /// Delete the orphans listed (asks first on a terminal; elsewhere needs --yes).
    #[arg(long)]
    pub delete: bool,
    /// Only orphans at least this old by the RDS's clock: `90s`, `30m`, `12h`, `7d`
    /// (default: --rds-orphan-grace-seconds, the reconciler's grace period).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub older_than: Option<Duration>,
    /// Do not ask before deleting.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `rds-csi doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub tool: ToolArgs,
    /// This node's NVMe host NQN file (as the node plugin's --host-nqn-file).
    #[arg(long, env = "RDS_CSI_HOST_NQN_FILE", default_value = "/etc/nvme/hostnqn")]
    pub host_nqn_file: PathBuf,
    /// The node plugin's managed NQN prefix (as its --managed-nqn-prefix).
    #[arg(
        long,
        env = "RDS_CSI_MANAGED_NQN_PREFIX",
        default_value = "nqn.2000-02.com.mikrotik:pvc-"
    )]
    pub managed_nqn_prefix: String,
    /// The namespace the driver's pods run in, to read the sidecars' versions (default:
    /// POD_NAMESPACE inside a pod; outside, that check is skipped).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// sysfs root (tests point it at a fixture).
    #[arg(long, default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,
}

/// Runs `f` with the call deadline; a late answer is an error naming `what`.
pub async fn bounded<T, E: std::fmt::Display>(
    deadline: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(deadline, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {}s", deadline.as_secs())),
    }
}

/// `90s`, `30m`, `12h`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a number and s, m, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("{s:?}: unknown unit {other:?}; use s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// Runs a tool to its exit code: errors print as `error: ...` with exit code 1 (2 for bad
/// flags, which clap reports).
pub fn exit(result: Result<ExitCode, String>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("2w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("h").unwrap_err().contains("expected a number"));
    }
}
