//! An RDS emulator inside the driver process (`rds-csi serve --emulated-rds DIR`, and
//! `rds-csi demo`): real SSH on loopback with a fresh key pair, real files under DIR, and
//! optionally a real kernel NVMe/TCP export (nvmet) when the kernel has it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use rds_emulator::{
    emulator::Emulator,
    exec::Behaviour,
    nvmet::{self, Nvmet},
    ssh,
    store::{FILES_DIR, InitOptions},
};

use crate::rds::RdsConfig;

pub struct EmulatedRds {
    pub emu: Emulator,
    /// The controller's connection to it (SSH, host key pinned).
    pub rds: RdsConfig,
    pub ssh_address: SocketAddr,
    /// Where the RDS file tree lives on this host (the loop data plane's root).
    pub files: PathBuf,
    /// The NVMe/TCP export address, with nvmet.
    pub nvmet: Option<SocketAddr>,
}

/// The file a running emulator leaves in its directory: its SSH address and host key
/// fingerprint, one per line, so that the operator tools (`rds-csi volumes --emulated-rds
/// DIR`) reach it over SSH like a real RDS.
pub const ENDPOINT_FILE: &str = "ssh-endpoint";

/// The loop root of an emulator whose data directory is `dir`.
pub fn files_dir(dir: &Path) -> PathBuf {
    dir.join(FILES_DIR)
}

/// Whether this kernel can export and import NVMe/TCP (nvmet configfs and /dev/nvme-fabrics).
pub fn nvme_tcp_available() -> bool {
    Path::new(nvmet::CONFIGFS).is_dir() && Path::new("/dev/nvme-fabrics").exists()
}

/// Opens (or initialises, with a 100 GiB pool `storage-pool`) the emulator in `dir` and
/// serves SSH on 127.0.0.1; with `nvmet`, exports disks through the kernel target there.
pub async fn start(dir: &Path, nvmet: Option<SocketAddr>) -> Result<EmulatedRds, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--emulated-rds {}: {e}", dir.display()))?;
    let init = InitOptions { pool_slot: "storage-pool".into(), pool_size: 100 << 30 };
    let target = match nvmet {
        Some(addr) => Some(
            Nvmet::open(Path::new(nvmet::CONFIGFS), addr, false)
                .map_err(|e| format!("NVMe/TCP export on {addr}: {e}"))?,
        ),
        None => None,
    };
    let emu = Emulator::open(dir.to_path_buf(), &init, Behaviour::default(), target)
        .map_err(|e| format!("emulated RDS in {}: {e}", dir.display()))?;
    let key_file = dir.join("client_ed25519");
    let ssh::Loopback { address, fingerprint, .. } =
        ssh::serve_loopback(emu.clone(), &key_file).await?;
    std::fs::write(dir.join(ENDPOINT_FILE), format!("{address}\n{fingerprint}\n"))
        .map_err(|e| format!("--emulated-rds {}: {e}", dir.display()))?;
    let mut opts = routeros::ssh::SshOptions::new(
        &address.to_string(),
        "admin",
        key_file,
        routeros::ssh::HostKeyPolicy::Fingerprint(fingerprint),
    );
    opts.probe_interval = Duration::from_secs(1);
    Ok(EmulatedRds {
        emu,
        rds: RdsConfig::Ssh(opts),
        ssh_address: address,
        files: files_dir(dir),
        nvmet,
    })
}
