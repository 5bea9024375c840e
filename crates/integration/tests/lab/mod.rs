//! An in-process RDS emulator on loopback with a client key, and clients for it.
#![allow(dead_code)]

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use rds_emulator::{
    emulator::{Emulator, Faults},
    exec::Behaviour,
    ssh::{self, SshOptions as ServerOptions},
    store::InitOptions,
};
use routeros::{
    client::{Rds, RetryPolicy},
    ops::{NewDisk, ReadFormat},
    ssh::{HostKeyPolicy, SshOptions, SshTransport},
    types::{FilePath, Nqn, Slot},
};
use russh::keys::{PrivateKey, PublicKey};
use tokio::{net::TcpListener, task::JoinHandle};

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub emu: Emulator,
    pub ssh: SocketAddr,
    pub fingerprint: String,
    pub known_hosts_line: String,
    pub client_key: PathBuf,
    client_public: PublicKey,
    server: JoinHandle<std::io::Result<()>>,
    host_key: PrivateKey,
    behaviour: Behaviour,
}

impl Lab {
    pub async fn start() -> Lab {
        Self::start_with(Behaviour::default()).await
    }

    pub async fn start_with(behaviour: Behaviour) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let client_key = dir.path().join("id_ed25519");
        let emu = open(&dir, &behaviour);
        let ssh::Loopback { address: ssh, fingerprint, host_key, client_key: public, task } =
            ssh::serve_loopback(emu.clone(), &client_key).await.unwrap();
        let known_hosts_line = format!("127.0.0.1 {}", host_key.public_key().to_openssh().unwrap());
        Lab {
            dir,
            emu,
            ssh,
            fingerprint,
            known_hosts_line,
            client_key,
            client_public: public,
            server: task,
            host_key,
            behaviour,
        }
    }

    /// Stops the emulator (every connection drops) and starts it again on the same address
    /// and data directory: a full restart of the RDS management plane.
    pub async fn restart(&mut self) {
        self.emu.reboot(Duration::ZERO);
        self.server.abort();
        let _ = (&mut self.server).await;
        self.emu = open(&self.dir, &self.behaviour);
        let listener = TcpListener::bind(self.ssh).await.unwrap();
        let opts = ServerOptions::with_keys(vec![self.client_public.clone()]);
        self.server =
            tokio::spawn(ssh::serve(self.emu.clone(), listener, self.host_key.clone(), opts));
    }

    pub fn ssh_options(&self) -> SshOptions {
        let mut o = SshOptions::new(
            &self.ssh.to_string(),
            "admin",
            self.client_key.clone(),
            HostKeyPolicy::Fingerprint(self.fingerprint.clone()),
        );
        o.command_timeout = Duration::from_secs(5);
        o.connect_timeout = Duration::from_secs(5);
        o
    }

    pub fn transport(&self) -> SshTransport {
        SshTransport::new(self.ssh_options()).unwrap()
    }

    pub fn rds(&self) -> (Rds, SshTransport) {
        let t = self.transport();
        (Rds::new(Arc::new(t.clone()), fast_retry()), t)
    }

    pub fn faults(&self, f: Faults) {
        self.emu.set_faults(f).unwrap();
    }

    /// Command log lines, in order.
    pub fn commands(&self) -> Vec<(String, String)> {
        self.emu.command_log().into_iter().map(|e| (e.command, e.result)).collect()
    }

    pub fn clear_log(&self) {
        self.emu.clear_log();
    }
}

fn open(dir: &tempfile::TempDir, behaviour: &Behaviour) -> Emulator {
    let init = InitOptions { pool_slot: "storage-pool".into(), pool_size: 100 << 30 };
    Emulator::open(dir.path().join("rds"), &init, behaviour.clone(), None).unwrap()
}

/// Retries quickly so fault tests stay short: 50 ms → 400 ms, 10 s in all.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        deadline: Duration::from_secs(10),
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    }
}

pub fn slot(s: &str) -> Slot {
    Slot::new(s).unwrap()
}

pub fn new_disk(name: &str, size: u64) -> NewDisk {
    NewDisk {
        slot: slot(name),
        file: FilePath::new(&format!("storage-pool/metal-csi/{name}.img")).unwrap(),
        size,
        nqn: Nqn::new(&format!("nqn.2000-02.com.mikrotik:{name}")).unwrap(),
        port: 4420,
        comment: format!("rds-csi test {name}"),
        copy_from: None,
        server_nqn_supported: true,
        export: true,
        allowed_hosts: Vec::new(),
    }
}

pub fn detail_format(mut o: SshOptions) -> SshOptions {
    o.read_format = ReadFormat::Detail;
    o
}

/// A REST listener on the lab's emulator.
pub struct RestServer {
    pub base_url: String,
    pub fingerprint: Option<String>,
    pub cert_file: PathBuf,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for RestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const PASSWORD: &str = "s3cret";

impl Lab {
    /// Starts REST (HTTPS with the generated certificate, or plain HTTP) with a time limit.
    pub async fn rest(&self, https: bool, limit: Duration) -> RestServer {
        use rds_emulator::{rest, tls};
        let opts = rest::RestOptions {
            users: vec!["admin".into()],
            password: Some(PASSWORD.into()),
            timeout: limit,
        };
        let router = rest::router(self.emu.clone(), opts);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let cert_file = self.dir.path().join("rds").join("rest-cert.pem");
        if https {
            let identity = tls::Identity::load_or_create(&self.dir.path().join("rds")).unwrap();
            let listener = tls::TlsListener { tcp, acceptor: identity.acceptor().unwrap() };
            let task = tokio::spawn(async move { axum_serve_tls(listener, router).await });
            RestServer {
                base_url: format!("https://{addr}"),
                fingerprint: Some(identity.fingerprint()),
                cert_file,
                task,
            }
        } else {
            let task = tokio::spawn(async move { axum_serve(tcp, router).await });
            RestServer { base_url: format!("http://{addr}"), fingerprint: None, cert_file, task }
        }
    }
}

async fn axum_serve_tls(
    listener: rds_emulator::tls::TlsListener,
    router: axum::Router,
) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

async fn axum_serve(listener: TcpListener, router: axum::Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}
