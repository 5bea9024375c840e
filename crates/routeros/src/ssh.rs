//! The SSH transport: one persistent russh connection carrying up to `max_sessions` concurrent
//! exec channels (RouterOS limits sessions), a deadline on every command, the host key pinned,
//! liveness probed by opening a channel (RouterOS ignores SSH keepalives), and a monitor that
//! reconnects with backoff 1 s → 16 s, never giving up.

use std::{path::PathBuf, sync::Arc, time::Duration};

use russh::{
    ChannelMsg,
    client::{self, Handle},
    keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate},
};
use tokio::sync::{Mutex, Semaphore, watch};

use crate::{
    error::RosError,
    ops::{Answer, Op, ReadFormat, ssh_line},
    ssh_answer::parse_ssh,
    transport::{Backoff, ConnState, Health, Transport},
};

/// How the RDS's SSH host key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// `SHA256:...` as `ssh-keygen -lf` prints it.
    Fingerprint(String),
    /// A `known_hosts` line (`host keytype base64 [comment]`) or a bare `keytype base64`.
    KnownHosts(String),
    /// No check (`--rds-insecure-skip-host-key-check`): logged loudly on every connect.
    InsecureSkip,
}

impl HostKeyPolicy {
    /// Parses a known_hosts line into the key it pins.
    fn pinned_key(line: &str) -> Result<PublicKey, RosError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let start = words
            .iter()
            .position(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-"))
            .unwrap_or(0);
        let text = words.get(start..start + 2).map(|w| w.join(" ")).unwrap_or_default();
        PublicKey::from_openssh(&text)
            .map_err(|e| RosError::InvalidArgument(format!("bad known_hosts line {line:?}: {e}")))
    }
}

#[derive(Debug, Clone)]
pub struct SshOptions {
    /// `host:port` of the RDS management address.
    pub address: String,
    pub user: String,
    /// RouterOS console login options appended after `+` (e.g. `cet1024w`), if any.
    pub login_suffix: Option<String>,
    pub key_file: PathBuf,
    pub host_key: HostKeyPolicy,
    /// Concurrent exec channels on the connection (default 4).
    pub max_sessions: usize,
    pub command_timeout: Duration,
    /// Deadline of a block or file copy (`Op::is_long`), which runs far longer than a
    /// command; the controller copies in 1 GiB chunks, each one command.
    pub copy_timeout: Duration,
    pub connect_timeout: Duration,
    /// How often the monitor probes a live connection.
    pub probe_interval: Duration,
    pub read_format: ReadFormat,
}

impl SshOptions {
    pub fn new(
        address: &str,
        user: &str,
        key_file: PathBuf,
        host_key: HostKeyPolicy,
    ) -> SshOptions {
        SshOptions {
            address: address.to_string(),
            user: user.to_string(),
            login_suffix: None,
            key_file,
            host_key,
            max_sessions: 4,
            command_timeout: Duration::from_secs(30),
            copy_timeout: Duration::from_secs(15 * 60),
            connect_timeout: Duration::from_secs(10),
            probe_interval: Duration::from_secs(10),
            read_format: ReadFormat::Json,
        }
    }
}

/// Checks the server key against the policy; remembers what it saw for the error message.
struct Verifier {
    policy: HostKeyPolicy,
    seen: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else { return Ok(false) };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        *self.seen.lock().expect("seen lock") = Some(fingerprint.clone());
        Ok(match &self.policy {
            HostKeyPolicy::Fingerprint(fp) => fp.trim() == fingerprint,
            HostKeyPolicy::KnownHosts(line) => {
                HostKeyPolicy::pinned_key(line).is_ok_and(|k| k.key_data() == key.key_data())
            }
            HostKeyPolicy::InsecureSkip => {
                tracing::warn!(
                    fingerprint,
                    "RDS host key NOT checked (--rds-insecure-skip-host-key-check): anyone on the path can impersonate the RDS"
                );
                true
            }
        })
    }
}

struct Inner {
    opts: SshOptions,
    key: Arc<PrivateKey>,
    conn: Mutex<Option<Arc<Handle<Verifier>>>>,
    sessions: Semaphore,
    health: Arc<Health>,
}

