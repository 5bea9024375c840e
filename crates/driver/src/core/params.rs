//! StorageClass parameters of CreateVolume (docs/storageclass.md). Unknown or malformed keys are
//! errors that name the key and the accepted form.

use std::{collections::HashMap, net::IpAddr};

use routeros::types::FilePath;

/// Parsed parameters, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParams {
    /// Directory on the RDS for the backing file (must be under an allowed base path).
    pub volume_path: FilePath,
    /// NVMe/TCP data-plane address for nodes (a separate storage IP is common).
    pub nvme_address: Option<String>,
    pub nvme_port: Option<u16>,
    pub ctrl_loss_tmo: i32,
    pub reconnect_delay: u32,
    pub keep_alive_tmo: Option<u32>,
    pub migration_timeout_seconds: u32,
    pub fs_type: Option<String>,
    /// `(namespace, name)` from external-provisioner's `--extra-create-metadata`.
    pub pvc: Option<(String, String)>,
    /// The Go driver's `rdsAddress` (kept for its StorageClasses).
    pub rds_address: Option<String>,
    /// RouterOS `compress` (7.18+); mutable later with ControllerModifyVolume.
    pub compress: Option<bool>,
    /// `layout: subvolume`: the volume lives in its own btrfs subvolume (RouterOS 7.18+), so
    /// its snapshots and clones are btrfs snapshots (docs/snapshots.md).
    pub subvolume: bool,
}

pub const KEYS: &[&str] = &[
    "volumePath",
    "nvmeAddress",
    "nvmePort",
    "ctrlLossTmo",
    "reconnectDelay",
    "keepAliveTmo",
    "migrationTimeoutSeconds",
    "compress",
    "layout",
    "csi.storage.k8s.io/fstype",
    "csi.storage.k8s.io/pvc/name",
    "csi.storage.k8s.io/pvc/namespace",
    "csi.storage.k8s.io/pv/name",
    "rdsAddress",
    "backend",
];

fn int<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    key: &str,
    value: &str,
    min: T,
    max: T,
    form: &str,
) -> Result<T, String> {
    match value.trim().parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(format!("parameter {key}={value:?} is invalid: expected {form}")),
    }
}

