//! The emulated RouterOS command tree and argument tables, gated by version (spec §1.2, §5).

pub use routeros::grammar::RdsGrammar;

use crate::version::Version;

/// `/disk add|set` arguments RouterOS accepts in every version the emulator supports.
const DISK_ARGS: &[&str] = &[
    "type",
    "slot",
    "parent",
    "mount-point-template",
    "mount-filesystem",
    "mount-read-only",
    "partition-number",
    "partition-offset",
    "partition-size",
    "raid-type",
    "raid-device-count",
    "raid-max-component-size",
    "raid-chunk-size",
    "raid-master",
    "raid-role",
    "raid-member-failed",
    "nvme-tcp-export",
    "nvme-tcp-server-port",
    "nvme-tcp-server-allow-host-name",
    "nvme-tcp-server-password",
    "nvme-tcp-address",
    "nvme-tcp-host-name",
    "nvme-tcp-password",
    "nvme-tcp-port",
    "iscsi-export",
    "iscsi-port",
    "iscsi-address",
    "iscsi-iqn",
    "nfs-sharing",
    "nfs-address",
    "nfs-share",
    "smb-sharing",
    "smb-address",
    "smb-share",
    "smb-user",
    "smb-password",
    "smb-encryption",
    "media-sharing",
    "media-interface",
    "tmpfs-max-size",
    "ramdisk-size",
    "crypted-backend",
    "encryption-key",
    "self-encryption-password",
    "sshfs-address",
    "sshfs-port",
    "sshfs-user",
    "sshfs-password",
    "sshfs-path",
    "swap",
    "comment",
    "disabled",
];
const DISK_ARGS_7_17: &[&str] = &["file-path", "file-size", "file-offset"];
const DISK_ARGS_7_18: &[&str] = &["compress"];
const DISK_ARGS_7_21: &[&str] = &[
    "nvme-tcp-server-nqn",
    "nvme-tcp-nqn",
    "iscsi-server-port",
    "iscsi-server-iqn",
    "smb-server-user",
    "smb-server-password",
    "smb-server-encryption",
];

/// The arguments the emulator models; the rest are accepted and ignored (docs/emulator.md).
pub const MODELLED_DISK_ARGS: &[&str] = &[
    "type",
    "compress",
    "slot",
    "comment",
    "disabled",
    "file-path",
    "file-size",
    "file-offset",
    "nvme-tcp-export",
    "nvme-tcp-server-port",
    "nvme-tcp-server-nqn",
    "nvme-tcp-server-allow-host-name",
    "copy-from",
    "numbers",
];

/// Values of `type` (spec §1.1).
pub const DISK_TYPES: &[&str] = &[
    "raid",
    "nvme-tcp",
    "iscsi",
    "nfs",
    "smb",
    "partition",
    "tmpfs",
    "ramdisk",
    "crypted",
    "sshfs",
    "file",
    "hardware",
];

/// Whether `/disk <command>` takes the named argument `name` in `version`.
pub fn disk_arg_allowed(version: Version, command: &str, name: &str) -> bool {
    match (command, name) {
        ("add", "copy-from") | ("set", "numbers") => return true,
        ("add", "numbers") | ("set", "copy-from") => return false,
        _ => {}
    }
    DISK_ARGS.contains(&name)
        || (version.has_file_disks() && DISK_ARGS_7_17.contains(&name))
        || (version.has_compress() && DISK_ARGS_7_18.contains(&name))
        || (version.has_server_nqn() && DISK_ARGS_7_21.contains(&name))
        || (!version.has_server_nqn() && name == "nvme-tcp-name")
}

/// Arguments of `print` (any menu).
pub const PRINT_WORDS: &[&str] =
    &["detail", "terse", "as-value", "count-only", "without-paging", "brief", "show-ids"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_follow_the_version_gates() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(!disk_arg_allowed(v("7.16"), "add", "file-path"));
        assert!(disk_arg_allowed(v("7.17"), "add", "file-path"));
        assert!(!disk_arg_allowed(v("7.20"), "add", "nvme-tcp-server-nqn"));
        assert!(disk_arg_allowed(v("7.20"), "add", "nvme-tcp-name"));
        assert!(disk_arg_allowed(v("7.21"), "set", "nvme-tcp-server-nqn"));
        assert!(!disk_arg_allowed(v("7.21"), "add", "nvme-tcp-name"));
        assert!(!disk_arg_allowed(v("7.21"), "add", "status"));
        assert!(!disk_arg_allowed(v("7.21"), "add", "nvme-tcp-host-nqn"));
        assert!(!disk_arg_allowed(v("7.21"), "set", "copy-from"));
        use routeros::syntax::Grammar;
        let g = RdsGrammar { file_copy: v("7.22").has_file_copy(), btrfs: true };
        assert!(!g.has_command(&["file".into()], "copy"));
        let g = RdsGrammar { file_copy: v("7.23").has_file_copy(), btrfs: true };
        assert!(g.has_command(&["file".into()], "copy"));
    }
}
