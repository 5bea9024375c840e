//! An in-process RDS emulator (real SSH and HTTPS on loopback) for the driver's black-box tests,
//! and the `rds-csi serve --controller` flags that reach it.

use std::path::PathBuf;

use rds_emulator::{emulator::Emulator, exec::Behaviour, rest, ssh, store::InitOptions, tls};

pub struct Rds {
    pub emu: Emulator,
    pub address: String,
    pub fingerprint: String,
    pub key_file: PathBuf,
    pub rest_url: String,
    pub rest_fingerprint: String,
    pub password_file: PathBuf,
    pub dir: tempfile::TempDir,
}

pub const POOL: u64 = 100 << 30;

pub async fn rds() -> Rds {
    rds_with(Behaviour::default()).await
}

/// An emulator with other behaviour (e.g. another RouterOS version).
pub async fn rds_with(behaviour: Behaviour) -> Rds {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("id_ed25519");
    let init = InitOptions { pool_slot: "storage-pool".into(), pool_size: POOL };
    let data = dir.path().join("data");
    let emu = Emulator::open(data.clone(), &init, behaviour, None).unwrap();
    let ssh = ssh::serve_loopback(emu.clone(), &key_file).await.unwrap();
    let (address, fingerprint) = (ssh.address.to_string(), ssh.fingerprint);

    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "s3cret\n").unwrap();
    let identity = tls::Identity::load_or_create(&data).unwrap();
    let rest_fingerprint = identity.fingerprint();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest_url = format!("https://{}", tcp.local_addr().unwrap());
    let router = rest::router(
        emu.clone(),
        rest::RestOptions {
            users: vec!["admin".into()],
            password: Some("s3cret".into()),
            timeout: std::time::Duration::from_secs(60),
        },
    );
    let listener = tls::TlsListener { tcp, acceptor: identity.acceptor().unwrap() };
    tokio::spawn(async move { axum::serve(listener, router).await });
    Rds { emu, address, fingerprint, key_file, rest_url, rest_fingerprint, password_file, dir }
}

impl Rds {
    /// `serve` flags for a controller that reaches this RDS over `transport` (`ssh`/`rest`).
    pub fn flags(&self, transport: &str) -> Vec<String> {
        let mut f: Vec<String> = [
            "--controller",
            "--attachment-state",
            "memory",
            "--metrics-address",
            "127.0.0.1:0",
            "--rds-probe-interval-seconds",
            "1",
        ]
        .map(String::from)
        .into();
        match transport {
            "ssh" => f.extend([
                "--rds-address".into(),
                self.address.clone(),
                "--rds-ssh-key-file".into(),
                self.key_file.display().to_string(),
                "--rds-host-key".into(),
                self.fingerprint.clone(),
            ]),
            _ => f.extend([
                "--rds-transport".into(),
                "rest".into(),
                "--rds-rest-url".into(),
                self.rest_url.clone(),
                "--rds-password-file".into(),
                self.password_file.display().to_string(),
                "--rds-tls-fingerprint".into(),
                self.rest_fingerprint.clone(),
            ]),
        }
        f
    }

    /// Runs a RouterOS line directly (setup), panicking on a RouterOS error.
    pub fn ros(&self, line: &str) -> String {
        let o = self.emu.run_now(line);
        assert!(!o.failed, "{line}: {}", o.output);
        o.output
    }

    pub fn file_exists(&self, name: &str) -> bool {
        self.emu.with_store(|s| s.file_len(name).is_some())
    }

    /// Commands the emulator received, in order.
    pub fn commands(&self) -> Vec<String> {
        self.emu.command_log().into_iter().map(|e| e.command).collect()
    }
}
