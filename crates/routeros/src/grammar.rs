//! The RDS subset of the RouterOS command tree: which words are menus and which are commands.

use crate::syntax::Grammar;

/// Menus `/disk`, `/file`, `/system/resource`, `/system/identity` and their commands.
#[derive(Debug, Clone, Copy)]
pub struct RdsGrammar {
    /// `/file/copy` exists (RouterOS 7.23+).
    pub file_copy: bool,
    /// `/disk/btrfs/subvolume` exists (RouterOS 7.18+, with the storage package).
    pub btrfs: bool,
}

impl Grammar for RdsGrammar {
    fn is_menu(&self, path: &[String]) -> bool {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        matches!(
            p.as_slice(),
            ["disk"]
                | ["file"]
                | ["system"]
                | ["system", "resource"]
                | ["system", "identity"]
                | ["system", "clock"]
        ) || (self.btrfs
            && matches!(p.as_slice(), ["disk", "btrfs"] | ["disk", "btrfs", "subvolume"]))
    }

    fn has_command(&self, path: &[String], command: &str) -> bool {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["disk"] => ["add", "set", "remove", "print", "find", "copy"].contains(&command),
            ["file"] => {
                ["print", "find", "remove"].contains(&command)
                    || (command == "copy" && self.file_copy)
            }
            ["system", "resource"] | ["system", "clock"] => command == "print",
            ["system", "identity"] => ["print", "set"].contains(&command),
            ["disk", "btrfs", "subvolume"] => {
                self.btrfs && ["add", "remove", "print", "find"].contains(&command)
            }
            _ => false,
        }
    }
}
