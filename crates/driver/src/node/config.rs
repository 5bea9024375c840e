//! Node settings (flags and `RDS_CSI_*` variables), validated at start-up.

use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use crate::core::fabrics;

/// How volumes reach this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataPlaneKind {
    /// NVMe/TCP through the kernel initiator (`/dev/nvme-fabrics`): production.
    NvmeTcp,
    /// The RDS backing file through a loop device, for machines without NVMe/TCP
    /// (development, CI, the quickstart); needs the files locally (`--loop-root`).
    Loop,
}

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// How volumes are attached: nvme-tcp (default) or loop (development and CI).
    #[arg(long, env = "RDS_CSI_DATA_PLANE", value_enum, default_value_t = DataPlaneKind::NvmeTcp)]
    pub data_plane: DataPlaneKind,
    /// With --data-plane loop: the host directory that holds the RDS's files (the RDS path
    /// `/storage-pool/x.img` is `<loop-root>/storage-pool/x.img`).
    #[arg(long, env = "RDS_CSI_LOOP_ROOT")]
    pub loop_root: Option<PathBuf>,
    /// The node connects, disconnects and reports only NVMe subsystems whose NQN starts with
    /// this prefix. It must go past the vendor part: system disks served by the same RDS share
    /// the vendor part.
    #[arg(
        long,
        env = "RDS_CSI_MANAGED_NQN_PREFIX",
        default_value = "nqn.2000-02.com.mikrotik:pvc-"
    )]
    pub managed_nqn_prefix: String,
    /// This host's NVMe NQN; generated and written there when the file does not exist.
    #[arg(long, env = "RDS_CSI_HOST_NQN_FILE", default_value = "/etc/nvme/hostnqn")]
    pub host_nqn_file: PathBuf,
    /// Reported as max_volumes_per_node in NodeGetInfo (0 = no limit).
    #[arg(long, env = "RDS_CSI_MAX_VOLUMES_PER_NODE", default_value_t = 0)]
    pub max_volumes_per_node: i64,
    /// Do not add `noexec` to filesystem volumes (by default pods cannot execute files from
    /// their volumes).
    #[arg(long, env = "RDS_CSI_ALLOW_EXEC")]
    pub allow_exec: bool,
    /// How long to wait for a volume's block device to appear after connecting.
    #[arg(long, env = "RDS_CSI_DEVICE_WAIT_SECONDS", default_value_t = 30)]
    pub device_wait_seconds: u64,
    /// Deadline of every external command (mkfs, blkid, mount, resize2fs, ...); killed after it.
    #[arg(long, env = "RDS_CSI_COMMAND_TIMEOUT_SECONDS", default_value_t = 120)]
    pub command_timeout_seconds: u64,
    /// Attempts to read an unreadable device before NodeStageVolume refuses it (never formats).
    #[arg(long, env = "RDS_CSI_BLANK_CHECK_ATTEMPTS", default_value_t = 5)]
    pub blank_check_attempts: u32,
    /// First delay between those attempts, in milliseconds (doubles each time).
    #[arg(long, env = "RDS_CSI_BLANK_CHECK_DELAY_MS", default_value_t = 1000)]
    pub blank_check_delay_ms: u64,
    /// Consecutive failures of one operation on one volume after which the node answers
    /// UNAVAILABLE at once for the cool-down (the circuit breaker; 0 = off).
    #[arg(long, env = "RDS_CSI_BREAKER_FAILURES", default_value_t = 3)]
    pub breaker_failures: u32,
    /// How long an open circuit breaker refuses before letting one attempt through.
    #[arg(long, env = "RDS_CSI_BREAKER_COOL_DOWN_SECONDS", default_value_t = 60)]
    pub breaker_cool_down_seconds: u64,
    /// How often managed NVMe subsystems nothing uses are looked for (also once at start;
    /// 0 = never).
    #[arg(long, env = "RDS_CSI_ORPHAN_CLEANUP_INTERVAL_SECONDS", default_value_t = 300)]
    pub orphan_cleanup_interval_seconds: u64,
    /// How long a managed subsystem must be seen unused (no staging mount, no mount, no
    /// holder, no opener) before it is disconnected.
    #[arg(long, env = "RDS_CSI_ORPHAN_GRACE_SECONDS", default_value_t = 600)]
    pub orphan_grace_seconds: u64,
    /// Report orphan NVMe subsystems (log, metric) without disconnecting them.
    #[arg(long, env = "RDS_CSI_ORPHAN_DRY_RUN")]
    pub orphan_dry_run: bool,
    /// How often the pods' volume mounts are checked for stale mounts (0 = never; the checks
    /// of NodeGetVolumeStats, NodeStage and NodePublish run anyway).
    #[arg(long, env = "RDS_CSI_HEALTH_CHECK_INTERVAL_SECONDS", default_value_t = 60)]
    pub health_check_interval_seconds: u64,
    /// Post Kubernetes events on the PVC of a volume with a stale mount (needs the in-cluster
    /// API: the chart grants events and PV reads to the node).
    #[arg(long, env = "RDS_CSI_NODE_EVENTS")]
    pub node_events: bool,
    /// Delete a running pod whose volume mount can never come back (device gone or replaced)
    /// when a controller owns it, so it is recreated on the repaired volume. Off by default:
    /// it restarts workloads (and needs pod list/delete rights).
    #[arg(long, env = "RDS_CSI_RECOVER_PODS")]
    pub recover_pods: bool,
    /// Also report this node's labels `topology.<driver-name>/*` as topology segments (read
    /// once at start from its Node object; needs `get` on nodes): which RDS backends the node
    /// reaches, set per node with `kubectl label node` (docs/topology.md).
    #[arg(long, env = "RDS_CSI_TOPOLOGY_FROM_NODE_LABELS")]
    pub topology_from_node_labels: bool,
    /// The kubelet's root directory (pods' volume mounts are under it).
    #[arg(long, env = "RDS_CSI_KUBELET_DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// Deadline of the read probe of a mounted volume (a read that does not answer by then
    /// makes the volume abnormal: io_hang).
    #[arg(long, env = "RDS_CSI_IO_PROBE_TIMEOUT_SECONDS", default_value_t = 10)]
    pub io_probe_timeout_seconds: u64,
}

