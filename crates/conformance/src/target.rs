//! The driver under test: its binary, how it reaches its volumes (loop devices, or native
//! NVMe/TCP in the VM), the access type of a run, and the node ids it serves and knows.

use std::{net::SocketAddr, path::PathBuf};

/// The access type every rule of a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Mount,
    Block,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Mount => "mount",
            Mode::Block => "block",
        }
    }
}

/// How the driver under test reaches its volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plane {
    /// Loop devices on the emulator's files (any Linux with root).
    Loop,
    /// Native NVMe/TCP to the emulator exporting through the kernel target (the VM).
    NvmeTcp { nvmet: SocketAddr },
}

/// The driver binary and its data plane.
#[derive(Debug, Clone)]
pub struct Target {
    pub binary: PathBuf,
    pub plane: Plane,
}

/// The node id the driver under test serves.
pub const NODE: &str = "conformance-node";
/// A node id the controller knows (`--known-node-id`) that no node plugin serves here.
pub const OTHER_NODE: &str = "conformance-node-b";
pub const GIB: i64 = 1 << 30;

impl Target {
    /// `RDS_CSI_BIN`, else `rds-csi` beside this executable (target/debug/rds-csi for a test
    /// in target/debug/deps); `CONFORMANCE_DATA_PLANE=nvme-tcp` with `CONFORMANCE_NVMET`
    /// (default 127.0.0.1:4420) for the VM run.
    pub fn from_env() -> Target {
        let binary = std::env::var_os("RDS_CSI_BIN").map(PathBuf::from).unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("current executable");
            let dir = exe.parent().expect("a directory");
            let beside = dir.join("rds-csi");
            if beside.exists() { beside } else { dir.parent().expect("target dir").join("rds-csi") }
        });
        assert!(
            binary.exists(),
            "the driver binary {} is missing: build it (cargo build --bin rds-csi) or set RDS_CSI_BIN",
            binary.display()
        );
        let plane = match std::env::var("CONFORMANCE_DATA_PLANE").as_deref() {
            Ok("nvme-tcp") => Plane::NvmeTcp {
                nvmet: std::env::var("CONFORMANCE_NVMET")
                    .unwrap_or_else(|_| "127.0.0.1:4420".into())
                    .parse()
                    .expect("CONFORMANCE_NVMET is ADDR:PORT"),
            },
            _ => Plane::Loop,
        };
        Target { binary, plane }
    }
}
