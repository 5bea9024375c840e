//! Controller settings (flags and `RDS_CSI_*` variables) beyond the RDS connection.

use clap::{Args, ValueEnum};
use routeros::{types::FilePath, values::parse_size_arg};

#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Default RDS directory for volume files (StorageClass `volumePath` overrides it).
    #[arg(long, env = "RDS_CSI_VOLUME_PATH", default_value = "/storage-pool/metal-csi")]
    pub volume_path: String,
    /// RDS directories volumes may live in; the driver never creates or deletes files outside
    /// them. Repeatable; default: the volume path.
    #[arg(long = "allowed-base-path", env = "RDS_CSI_ALLOWED_BASE_PATHS", value_delimiter = ',')]
    pub allowed_base_paths: Vec<String>,
    /// NVMe/TCP address nodes connect to (default: the host of the RDS management address).
    #[arg(long, env = "RDS_CSI_NVME_ADDRESS")]
    pub nvme_address: Option<String>,
    #[arg(long, env = "RDS_CSI_NVME_PORT", default_value_t = 4420)]
    pub nvme_port: u16,
    /// Prefix of every NQN this driver creates and manages.
    #[arg(long, env = "RDS_CSI_NQN_PREFIX", default_value = "nqn.2000-02.com.mikrotik:")]
    pub nqn_prefix: String,
    /// Smallest volume (bytes or K/M/G/T, binary).
    #[arg(long, env = "RDS_CSI_MIN_VOLUME_SIZE", default_value = "1G", value_parser = parse_size_arg)]
    pub min_volume_size: u64,
    /// Largest volume (bytes or K/M/G/T, binary).
    #[arg(long, env = "RDS_CSI_MAX_VOLUME_SIZE", default_value = "16T", value_parser = parse_size_arg)]
    pub max_volume_size: u64,
    /// Where attachment fencing reads who holds a volume: kubernetes (VolumeAttachments; the
    /// default, HA-safe) or memory (this process's own grants only: development, with
    /// --emulated-rds the default).
    #[arg(long, env = "RDS_CSI_ATTACHMENT_STATE", value_enum)]
    pub attachment_state: Option<AttachmentState>,
    /// Also fence on the RDS: allow only the attached nodes' host NQNs on each disk
    /// (nvme-tcp-server-allow-host-name), so a node Kubernetes forgot cannot write after it
    /// returns. On by default (one more RouterOS round trip per publish and unpublish);
    /// `--storage-fencing=false` turns it off (docs/kubevirt.md says what protects a volume
    /// then).
    #[arg(
        long,
        env = "RDS_CSI_STORAGE_FENCING",
        num_args = 0..=1,
        default_value_t = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub storage_fencing: bool,
    /// Node ids that ControllerPublishVolume accepts besides the one this process serves,
    /// with `--attachment-state memory` (with Kubernetes, CSINodes say which nodes exist).
    /// Repeatable.
    #[arg(long = "known-node-id", env = "RDS_CSI_KNOWN_NODE_IDS", value_delimiter = ',')]
    pub known_node_ids: Vec<String>,
    /// Allow the snapshot mechanism copy-from (`/disk add copy-from=`), whose effect on a
    /// file's data is unverified on real RouterOS: refused unless set.
    #[arg(long, env = "RDS_CSI_ALLOW_COPY_FROM")]
    pub allow_copy_from: bool,
    /// After start, for this long, VolumeAttachments a previous leader may have granted but
    /// the attacher has not recorded yet also block other nodes.
    #[arg(long, env = "RDS_CSI_ATTACH_SETTLE_SECONDS", default_value_t = 15)]
    pub attach_settle_seconds: u64,
    /// With `--attachment-state kubernetes`: run the background loops (the migration-window
    /// sweep) only on the holder of a Lease, so that several replicas are safe. On by
    /// default; `--leader-election=false` for a single replica that must never wait.
    #[arg(
        long,
        env = "RDS_CSI_LEADER_ELECTION",
        num_args = 0..=1,
        default_value_t = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub leader_election: bool,
    /// Namespace of the Lease (default: `POD_NAMESPACE`, from the downward API).
    #[arg(long, env = "RDS_CSI_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Lease duration: a replica takes over this long after the leader stopped renewing.
    #[arg(long, env = "RDS_CSI_LEADER_ELECTION_LEASE_SECONDS", default_value_t = 15)]
    pub leader_election_lease_seconds: u64,
    /// How long a VolumeAttachment must stay stale (its Node object gone, or, with storage
    /// fencing, its node no longer on the disk's allow list) before it is cleared: the disk
    /// is fenced first, then the VolumeAttachment deleted (0 = never).
    #[arg(long, env = "RDS_CSI_STALE_ATTACHMENT_GRACE_SECONDS", default_value_t = 300)]
    pub stale_attachment_grace_seconds: u64,
    /// How often stale VolumeAttachments are looked for.
    #[arg(long, env = "RDS_CSI_RECONCILE_INTERVAL_SECONDS", default_value_t = 60)]
    pub reconcile_interval_seconds: u64,
    /// How often managed disks and files on the RDS without a PV are looked for (0 = never).
    #[arg(long, env = "RDS_CSI_RDS_ORPHAN_INTERVAL_SECONDS", default_value_t = 900)]
    pub rds_orphan_interval_seconds: u64,
    /// How old (by the time on the RDS) a managed disk or file without a PV must be to count
    /// as an orphan.
    #[arg(long, env = "RDS_CSI_RDS_ORPHAN_GRACE_SECONDS", default_value_t = 3600)]
    pub rds_orphan_grace_seconds: u64,
    /// Delete orphans found by two reports in a row (never one of unknown age). Off by
    /// default: orphans are only reported (log, metric).
    #[arg(long, env = "RDS_CSI_DELETE_RDS_ORPHANS")]
    pub delete_rds_orphans: bool,
    /// The longest a point-in-time copy (snapshot, clone, group snapshot) of a volume that may
    /// be written holds its writes (withdraws its NVMe/TCP export). A copy the measured rate
    /// says cannot finish in time is refused with FAILED_PRECONDITION; 0 refuses every copy of
    /// a published volume (docs/snapshots.md).
    #[arg(long, env = "RDS_CSI_SNAPSHOT_PAUSE_MAX_SECONDS", default_value_t = 10)]
    pub snapshot_pause_max_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttachmentState {
    Kubernetes,
    Memory,
}