/// Parses `parameters`; `default_path` applies when `volumePath` is absent; `allowed` are the
/// base paths volumes may live under.
pub fn parse(
    parameters: &HashMap<String, String>,
    default_path: &FilePath,
    allowed: &[FilePath],
) -> Result<VolumeParams, String> {
    let mut p = VolumeParams {
        volume_path: default_path.clone(),
        nvme_address: None,
        nvme_port: None,
        ctrl_loss_tmo: -1,
        reconnect_delay: 5,
        keep_alive_tmo: None,
        migration_timeout_seconds: 300,
        fs_type: None,
        pvc: None,
        rds_address: None,
        compress: None,
        subvolume: false,
    };
    let (mut pvc_name, mut pvc_ns) = (None, None);
    let mut keys: Vec<&String> = parameters.keys().collect();
    keys.sort();
    for key in keys {
        let value = &parameters[key];
        match key.as_str() {
            "volumePath" => {
                p.volume_path = FilePath::new(value).map_err(|e| format!("parameter volumePath: {e}; expected an RDS directory such as /storage-pool/metal-csi"))?;
            }
            "nvmeAddress" => {
                value.parse::<IpAddr>().map_err(|_| format!("parameter nvmeAddress={value:?} is invalid: expected an IP address (nodes connect to it literally)"))?;
                p.nvme_address = Some(value.clone());
            }
            "rdsAddress" => p.rds_address = Some(value.clone()),
            // Which RDS takes the volume: read by the controller's placement (docs/topology.md).
            "backend" => {}
            "layout" => {
                p.subvolume = match value.as_str() {
                    "file" => false,
                    "subvolume" => true,
                    other => {
                        return Err(format!(
                            "parameter layout={other:?} is invalid: use file (default: a file in volumePath) or subvolume \
                             (a btrfs subvolume per volume; volumePath must be the mount point of a btrfs pool, RouterOS 7.18+)"
                        ));
                    }
                }
            }
            "compress" => p.compress = Some(crate::core::mutable::compress(value)?),
            "nvmePort" => p.nvme_port = Some(int(key, value, 1u16, 65535, "a TCP port 1-65535")?),
            "ctrlLossTmo" => {
                p.ctrl_loss_tmo =
                    int(key, value, -1i32, i32::MAX, "seconds >= -1 (-1 = retry forever)")?
            }
            "reconnectDelay" => {
                p.reconnect_delay = int(key, value, 1u32, 3600, "seconds between 1 and 3600")?
            }
            "keepAliveTmo" => {
                p.keep_alive_tmo = Some(int(key, value, 0u32, 3600, "seconds between 0 and 3600")?)
            }
            "migrationTimeoutSeconds" => {
                p.migration_timeout_seconds =
                    int(key, value, 30u32, 3600, "seconds between 30 and 3600")?
            }
            "csi.storage.k8s.io/fstype" => match value.as_str() {
                "ext4" | "xfs" => p.fs_type = Some(value.clone()),
                other => {
                    return Err(format!(
                        "parameter csi.storage.k8s.io/fstype={other:?} is not supported: use ext4 or xfs"
                    ));
                }
            },
            "csi.storage.k8s.io/pvc/name" => pvc_name = Some(value.clone()),
            "csi.storage.k8s.io/pvc/namespace" => pvc_ns = Some(value.clone()),
            "csi.storage.k8s.io/pv/name" => {}
            // The Go driver declared these and ignored them; a StorageClass that sets them
            // asked for something it never got.
            "fsType" => {
                return Err(format!(
                    "parameter fsType={value:?} is the Go driver's, which never formatted with it: use csi.storage.k8s.io/fstype (ext4 or xfs)"
                ));
            }
            "sshPort" => {
                return Err(format!(
                    "parameter sshPort={value:?} is the Go driver's, which ignored it: the RDS SSH port is the controller's --rds-address HOST:PORT (chart value rds.address)"
                ));
            }
            "nqnPrefix" => {
                return Err(format!(
                    "parameter nqnPrefix={value:?} is the Go driver's, which ignored it: NQN prefixes are per driver, --nqn-prefix on the controller and --managed-nqn-prefix on the nodes (chart values controller.nqnPrefix, node.managedNqnPrefix)"
                ));
            }
            other => {
                return Err(format!(
                    "unknown StorageClass parameter {other:?}; accepted: {}",
                    KEYS.join(", ")
                ));
            }
        }
    }
    if !allowed.iter().any(|base| p.volume_path == *base || p.volume_path.is_under(base)) {
        let bases: Vec<String> = allowed.iter().map(FilePath::absolute).collect();
        return Err(format!(
            "volumePath {} is outside the allowed base paths ({}); ask the operator to add it with --allowed-base-path",
            p.volume_path.absolute(),
            bases.join(", ")
        ));
    }
    if let (Some(ns), Some(name)) = (pvc_ns, pvc_name) {
        p.pvc = Some((ns, name));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> FilePath {
        FilePath::new(s).unwrap()
    }

    fn run(pairs: &[(&str, &str)]) -> Result<VolumeParams, String> {
        let m = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(&m, &path("/storage-pool/metal-csi"), &[path("/storage-pool")])
    }

    #[test]
    fn defaults() {
        let p = run(&[]).unwrap();
        assert_eq!(
            (
                p.volume_path.absolute().as_str(),
                p.ctrl_loss_tmo,
                p.reconnect_delay,
                p.migration_timeout_seconds
            ),
            ("/storage-pool/metal-csi", -1, 5, 300)
        );
    }

    #[test]
    fn every_key() {
        let p = run(&[
            ("volumePath", "/storage-pool/fast"),
            ("nvmeAddress", "10.0.0.5"),
            ("nvmePort", "4421"),
            ("ctrlLossTmo", "600"),
            ("reconnectDelay", "2"),
            ("keepAliveTmo", "10"),
            ("migrationTimeoutSeconds", "120"),
            ("csi.storage.k8s.io/fstype", "xfs"),
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/pvc/namespace", "apps"),
            ("csi.storage.k8s.io/pv/name", "pvc-x"),
            ("rdsAddress", "10.0.0.1"),
        ])
        .unwrap();
        assert_eq!(p.volume_path.as_str(), "storage-pool/fast");
        assert_eq!(
            (p.nvme_port, p.keep_alive_tmo, p.fs_type.as_deref()),
            (Some(4421), Some(10), Some("xfs"))
        );
        assert_eq!(p.pvc, Some(("apps".into(), "data".into())));
    }

    #[test]
    fn errors_name_the_key_and_the_form() {
        let cases = [
            (("color", "blue"), "unknown StorageClass parameter \"color\""),
            (("nvmePort", "0"), "a TCP port 1-65535"),
            (("ctrlLossTmo", "-2"), ">= -1"),
            (("reconnectDelay", "0"), "between 1 and 3600"),
            (("migrationTimeoutSeconds", "10"), "between 30 and 3600"),
            (("nvmeAddress", "rds.local"), "IP address"),
            (("csi.storage.k8s.io/fstype", "btrfs"), "use ext4 or xfs"),
            (("csi.storage.k8s.io/fstype", "ext3"), "use ext4 or xfs"),
            (("fsType", "xfs"), "use csi.storage.k8s.io/fstype"),
            (("sshPort", "22"), "--rds-address HOST:PORT"),
            (("nqnPrefix", "nqn.2000-02.com.mikrotik:"), "--nqn-prefix"),
            (("volumePath", "/other/place"), "outside the allowed base paths"),
            (("volumePath", "/storage-pool/../etc"), "volumePath"),
        ];
        for ((k, v), want) in cases {
            let err = run(&[(k, v)]).unwrap_err();
            assert!(err.contains(want), "{k}={v}: {err}");
        }
    }
}
