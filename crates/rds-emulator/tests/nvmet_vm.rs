//! Real NVMe/TCP export: boots a real Linux kernel in QEMU (tools/nvme-vm), runs the emulator
//! there with `--nvmet`, and connects with the kernel initiator (tests/vm/nvmet_export.sh).
//!
//! Needs root and the VM packages (qemu-system-x86, linux-image-amd64, nvme-cli,
//! busybox-static, kmod, xz-utils; .ci/run installs them). About 20 s under TCG. Outside CI,
//! without them, the test prints why it is skipped.

use std::path::Path;

#[path = "../../../tools/nvme-vm/preflight.rs"]
mod preflight;

#[test]
fn disks_are_exported_through_the_kernel_nvme_tcp_target() {
    if !preflight::require_vm(&[]) {
        return;
    }
    preflight::run_checks(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/nvmet_export.sh"),
        &[env!("CARGO_BIN_EXE_rds-emulator")],
        &[("NVME_VM_TIMEOUT", "300")],
    );
}
