//! `rds-emulator`: runs the emulated RDS management plane. Prints one line per listener and
//! then `READY` on stdout; logs go to stderr.

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, ValueEnum};
use rds_emulator::{
    control,
    emulator::{Emulator, Faults},
    exec::Behaviour,
    nvmet::{self, Nvmet},
    rest::{self, RestOptions},
    ssh::{self, SshOptions},
    store::InitOptions,
    tls::{Identity, TlsListener},
    version::Version,
};
use routeros::values::parse_size_arg;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LineEnding {
    Crlf,
    Lf,
}

/// A faithful stand-in for the MikroTik ROSE Data Server management plane (RouterOS over SSH).
#[derive(Debug, Parser)]
#[command(name = "rds-emulator", version)]
struct Args {
    /// Where all state lives (disk table, backing files, host key); survives restarts.
    #[arg(long)]
    data_dir: PathBuf,
    /// SSH listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    ssh_listen: SocketAddr,
    /// REST API listen address (`/rest/...`, HTTPS with a generated self-signed certificate
    /// unless --rest-plain-http); off unless given.
    #[arg(long)]
    rest_listen: Option<SocketAddr>,
    /// Serve REST over plain HTTP (RouterOS `www` service) instead of HTTPS (`www-ssl`).
    #[arg(long)]
    rest_plain_http: bool,
    /// REST per-request time limit (RouterOS: 60 s), after which it answers `Session closed`.
    #[arg(long, default_value_t = 60)]
    rest_timeout_secs: u64,
    /// Export every exported disk for real through the kernel NVMe/TCP target (nvmet,
    /// configfs) on ADDR:PORT. Without it exports are bookkeeping only.
    #[arg(long)]
    nvmet: Option<SocketAddr>,
    /// With --nvmet: removing a host from nvme-tcp-server-allow-host-name also drops its live
    /// connections (UNKNOWN on real hardware; default: live connections stay).
    #[arg(long)]
    revoke_drops_connections: bool,
    /// Control API listen address (command log, faults, reboot); off unless given.
    #[arg(long)]
    control_listen: Option<SocketAddr>,
    /// OpenSSH authorized_keys file with the keys allowed to log in.
    #[arg(long)]
    authorized_keys: Option<PathBuf>,
    /// Enables password authentication with the password in this file.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Accepted login names (the part before a `+` suffix).
    #[arg(long = "user", default_value = "admin")]
    users: Vec<String>,
    /// SSH host key (OpenSSH format); default DATA-DIR/ssh_host_ed25519_key, created if missing.
    #[arg(long)]
    host_key: Option<PathBuf>,
    /// Emulated RouterOS version (gates file disks 7.17, compress 7.18, server NQN 7.21,
    /// /file/copy 7.23).
    #[arg(long, default_value = "7.21")]
    routeros_version: Version,
    /// Size of the storage pool (bytes or K/M/G/T), used on first start of a data dir.
    #[arg(long, default_value = "1T", value_parser = parse_size_arg)]
    pool_size: u64,
    /// Slot and mount point of the storage pool (first start only).
    #[arg(long, default_value = "storage-pool")]
    pool_slot: String,
    /// Allocate backing files fully instead of sparse.
    #[arg(long)]
    preallocate: bool,
    /// `copy-from` also copies the file's data (default: properties only).
    #[arg(long)]
    copy_from_data: bool,
    /// Refuse `set file-size` below the current size (default: truncate).
    #[arg(long)]
    refuse_shrink: bool,
    /// Exec-mode wrap width of `print detail`; 0 disables wrapping.
    #[arg(long, default_value_t = 80)]
    exec_width: usize,
    /// Print nothing (instead of the full flags legend) when a print matches no item.
    #[arg(long)]
    no_header_on_empty: bool,
    /// Error text when the pool is full.
    #[arg(long, default_value = "failure: not enough disk space")]
    disk_full_error: String,
    /// SSH exit status of a failed command (RouterOS: 0).
    #[arg(long, default_value_t = 0)]
    error_exit_status: u32,
    #[arg(long, value_enum, default_value_t = LineEnding::Crlf)]
    line_ending: LineEnding,
    /// Concurrent SSH connections (RouterOS max-sessions).
    #[arg(long, default_value_t = 20)]
    max_sessions: usize,
    /// Concurrent channels per SSH connection.
    #[arg(long, default_value_t = 10)]
    max_channels: usize,
    /// Initial fault set, as JSON (the control API's PUT /faults body).
    #[arg(long)]
    faults_json: Option<String>,
    /// Latency added to every command (shorthand for faults_json latency_ms).
    #[arg(long)]
    latency_ms: Option<u64>,
    #[arg(long)]
    jitter_ms: Option<u64>,
    #[arg(long)]
    handshake_latency_ms: Option<u64>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RDS_EMULATOR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let behaviour = Behaviour {
        version: args.routeros_version,
        preallocate: args.preallocate,
        copy_from_data: args.copy_from_data,
        refuse_shrink: args.refuse_shrink,
        exec_width: args.exec_width,
        header_on_empty: !args.no_header_on_empty,
        disk_full_error: args.disk_full_error.clone(),
        ..Behaviour::default()
    };
    let init = InitOptions { pool_slot: args.pool_slot.clone(), pool_size: args.pool_size };
    let nvmet = match args.nvmet {
        Some(addr) => Some(
            Nvmet::open(std::path::Path::new(nvmet::CONFIGFS), addr, args.revoke_drops_connections)
                .map_err(|e| format!("--nvmet {addr}: {e}"))?,
        ),
        None => None,
    };
    let emu = Emulator::open(args.data_dir.clone(), &init, behaviour, nvmet)
        .map_err(|e| format!("cannot open {}: {e}", args.data_dir.display()))?;