/// The SSH transport. Cheap to clone.
#[derive(Clone)]
pub struct SshTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport").field("address", &self.inner.opts.address).finish()
    }
}

impl SshTransport {
    /// Loads the key; connects lazily (first call or the monitor).
    pub fn new(opts: SshOptions) -> Result<SshTransport, RosError> {
        let key = russh::keys::load_secret_key(&opts.key_file, None).map_err(|e| {
            RosError::InvalidArgument(format!(
                "cannot load the SSH key {}: {e}",
                opts.key_file.display()
            ))
        })?;
        Ok(SshTransport {
            inner: Arc::new(Inner {
                sessions: Semaphore::new(opts.max_sessions.max(1)),
                opts,
                key: Arc::new(key),
                conn: Mutex::new(None),
                health: Health::new(),
            }),
        })
    }

    pub fn health(&self) -> Arc<Health> {
        self.inner.health.clone()
    }

    async fn connect(&self) -> Result<Handle<Verifier>, RosError> {
        let o = &self.inner.opts;
        let seen = Arc::new(std::sync::Mutex::new(None));
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: None, // RouterOS does not answer keepalives
            nodelay: true,
            ..Default::default()
        });
        let verifier = Verifier { policy: o.host_key.clone(), seen: seen.clone() };
        let connecting = async {
            let stream = tokio::net::TcpStream::connect(&o.address).await.map_err(|e| {
                RosError::Unavailable(format!("cannot connect to {}: {e}", o.address))
            })?;
            let _ = stream.set_nodelay(true);
            let mut handle = client::connect_stream(config, stream, verifier).await.map_err(|e| {
                match (&o.host_key, seen.lock().expect("seen lock").clone()) {
                    (HostKeyPolicy::InsecureSkip, _) | (_, None) => {
                        RosError::Unavailable(format!("SSH handshake with {} failed: {e}", o.address))
                    }
                    (policy, Some(fp)) => RosError::PermissionDenied(format!(
                        "the RDS at {} presented host key {fp}, which does not match the pinned {}; \
                         if the RDS was re-keyed on purpose, update the pinned host key",
                        o.address,
                        match policy {
                            HostKeyPolicy::Fingerprint(f) => f.clone(),
                            HostKeyPolicy::KnownHosts(l) => format!("known_hosts entry {l:?}"),
                            HostKeyPolicy::InsecureSkip => unreachable!(),
                        }
                    )),
                }
            })?;
            let user = match &o.login_suffix {
                Some(s) if !s.is_empty() => format!("{}+{s}", o.user),
                _ => o.user.clone(),
            };
            let hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
            let auth = handle
                .authenticate_publickey(
                    &user,
                    PrivateKeyWithHashAlg::new(self.inner.key.clone(), hash),
                )
                .await
                .map_err(|e| {
                    RosError::Unavailable(format!(
                        "SSH authentication with {} failed: {e}",
                        o.address
                    ))
                })?;
            if !auth.success() {
                return Err(RosError::PermissionDenied(format!(
                    "the RDS at {} refused the SSH key {} for user {}; add its public key with /user/ssh-keys",
                    o.address,
                    o.key_file.display(),
                    o.user
                )));
            }
            Ok(handle)
        };
        tokio::time::timeout(o.connect_timeout, connecting).await.map_err(|_| {
            RosError::Timeout(format!(
                "connecting to {} took longer than {:?}",
                o.address, o.connect_timeout
            ))
        })?
    }

    /// The live connection, connecting if there is none.
    async fn handle(&self) -> Result<Arc<Handle<Verifier>>, RosError> {
        let mut conn = self.inner.conn.lock().await;
        if let Some(h) = conn.as_ref()
            && !h.is_closed()
        {
            return Ok(h.clone());
        }
        *conn = None;
        match self.connect().await {
            Ok(h) => {
                let h = Arc::new(h);
                *conn = Some(h.clone());
                self.inner.health.up();
                Ok(h)
            }
            Err(e) => {
                self.inner.health.down(&e.to_string());
                Err(e)
            }
        }
    }

    async fn drop_connection(&self, reason: &str) {
        *self.inner.conn.lock().await = None;
        self.inner.health.down(reason);
    }

    /// A channel permit (at most `max_sessions` at once) and the live connection.
    async fn channel_slot(
        &self,
    ) -> Result<(tokio::sync::SemaphorePermit<'_>, Arc<Handle<Verifier>>), RosError> {
        let permit = self
            .inner
            .sessions
            .acquire()
            .await
            .map_err(|_| RosError::Unavailable("transport closed".into()))?;
        Ok((permit, self.handle().await?))
    }

    /// Runs one command line on its own channel under the command deadline; returns stdout
    /// (+ stderr).
    pub async fn run(&self, line: &str) -> Result<String, RosError> {
        self.run_within(line, self.inner.opts.command_timeout).await
    }

    /// [`SshTransport::run`] with its own deadline.
    pub async fn run_within(&self, line: &str, timeout: Duration) -> Result<String, RosError> {
        let (_permit, handle) = self.channel_slot().await?;
        self.inner.health.round_trip();
        match tokio::time::timeout(timeout, exec(&handle, line)).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => {
                self.drop_connection(&e.to_string()).await;
                Err(e)
            }
            Err(_) => Err(RosError::Timeout(format!("no answer within {timeout:?} to: {line}"))),
        }
    }

    /// Liveness: opening (and closing) a channel proves the server answers.
    pub async fn probe(&self) -> Result<(), RosError> {
        let (_permit, handle) = self.channel_slot().await?;
        let open =
            tokio::time::timeout(self.inner.opts.command_timeout, handle.channel_open_session())
                .await;
        match open {
            Ok(Ok(ch)) => {
                let _ = ch.close().await;
                Ok(())
            }
            Ok(Err(e)) => {
                let e = RosError::Unavailable(format!("liveness probe failed: {e}"));
                self.drop_connection(&e.to_string()).await;
                Err(e)
            }
            Err(_) => {
                let e = RosError::Timeout("liveness probe: no channel within the deadline".into());
                self.drop_connection(&e.to_string()).await;
                Err(e)
            }
        }
    }

    /// Keeps the connection alive: probes it every `probe_interval`, and while it is down
    /// reconnects with backoff 1 s → 16 s (with jitter), forever. Abort the task to stop.
    pub fn spawn_monitor(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::reconnect();
            loop {
                match this.probe().await {
                    Ok(()) => {
                        backoff.reset();
                        tokio::time::sleep(this.inner.opts.probe_interval).await;
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::info!(error = %e, retry_in_ms = delay.as_millis() as u64, "RDS unreachable; reconnecting");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        })
    }
}

