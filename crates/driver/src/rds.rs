//! The controller's connection to the RDS: flags, their validation, the transport, and the task
//! that keeps readiness (Probe, `/readyz`) equal to the connection state.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, ValueEnum};
use routeros::{
    ops::{Op, ReadFormat},
    rest::{RestOptions, RestTransport, TlsTrust},
    ssh::{HostKeyPolicy, SshOptions, SshTransport},
    transport::{Backoff, ConnState, Health, Transport},
};

use crate::readiness::{Readiness, ReadyState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    Ssh,
    Rest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadFormatArg {
    /// `:serialize to=json` (RouterOS 7.15+ with :serialize).
    Json,
    /// The human `print detail` format (older firmware).
    Detail,
}

/// How the controller reaches the RDS management plane. Secrets only come from files.
#[derive(Debug, Clone, Args)]
pub struct RdsArgs {
    /// RDS management address for SSH, `host:port` (port 22 if omitted).
    #[arg(long, env = "RDS_CSI_RDS_ADDRESS")]
    pub rds_address: Option<String>,
    /// Management channel: SSH (RouterOS CLI) or REST (`/rest` API).
    #[arg(long, env = "RDS_CSI_RDS_TRANSPORT", value_enum, default_value_t = TransportKind::Ssh)]
    pub rds_transport: TransportKind,
    #[arg(long, env = "RDS_CSI_RDS_USER", default_value = "admin")]
    pub rds_user: String,
    /// Private key file for SSH (ed25519 or RSA).
    #[arg(long, env = "RDS_CSI_RDS_SSH_KEY_FILE")]
    pub rds_ssh_key_file: Option<PathBuf>,
    /// The RDS SSH host key: `SHA256:...` (ssh-keygen -lf) or a known_hosts line.
    #[arg(long, env = "RDS_CSI_RDS_HOST_KEY")]
    pub rds_host_key: Option<String>,
    /// Do not check the RDS SSH host key or HTTPS certificate (anyone on the path could
    /// impersonate the RDS); also required for a plain `http://` REST URL, which sends the
    /// password in clear.
    #[arg(long, env = "RDS_CSI_RDS_INSECURE_SKIP_HOST_KEY_CHECK")]
    pub rds_insecure_skip_host_key_check: bool,
    /// RouterOS console login options appended to the user after `+` (e.g. `cet1024w`).
    #[arg(long, env = "RDS_CSI_RDS_LOGIN_SUFFIX")]
    pub rds_login_suffix: Option<String>,
    /// How reads are parsed over SSH.
    #[arg(long, env = "RDS_CSI_RDS_READ_FORMAT", value_enum, default_value_t = ReadFormatArg::Json)]
    pub rds_read_format: ReadFormatArg,
    /// Concurrent SSH channels to the RDS.
    #[arg(long, env = "RDS_CSI_RDS_MAX_SESSIONS", default_value_t = 4)]
    pub rds_max_sessions: usize,
    /// How often the connection is probed (seconds).
    #[arg(long, env = "RDS_CSI_RDS_PROBE_INTERVAL_SECONDS", default_value_t = 10)]
    pub rds_probe_interval_seconds: u64,
    /// REST base URL, `https://host[:port]` or `http://host[:port]`.
    #[arg(long, env = "RDS_CSI_RDS_REST_URL")]
    pub rds_rest_url: Option<String>,
    /// File holding the REST password.
    #[arg(long, env = "RDS_CSI_RDS_PASSWORD_FILE")]
    pub rds_password_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the RDS HTTPS certificate.
    #[arg(long, env = "RDS_CSI_RDS_TLS_FINGERPRINT")]
    pub rds_tls_fingerprint: Option<String>,
    /// CA (or the self-signed certificate itself) for the RDS HTTPS certificate.
    #[arg(long, env = "RDS_CSI_RDS_CA_FILE")]
    pub rds_ca_file: Option<PathBuf>,
}

/// A validated RDS connection, ready to start.
#[derive(Debug, Clone)]
pub enum RdsConfig {
    Ssh(SshOptions),
    Rest(RestOptions),
}

impl RdsArgs {
    /// `Ok(None)` when no RDS is configured; errors name the flag to fix.
    pub fn validate(&self) -> Result<Option<RdsConfig>, String> {
        match self.rds_transport {
            TransportKind::Ssh => {
                let Some(address) = &self.rds_address else { return Ok(None) };
                let address =
                    if address.contains(':') { address.clone() } else { format!("{address}:22") };
                let key = self
                    .rds_ssh_key_file
                    .clone()
                    .ok_or("--rds-address needs --rds-ssh-key-file (the SSH private key)")?;
                let host_key = match (&self.rds_host_key, self.rds_insecure_skip_host_key_check) {
                    (Some(_), true) => return Err(
                        "--rds-host-key and --rds-insecure-skip-host-key-check exclude each other"
                            .into(),
                    ),
                    (Some(k), false) if k.starts_with("SHA256:") => {
                        HostKeyPolicy::Fingerprint(k.clone())
                    }
                    (Some(k), false) => HostKeyPolicy::KnownHosts(k.clone()),
                    (None, true) => HostKeyPolicy::InsecureSkip,
                    (None, false) => {
                        return Err("--rds-address needs --rds-host-key (SHA256:... from `ssh-keygen -lf`, or a known_hosts line), \
                                    or --rds-insecure-skip-host-key-check"
                            .into());
                    }
                };
                let mut o = SshOptions::new(&address, &self.rds_user, key, host_key);
                o.login_suffix = self.rds_login_suffix.clone();
                o.max_sessions = self.rds_max_sessions.max(1);
                o.probe_interval = Duration::from_secs(self.rds_probe_interval_seconds.max(1));
                o.read_format = match self.rds_read_format {
                    ReadFormatArg::Json => ReadFormat::Json,
                    ReadFormatArg::Detail => ReadFormat::Detail,
                };
                Ok(Some(RdsConfig::Ssh(o)))
            }
            TransportKind::Rest => {
                let Some(url) = &self.rds_rest_url else {
                    return Err("--rds-transport rest needs --rds-rest-url".into());
                };
                let file = self
                    .rds_password_file
                    .as_ref()
                    .ok_or("--rds-transport rest needs --rds-password-file")?;
                if url.starts_with("http://") && !self.rds_insecure_skip_host_key_check {
                    return Err("--rds-rest-url http://... sends the RDS password in clear text: use https:// (RouterOS www-ssl) \
                                with --rds-tls-fingerprint or --rds-ca-file, or accept the risk with --rds-insecure-skip-host-key-check"
                        .into());
                }
                let password = RestOptions::password_from_file(file).map_err(|e| e.to_string())?;
                let trust = match (
                    &self.rds_tls_fingerprint,
                    &self.rds_ca_file,
                    self.rds_insecure_skip_host_key_check,
                ) {
                    (Some(fp), None, false) => TlsTrust::Fingerprint(fp.clone()),
                    (None, Some(ca), false) => TlsTrust::CaFile(ca.clone()),
                    (None, None, true) => TlsTrust::InsecureSkip,
                    _ => {
                        return Err("--rds-rest-url https://... needs exactly one of --rds-tls-fingerprint, --rds-ca-file, \
                                    --rds-insecure-skip-host-key-check"
                            .into());
                    }
                };
                Ok(Some(RdsConfig::Rest(RestOptions::new(url, &self.rds_user, &password, trust))))
            }
        }
    }
}

impl RdsConfig {
    /// The RDS host (management address without port), the default data-plane address.
    pub fn host(&self) -> String {
        let authority = match self {
            RdsConfig::Ssh(o) => o.address.clone(),
            RdsConfig::Rest(o) => o
                .base_url
                .split("://")
                .nth(1)
                .unwrap_or_default()
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        match authority.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
                host.trim_matches(['[', ']']).to_string()
            }
            _ => authority,
        }
    }
}