    let mut faults = match &args.faults_json {
        Some(json) => {
            serde_json::from_str::<Faults>(json).map_err(|e| format!("--faults-json: {e}"))?
        }
        None => Faults::default(),
    };
    faults.latency_ms = args.latency_ms.unwrap_or(faults.latency_ms);
    faults.jitter_ms = args.jitter_ms.unwrap_or(faults.jitter_ms);
    faults.handshake_latency_ms = args.handshake_latency_ms.unwrap_or(faults.handshake_latency_ms);
    emu.set_faults(faults)?;

    let authorized_keys = match &args.authorized_keys {
        Some(path) => ssh::read_authorized_keys(path)?,
        None => Vec::new(),
    };
    let password = match &args.password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .trim_end()
                .to_string(),
        ),
        None => None,
    };
    if authorized_keys.is_empty() && password.is_none() {
        tracing::warn!("no --authorized-keys and no --password-file: nobody can log in over SSH");
    }
    let host_key_path =
        args.host_key.clone().unwrap_or_else(|| args.data_dir.join("ssh_host_ed25519_key"));
    let host_key = ssh::host_key(&host_key_path)?;
    let fingerprint = ssh::fingerprint(&host_key);

    let ssh_listener = TcpListener::bind(args.ssh_listen)
        .await
        .map_err(|e| format!("SSH {}: {e}", args.ssh_listen))?;
    let ssh_addr = ssh_listener.local_addr().map_err(|e| e.to_string())?;
    let opts = SshOptions {
        users: args.users.clone(),
        authorized_keys,
        password,
        max_sessions: args.max_sessions,
        max_channels: args.max_channels,
        error_exit_status: args.error_exit_status,
        line_ending: match args.line_ending {
            LineEnding::Crlf => "\r\n".into(),
            LineEnding::Lf => "\n".into(),
        },
    };
    let mut lines = vec![format!("listen ssh {ssh_addr} host-key={fingerprint}")];
    if let Some(addr) = args.nvmet {
        lines.push(format!("listen nvme-tcp {addr}"));
    }
    let mut tasks = tokio::task::JoinSet::new();
    let rest_opts = RestOptions {
        users: args.users.clone(),
        password: opts.password.clone(),
        timeout: std::time::Duration::from_secs(args.rest_timeout_secs),
    };
    tasks.spawn(ssh::serve(emu.clone(), ssh_listener, host_key, opts));

    if let Some(addr) = args.rest_listen {
        let tcp = TcpListener::bind(addr).await.map_err(|e| format!("REST {addr}: {e}"))?;
        let bound = tcp.local_addr().map_err(|e| e.to_string())?;
        let router = rest::router(emu.clone(), rest_opts);
        if args.rest_plain_http {
            lines.push(format!("listen rest http://{bound}"));
            use axum::serve::ListenerExt;
            let tcp = tcp.tap_io(|s| {
                let _ = s.set_nodelay(true);
            });
            tasks.spawn(async move { axum::serve(tcp, router).await });
        } else {
            let identity = Identity::load_or_create(&args.data_dir)?;
            lines.push(format!(
                "listen rest https://{bound} cert-sha256={} cert-file={}",
                identity.fingerprint(),
                args.data_dir.join("rest-cert.pem").display()
            ));
            let listener = TlsListener { tcp, acceptor: identity.acceptor()? };
            tasks.spawn(async move { axum::serve(listener, router).await });
        }
    }

    if let Some(addr) = args.control_listen {
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("control {addr}: {e}"))?;
        lines.push(format!(
            "listen control http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        ));
        let router = control::router(emu.clone());
        tasks.spawn(async move { axum::serve(listener, router).await });
    }

    let mut stdout = std::io::stdout().lock();
    for line in lines {
        writeln!(stdout, "{line}").map_err(|e| e.to_string())?;
    }
    writeln!(stdout, "READY").map_err(|e| e.to_string())?;
    stdout.flush().map_err(|e| e.to_string())?;
    drop(stdout);
    tracing::info!(version = %args.routeros_version, data_dir = %args.data_dir.display(), "RDS emulator ready");

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(done) = tasks.join_next() => match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("listener failed: {e}")),
            Err(e) => Err(format!("listener task failed: {e}")),
        },
    }
}
