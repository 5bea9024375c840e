//! `rds-csi doctor`: checks what the driver needs, one line each, OK / WARN / FAIL / SKIP with
//! what was found and, when it is not OK, the fix (docs/troubleshooting.md). Exit code 1 when
//! any check fails. Every call has the tool's deadline; nothing is changed anywhere.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use routeros::{ops::SystemInfo, rest::TlsTrust, ssh::HostKeyPolicy};
use serde::Serialize;

use super::{
    DoctorArgs,
    cluster::ClusterReader,
    session::{Session, bounded, now_s},
    table::{print, size},
};
use crate::{core::fabrics::validate_nqn_prefix, rds::RdsConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub status: Status,
    pub found: String,
    /// What to do, when not OK.
    pub fix: Option<String>,
}

fn check(
    check: &'static str,
    status: Status,
    found: impl Into<String>,
    fix: Option<&str>,
) -> Check {
    Check { check, status, found: found.into(), fix: fix.map(str::to_string) }
}

/// The RouterOS features the driver uses and the version each needs (docs/routeros.md).
pub const FEATURES: [((u32, u32), &str); 5] = [
    ((7, 15), ":serialize (JSON reads over SSH)"),
    ((7, 16), "file times (last-modified: orphan ages)"),
    ((7, 18), "compress, btrfs layout (subvolumes)"),
    ((7, 21), "nvme-tcp-server-nqn"),
    ((7, 23), "file-copy snapshots"),
];

/// The version check: which features this RouterOS has and lacks.
pub fn version_check(sys: &SystemInfo) -> Check {
    let Some(v) = sys.version_number() else {
        return check(
            "routeros-version",
            Status::Warn,
            format!("cannot read {:?}", sys.version),
            None,
        );
    };
    let has: Vec<&str> = FEATURES.iter().filter(|(need, _)| v >= *need).map(|(_, f)| *f).collect();
    let lacks: Vec<String> = FEATURES
        .iter()
        .filter(|(need, _)| v < *need)
        .map(|(need, f)| format!("{f} ({}.{}+)", need.0, need.1))
        .collect();
    let found = format!(
        "{} on {}; has: {}{}",
        sys.version,
        sys.board,
        if has.is_empty() { "-".to_string() } else { has.join(", ") },
        if lacks.is_empty() { String::new() } else { format!("; lacks: {}", lacks.join(", ")) }
    );
    if v < (7, 15) {
        let fix = "RouterOS without :serialize: run the driver with --rds-read-format detail, or upgrade RouterOS";
        check("routeros-version", Status::Warn, found, Some(fix))
    } else {
        check("routeros-version", Status::Ok, found, None)
    }
}

/// The clock check: the RDS's time (read as UTC, as the orphan report reads file times)
/// against this machine's.
pub fn clock_check(rds_time: Option<i64>, zone: &str, local: i64) -> Check {
    let Some(t) = rds_time else {
        return check("clock", Status::Warn, "the RDS clock could not be read", None);
    };
    let skew = t - local;
    let found = format!("RDS clock {skew:+} s from this machine (zone {zone})");
    if skew.abs() <= 60 {
        check("clock", Status::Ok, found, None)
    } else {
        let fix = "the orphan report reads RDS times as UTC: run the RDS clock in UTC with NTP \
                   (/system ntp client, /system clock set time-zone-name=UTC), or keep \
                   --rds-orphan-grace-seconds well above the offset";
        check("clock", Status::Warn, found, Some(fix))
    }
}

/// The NQN prefixes: valid, and the node's managed prefix inside the controller's and more
/// specific than a vendor prefix; counts the subsystems on this node outside it.
pub fn prefix_check(nqn_prefix: &str, managed: &str, sysfs: &Path) -> Check {
    if let Err(e) = validate_nqn_prefix(nqn_prefix) {
        return check(
            "nqn-prefix",
            Status::Fail,
            format!("--nqn-prefix: {e}"),
            Some("fix --nqn-prefix"),
        );
    }
    if !managed.starts_with(nqn_prefix) || managed.len() <= nqn_prefix.len() {
        let found =
            format!("managed prefix {managed:?} is not a strict extension of {nqn_prefix:?}");
        return check(
            "nqn-prefix",
            Status::Fail,
            found,
            Some("set --managed-nqn-prefix to --nqn-prefix plus `pvc-`"),
        );
    }
    let (mut ours, mut others) = (0, 0);
    if let Ok(dir) = std::fs::read_dir(sysfs.join("class/nvme-subsystem")) {
        for e in dir.flatten() {
            let nqn = std::fs::read_to_string(e.path().join("subsysnqn")).unwrap_or_default();
            if nqn.trim().starts_with(managed) { ours += 1 } else { others += 1 }
        }
    }
    let found = format!(
        "{managed}*: {ours} subsystem(s) on this node managed, {others} other(s) never touched"
    );
    check("nqn-prefix", Status::Ok, found, None)
}