/// Validated node settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_plane: DataPlaneKind,
    pub loop_root: Option<PathBuf>,
    /// The loop plane's root per backend (`--emulated-backends`: each emulated RDS has its
    /// own files), chosen by the volume context's backend; others use `loop_root`.
    pub loop_backend_roots: std::collections::HashMap<String, PathBuf>,
    pub managed_nqn_prefix: String,
    /// The controller's `--nqn-prefix`: a volume's NQN is exactly this plus its id.
    pub nqn_prefix: String,
    pub host_nqn_file: PathBuf,
    pub max_volumes_per_node: i64,
    pub allow_exec: bool,
    pub device_wait: Duration,
    pub command_timeout: Duration,
    pub blank_check_attempts: u32,
    pub blank_check_delay: Duration,
    pub breaker: crate::core::breaker::Settings,
    /// `None`: no orphan cleanup.
    pub orphan_interval: Option<Duration>,
    pub orphan_grace: Duration,
    pub orphan_dry_run: bool,
    pub io_probe_timeout: Duration,
    /// `None`: no periodic health check.
    pub health_interval: Option<Duration>,
    pub node_events: bool,
    pub recover_pods: bool,
    pub topology_from_node_labels: bool,
    pub kubelet_dir: PathBuf,
    /// `/sys` (tests of pure sysfs logic use fixtures instead).
    pub sysfs: PathBuf,
    /// `/proc`.
    pub procfs: PathBuf,
}

