//! The data plane seen from the node's RPCs: attach a volume, find its device, detach it.
//! Everything above this (format, mount, publish, stats) is the same code for both planes.

use std::collections::HashMap;

use routeros::types::Nqn;

use super::{
    host::{BlockDevice, Host, Managed},
    loopdev::LoopPlane,
    nvme::{self, NvmePlane},
};
use crate::{core::context::key, error::ServiceError};

#[derive(Debug, Clone)]
pub enum DataPlane {
    Nvme(NvmePlane),
    Loop(LoopPlane),
}

impl DataPlane {
    pub fn name(&self) -> &'static str {
        match self {
            DataPlane::Nvme(_) => "nvme-tcp",
            DataPlane::Loop(_) => "loop",
        }
    }

    /// Attaches `volume_id` (idempotent: an attached volume is reused after checking it).
    /// With storage fencing the controller names, in the publish context, the host NQN the
    /// node must connect with (the one it allowed on the disk); otherwise the node's own.
    pub async fn attach(
        &self,
        host: &Host,
        volume_id: &str,
        ctx: &HashMap<String, String>,
        publish: &HashMap<String, String>,
    ) -> Result<BlockDevice, ServiceError> {
        let volume_id = slot_of(volume_id);
        match self {
            DataPlane::Nvme(p) => {
                let host_nqn = match publish.get(crate::core::context::publish::HOST_NQN) {
                    Some(n) => Nqn::new(n).map_err(|e| {
                        ServiceError::InvalidArgument(format!("publish_context hostNqn: {e}"))
                    })?,
                    None => p.host_nqn.clone(),
                };
                // ControllerPublishVolume's answer is the newer word on where to connect.
                let mut merged = ctx.clone();
                // Reconnect parameters there are ControllerModifyVolume's (the volume context is
                // immutable).
                for k in [
                    key::NVME_ADDRESS,
                    key::NVME_PORT,
                    key::NQN,
                    key::CTRL_LOSS_TMO,
                    key::RECONNECT_DELAY,
                    key::KEEP_ALIVE_TMO,
                ] {
                    if let Some(v) = publish.get(k) {
                        merged.insert(k.to_string(), v.clone());
                    }
                }
                let c = nvme::connect_params(&merged, &p.managed_prefix, &host_nqn)?;
                if !p.is_volume_nqn(volume_id, c.nqn.as_str()) {
                    return Err(ServiceError::InvalidArgument(format!(
                        "volume_context nqn {} is not the NQN of volume {volume_id} (it must be exactly {}{volume_id}, and the id a pvc-<uuid>); this node never connects to it",
                        c.nqn, p.nqn_prefix
                    )));
                }
                p.attach(host, &c).await
            }
            DataPlane::Loop(p) => p.attach(host, volume_id, ctx).await,
        }
    }

    /// The attached device of `volume_id`, if any.
    pub fn find(&self, host: &Host, volume_id: &str) -> Option<BlockDevice> {
        let volume_id = slot_of(volume_id);
        match self {
            DataPlane::Nvme(p) => p.find(host, volume_id).and_then(|(_, d)| d),
            DataPlane::Loop(p) => p.find(host, volume_id),
        }
    }

    /// The volume the attached device `mm` belongs to, when it is one of this plane's.
    pub fn owner(&self, host: &Host, mm: (u32, u32)) -> Option<String> {
        match self {
            DataPlane::Nvme(p) => p.owner(host, mm),
            DataPlane::Loop(p) => p.owner(host, mm),
        }
    }

    /// Whether anything of `volume_id` is attached (an NVMe controller without a namespace counts).
    pub fn attached(&self, host: &Host, volume_id: &str) -> bool {
        let volume_id = slot_of(volume_id);
        match self {
            DataPlane::Nvme(p) => p.find(host, volume_id).is_some(),
            DataPlane::Loop(p) => p.find(host, volume_id).is_some(),
        }
    }

    /// Detaches whatever of `volume_id` is attached; a failure is an error.
    pub async fn detach(&self, host: &Host, volume_id: &str) -> Result<(), ServiceError> {
        let volume_id = slot_of(volume_id);
        match self {
            DataPlane::Nvme(p) => match p.nqn_of(host, volume_id) {
                Some(nqn) => p.detach(host, &nqn).await,
                None => Ok(()),
            },
            DataPlane::Loop(p) => match p.find(host, volume_id) {
                Some(dev) => p.detach(host, &dev).await,
                None => Ok(()),
            },
        }
    }

    /// Lets the device see a grown volume.
    pub async fn refresh_size(
        &self,
        host: &Host,
        volume_id: &str,
        dev: &BlockDevice,
    ) -> Result<(), ServiceError> {
        let volume_id = slot_of(volume_id);
        match self {
            DataPlane::Nvme(p) => match p.nqn_of(host, volume_id) {
                Some(nqn) => p.rescan(host, &nqn).await,
                None => Ok(()),
            },
            DataPlane::Loop(p) => p.refresh_size(host, dev).await,
        }
    }

    /// Everything attached that this plane manages, and (second list) what is inside the
    /// managed prefix but not in a managed volume's exact form: never touched.
    pub fn managed(&self, host: &Host) -> (Vec<Managed>, Vec<String>) {
        match self {
            DataPlane::Nvme(p) => p.managed(host),
            DataPlane::Loop(p) => p.managed(host),
        }
    }

    /// The device path prefix of this plane's devices (`/dev/nvme`, `/dev/loop`).
    pub fn device_prefix(&self) -> &'static str {
        match self {
            DataPlane::Nvme(_) => "/dev/nvme",
            DataPlane::Loop(_) => "/dev/loop",
        }
    }

    /// Why the volume's connection is not healthy, if it is not.
    pub fn abnormal(&self, host: &Host, volume_id: &str) -> Option<String> {
        let volume_id = slot_of(volume_id);
        match self {
            DataPlane::Nvme(p) => match p.nqn_of(host, volume_id) {
                Some(nqn) => p.abnormal(host, &nqn),
                None => Some(format!("volume {volume_id} has no NVMe/TCP connection on this node")),
            },
            DataPlane::Loop(p) => p
                .find(host, volume_id)
                .is_none()
                .then(|| format!("volume {volume_id} has no loop device on this node")),
        }
    }
}