/// nvme-tcp and nvme-fabrics, loaded or built in (both show in /sys/module).
pub fn modules_check(sysfs: &Path, emulated: bool) -> Check {
    let missing: Vec<&str> = ["nvme_tcp", "nvme_fabrics"]
        .into_iter()
        .filter(|m| !sysfs.join("module").join(m).exists())
        .collect();
    if missing.is_empty() {
        return check("kernel-modules", Status::Ok, "nvme_tcp, nvme_fabrics loaded", None);
    }
    let found = format!("not loaded: {}", missing.join(", "));
    // The emulator's loop data plane needs neither.
    let status = if emulated { Status::Warn } else { Status::Fail };
    let fix = "on every node: modprobe nvme-tcp (pulls in nvme-fabrics), and add nvme-tcp to /etc/modules-load.d/ so it loads at boot";
    check("kernel-modules", status, found, Some(fix))
}

pub fn host_nqn_check(file: &Path) -> Check {
    match std::fs::read_to_string(file) {
        Ok(s) => match routeros::types::Nqn::new(s.trim()) {
            Ok(n) => check("host-nqn", Status::Ok, format!("{}: {n}", file.display()), None),
            Err(e) => check(
                "host-nqn",
                Status::Fail,
                format!("{}: {e}", file.display()),
                Some(
                    "write a valid NQN there (nvme gen-hostnqn > /etc/nvme/hostnqn) and restart the node plugin",
                ),
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => check(
            "host-nqn",
            Status::Warn,
            format!("{}: none yet", file.display()),
            Some(
                "the node plugin generates and writes one at its start; nothing to do unless other NVMe tools need it first",
            ),
        ),
        Err(e) => check(
            "host-nqn",
            Status::Fail,
            format!("{}: {e}", file.display()),
            Some("make the file readable"),
        ),
    }
}

/// The sidecars the chart runs and the oldest version the driver's features need.
const SIDECARS: [(&str, (u32, u32), &str); 4] = [
    ("csi-provisioner", (5, 0), "VolumeAttributesClass"),
    ("csi-attacher", (4, 0), "attach"),
    ("csi-resizer", (1, 11), "VolumeAttributesClass"),
    ("csi-snapshotter", (8, 2), "group snapshots"),
];

/// `registry/sig-storage/csi-provisioner:v5.3.0` → ("csi-provisioner", Some((5, 3))).
fn image_version(image: &str) -> (String, Option<(u32, u32)>) {
    let (path, tag) = image.rsplit_once(':').unwrap_or((image, ""));
    let name = path.rsplit('/').next().unwrap_or(path).to_string();
    let mut nums = tag.trim_start_matches('v').split('.').map(|p| p.parse::<u32>().ok());
    let v = match (nums.next().flatten(), nums.next().flatten()) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    (name, v)
}

pub fn sidecars_check(images: &[(String, String, String)]) -> Check {
    let mut found = Vec::new();
    let mut old = Vec::new();
    for (name, min, what) in SIDECARS {
        let versions: Vec<Option<(u32, u32)>> = images
            .iter()
            .map(|(_, _, i)| image_version(i))
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        let Some(v) = versions.iter().flatten().min() else { continue };
        found.push(format!("{name} v{}.{}", v.0, v.1));
        if *v < min {
            old.push(format!("{name} v{}.{} < v{}.{} ({what})", v.0, v.1, min.0, min.1));
        }
    }
    if found.is_empty() {
        return check(
            "sidecars",
            Status::Warn,
            "no sidecar containers found",
            Some("install the chart (deploy/helm/rds-csi)"),
        );
    }
    if old.is_empty() {
        check("sidecars", Status::Ok, found.join(", "), None)
    } else {
        check(
            "sidecars",
            Status::Warn,
            old.join("; "),
            Some("use the chart's sidecar images (values.yaml sidecars.*)"),
        )
    }
}

pub async fn run(args: &DoctorArgs) -> Result<ExitCode, String> {
    let t = &args.tool;
    let emulated = t.emulated_rds.is_some();
    let mut checks = Vec::new();
    // A node pod has no RDS credentials: its doctor runs the node's and the cluster's checks.
    let session = if emulated || t.rds.validate()?.is_some() {
        let s = Session::open(t).await?;
        rds_checks(&s, &mut checks).await;
        Some(s)
    } else {
        let why = "no RDS connection configured here (a node pod has none): run doctor in the controller pod for these";
        for name in ["rds-reachable", "host-key", "routeros-version", "pool-space", "clock"] {
            checks.push(check(name, Status::Skip, why, None));
        }
        None
    };
    let cfg = t.controller.validate()?;
    let (cluster, cluster_note) = match &session {
        Some(s) => (None, s.cluster_note.clone()),
        None if t.no_cluster => (None, Some("--no-cluster".to_string())),
        None => {
            match ClusterReader::connect(t.kubeconfig.as_deref(), &t.driver_name, t.call_timeout())
                .await
            {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e)),
            }
        }
    };
    let cluster = session.as_ref().and_then(|s| s.cluster.as_ref()).or(cluster.as_ref());

    // The NVMe/TCP port, from this node.
    let host = cfg.nvme_address.clone().or_else(|| session.as_ref().map(|s| s.rds_config.host()));
    let emulated_export =
        session.as_ref().and_then(|s| s.emulator.as_ref()).and_then(|e| e.nvmet).is_some();
    checks.push(if emulated && !emulated_export {
        check("nvme-tcp-port", Status::Skip, "the emulated RDS exports through loop devices here", None)
    } else if let Some(host) = host {
        let target = format!("{host}:{}", cfg.nvme_port);
        match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(&target)).await {
            Ok(Ok(_)) => check("nvme-tcp-port", Status::Ok, format!("{target} accepts connections"), None),
            Ok(Err(e)) => check("nvme-tcp-port", Status::Fail, format!("{target}: {e}"), Some(
                "nodes connect there: check --nvme-address/--nvme-port, that the RDS exports over NVMe/TCP on that port, and firewalls between the nodes and the RDS")),
            Err(_) => check("nvme-tcp-port", Status::Fail, format!("{target}: no answer within 3 s"), Some(
                "a firewall drops the packets, or the address is wrong: check --nvme-address")),
        }
    } else {
        check("nvme-tcp-port", Status::Skip, "no address: pass --nvme-address (the RDS's NVMe/TCP address)", None)
    });
    checks.push(modules_check(&args.sysfs, emulated));
    checks.push(host_nqn_check(&args.host_nqn_file));
    checks.push(prefix_check(&cfg.nqn_prefix, &args.managed_nqn_prefix, &args.sysfs));

    // The cluster side.
    match cluster {
        None => {
            let why = cluster_note.unwrap_or_default();
            checks.push(check("csidriver", Status::Skip, why.clone(), None));
            checks.push(check("sidecars", Status::Skip, why, None));
        }
        Some(c) => {
            checks.push(match c.csidriver().await {
                Ok(Some(d)) => {
                    let spec = d.spec;
                    let attach = spec.attach_required.unwrap_or(true);
                    let pod_info = spec.pod_info_on_mount.unwrap_or(false);
                    let found = format!("{}: attachRequired={attach}, podInfoOnMount={pod_info}", t.driver_name);
                    if attach {
                        check("csidriver", Status::Ok, found, None)
                    } else {
                        check("csidriver", Status::Fail, found, Some("attachRequired must be true: fencing runs in ControllerPublishVolume; reinstall the chart's CSIDriver"))
                    }
                }
                Ok(None) => check("csidriver", Status::Fail, format!("no CSIDriver {}", t.driver_name), Some(
                    "install the chart (it creates the CSIDriver), or check --driver-name")),
                Err(e) => check("csidriver", Status::Warn, e, None),
            });
            checks.push(match &args.namespace {
                None => check(
                    "sidecars",
                    Status::Skip,
                    "not in a pod (pass --namespace to read the driver's pods)",
                    None,
                ),
                Some(ns) => match c.images(ns).await {
                    Ok(images) => sidecars_check(&images),
                    Err(e) => check("sidecars", Status::Warn, e, None),
                },
            });
        }
    }

    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    print(t.output, &checks, || {
        let cells: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                let status = serde_json::to_value(c.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let mut found = c.found.clone();
                if let Some(fix) = &c.fix {
                    found.push_str(&format!("\n{:>w$}fix: {fix}", "", w = 24));
                }
                vec![status, c.check.to_string(), found]
            })
            .collect();
        let mut out = String::new();
        for row in cells {
            out.push_str(&format!("{:<5} {:<17} {}\n", row[0], row[1], row[2]));
        }
        out.push_str(&format!("{} check(s): {failed} failed, {warned} warning(s)\n", checks.len()));
        out
    })?;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The RDS side: reachable, host key, version and features, pool space, clock.