impl NodeConfig {
    /// The defaults of a node embedded in a development run (the demo, in-process tests):
    /// the default prefixes, no background loops, no Kubernetes.
    pub fn embedded(
        data_plane: DataPlaneKind,
        loop_root: Option<PathBuf>,
        host_nqn_file: PathBuf,
    ) -> NodeConfig {
        NodeConfig {
            data_plane,
            loop_root,
            loop_backend_roots: Default::default(),
            managed_nqn_prefix: "nqn.2000-02.com.mikrotik:pvc-".into(),
            nqn_prefix: "nqn.2000-02.com.mikrotik:".into(),
            host_nqn_file,
            max_volumes_per_node: 0,
            allow_exec: false,
            device_wait: Duration::from_secs(30),
            command_timeout: Duration::from_secs(120),
            blank_check_attempts: 5,
            blank_check_delay: Duration::from_millis(500),
            breaker: Default::default(),
            orphan_interval: None,
            orphan_grace: Duration::from_secs(600),
            orphan_dry_run: false,
            io_probe_timeout: Duration::from_secs(10),
            health_interval: None,
            node_events: false,
            recover_pods: false,
            topology_from_node_labels: false,
            kubelet_dir: "/var/lib/kubelet".into(),
            sysfs: "/sys".into(),
            procfs: "/proc".into(),
        }
    }
}

impl NodeArgs {
    /// `embedded_loop_root`: the files of `--emulated-rds`, when that runs in this process;
    /// `nqn_prefix`: the (validated) `--nqn-prefix`.
    pub fn validate(
        &self,
        embedded_loop_root: Option<PathBuf>,
        nqn_prefix: &str,
    ) -> Result<NodeConfig, String> {
        fabrics::validate_prefix(&self.managed_nqn_prefix)
            .map_err(|e| format!("--managed-nqn-prefix: {e}"))?;
        if !self.managed_nqn_prefix.starts_with(nqn_prefix) {
            return Err(format!(
                "--managed-nqn-prefix {:?} must start with --nqn-prefix {nqn_prefix:?}: volumes' NQNs are the NQN prefix plus the volume id \
                 (give the node the same --nqn-prefix as the controller)",
                self.managed_nqn_prefix
            ));
        }
        let loop_root = self.loop_root.clone().or(embedded_loop_root);
        if self.data_plane == DataPlaneKind::Loop && loop_root.is_none() {
            return Err("--data-plane loop needs --loop-root (the directory holding the RDS files) or --emulated-rds".into());
        }
        if self.max_volumes_per_node < 0 {
            return Err("--max-volumes-per-node must be 0 (no limit) or positive".into());
        }
        if self.blank_check_attempts == 0 {
            return Err("--blank-check-attempts must be at least 1".into());
        }
        Ok(NodeConfig {
            data_plane: self.data_plane,
            loop_root,
            loop_backend_roots: Default::default(),
            managed_nqn_prefix: self.managed_nqn_prefix.clone(),
            nqn_prefix: nqn_prefix.to_string(),
            host_nqn_file: self.host_nqn_file.clone(),
            max_volumes_per_node: self.max_volumes_per_node,
            allow_exec: self.allow_exec,
            device_wait: Duration::from_secs(self.device_wait_seconds.max(1)),
            command_timeout: Duration::from_secs(self.command_timeout_seconds.max(1)),
            blank_check_attempts: self.blank_check_attempts,
            blank_check_delay: Duration::from_millis(self.blank_check_delay_ms),
            breaker: crate::core::breaker::Settings {
                threshold: self.breaker_failures,
                cool_down: Duration::from_secs(self.breaker_cool_down_seconds),
            },
            orphan_interval: (self.orphan_cleanup_interval_seconds > 0)
                .then(|| Duration::from_secs(self.orphan_cleanup_interval_seconds)),
            orphan_grace: Duration::from_secs(self.orphan_grace_seconds),
            orphan_dry_run: self.orphan_dry_run,
            io_probe_timeout: Duration::from_secs(self.io_probe_timeout_seconds.max(1)),
            health_interval: (self.health_check_interval_seconds > 0)
                .then(|| Duration::from_secs(self.health_check_interval_seconds)),
            node_events: self.node_events,
            recover_pods: self.recover_pods,
            topology_from_node_labels: self.topology_from_node_labels,
            kubelet_dir: self.kubelet_dir.clone(),
            sysfs: "/sys".into(),
            procfs: "/proc".into(),
        })
    }
}
