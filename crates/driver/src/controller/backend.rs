//! The controller's RDS-facing half: the [`Backend`] every controller RPC runs on (its RDS
//! client, settings, per-volume guards, copies and fencing state) and what they all share:
//! the RouterOS version, the managed-disk look, the CSI view of a disk. The RPCs themselves
//! are `impl Backend` blocks in volumes.rs, snapshots.rs and publish.rs.

use std::collections::HashMap;

use csi::v1::{Topology, Volume};
use routeros::{
    client::Rds,
    ops::{Disk, SystemInfo},
    types::{FilePath, Slot},
};
use tokio::sync::OnceCell;

use super::{attachments::Fencing, config::ControllerConfig, copies::Copies};
use crate::{
    core::{context::key, ids, params, snapshots as snap_ids, topology},
    error::ServiceError,
    locks::Locks,
};

/// The controller's RDS-facing half.
pub struct Backend {
    /// The backend's name (docs/topology.md): `default` for the one whose ids are bare slots.
    pub name: String,
    pub rds: Rds,
    pub cfg: ControllerConfig,
    /// Host of the RDS management address (the default data-plane address).
    pub rds_host: String,
    pub topology: HashMap<String, String>,
    pub locks: Locks,
    /// The RDS's RouterOS version, read once on first need (feature checks).
    system: OnceCell<SystemInfo>,
    /// Background copies (snapshots, restores, clones) running in this process.
    pub copies: Copies,
    /// Attachment fencing (ControllerPublish/Unpublish); in-memory until the server sets it.
    /// Shared by every backend of the controller: it is keyed by the full volume ids.
    pub fencing: std::sync::Arc<Fencing>,
    /// New volumes are placed here only when it is named or by weight (0: only when named).
    pub weight: u32,
    /// This backend's connection state (with several backends, a down one fails fast:
    /// fleet.rs).
    pub readiness: crate::readiness::Readiness,
    /// The reconcilers' metrics (reconcile.rs).
    pub heal: crate::metrics::HealMetrics,
    /// Events published recently (one per window, publish.rs `emit`).
    pub events: std::sync::Mutex<crate::core::events::Dedup>,
}

impl Backend {
    pub fn new(
        rds: Rds,
        cfg: ControllerConfig,
        rds_host: String,
        topology: HashMap<String, String>,
    ) -> Backend {
        Backend {
            name: topology::DEFAULT_BACKEND.into(),
            weight: 1,
            readiness: crate::readiness::Readiness::new(crate::readiness::ReadyState::Ready),
            rds,
            cfg,
            rds_host,
            topology,
            locks: Locks::default(),
            system: OnceCell::new(),
            copies: Default::default(),
            fencing: Default::default(),
            heal: Default::default(),
            events: Default::default(),
        }
    }

    /// The id of this backend's slot (volume or snapshot) as CSI sees it: the bare slot on
    /// the default backend, `<name>:<slot>` on the others (docs/topology.md).
    pub fn external(&self, slot: &str) -> String {
        topology::external_id(&self.name, slot)
    }

