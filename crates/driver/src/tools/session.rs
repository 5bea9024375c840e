//! What an operator tool talks to: the RDS (the `serve` flags, or an emulator directory) and,
//! when it can be reached, the cluster.

use std::{path::Path, sync::Arc, time::Duration};

use routeros::{
    client::{Rds, RetryPolicy},
    rest::RestTransport,
    ssh::{HostKeyPolicy, SshOptions, SshTransport},
    transport::Transport,
};

pub use super::bounded;
use super::{ToolArgs, cluster::ClusterReader};
use crate::{controller::config::ControllerConfig, emulated, rds::RdsConfig};

pub struct Session {
    pub rds: Rds,
    /// How the RDS was reached (for doctor: the address, the host key policy).
    pub rds_config: RdsConfig,
    pub cfg: ControllerConfig,
    /// `None`: no cluster access (`--no-cluster`, or no kubeconfig and not in a pod).
    pub cluster: Option<ClusterReader>,
    /// Why the cluster is not read, when it is not.
    pub cluster_note: Option<String>,
    /// An emulator this process opened (kept alive for the session).
    pub emulator: Option<emulated::EmulatedRds>,
    pub call_timeout: Duration,
}

fn transport(config: &RdsConfig) -> Result<Arc<dyn Transport>, String> {
    Ok(match config.clone() {
        RdsConfig::Ssh(o) => Arc::new(SshTransport::new(o).map_err(|e| e.to_string())?),
        RdsConfig::Rest(o) => Arc::new(RestTransport::new(o).map_err(|e| e.to_string())?),
    })
}

/// The connection to an emulator's directory: the endpoint a running one left, if it
/// answers; else the emulator opened here.
async fn emulated_rds(
    dir: &Path,
    deadline: Duration,
) -> Result<(RdsConfig, Option<emulated::EmulatedRds>), String> {
    if let Ok(text) = std::fs::read_to_string(dir.join(emulated::ENDPOINT_FILE)) {
        let mut lines = text.lines();
        if let (Some(address), Some(fingerprint)) = (lines.next(), lines.next()) {
            let mut o = SshOptions::new(
                address,
                "admin",
                dir.join("client_ed25519"),
                HostKeyPolicy::Fingerprint(fingerprint.to_string()),
            );
            o.max_sessions = 2;
            let config = RdsConfig::Ssh(o);
            let probe = Rds::new(transport(&config)?, quick_retry(deadline));
            if tokio::time::timeout(Duration::from_secs(3), probe.system())
                .await
                .is_ok_and(|r| r.is_ok())
            {
                return Ok((config, None));
            }
        }
    }
    if !dir.is_dir() {
        return Err(format!(
            "--emulated-rds {}: no emulator there (run `rds-csi demo --keep {0}` or `rds-csi serve --controller --emulated-rds {0}` first)",
            dir.display()
        ));
    }
    let emu = emulated::start(dir, None).await?;
    Ok((emu.rds.clone(), Some(emu)))
}

/// Retries within one call's deadline (the tools show what is, they do not wait long).
fn quick_retry(deadline: Duration) -> RetryPolicy {
    RetryPolicy { deadline, initial: Duration::from_millis(200), max: Duration::from_secs(2) }
}

impl Session {
    pub async fn open(args: &ToolArgs) -> Result<Session, String> {
        let cfg = args.controller.validate()?;
        let deadline = args.call_timeout();
        let (rds_config, emulator) = match (&args.emulated_rds, args.rds.validate()?) {
            (Some(_), Some(_)) => {
                return Err(
                    "--emulated-rds replaces the --rds-* flags: use one or the other".into()
                );
            }
            (Some(dir), None) => emulated_rds(dir, deadline).await?,
            (None, Some(c)) => (c, None),
            (None, None) => {
                return Err("no RDS to read: pass --rds-address with --rds-ssh-key-file and --rds-host-key \
                            (or --rds-transport rest ...), as for `rds-csi serve`; in the cluster, run the tool in the \
                            controller pod, whose environment has them: \
                            kubectl -n <namespace> exec deploy/rds-csi-controller -c rds-csi -- rds-csi volumes"
                    .into());
            }
        };
        let rds = Rds::new(transport(&rds_config)?, quick_retry(deadline));
        let (cluster, cluster_note) = if args.no_cluster {
            (None, Some("--no-cluster".to_string()))
        } else {
            match ClusterReader::connect(args.kubeconfig.as_deref(), &args.driver_name, deadline)
                .await
            {
                Ok(c) => (Some(c.on_backend(&args.backend)), None),
                Err(e) if args.kubeconfig.is_some() => return Err(e),
                Err(e) => (None, Some(e)),
            }
        };
        Ok(Session {
            rds,
            rds_config,
            cfg,
            cluster,
            cluster_note,
            emulator,
            call_timeout: deadline,
        })
    }

    /// Every disk and every file under the allowed base paths (one listing each).
    pub async fn rds_state(
        &self,
    ) -> Result<(Vec<routeros::ops::Disk>, Vec<routeros::ops::FileEntry>), String> {
        let t = self.call_timeout;
        let disks = bounded(t, "listing the RDS disks", self.rds.list_disks("")).await?;
        let mut files = Vec::new();
        for base in &self.cfg.allowed_base_paths {
            let what = format!("listing the files under {}", base.absolute());
            files.append(&mut bounded(t, &what, self.rds.list_files(base)).await?);
        }
        Ok((disks, files))
    }

    pub fn is_managed(&self, file: &routeros::types::FilePath) -> bool {
        self.cfg.allowed_base_paths.iter().any(|b| file.is_under(b))
    }
}

pub use crate::clock::now_s;
