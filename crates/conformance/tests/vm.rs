//! The conformance suite once more, over real NVMe/TCP: a real Linux kernel in QEMU
//! (tools/nvme-vm) runs `csi-conformance --mode both` (tests/vm/conformance_nvme.sh), every
//! rule with a driver that serves its emulated RDS through the kernel NVMe/TCP target (which
//! enforces the storage-fencing allow lists) and attaches natively through /dev/nvme-fabrics.
//! About 8 minutes under TCG.
//!
//! Needs root and the VM packages (qemu-system-x86, linux-image-amd64, nvme-cli,
//! busybox-static, kmod, xz-utils; .ci/run installs them). Outside CI, without them, the test
//! prints why it is skipped.

use std::path::Path;

#[path = "../../../tools/nvme-vm/preflight.rs"]
mod preflight;

#[test]
fn the_spec_rules_hold_over_native_nvme_tcp() {
    if !preflight::require_vm(&["mkfs.xfs", "mkfs.ext4"]) {
        return;
    }
    let driver = conformance::Target::from_env().binary;
    preflight::run_checks(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/conformance_nvme.sh"),
        &[env!("CARGO_BIN_EXE_csi-conformance"), &driver.display().to_string()],
        &[("NVME_VM_TIMEOUT", "2400"), ("NVME_VM_MEM", "2G")],
    );
}
