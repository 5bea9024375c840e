//! The SSH side of the emulator (russh server), behaving like RouterOS's: `exec` requests
//! only, one command per channel, many channels per connection, public-key auth (ed25519,
//! RSA) against authorized keys, optional password auth, a login-name suffix
//! (`admin+cet1024w`) accepted, and RouterOS's exit status 0 with errors on stdout.

use std::{
    collections::HashSet,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use russh::{
    Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet,
    keys::{HashAlg, PrivateKey, PublicKey},
    server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey},
};
use tokio::net::TcpListener;

use crate::emulator::{Delivery, Emulator, Kill};

/// SSH service settings (RouterOS `/ip/service ssh` and `/user/ssh-keys` equivalents).
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Login names accepted (the part before any `+` suffix).
    pub users: Vec<String>,
    pub authorized_keys: Vec<PublicKey>,
    /// Password authentication, when set.
    pub password: Option<String>,
    /// Concurrent connections (`max-sessions`); more are closed at once.
    pub max_sessions: usize,
    /// Concurrent channels per connection; more are refused.
    pub max_channels: usize,
    /// Exit status of a failed command (RouterOS: 0, INFERRED).
    pub error_exit_status: u32,
    /// Line ending of the output (`\r\n` by default).
    pub line_ending: String,
}

impl SshOptions {
    /// User `admin` with `keys`, no password, and the binary's defaults (20 connections, 10
    /// channels each, exit status 0, CRLF).
    pub fn with_keys(keys: Vec<PublicKey>) -> SshOptions {
        SshOptions {
            users: vec!["admin".into()],
            authorized_keys: keys,
            password: None,
            max_sessions: 20,
            max_channels: 10,
            error_exit_status: 0,
            line_ending: "\r\n".into(),
        }
    }
}