/// A started connection: the transport, its health, and the tasks keeping it alive.
pub struct RdsConnection {
    pub transport: Arc<dyn Transport>,
    pub health: Arc<Health>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RdsConnection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RdsConfig {
    /// Starts the transport's monitor and mirrors its state into `readiness`.
    pub fn start(
        self,
        readiness: Readiness,
        probe_interval: Duration,
    ) -> Result<RdsConnection, String> {
        let (transport, health, monitor): (
            Arc<dyn Transport>,
            Arc<Health>,
            tokio::task::JoinHandle<()>,
        ) = match self {
            RdsConfig::Ssh(o) => {
                let t = SshTransport::new(o).map_err(|e| e.to_string())?;
                let monitor = t.spawn_monitor();
                (Arc::new(t.clone()), t.health(), monitor)
            }
            RdsConfig::Rest(o) => {
                if o.base_url.starts_with("http://") {
                    tracing::warn!(url = %o.base_url, "REST over plain HTTP: the RDS password travels in clear text; use https://");
                }
                let t = RestTransport::new(o).map_err(|e| e.to_string())?;
                let probe = t.clone();
                // REST has no connection to watch: a cheap read keeps the state fresh.
                let monitor = tokio::spawn(async move {
                    let mut backoff = Backoff::reconnect();
                    loop {
                        let delay = match probe.call(&Op::System).await {
                            Ok(_) => {
                                backoff.reset();
                                probe_interval
                            }
                            Err(_) => backoff.next_delay(),
                        };
                        tokio::time::sleep(delay).await;
                    }
                });
                (Arc::new(t.clone()), t.health(), monitor)
            }
        };
        let mut state = transport.state();
        let mirror = tokio::spawn(async move {
            loop {
                let now = state.borrow_and_update().clone();
                readiness.set(match now {
                    ConnState::Connected => ReadyState::Ready,
                    ConnState::Disconnected(reason) => {
                        ReadyState::NotReady(format!("RDS unreachable: {reason}"))
                    }
                });
                if state.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(RdsConnection { transport, health, tasks: vec![monitor, mirror] })
    }
}
