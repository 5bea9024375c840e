//! The node over real NVMe/TCP: boots a real Linux kernel in QEMU (tools/nvme-vm) and runs
//! `rds-csi demo` there (tests/vm/node_nvme.sh): the embedded emulator exports through the
//! kernel target (nvmet), the node connects natively through /dev/nvme-fabrics (nvme-cli is
//! shadowed by a recorder), stages, publishes, writes, grows xfs and ext4 online, restores
//! a snapshot, unpublishes, unstages and disconnects, while a connected "system" subsystem
//! outside the managed prefix must survive every step.
//!
//! Needs root and the VM packages (qemu-system-x86, linux-image-amd64, nvme-cli,
//! busybox-static, kmod, xz-utils; .ci/run installs them). About a minute under TCG. Outside
//! CI, without them, the test prints why it is skipped.

use std::path::Path;

#[path = "../../../tools/nvme-vm/preflight.rs"]
mod preflight;

#[test]
fn the_node_attaches_natively_over_nvme_tcp_and_never_touches_a_system_subsystem() {
    if !preflight::require_vm(&["mkfs.xfs", "mkfs.ext4"]) {
        return;
    }
    preflight::run_checks(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/node_nvme.sh"),
        &[env!("CARGO_BIN_EXE_rds-csi")],
        &[("NVME_VM_TIMEOUT", "600"), ("NVME_VM_MEM", "2G")],
    );
}