/// Validated controller settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub volume_path: FilePath,
    pub allowed_base_paths: Vec<FilePath>,
    pub nvme_address: Option<String>,
    pub nvme_port: u16,
    pub nqn_prefix: String,
    pub min_size: u64,
    pub max_size: u64,
    /// `None`: kubernetes, or memory with --emulated-rds.
    pub attachment_state: Option<AttachmentState>,
    pub storage_fencing: bool,
    pub attach_settle_s: i64,
    pub known_node_ids: Vec<String>,
    pub allow_copy_from: bool,
    /// `None`: no leader election (this process always runs the background loops).
    pub leader_election: Option<LeaderElection>,
    pub reconcile: Reconcile,
    /// `--snapshot-pause-max-seconds`.
    pub pause_max: std::time::Duration,
}

/// The controller's reconcilers (docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconcile {
    pub interval: std::time::Duration,
    /// `None`: stale attachments are never cleared.
    pub stale_attachment_grace: Option<std::time::Duration>,
    /// `None`: no RDS orphan report.
    pub rds_orphan_interval: Option<std::time::Duration>,
    pub rds_orphan_grace_s: i64,
    pub delete_rds_orphans: bool,
}

/// Where and how the controller's instances elect the one that runs the background loops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// `None`: from `POD_NAMESPACE` at start.
    pub namespace: Option<String>,
    pub timing: crate::core::lease::Timing,
}

impl ControllerArgs {
    pub fn validate(&self) -> Result<ControllerConfig, String> {
        let volume_path =
            FilePath::new(&self.volume_path).map_err(|e| format!("--volume-path: {e}"))?;
        let mut allowed = Vec::new();
        for p in &self.allowed_base_paths {
            allowed.push(FilePath::new(p).map_err(|e| format!("--allowed-base-path: {e}"))?);
        }
        if allowed.is_empty() {
            allowed.push(volume_path.clone());
        }
        if !allowed.iter().any(|b| volume_path == *b || volume_path.is_under(b)) {
            return Err(format!(
                "--volume-path {} must be inside an --allowed-base-path",
                volume_path.absolute()
            ));
        }
        crate::core::fabrics::validate_nqn_prefix(&self.nqn_prefix)
            .map_err(|e| format!("--nqn-prefix: {e}"))?;
        if self.min_volume_size == 0 || self.min_volume_size > self.max_volume_size {
            return Err("--min-volume-size must be positive and at most --max-volume-size".into());
        }
        let leader_election = if self.leader_election {
            let timing = crate::core::lease::Timing::for_lease(std::time::Duration::from_secs(
                self.leader_election_lease_seconds.min(3600),
            ))
            .map_err(|e| format!("--leader-election-lease-seconds: {e}"))?;
            let namespace = self.leader_election_namespace.clone().filter(|n| !n.is_empty());
            Some(LeaderElection { namespace, timing })
        } else {
            None
        };
        if self.nvme_port == 0 {
            return Err("--nvme-port must be 1-65535".into());
        }
        Ok(ControllerConfig {
            volume_path,
            allowed_base_paths: allowed,
            nvme_address: self.nvme_address.clone(),
            nvme_port: self.nvme_port,
            nqn_prefix: self.nqn_prefix.clone(),
            min_size: self.min_volume_size,
            max_size: self.max_volume_size,
            attachment_state: self.attachment_state,
            storage_fencing: self.storage_fencing,
            attach_settle_s: self.attach_settle_seconds.min(3600) as i64,
            known_node_ids: self.known_node_ids.iter().filter(|n| !n.is_empty()).cloned().collect(),
            allow_copy_from: self.allow_copy_from,
            leader_election,
            reconcile: Reconcile {
                interval: std::time::Duration::from_secs(self.reconcile_interval_seconds.max(1)),
                stale_attachment_grace: (self.stale_attachment_grace_seconds > 0)
                    .then(|| std::time::Duration::from_secs(self.stale_attachment_grace_seconds)),
                rds_orphan_interval: (self.rds_orphan_interval_seconds > 0)
                    .then(|| std::time::Duration::from_secs(self.rds_orphan_interval_seconds)),
                rds_orphan_grace_s: self.rds_orphan_grace_seconds.min(i64::MAX as u64) as i64,
                delete_rds_orphans: self.delete_rds_orphans,
            },
            pause_max: std::time::Duration::from_secs(self.snapshot_pause_max_seconds.min(3600)),
        })
    }
}
