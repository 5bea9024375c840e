//! Command line of the `rds-csi` binary. Every flag can also be set through an `RDS_CSI_*`
//! environment variable (shown in `--help`). Secrets are never flags: later issues read them
//! from files named by flags.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    controller::config::{ControllerArgs, ControllerConfig},
    endpoint::{Endpoint, parse_metrics_address},
    names::{topology_zone_key, validate_driver_name},
    node::config::{NodeArgs, NodeConfig},
    rds::{RdsArgs, RdsConfig},
    tools::{DoctorArgs, OrphansArgs, ToolArgs},
};

#[derive(Debug, Parser)]
#[command(name = "rds-csi", version = crate::version::VERSION, about = "Kubernetes CSI driver for MikroTik ROSE Data Server (NVMe/TCP)")]
pub struct Cli {
    /// Log line format: human-readable text or one JSON object per line.
    #[arg(long, env = "RDS_CSI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `info,driver=debug`.
    #[arg(long, env = "RDS_CSI_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the CSI gRPC services (controller, node or both) on an endpoint.
    Serve(Box<ServeArgs>),
    /// Run the controller and node against the embedded RDS emulator and walk a volume through
    /// its life (create, stage, publish, write, expand, snapshot, restore, unstage, delete),
    /// printing every step. Without root: the controller steps only.
    Demo(DemoArgs),
    /// Every managed disk on the RDS: size, file, export, PVC, holders, state (bound, orphan,
    /// new, copying, leftover-file; unknown without cluster access).
    Volumes(Box<ToolArgs>),
    /// Snapshots on the RDS: source, mechanism, ready or copying (how far), size, group.
    Snapshots(Box<ToolArgs>),
    /// VolumeAttachments of this driver with the storage fence of each node and the window
    /// left of live migrations (needs cluster access).
    Attachments(Box<ToolArgs>),
    /// What the orphan reconciler would report; with --delete, deletes it (asks first).
    Orphans(Box<OrphansArgs>),
    /// Checks the RDS connection, host key, RouterOS features, pool space, clock, NVMe/TCP
    /// port, kernel modules, host NQN, NQN prefixes, CSIDriver and sidecars: OK/WARN/FAIL
    /// with the fix.
    Doctor(Box<DoctorArgs>),
    /// Benchmarks and the fault soak (docs/performance.md): `bench controller`, `bench node`,
    /// `bench soak`.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Filesystem of the demo's volumes.
    #[arg(long, value_parser = ["xfs", "ext4"], default_value = "xfs")]
    pub fs_type: String,
    /// Fence on the RDS as well: each disk allows only the attached node's host NQN (on by
    /// default, as in `serve`; `--storage-fencing=false` turns it off).
    #[arg(
        long,
        num_args = 0..=1,
        default_value_t = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub storage_fencing: bool,
    /// Keep the emulator's state in DIR and leave the demo's restored volume and snapshot
    /// there, to look at with the operator tools (`rds-csi volumes --emulated-rds DIR`).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// With 2 or more: the controller against that many emulated RDS appliances (rds-a in
    /// zone a, rds-b in zone b, ...), walking placement, capacity per zone and routing
    /// (docs/topology.md).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub backends: u8,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC endpoint: unix:///path/csi.sock (what kubelet and the sidecars use) or tcp://host:port.
    #[arg(
        long,
        env = "RDS_CSI_ENDPOINT",
        default_value = "unix:///var/lib/kubelet/plugins/rds.csi.srvlab.io/csi.sock"
    )]
    pub endpoint: Endpoint,

    /// Run the Controller service (one per cluster).
    #[arg(long, env = "RDS_CSI_CONTROLLER")]
    pub controller: bool,

    /// Run the Node service (every node); requires --node-id.
    #[arg(long, env = "RDS_CSI_NODE")]
    pub node: bool,

    /// This node's id as reported in NodeGetInfo (usually the Kubernetes node name).
    #[arg(long, env = "RDS_CSI_NODE_ID")]
    pub node_id: Option<String>,

    /// CSI driver name. Keep the default to manage volumes created by the existing Go driver.
    #[arg(long, env = "RDS_CSI_DRIVER_NAME", default_value = "rds.csi.srvlab.io")]
    pub driver_name: String,

    /// Value of this node's topology segment `topology.<driver-name>/zone`; with the
    /// single-RDS flags also the segment of the controller's RDS (docs/topology.md).
    #[arg(long, env = "RDS_CSI_TOPOLOGY_ZONE", default_value = "default")]
    pub topology_zone: String,

    /// A further topology segment this node reports, `KEY=VALUE` (repeatable; comma-separated
    /// in the environment): the segments of the RDS backends it can reach beyond its zone,
    /// e.g. `topology.rds.csi.srvlab.io/rds-b=true` (docs/topology.md).
    #[arg(long, env = "RDS_CSI_TOPOLOGY_SEGMENTS", value_delimiter = ',')]
    pub topology_segment: Vec<String>,

    /// Several RDS appliances: a YAML file with one entry per RDS (docs/topology.md). With the
    /// --rds-* flags as well, those are the backend `default`.
    #[arg(long, env = "RDS_CSI_BACKENDS_FILE", value_name = "FILE")]
    pub backends_file: Option<PathBuf>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz: `:PORT`, `IP:PORT`, or
    /// empty to disable it.
    #[arg(long, env = "RDS_CSI_METRICS_ADDRESS", default_value = ":9809")]
    pub metrics_address: String,

    /// On SIGTERM/SIGINT, how long in-flight RPCs may run before the process exits anyway.
    #[arg(long, env = "RDS_CSI_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 30)]
    pub shutdown_timeout_seconds: u64,

    #[command(flatten)]
    pub rds: RdsArgs,

    #[command(flatten)]
    pub controller_settings: ControllerArgs,

    #[command(flatten)]
    pub node_settings: NodeArgs,

    /// Run an RDS emulator inside this process, with its state in DIR, instead of a real RDS
    /// (development and conformance runs; pair with --data-plane loop). Replaces the --rds-* flags.
    #[arg(long, env = "RDS_CSI_EMULATED_RDS", value_name = "DIR")]
    pub emulated_rds: Option<PathBuf>,

    /// With --emulated-rds: export its disks for real through the kernel NVMe/TCP target
    /// (nvmet, configfs) on ADDR:PORT, so that --data-plane nvme-tcp works end to end.
    #[arg(
        long,
        env = "RDS_CSI_EMULATED_RDS_NVMET",
        value_name = "ADDR:PORT",
        requires = "emulated_rds"
    )]
    pub emulated_rds_nvmet: Option<SocketAddr>,

    /// With --emulated-rds: the number of emulated appliances. 1 is one RDS (backend
    /// `default`); 2 or more are `rds-a`, `rds-b`, ... in zones `a`, `b`, ... (state in
    /// DIR/rds-a, ...), for development and the tests of several backends.
    #[arg(
        long,
        env = "RDS_CSI_EMULATED_BACKENDS",
        value_name = "N",
        default_value_t = 1,
        requires = "emulated_rds",
        value_parser = clap::value_parser!(u8).range(1..=8)
    )]
    pub emulated_backends: u8,
}