/// Reads an OpenSSH `authorized_keys` file (blank and `#` lines skipped).
pub fn read_authorized_keys(path: &Path) -> Result<Vec<PublicKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            PublicKey::from_openssh(l)
                .map_err(|e| format!("{}: bad key line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// Loads the host key, or creates an ed25519 one at `path` (kept across restarts, like a
/// real RDS keeps its host key across reboots).
pub fn host_key(path: &Path) -> Result<PrivateKey, String> {
    if path.exists() {
        return russh::keys::load_secret_key(path, None)
            .map_err(|e| format!("{}: {e}", path.display()));
    }
    let key = PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
        .map_err(|e| format!("cannot generate a host key: {e}"))?;
    key.write_openssh_file(path, russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

/// `SHA256:...` as OpenSSH prints it.
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

/// An SSH service on a loopback port with freshly generated keys, as the quickstart
/// (`rds-csi demo`) and the black-box test harnesses start it.
pub struct Loopback {
    pub address: std::net::SocketAddr,
    /// The host key's fingerprint, for `HostKeyPolicy::Fingerprint`.
    pub fingerprint: String,
    /// Kept so that a harness can serve again after a restart with the same identity.
    pub host_key: PrivateKey,
    pub client_key: PublicKey,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Generates an ed25519 client key (private half written to `client_key_file`, authorized as
/// `admin`) and host key, and serves `emu` on `127.0.0.1:0`.
pub async fn serve_loopback(emu: Emulator, client_key_file: &Path) -> Result<Loopback, String> {
    let ed25519 = || {
        PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
            .map_err(|e| format!("cannot generate a key: {e}"))
    };
    let client = ed25519()?;
    client
        .write_openssh_file(client_key_file, russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| format!("{}: {e}", client_key_file.display()))?;
    let host_key = ed25519()?;
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
    let address = listener.local_addr().map_err(|e| format!("bind: {e}"))?;
    let client_key = client.public_key().clone();
    let opts = SshOptions::with_keys(vec![client_key.clone()]);
    let task = tokio::spawn(serve(emu, listener, host_key.clone(), opts));
    Ok(Loopback { address, fingerprint: fingerprint(&host_key), host_key, client_key, task })
}

/// Serves SSH on `listener` until the task is dropped.
pub async fn serve(
    emu: Emulator,
    listener: TcpListener,
    host_key: PrivateKey,
    opts: SshOptions,
) -> std::io::Result<()> {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    if opts.password.is_some() {
        methods.push(MethodKind::Password);
    }
    let config = Arc::new(russh::server::Config {
        keys: vec![host_key],
        methods,
        auth_rejection_time: Duration::from_millis(50),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(600)),
        nodelay: true,
        ..Default::default()
    });
    let opts = Arc::new(opts);
    loop {
        let (socket, peer) = listener.accept().await?;
        // run_stream does not apply `config.nodelay`: without this, Nagle's algorithm holds
        // each answer's last segment for the client's delayed ACK (about 40 ms per command).
        let _ = socket.set_nodelay(true);
        if !emu.accepting() || emu.open_connections() >= opts.max_sessions {
            tracing::info!(%peer, "SSH connection refused (rebooting, refusing, or at max-sessions)");
            drop(socket);
            continue;
        }
        // A duplicate of the socket is the kill switch: shutting it down drops the
        // connection at the TCP level, whatever task owns the stream.
        let socket = socket.into_std()?;
        let switch = socket.try_clone()?;
        let socket = tokio::net::TcpStream::from_std(socket)?;
        let (id_tx, id_rx) = tokio::sync::oneshot::channel::<u64>();
        let (emu2, config, opts2) = (emu.clone(), config.clone(), opts.clone());
        let task = tokio::spawn(async move {
            let Ok(conn) = id_rx.await else { return };
            let delay = emu2.handshake_latency();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let handler = Connection {
                emu: emu2.clone(),
                conn,
                opts: opts2,
                open: Arc::new(Mutex::new(HashSet::new())),
                used: HashSet::new(),
            };
            match russh::server::run_stream(config, socket, handler).await {
                Ok(session) => {
                    if let Err(e) = session.await {
                        tracing::debug!(conn, error = %e, "SSH session ended with an error");
                    }
                }
                Err(e) => tracing::debug!(conn, error = %e, "SSH handshake failed"),
            }
            emu2.connection_closed(conn);
        });
        let abort = task.abort_handle();
        let conn = emu.connection_opened(Kill::new(move || {
            let _ = switch.shutdown(std::net::Shutdown::Both);
            abort.abort();
        }));
        tracing::debug!(conn, %peer, "SSH connection");
        let _ = id_tx.send(conn);
    }
}

struct Connection {
    emu: Emulator,
    conn: u64,
    opts: Arc<SshOptions>,
    /// Channels open on this connection; released when either side closes one.
    open: Arc<Mutex<HashSet<ChannelId>>>,
    /// Channels that already ran their one command.
    used: HashSet<ChannelId>,
}

impl Connection {
    fn user_ok(&self, user: &str) -> bool {
        let base = user.split('+').next().unwrap_or(user);
        self.opts.users.iter().any(|u| u == base)
    }

    fn key_ok(&self, user: &str, key: &PublicKey) -> Auth {
        let known = self.opts.authorized_keys.iter().any(|k| k.key_data() == key.key_data());
        if self.user_ok(user) && known { Auth::Accept } else { Auth::reject() }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.key_ok(user, offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.key_ok(user, key.public_key))
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let ok = self.opts.password.as_deref() == Some(password) && self.user_ok(user);
        Ok(if ok { Auth::Accept } else { Auth::reject() })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let admitted = {
            let mut open = self.open.lock().expect("channels");
            open.len() < self.opts.max_channels && open.insert(channel.id())
        };
        if admitted {
            reply.accept().await;
        } else {
            tracing::info!(conn = self.conn, "channel refused: per-connection session limit");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.used.remove(&channel);
        self.open.lock().expect("channels").remove(&channel);
        Ok(())
    }

    /// RouterOS's SSH server has no interactive mode for us: only exec is emulated.
    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.used.insert(channel) {
            session.channel_failure(channel)?;
            return Ok(());
        }
        session.channel_success(channel)?;
        let line = String::from_utf8_lossy(data).into_owned();
        let (handle, emu, conn, opts) =
            (session.handle(), self.emu.clone(), self.conn, self.opts.clone());
        let open = self.open.clone();
        tokio::spawn(async move {
            match emu.execute(conn, "ssh", &line).await {
                Delivery::Drop => emu.drop_connection(conn),
                Delivery::Answer(outcome) => {
                    let text = outcome.output.replace('\n', &opts.line_ending);
                    let status = if outcome.failed { opts.error_exit_status } else { 0 };
                    let _ = handle.data(channel, text.into_bytes()).await;
                    let _ = handle.exit_status_request(channel, status).await;
                    let _ = handle.eof(channel).await;
                    let _ = handle.close(channel).await;
                    // Our close ends the channel; the client's answering close may never
                    // reach channel_close, so release it here.
                    open.lock().expect("channels").remove(&channel);
                }
            }
        });
        Ok(())
    }
}
