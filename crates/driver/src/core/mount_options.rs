//! Mount options for filesystem volumes (docs/node.md). The capability's `mount_flags` pass
//! through a whitelist; `nosuid,nodev` are always added; `noexec` is added unless
//! `--allow-exec` (a documented choice: VM disk images and databases do not need exec, but
//! some workloads run binaries from their volume). Anything else is an InvalidArgument
//! naming the flag, never silently dropped.

/// Flags a StorageClass `mountOptions` entry may carry.
pub const ALLOWED: &[&str] = &[
    "ro",
    "rw",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "noexec",
    "nosuid",
    "nodev",
    "discard",
    "nodiscard",
    "nobarrier",
    "barrier",
];

/// Flags that would weaken the node's security and are refused.
const FORBIDDEN: &[&str] = &["suid", "dev", "exec", "bind", "rbind", "remount", "move"];

/// Checks `flags` (each may be a comma-separated list) and returns them split.
pub fn validate(flags: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for flag in flags.iter().flat_map(|f| f.split(',')).map(str::trim).filter(|f| !f.is_empty()) {
        if FORBIDDEN.contains(&flag) {
            return Err(format!(
                "mount flag {flag:?} is not allowed: rds-csi always mounts volumes nosuid,nodev (and noexec unless the node runs with --allow-exec)"
            ));
        }
        if !ALLOWED.contains(&flag) {
            return Err(format!(
                "mount flag {flag:?} is not supported; allowed: {}",
                ALLOWED.join(", ")
            ));
        }
        if !out.iter().any(|o| o == flag) {
            out.push(flag.to_string());
        }
    }
    Ok(out)
}

/// The option list for a mount: the forced security flags, then the validated extras.
pub fn with_security(extra: &[String], allow_exec: bool, read_only: bool) -> Vec<String> {
    let mut out: Vec<String> = vec!["nosuid".into(), "nodev".into()];
    if !allow_exec {
        out.push("noexec".into());
    }
    for f in extra {
        if f == "rw" && read_only {
            continue;
        }
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    if read_only && !out.iter().any(|o| o == "ro") {
        out.push("ro".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn whitelist() {
        assert_eq!(
            validate(&s(&["noatime,lazytime", "noatime"])).unwrap(),
            s(&["noatime", "lazytime"])
        );
        let e = validate(&s(&["exec"])).unwrap_err();
        assert!(e.contains("\"exec\" is not allowed"), "{e}");
        let e = validate(&s(&["uid=0"])).unwrap_err();
        assert!(e.contains("\"uid=0\" is not supported"), "{e}");
        assert!(validate(&s(&["noatime,suid"])).is_err());
    }

    #[test]
    fn security_flags_always_present() {
        assert_eq!(with_security(&[], false, false), s(&["nosuid", "nodev", "noexec"]));
        assert_eq!(
            with_security(&s(&["noatime"]), true, true),
            s(&["nosuid", "nodev", "noatime", "ro"])
        );
        assert_eq!(with_security(&s(&["rw"]), true, true), s(&["nosuid", "nodev", "ro"]));
    }
}
