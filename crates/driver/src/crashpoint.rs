//! Crash points for the restart-safety tests (docs/operations.md): when the environment
//! variable `RDS_CSI_CRASH_POINT` names a point, the process kills itself with SIGKILL there,
//! exactly as an OOM kill or a node reboot would stop it half-way through an RPC. Unset (as in
//! every deployment) a point costs one comparison.

use std::sync::LazyLock;

static POINT: LazyLock<Option<String>> =
    LazyLock::new(|| std::env::var("RDS_CSI_CRASH_POINT").ok().filter(|p| !p.is_empty()));

/// The points there are, for the tests and the docs.
pub const POINTS: &[&str] = &[
    "stage.attached",
    "stage.formatted",
    "stage.mounted",
    "publish.mounted",
    "unpublish.unmounted",
    "unstage.unmounted",
];

/// Kills this process with SIGKILL if `RDS_CSI_CRASH_POINT` is `name`.
pub fn hit(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "unknown crash point {name}");
    if POINT.as_deref() == Some(name) {
        tracing::error!(
            point = name,
            "RDS_CSI_CRASH_POINT reached: killing this process (SIGKILL)"
        );
        // SAFETY: kill(2) on our own pid.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