/// The slot part of a volume id (`rds-b:pvc-1` → `pvc-1`): devices, NQNs and files are
/// named by the slot on every backend (docs/topology.md).
fn slot_of(volume_id: &str) -> &str {
    crate::core::topology::split_id(volume_id).1
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The second NQN guard refuses, before anything is written to /dev/nvme-fabrics, a volume
    /// context naming a subsystem that is not exactly `<nqn prefix><volume id>`.
    #[tokio::test]
    async fn only_the_volumes_own_nqn_is_ever_connected() {
        let dir = tempfile::tempdir().unwrap();
        let fabrics = dir.path().join("nvme-fabrics");
        std::fs::write(&fabrics, "").unwrap();
        let plane = DataPlane::Nvme(NvmePlane {
            managed_prefix: "nqn.2000-02.com.mikrotik:pvc-".into(),
            nqn_prefix: "nqn.2000-02.com.mikrotik:".into(),
            host_nqn: Nqn::new("nqn.2014-08.org.nvmexpress:uuid:h").unwrap(),
            fabrics: fabrics.clone(),
            device_wait: Duration::from_millis(10),
        });
        let host = Host {
            sysfs: dir.path().join("sys"),
            procfs: dir.path().join("proc"),
            command_timeout: Duration::from_secs(1),
        };
        let id = "pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
        let other = "pvc-11111111-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
        let ctx = |nqn: &str| {
            HashMap::from([
                ("nqn".to_string(), nqn.to_string()),
                ("nvmeAddress".to_string(), "10.0.0.5".to_string()),
            ])
        };
        for (vid, nqn) in [
            (id, format!("nqn.2000-02.com.mikrotik:{other}")),
            (id, format!("nqn.2000-02.com.mikrotik:{id}-x")),
            ("pvc-not-a-uuid", "nqn.2000-02.com.mikrotik:pvc-not-a-uuid".to_string()),
        ] {
            let err = plane.attach(&host, vid, &ctx(&nqn), &HashMap::new()).await.unwrap_err();
            assert!(matches!(err, ServiceError::InvalidArgument(_)), "{vid} {nqn}: {err}");
        }
        assert_eq!(std::fs::read_to_string(&fabrics).unwrap(), "", "nothing was connected");
    }
}
