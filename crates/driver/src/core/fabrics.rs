//! The option string written to `/dev/nvme-fabrics` to connect an NVMe/TCP controller (the
//! kernel's own option names, as `nvme connect -vv` prints them). Pure; validated so no value
//! can add an option (the kernel splits on `,`).

use std::net::IpAddr;

use routeros::types::Nqn;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub address: IpAddr,
    pub port: u16,
    pub nqn: Nqn,
    pub host_nqn: Nqn,
    /// -1 = reconnect forever.
    pub ctrl_loss_tmo: i32,
    pub reconnect_delay: u32,
    pub keep_alive_tmo: Option<u32>,
}

impl Connect {
    /// `transport=tcp,traddr=...,trsvcid=...,nqn=...,hostnqn=...,ctrl_loss_tmo=...,...`
    pub fn options(&self) -> String {
        let mut s = format!(
            "transport=tcp,traddr={},trsvcid={},nqn={},hostnqn={},ctrl_loss_tmo={},reconnect_delay={}",
            self.address,
            self.port,
            self.nqn,
            self.host_nqn,
            self.ctrl_loss_tmo,
            self.reconnect_delay
        );
        if let Some(k) = self.keep_alive_tmo {
            s.push_str(&format!(",keep_alive_tmo={k}"));
        }
        s
    }
}

/// Checks a managed-NQN prefix (validated at start-up): it must name more than a vendor, i.e.
/// have characters after its last `:` (`nqn.2000-02.com.mikrotik:pvc-`). A bare vendor prefix
/// would match the NVMe/TCP root disks of diskless nodes booted from the same RDS (incident 3).
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    let Some(rest) = prefix.strip_prefix("nqn.") else {
        return Err(format!("managed NQN prefix {prefix:?} must start with \"nqn.\""));
    };
    match rest.rsplit_once(':') {
        Some((domain, tail)) if !domain.is_empty() && !tail.is_empty() => Ok(()),
        _ => Err(format!(
            "managed NQN prefix {prefix:?} must go past the vendor part, e.g. \"nqn.2000-02.com.mikrotik:pvc-\": \
             a vendor-only prefix also matches system disks served by the same RDS"
        )),
    }
}

/// Whether an NQN is inside the managed prefix: the node never touches any other subsystem
/// (the Go driver's orphan cleaner once disconnected a node's own root disk). Checked again at
/// every call, independently of the start-up validation.
pub fn managed(prefix: &str, nqn: &str) -> bool {
    validate_prefix(prefix).is_ok() && nqn.starts_with(prefix) && nqn.len() > prefix.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_string() {
        let c = Connect {
            address: "10.0.0.5".parse().unwrap(),
            port: 4420,
            nqn: Nqn::new("nqn.2000-02.com.mikrotik:pvc-1").unwrap(),
            host_nqn: Nqn::new("nqn.2014-08.org.nvmexpress:uuid:1").unwrap(),
            ctrl_loss_tmo: -1,
            reconnect_delay: 5,
            keep_alive_tmo: Some(10),
        };
        assert_eq!(
            c.options(),
            "transport=tcp,traddr=10.0.0.5,trsvcid=4420,nqn=nqn.2000-02.com.mikrotik:pvc-1,\
             hostnqn=nqn.2014-08.org.nvmexpress:uuid:1,ctrl_loss_tmo=-1,reconnect_delay=5,keep_alive_tmo=10"
        );
        // Nqn rejects ',' so no value can add a kernel option.
        assert!(Nqn::new("nqn.a,ctrl_loss_tmo=0").is_err());
    }

    #[test]
    fn only_managed_nqns() {
        let p = "nqn.2000-02.com.mikrotik:pvc-";
        assert!(managed(p, "nqn.2000-02.com.mikrotik:pvc-1"));
        assert!(!managed(p, "nqn.2000-02.com.mikrotik:pvc-"), "the bare prefix is not a volume");
        assert!(!managed(p, "nqn.2000-02.com.mikrotik:nixos-node1"), "a system disk");
        assert!(!managed(p, "nqn.2014-08.org.nvmexpress:uuid:root-disk"));
        assert!(!managed("", "anything"), "an empty prefix manages nothing");
        assert!(
            !managed("nqn.2000-02.com.mikrotik:", "nqn.2000-02.com.mikrotik:pvc-1"),
            "vendor-only"
        );
        assert!(validate_prefix("nqn.2000-02.com.mikrotik:").unwrap_err().contains("vendor"));
        assert!(validate_prefix("pvc-").is_err());
        assert!(validate_prefix("nqn.:x").is_err());
    }
}