async fn rds_checks(s: &Session, checks: &mut Vec<Check>) {
    // RDS reachable, and the host key it presented.
    let started = Instant::now();
    let sys = bounded(s.call_timeout, "reading /system resource", s.rds.system()).await;
    let key = match &s.rds_config {
        RdsConfig::Ssh(o) => match &o.host_key {
            HostKeyPolicy::InsecureSkip => Some("not checked (--rds-insecure-skip-host-key-check)"),
            _ => None,
        },
        RdsConfig::Rest(o) => matches!(o.trust, TlsTrust::InsecureSkip)
            .then_some("not checked (--rds-insecure-skip-host-key-check)"),
    };
    match &sys {
        Ok(sys) => {
            let found = format!(
                "{} ({}) answered in {} ms",
                rds_address(&s.rds_config),
                sys.identity,
                started.elapsed().as_millis()
            );
            checks.push(check("rds-reachable", Status::Ok, found, None));
            checks.push(match key {
                Some(k) => check("host-key", Status::Warn, k, Some("pin the RDS host key: --rds-host-key SHA256:... (ssh-keygen -lf), chart rds.hostKey")),
                None => check("host-key", Status::Ok, "matches the pinned key", None),
            });
            checks.push(version_check(sys));
        }
        Err(e) if e.contains("does not match the pinned") => {
            checks.push(check("rds-reachable", Status::Ok, rds_address(&s.rds_config), None));
            checks.push(check("host-key", Status::Fail, e.clone(), Some(
                "the RDS presented another host key: if it was re-keyed on purpose, update --rds-host-key (chart rds.hostKey) \
                 with `ssh-keygen -lf` of its new key; if not, someone may be impersonating it: do not connect")));
        }
        Err(e) => {
            checks.push(check("rds-reachable", Status::Fail, e.clone(), Some(
                "check --rds-address (or --rds-rest-url), that the RouterOS ssh (or www-ssl) service is enabled for this \
                 address (/ip service), the user and key (or password file), and the network path")));
        }
    }
    let reachable = sys.is_ok();

    // Pool space.
    if reachable {
        let mount = s.cfg.volume_path.as_str().split('/').next().unwrap_or_default().to_string();
        checks.push(match bounded(s.call_timeout, "reading the pool", s.rds.pool(&mount)).await {
            Ok(Some(p)) => {
                let found = format!("{mount}: {} free of {}", size(p.free), size(p.size));
                if p.free < s.cfg.min_size {
                    check("pool-space", Status::Fail, found, Some("free space on the pool: delete orphans (rds-csi orphans), old snapshots, or grow the pool"))
                } else if p.free < p.size / 10 {
                    check("pool-space", Status::Warn, found, Some("less than 10% free: new volumes and snapshots may fail with RESOURCE_EXHAUSTED"))
                } else {
                    check("pool-space", Status::Ok, found, None)
                }
            }
            Ok(None) => check("pool-space", Status::Fail, format!("no pool mounted at {mount}"), Some("set --volume-path to a directory on a mounted pool (/disk print where mount-point)")),
            Err(e) => check("pool-space", Status::Fail, e, None),
        });
        checks.push(match bounded(s.call_timeout, "reading /system clock", s.rds.clock()).await {
            Ok(c) => clock_check(c.time, &c.zone, now_s()),
            Err(e) => check("clock", Status::Warn, e, None),
        });
    } else {
        checks.push(check("pool-space", Status::Skip, "the RDS is not reachable", None));
        checks.push(check("clock", Status::Skip, "the RDS is not reachable", None));
    }
}

