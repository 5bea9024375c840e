//! The emulated RouterOS version and the features it gates (spec §1.1, §5).

use std::{fmt, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    const fn at_least(self, major: u32, minor: u32) -> bool {
        self.major > major || (self.major == major && self.minor >= minor)
    }
    /// `file-path`, `file-size`, `file-offset`: 7.17.
    pub fn has_file_disks(self) -> bool {
        self.at_least(7, 17)
    }
    /// `compress`: 7.18.
    pub fn has_compress(self) -> bool {
        self.at_least(7, 18)
    }
    /// `nvme-tcp-server-nqn`: 7.21 (before, the NQN is the slot name).
    pub fn has_server_nqn(self) -> bool {
        self.at_least(7, 21)
    }
    /// `/file/copy`: 7.23.
    pub fn has_file_copy(self) -> bool {
        self.at_least(7, 23)
    }
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid RouterOS version {s:?}: expected e.g. 7.21 or 7.21.3");
        let mut parts = s.split('.').map(|p| p.parse::<u32>().map_err(|_| bad()));
        let major = parts.next().ok_or_else(bad)??;
        let minor = parts.next().ok_or_else(bad)??;
        let patch = parts.next().transpose()?.unwrap_or(0);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Version { major, minor, patch })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.patch == 0 {
            write!(f, "{}.{}", self.major, self.minor)
        } else {
            write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates() {
        let v: Version = "7.20.8".parse().unwrap();
        assert!(v.has_file_disks() && v.has_compress() && !v.has_server_nqn());
        let v: Version = "7.21".parse().unwrap();
        assert!(v.has_server_nqn() && !v.has_file_copy());
        assert!("7.16".parse::<Version>().map(|v| !v.has_file_disks()).unwrap());
        assert!("7".parse::<Version>().is_err());
        assert_eq!("7.21.3".parse::<Version>().unwrap().to_string(), "7.21.3");
    }
}