/// Opens a channel, runs `line`, collects the output until the channel closes. A channel that
/// closes without an exit status means the connection was lost mid-command.
async fn exec(handle: &Handle<Verifier>, line: &str) -> Result<String, RosError> {
    let lost = |e: russh::Error| RosError::Unavailable(format!("SSH channel failed: {e}"));
    let mut channel = handle.channel_open_session().await.map_err(lost)?;
    channel.exec(true, line.as_bytes()).await.map_err(lost)?;
    let mut out = Vec::new();
    let mut exited = false;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => out.extend_from_slice(&data),
            ChannelMsg::ExitStatus { .. } => exited = true,
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    if !exited {
        return Err(RosError::Unavailable("connection lost before the command finished".into()));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[async_trait::async_trait]
impl Transport for SshTransport {
    async fn call(&self, op: &Op) -> Result<Answer, RosError> {
        let format = self.inner.opts.read_format;
        let o = &self.inner.opts;
        let timeout = if op.is_long() { o.copy_timeout } else { o.command_timeout };
        let output = self.run_within(&ssh_line(op, format), timeout).await?;
        parse_ssh(op, &output, format)
    }

    fn name(&self) -> &'static str {
        "ssh"
    }

    fn state(&self) -> watch::Receiver<ConnState> {
        self.inner.health.subscribe()
    }

    fn round_trips(&self) -> u64 {
        self.inner.health.round_trips()
    }
}