/// Which services this process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    pub controller: bool,
    /// The node id when the Node service runs.
    pub node_id: Option<String>,
}

/// Validated configuration of `rds-csi serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub endpoint: Endpoint,
    pub roles: Roles,
    pub driver_name: String,
    pub topology: HashMap<String, String>,
    pub metrics_address: Option<SocketAddr>,
    pub shutdown_timeout: Duration,
    /// The controller's RDS connection, when configured (backend `default`).
    pub rds: Option<RdsConfig>,
    /// The other backends (`--backends-file`).
    pub backends: Vec<crate::backends::BackendSpec>,
    /// `--emulated-backends`.
    pub emulated_backends: u8,
    pub controller: ControllerConfig,
    pub rds_probe_interval: Duration,
    /// The node's settings when the Node service runs.
    pub node: Option<NodeConfig>,
    /// `--emulated-rds DIR`.
    pub emulated_rds: Option<PathBuf>,
    /// `--emulated-rds-nvmet ADDR:PORT`.
    pub emulated_rds_nvmet: Option<SocketAddr>,
}

impl ServeArgs {
    /// Checks the flags together; the error says which flag to change and how.
    pub fn validate(self) -> Result<ServeConfig, String> {
        if !self.controller && !self.node {
            return Err("nothing to serve: pass --controller, --node, or both".to_string());
        }
        let node_id = match (self.node, self.node_id) {
            (true, Some(id)) if !id.trim().is_empty() => Some(id),
            (true, _) => {
                return Err("--node needs --node-id (usually the Kubernetes node name, e.g. \
                            --node-id=$(NODE_NAME) from the downward API)"
                    .to_string());
            }
            (false, _) => None,
        };
        validate_driver_name(&self.driver_name)?;
        if self.topology_zone.is_empty() {
            return Err("--topology-zone must not be empty".to_string());
        }
        let metrics_address = parse_metrics_address(&self.metrics_address)?;
        let rds = self.rds.validate()?;
        if rds.is_some() && !self.controller {
            return Err(
                "the --rds-* flags configure the controller's RDS connection: add --controller"
                    .into(),
            );
        }
        if rds.is_some() && self.emulated_rds.is_some() {
            return Err("--emulated-rds replaces the --rds-* flags: use one or the other".into());
        }
        let controller = self.controller_settings.validate()?;
        let node = match node_id {
            Some(_) => Some(self.node_settings.validate(
                self.emulated_rds.as_deref().map(crate::emulated::files_dir),
                &controller.nqn_prefix,
            )?),
            None => None,
        };
        if self.emulated_backends > 1 && self.emulated_rds_nvmet.is_some() {
            return Err(
                "--emulated-rds-nvmet exports one emulated RDS: use it with --emulated-backends 1"
                    .into(),
            );
        }
        let backends = match &self.backends_file {
            Some(_) if !self.controller => {
                return Err(
                    "--backends-file configures the controller's RDS appliances: add --controller"
                        .into(),
                );
            }
            Some(_) if self.emulated_rds.is_some() => {
                return Err("--emulated-rds replaces --backends-file (use --emulated-backends N for several emulated appliances)".into());
            }
            Some(file) => crate::backends::load(file, &controller)?,
            None => Vec::new(),
        };
        if rds.is_some()
            && backends.iter().any(|b| b.name == crate::core::topology::DEFAULT_BACKEND)
        {
            return Err("the --rds-* flags are the backend `default`, and the backends file has one too: keep one of them".into());
        }
        let mut topology =
            HashMap::from([(topology_zone_key(&self.driver_name), self.topology_zone)]);
        for kv in &self.topology_segment {
            let (k, v) = kv.split_once('=').filter(|(k, v)| !k.is_empty() && !v.is_empty()).ok_or_else(|| {
                format!("--topology-segment {kv:?}: expected KEY=VALUE, e.g. topology.{}/rds-b=true", self.driver_name)
            })?;
            topology.insert(k.to_string(), v.to_string());
        }
        Ok(ServeConfig {
            endpoint: self.endpoint,
            roles: Roles { controller: self.controller, node_id },
            driver_name: self.driver_name,
            topology,
            metrics_address,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_seconds),
            rds,
            backends,
            emulated_backends: self.emulated_backends,
            controller,
            rds_probe_interval: Duration::from_secs(self.rds.rds_probe_interval_seconds.max(1)),
            node,
            emulated_rds: self.emulated_rds,
            emulated_rds_nvmet: self.emulated_rds_nvmet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServeConfig, String> {
        let cli = Cli::try_parse_from([&["rds-csi", "serve"], args].concat())
            .map_err(|e| e.to_string())?;
        let Command::Serve(serve) = cli.command else { panic!("serve expected") };
        (*serve).validate()
    }

    #[test]
    fn topology_segments_and_backends_flags() {
        let cfg = parse(&[
            "--node",
            "--node-id",
            "n1",
            "--topology-zone",
            "a",
            "--topology-segment",
            "topology.rds.csi.srvlab.io/rds-b=true",
        ])
        .unwrap();
        assert_eq!(cfg.topology["topology.rds.csi.srvlab.io/zone"], "a");
        assert_eq!(cfg.topology["topology.rds.csi.srvlab.io/rds-b"], "true");
        let err = parse(&["--node", "--node-id", "n1", "--topology-segment", "rds-b"]).unwrap_err();
        assert!(err.contains("expected KEY=VALUE"), "{err}");
        let err = parse(&["--node", "--node-id", "n1", "--backends-file", "/x.yaml"]).unwrap_err();
        assert!(err.contains("add --controller"), "{err}");
        let err = parse(&[
            "--controller",
            "--emulated-rds",
            "/tmp/x",
            "--emulated-backends",
            "2",
            "--emulated-rds-nvmet",
            "127.0.0.1:4420",
        ])
        .unwrap_err();
        assert!(err.contains("--emulated-backends 1"), "{err}");
        let err =
            parse(&["--controller", "--emulated-rds", "/tmp/x", "--backends-file", "/x.yaml"])
                .unwrap_err();
        assert!(err.contains("--emulated-backends N"), "{err}");
        assert!(
            parse(&["--controller", "--emulated-backends", "2"]).is_err(),
            "needs --emulated-rds"
        );
    }

    #[test]
    fn defaults_match_the_go_driver() {
        let cfg = parse(&["--controller"]).unwrap();
        assert_eq!(cfg.driver_name, "rds.csi.srvlab.io");
        assert_eq!(cfg.metrics_address, Some("0.0.0.0:9809".parse().unwrap()));
        assert_eq!(
            cfg.endpoint,
            Endpoint::Unix("/var/lib/kubelet/plugins/rds.csi.srvlab.io/csi.sock".into())
        );
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(cfg.topology["topology.rds.csi.srvlab.io/zone"], "default");
    }

    #[test]
    fn needs_a_role_and_a_node_id() {
        assert!(parse(&[]).unwrap_err().contains("--controller, --node"));
        assert!(parse(&["--node"]).unwrap_err().contains("--node-id"));
        assert!(parse(&["--node", "--node-id", " "]).unwrap_err().contains("--node-id"));
        let cfg = parse(&["--node", "--node-id", "n1", "--metrics-address", ""]).unwrap();
        assert_eq!(cfg.roles, Roles { controller: false, node_id: Some("n1".into()) });
        assert_eq!(cfg.metrics_address, None);
    }

    #[test]
    fn rds_flags_are_validated_together() {
        assert!(parse(&["--controller"]).unwrap().rds.is_none());
        let key = ["--rds-ssh-key-file", "/k"];
        let err = parse(&[&["--controller", "--rds-address", "10.0.0.1"][..], &key].concat())
            .unwrap_err();
        assert!(err.contains("--rds-host-key"), "{err}");
        let ok = parse(
            &[&["--controller", "--rds-address", "rds", "--rds-host-key", "SHA256:abc"][..], &key]
                .concat(),
        )
        .unwrap();
        let Some(RdsConfig::Ssh(o)) = ok.rds else { panic!() };
        assert_eq!((o.address.as_str(), o.max_sessions), ("rds:22", 4));
        let err = parse(&[
            "--node",
            "--node-id",
            "n",
            "--rds-address",
            "x",
            "--rds-host-key",
            "SHA256:a",
            "--rds-ssh-key-file",
            "/k",
        ])
        .unwrap_err();
        assert!(err.contains("add --controller"), "{err}");
        let err = parse(&["--controller", "--rds-transport", "rest"]).unwrap_err();
        assert!(err.contains("--rds-rest-url"), "{err}");
        let err = parse(
            &[
                &[
                    "--controller",
                    "--emulated-rds",
                    "/tmp/r",
                    "--rds-address",
                    "x",
                    "--rds-host-key",
                    "SHA256:a",
                ][..],
                &key,
            ]
            .concat(),
        )
        .unwrap_err();
        assert!(err.contains("one or the other"), "{err}");
    }

    #[test]
    fn node_flags() {
        let cfg = parse(&["--node", "--node-id", "n"]).unwrap();
        let node = cfg.node.unwrap();
        assert_eq!(node.managed_nqn_prefix, "nqn.2000-02.com.mikrotik:pvc-");
        assert_eq!(node.data_plane, crate::node::config::DataPlaneKind::NvmeTcp);
        let err = parse(&["--node", "--node-id", "n", "--data-plane", "loop"]).unwrap_err();
        assert!(err.contains("--loop-root"), "{err}");
        let cfg = parse(&[
            "--node",
            "--node-id",
            "n",
            "--data-plane",
            "loop",
            "--emulated-rds",
            "/tmp/r",
        ])
        .unwrap();
        assert_eq!(cfg.node.unwrap().loop_root.unwrap(), std::path::Path::new("/tmp/r/fs"));
        let err = parse(&[
            "--node",
            "--node-id",
            "n",
            "--managed-nqn-prefix",
            "nqn.2000-02.com.mikrotik:",
        ])
        .unwrap_err();
        assert!(err.contains("vendor"), "{err}");
        assert!(parse(&["--controller"]).unwrap().node.is_none());
    }

    #[test]
    fn storage_fencing_is_on_by_default() {
        assert!(parse(&["--controller"]).unwrap().controller.storage_fencing);
        assert!(parse(&["--controller", "--storage-fencing"]).unwrap().controller.storage_fencing);
        assert!(
            !parse(&["--controller", "--storage-fencing=false"])
                .unwrap()
                .controller
                .storage_fencing
        );
    }

    #[test]
    fn nqn_prefixes_follow_the_nqn_rules_and_agree() {
        let err =
            parse(&["--controller", "--nqn-prefix", "nqn.2000-13.com.mikrotik:"]).unwrap_err();
        assert!(err.contains("--nqn-prefix") && err.contains("YYYY-MM"), "{err}");
        let err = parse(&["--controller", "--nqn-prefix", "nqn.2000-02.com.mikrotik"]).unwrap_err();
        assert!(err.contains("end with ':'"), "{err}");
        let err = parse(&["--node", "--node-id", "n", "--nqn-prefix", "nqn.2026-09.com.example:"])
            .unwrap_err();
        assert!(err.contains("must start with --nqn-prefix"), "{err}");
        let ok = parse(&[
            "--node",
            "--node-id",
            "n",
            "--nqn-prefix",
            "nqn.2026-09.com.example:",
            "--managed-nqn-prefix",
            "nqn.2026-09.com.example:pvc-",
        ])
        .unwrap();
        assert_eq!(ok.node.unwrap().nqn_prefix, "nqn.2026-09.com.example:");
    }

    #[test]
    fn rest_over_plain_http_needs_the_insecure_flag() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let pw = pw.display().to_string();
        let base = ["--controller", "--rds-transport", "rest", "--rds-password-file", &pw];
        let err = parse(&[&base[..], &["--rds-rest-url", "http://10.0.0.1"]].concat()).unwrap_err();
        assert!(
            err.contains("clear text") && err.contains("--rds-insecure-skip-host-key-check"),
            "{err}"
        );
        let ok = parse(
            &[
                &base[..],
                &["--rds-rest-url", "http://10.0.0.1", "--rds-insecure-skip-host-key-check"],
            ]
            .concat(),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn rejects_bad_values_naming_the_flag_value() {
        assert!(
            parse(&["--controller", "--driver-name", "bad_name"]).unwrap_err().contains("bad_name")
        );
        assert!(parse(&["--controller", "--endpoint", "x.sock"]).unwrap_err().contains("x.sock"));
        assert!(
            parse(&["--controller", "--metrics-address", "nope"]).unwrap_err().contains("nope")
        );
    }
}
