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

use std::{path::Path, process::Command};

fn vm_available() -> Result<(), String> {
    let has = |tool: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for tool in ["qemu-system-x86_64", "nvme", "modprobe", "xz", "mkfs.xfs", "mkfs.ext4"] {
        if !has(tool) {
            return Err(format!("{tool} is not installed"));
        }
    }
    let kernel = std::fs::read_dir("/boot")
        .map_err(|e| format!("/boot: {e}"))?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"));
    if !kernel {
        return Err("no kernel in /boot (apt-get install linux-image-amd64)".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Err("/bin/busybox missing (apt-get install busybox-static)".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root".into());
    }
    Ok(())
}

#[test]
fn the_node_attaches_natively_over_nvme_tcp_and_never_touches_a_system_subsystem() {
    if let Err(why) = vm_available() {
        assert!(std::env::var_os("CI").is_none(), "the NVMe VM is required in CI: {why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runner = manifest.join("../../tools/nvme-vm/run-in-nvme-vm.sh");
    let script = manifest.join("tests/vm/node_nvme.sh");
    let out = Command::new("bash")
        .arg(runner)
        .arg("--")
        .arg("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_rds-csi"))
        .env("NVME_VM_TIMEOUT", "600")
        .env("NVME_VM_MEM", "2G")
        .output()
        .expect("run the VM");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "VM test failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
}
