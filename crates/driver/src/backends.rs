//! The backends file (`--backends-file`, docs/topology.md): one entry per RDS behind this
//! controller, with its connection, volume path, NVMe/TCP address, topology segments and
//! weight. The single-RDS flags (`--rds-*`) stay and mean one backend named `default`.
//!
//! ```yaml
//! backends:
//!   - name: rds-b                      # ids of its volumes: rds-b:pvc-<uuid>
//!     address: 10.0.0.2                # the keys are the --rds-* flags' names in camelCase
//!     sshKeyFile: /etc/rds-csi/rds-b/id_ed25519
//!     hostKey: "SHA256:..."
//!     volumePath: /storage-pool/metal-csi
//!     nvmeAddress: 10.0.1.2
//!     segments: { topology.rds.csi.srvlab.io/zone: b }
//!     weight: 1
//! ```

use std::{collections::HashMap, path::PathBuf};

use serde::Deserialize;

use crate::{
    controller::config::ControllerConfig,
    core::topology::validate_backend_name,
    rds::{RdsArgs, RdsConfig, ReadFormatArg, TransportKind},
};

/// One RDS of the controller, validated.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    pub name: String,
    pub rds: RdsConfig,
    /// The controller's settings with this backend's volume path, base paths and NVMe/TCP
    /// address and port.
    pub controller: ControllerConfig,
    pub segments: HashMap<String, String>,
    pub weight: u32,
    pub probe_interval: std::time::Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    backends: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Entry {
    name: String,
    address: Option<String>,
    #[serde(default)]
    transport: Option<String>,
    user: Option<String>,
    ssh_key_file: Option<PathBuf>,
    host_key: Option<String>,
    #[serde(default)]
    insecure_skip_host_key_check: bool,
    login_suffix: Option<String>,
    read_format: Option<String>,
    max_sessions: Option<usize>,
    probe_interval_seconds: Option<u64>,
    rest_url: Option<String>,
    password_file: Option<PathBuf>,
    tls_fingerprint: Option<String>,
    ca_file: Option<PathBuf>,
    volume_path: Option<String>,
    allowed_base_paths: Option<Vec<String>>,
    nvme_address: Option<String>,
    nvme_port: Option<u16>,
    #[serde(default)]
    segments: HashMap<String, String>,
    weight: Option<u32>,
}

/// Reads and checks a backends file; `base` is the controller's own settings (each entry
/// overrides the volume path, base paths and NVMe/TCP address and port).
pub fn load(path: &std::path::Path, base: &ControllerConfig) -> Result<Vec<BackendSpec>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--backends-file {}: {e}", path.display()))?;
    parse(&text, base).map_err(|e| format!("--backends-file {}: {e}", path.display()))
}

/// [`load`] on the file's text.
pub fn parse(text: &str, base: &ControllerConfig) -> Result<Vec<BackendSpec>, String> {
    let file: File = serde_yaml_ng::from_str(text).map_err(|e| {
        format!("{e} (expected `backends:` with a list of entries, each with name and the RDS connection; docs/topology.md)")
    })?;
    if file.backends.is_empty() {
        return Err("`backends` is empty: list at least one RDS".into());
    }
    let mut out: Vec<BackendSpec> = Vec::new();
    for e in file.backends {
        let name = e.name.clone();
        validate_backend_name(&name)?;
        if out.iter().any(|b| b.name == name) {
            return Err(format!("backend {name:?} is listed twice: names must be unique"));
        }
        out.push(entry(e, base).map_err(|m| format!("backend {name:?}: {m}"))?);
    }
    Ok(out)
}