    /// The slot part of an id when it names this backend (`None`: another backend's id).
    pub fn local<'a>(&self, id: &'a str) -> Option<&'a str> {
        match topology::split_id(id) {
            (backend, local) if backend == self.name => Some(local),
            _ => None,
        }
    }

    /// [`ids::parse_volume_id`] of an id of this backend; another backend's id is `Ok(None)`
    /// (it does not exist here).
    pub fn parse_volume_id(&self, id: &str) -> Result<Option<Slot>, String> {
        if id.is_empty() {
            return ids::parse_volume_id(id);
        }
        self.local(id).map_or(Ok(None), ids::parse_volume_id)
    }

    /// [`snap_ids::parse_snapshot_id`] of an id of this backend, as [`Self::parse_volume_id`].
    pub fn parse_snapshot_id(&self, id: &str) -> Result<Option<Slot>, String> {
        if id.is_empty() {
            return snap_ids::parse_snapshot_id(id);
        }
        self.local(id).map_or(Ok(None), snap_ids::parse_snapshot_id)
    }

    /// The RDS's `/system resource` answer, read once per process; feature checks
    /// derive from it so that no RPC pays a round trip for the version twice.
    pub async fn system(&self) -> Result<&SystemInfo, ServiceError> {
        self.system
            .get_or_try_init(|| async {
                self.rds.system().await.map_err(ServiceError::rds("reading the RouterOS version"))
            })
            .await
    }

    /// RouterOS 7.21+ takes `nvme-tcp-server-nqn`; before, the NQN is the slot name.
    pub async fn server_nqn_supported(&self) -> Result<bool, ServiceError> {
        Ok(self.system().await?.version_number().is_some_and(|v| v >= (7, 21)))
    }

    /// Whether `file` lies under an allowed base path (the only files this driver touches).
    pub(crate) fn is_managed(&self, file: &FilePath) -> bool {
        self.cfg.allowed_base_paths.iter().any(|b| file.is_under(b))
    }

    /// The disk of a managed volume and its file: it exists, is a file disk, and its file is
    /// under an allowed base path (anything else is not a volume of this driver: NOT_FOUND).
    pub(crate) async fn managed_disk(
        &self,
        slot: &Slot,
        doing: &str,
    ) -> Result<(Disk, FilePath), ServiceError> {
        let disk = self
            .rds
            .get_disk(slot)
            .await
            .map_err(ServiceError::rds(format!("{doing} {slot}")))?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("volume {slot} does not exist on the RDS"))
            })?;
        match disk.file.as_deref().and_then(|f| FilePath::new(f).ok()) {
            Some(file) if self.is_managed(&file) => Ok((disk, file)),
            Some(file) => Err(ServiceError::NotFound(format!(
                "disk {slot} uses {}, outside the allowed base paths: it is not a volume of this driver (add its directory with --allowed-base-path to manage it)",
                file.absolute()
            ))),
            None => Err(ServiceError::NotFound(format!(
                "disk {slot} is not a file disk: it is not a volume of this driver"
            ))),
        }
    }

    /// The volume as CSI sees it, its context rebuilt from the disk (same answer on retries).
    pub(crate) fn volume(&self, disk: &Disk, p: Option<&params::VolumeParams>) -> Volume {
        let mut ctx = HashMap::new();
        let rds_address =
            p.and_then(|p| p.rds_address.clone()).unwrap_or_else(|| self.rds_host.clone());
        let nvme_address = p
            .and_then(|p| p.nvme_address.clone())
            .or_else(|| self.cfg.nvme_address.clone())
            .unwrap_or_else(|| rds_address.clone());
        let port = disk.port.or(p.and_then(|p| p.nvme_port)).unwrap_or(self.cfg.nvme_port);
        ctx.insert(key::RDS_ADDRESS.into(), rds_address);
        ctx.insert(key::NVME_ADDRESS.into(), nvme_address);
        ctx.insert(key::NVME_PORT.into(), port.to_string());
        ctx.insert(
            key::NQN.into(),
            disk.nqn.clone().unwrap_or_else(|| format!("{}{}", self.cfg.nqn_prefix, disk.slot)),
        );
        if let Some(file) = &disk.file {
            ctx.insert(key::VOLUME_PATH.into(), format!("/{file}"));
        }
        if self.name != topology::DEFAULT_BACKEND {
            ctx.insert(key::BACKEND.into(), self.name.clone());
        }
        if let Some(p) = p {
            ctx.insert(key::CTRL_LOSS_TMO.into(), p.ctrl_loss_tmo.to_string());
            ctx.insert(key::RECONNECT_DELAY.into(), p.reconnect_delay.to_string());
            if let Some(k) = p.keep_alive_tmo {
                ctx.insert(key::KEEP_ALIVE_TMO.into(), k.to_string());
            }
            ctx.insert(key::MIGRATION_TIMEOUT.into(), p.migration_timeout_seconds.to_string());
            if let Some(fs) = &p.fs_type {
                ctx.insert(key::FS_TYPE.into(), fs.clone());
            }
            if let Some((ns, name)) = &p.pvc {
                ctx.insert(key::PVC_NAMESPACE.into(), ns.clone());
                ctx.insert(key::PVC_NAME.into(), name.clone());
            }
        }
        Volume {
            capacity_bytes: disk.size as i64,
            volume_id: self.external(&disk.slot),
            volume_context: ctx,
            content_source: None,
            accessible_topology: vec![Topology { segments: self.topology.clone() }],
        }
    }
}
