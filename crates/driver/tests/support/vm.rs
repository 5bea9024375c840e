//! Helpers of the tests that run inside the NVMe VM (reconnect_vm.rs, heal_vm.rs): the kernel
//! target's configfs, the host's NVMe controllers, TAP-like check lines.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

pub const NVMET: &str = "/sys/kernel/config/nvmet";

/// Counts and prints `ok - ...` lines.
pub struct Checks(pub u32);

impl Checks {
    pub fn ok(&mut self, what: &str) {
        self.0 += 1;
        println!("ok - {what}");
    }
}

/// Polls `f` every 100 ms until it holds; panics after `within`.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The NVMe controllers connected to `nqn`: (name, state).
pub fn controllers(nqn: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/class/nvme").into_iter().flatten().flatten() {
        let subsys = std::fs::read_to_string(e.path().join("subsysnqn")).unwrap_or_default();
        if subsys.trim() == nqn {
            let state = std::fs::read_to_string(e.path().join("state")).unwrap_or_default();
            out.push((e.file_name().to_string_lossy().into_owned(), state.trim().to_string()));
        }
    }
    out
}

/// The nvmet port the emulator serves 4420 on.
pub fn port_dir() -> PathBuf {
    std::fs::read_dir(format!("{NVMET}/ports"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p.join("addr_trsvcid")).is_ok_and(|s| s.trim() == "4420"))
        .expect("the emulator's nvmet port")
}