fn entry(e: Entry, base: &ControllerConfig) -> Result<BackendSpec, String> {
    let transport = match e.transport.as_deref() {
        None | Some("ssh") => TransportKind::Ssh,
        Some("rest") => TransportKind::Rest,
        Some(other) => return Err(format!("transport {other:?}: use ssh or rest")),
    };
    let read_format = match e.read_format.as_deref() {
        None | Some("json") => ReadFormatArg::Json,
        Some("detail") => ReadFormatArg::Detail,
        Some(other) => return Err(format!("readFormat {other:?}: use json or detail")),
    };
    let probe_s = e.probe_interval_seconds.unwrap_or(10);
    let args = RdsArgs {
        rds_address: e.address,
        rds_transport: transport,
        rds_user: e.user.unwrap_or_else(|| "admin".into()),
        rds_ssh_key_file: e.ssh_key_file,
        rds_host_key: e.host_key,
        rds_insecure_skip_host_key_check: e.insecure_skip_host_key_check,
        rds_login_suffix: e.login_suffix,
        rds_read_format: read_format,
        rds_max_sessions: e.max_sessions.unwrap_or(4),
        rds_probe_interval_seconds: probe_s,
        rds_rest_url: e.rest_url,
        rds_password_file: e.password_file,
        rds_tls_fingerprint: e.tls_fingerprint,
        rds_ca_file: e.ca_file,
    };
    let flags =
        "(the keys are the --rds-* flags' names in camelCase: --rds-ssh-key-file is sshKeyFile)";
    let rds = args.validate().map_err(|m| format!("{m} {flags}"))?.ok_or_else(|| {
        "no connection: give address (SSH) or transport: rest with restUrl".to_string()
    })?;
    let mut controller = base.clone();
    if let Some(p) = &e.volume_path {
        controller.volume_path =
            routeros::types::FilePath::new(p).map_err(|err| format!("volumePath {p:?}: {err}"))?;
    }
    match e.allowed_base_paths {
        Some(paths) => {
            controller.allowed_base_paths = paths
                .iter()
                .map(|p| {
                    routeros::types::FilePath::new(p)
                        .map_err(|err| format!("allowedBasePaths {p:?}: {err}"))
                })
                .collect::<Result<_, _>>()?;
        }
        None if e.volume_path.is_some() => {
            controller.allowed_base_paths = vec![controller.volume_path.clone()];
        }
        None => {}
    }
    if !controller
        .allowed_base_paths
        .iter()
        .any(|b| controller.volume_path == *b || controller.volume_path.is_under(b))
    {
        return Err(format!(
            "volumePath {} must be inside one of allowedBasePaths",
            controller.volume_path.absolute()
        ));
    }
    if let Some(a) = e.nvme_address {
        a.parse::<std::net::IpAddr>()
            .map_err(|_| format!("nvmeAddress {a:?}: expected an IP address"))?;
        controller.nvme_address = Some(a);
    }
    if let Some(p) = e.nvme_port {
        controller.nvme_port = p;
    }
    Ok(BackendSpec {
        name: e.name,
        rds,
        controller,
        segments: e.segments,
        weight: e.weight.unwrap_or(1),
        probe_interval: std::time::Duration::from_secs(probe_s.max(1)),
    })
}

impl BackendSpec {
    /// A backend of weight 1 with the controller's settings: the single-RDS flags' (named
    /// `default`) or an emulated one (`--emulated-backends`).
    pub fn new(
        name: &str,
        rds: RdsConfig,
        controller: &ControllerConfig,
        segments: HashMap<String, String>,
        probe_interval: std::time::Duration,
    ) -> BackendSpec {
        BackendSpec {
            name: name.into(),
            rds,
            controller: controller.clone(),
            segments,
            weight: 1,
            probe_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::config::ControllerArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct A {
        #[command(flatten)]
        c: ControllerArgs,
    }

    fn base() -> ControllerConfig {
        A::parse_from(["x"]).c.validate().unwrap()
    }

    #[test]
    fn entries_override_the_controller_settings() {
        let text = r#"
backends:
  - name: default
    address: 10.0.0.1
    sshKeyFile: /k
    hostKey: "SHA256:abc"
  - name: rds-b
    address: 10.0.0.2:2222
    sshKeyFile: /k2
    insecureSkipHostKeyCheck: true
    volumePath: /pool-b/csi
    nvmeAddress: 10.0.1.2
    nvmePort: 4421
    segments: { topology.rds.csi.srvlab.io/zone: b }
    weight: 0
"#;
        let b = parse(text, &base()).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].name, "default");
        assert_eq!(b[0].controller.volume_path, base().volume_path);
        assert_eq!((b[0].weight, b[0].segments.len()), (1, 0));
        assert_eq!(b[1].rds.host(), "10.0.0.2");
        assert_eq!(b[1].controller.volume_path.absolute(), "/pool-b/csi");
        assert_eq!(b[1].controller.allowed_base_paths, vec![b[1].controller.volume_path.clone()]);
        assert_eq!(b[1].controller.nvme_address.as_deref(), Some("10.0.1.2"));
        assert_eq!(b[1].controller.nvme_port, 4421);
        assert_eq!(b[1].segments["topology.rds.csi.srvlab.io/zone"], "b");
        assert_eq!(b[1].weight, 0);
    }

    #[test]
    fn mistakes_say_what_to_fix() {
        let cases = [
            ("backends: []", "is empty"),
            ("backend: []", "unknown field"),
            ("backends:\n  - name: RDS\n    address: a", "a-z"),
            (
                "backends:\n  - name: a\n    address: x\n    sshKeyFile: /k\n    insecureSkipHostKeyCheck: true\n  - name: a\n    address: y\n    sshKeyFile: /k\n    insecureSkipHostKeyCheck: true",
                "listed twice",
            ),
            ("backends:\n  - name: a\n    address: x", "sshKeyFile"),
            ("backends:\n  - name: a", "no connection"),
            (
                "backends:\n  - name: a\n    address: x\n    sshKeyFile: /k\n    insecureSkipHostKeyCheck: true\n    transport: telnet",
                "use ssh or rest",
            ),
            (
                "backends:\n  - name: a\n    address: x\n    sshKeyFile: /k\n    insecureSkipHostKeyCheck: true\n    volumePath: /p\n    allowedBasePaths: [/q]",
                "inside one of allowedBasePaths",
            ),
            (
                "backends:\n  - name: a\n    address: x\n    sshKeyFile: /k\n    insecureSkipHostKeyCheck: true\n    nvmeAddress: host",
                "IP address",
            ),
            ("backends:\n  - name: a\n    adress: x", "unknown field `adress`"),
        ];
        for (text, want) in cases {
            let err = parse(text, &base()).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
