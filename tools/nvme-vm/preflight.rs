// Shared by the VM tests (`#[path]`-included): whether this machine can boot the NVMe VM.
// In CI a missing part is a failure; elsewhere the test prints why it is skipped.

/// `Err(reason)` when the VM cannot run here.
pub fn vm_available(extra_tools: &[&str]) -> Result<(), String> {
    let has = |tool: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for tool in ["qemu-system-x86_64", "nvme", "modprobe", "xz"].iter().chain(extra_tools) {
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
    if !std::path::Path::new("/bin/busybox").exists() {
        return Err("/bin/busybox missing (apt-get install busybox-static)".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root".into());
    }
    Ok(())
}

/// True when the VM can run; otherwise fails in CI, or prints why and returns false.
pub fn require_vm(extra_tools: &[&str]) -> bool {
    match vm_available(extra_tools) {
        Ok(()) => true,
        Err(why) => {
            assert!(std::env::var_os("CI").is_none(), "the NVMe VM is required in CI: {why}");
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

/// Runs `bash SCRIPT ARGS...` in the VM (run-in-nvme-vm.sh next to this file) with `env`, and
/// asserts the script's own verdict: exit 0, a final "N passed, 0 failed", no FAILED line.
pub fn run_checks(script: &std::path::Path, args: &[&str], env: &[(&str, &str)]) {
    // Every crate sits at crates/<name>, two levels below the tools directory's parent.
    let runner = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/nvme-vm/run-in-nvme-vm.sh");
    let out = std::process::Command::new("bash")
        .arg(runner)
        .arg("--")
        .arg("bash")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run the VM");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "VM test failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
}