fn rds_address(c: &RdsConfig) -> String {
    match c {
        RdsConfig::Ssh(o) => format!("ssh {}", o.address),
        RdsConfig::Rest(o) => format!("rest {}", o.base_url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(version: &str) -> SystemInfo {
        SystemInfo { version: version.into(), board: "RDS2216".into(), identity: "rds".into() }
    }

    #[test]
    fn versions_gate_features() {
        let c = version_check(&sys("7.21 (stable)"));
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.found.contains("has: :serialize")
                && c.found.contains("lacks: file-copy snapshots (7.23+)"),
            "{}",
            c.found
        );
        let old = version_check(&sys("7.14.3 (stable)"));
        assert_eq!(old.status, Status::Warn);
        assert!(old.fix.unwrap().contains("--rds-read-format detail"));
    }

    #[test]
    fn clock_skew_beyond_a_minute_warns() {
        assert_eq!(clock_check(Some(1030), "UTC", 1000).status, Status::Ok);
        let c = clock_check(Some(1000 + 7200), "Europe/Riga", 1000);
        assert_eq!(c.status, Status::Warn);
        assert!(c.found.contains("+7200 s") && c.found.contains("Europe/Riga"), "{}", c.found);
    }

    #[test]
    fn sysfs_checks() {
        let sysfs = tempfile::tempdir().unwrap();
        let c = modules_check(sysfs.path(), false);
        assert_eq!(
            (c.status, c.found.as_str()),
            (Status::Fail, "not loaded: nvme_tcp, nvme_fabrics")
        );
        assert_eq!(modules_check(sysfs.path(), true).status, Status::Warn);
        for m in ["nvme_tcp", "nvme_fabrics"] {
            std::fs::create_dir_all(sysfs.path().join("module").join(m)).unwrap();
        }
        assert_eq!(modules_check(sysfs.path(), false).status, Status::Ok);
        for (name, nqn) in [
            ("nvme-subsys0", "nqn.2000-02.com.mikrotik:pvc-1"),
            ("nvme-subsys1", "nqn.2014.08.org.nvmexpress:local"),
        ] {
            let d = sysfs.path().join("class/nvme-subsystem").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("subsysnqn"), format!("{nqn}\n")).unwrap();
        }
        let p = prefix_check(
            "nqn.2000-02.com.mikrotik:",
            "nqn.2000-02.com.mikrotik:pvc-",
            sysfs.path(),
        );
        assert_eq!(p.status, Status::Ok);
        assert!(p.found.contains("1 subsystem(s) on this node managed, 1 other(s)"), "{}", p.found);
        let bad =
            prefix_check("nqn.2000-02.com.mikrotik:", "nqn.2000-02.com.mikrotik:", sysfs.path());
        assert_eq!(bad.status, Status::Fail);
    }

    #[test]
    fn host_nqn_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hostnqn");
        assert_eq!(host_nqn_check(&f).status, Status::Warn);
        std::fs::write(
            &f,
            "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427\n",
        )
        .unwrap();
        assert_eq!(host_nqn_check(&f).status, Status::Ok);
        std::fs::write(&f, "not an nqn\n").unwrap();
        assert_eq!(host_nqn_check(&f).status, Status::Fail);
    }

    #[test]
    fn sidecar_versions() {
        let img = |i: &str| ("p".to_string(), "c".to_string(), i.to_string());
        let ok = sidecars_check(&[
            img("registry.k8s.io/sig-storage/csi-provisioner:v5.3.0"),
            img("ghcr.io/srvlab/rds-csi:0.1.0"),
        ]);
        assert_eq!((ok.status, ok.found.as_str()), (Status::Ok, "csi-provisioner v5.3"));
        let old = sidecars_check(&[img("registry.k8s.io/sig-storage/csi-snapshotter:v6.3.3")]);
        assert_eq!(old.status, Status::Warn);
        assert!(
            old.found.contains("csi-snapshotter v6.3 < v8.2 (group snapshots)"),
            "{}",
            old.found
        );
        assert_eq!(sidecars_check(&[]).status, Status::Warn);
    }
}
