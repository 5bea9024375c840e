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

/// Whether an NQN is inside the managed prefix: the node never touches any other subsystem
/// (the Go driver's orphan cleaner once disconnected a node's own root disk).
pub fn managed(prefix: &str, nqn: &str) -> bool {
    prefix.len() > "nqn.".len()
        && prefix.ends_with(':')
        && nqn.starts_with(prefix)
        && nqn.len() > prefix.len()
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
        let p = "nqn.2000-02.com.mikrotik:";
        assert!(managed(p, "nqn.2000-02.com.mikrotik:pvc-1"));
        assert!(!managed(p, "nqn.2000-02.com.mikrotik:"), "the bare prefix is not a volume");
        assert!(!managed(p, "nqn.2014-08.org.nvmexpress:uuid:root-disk"));
        assert!(!managed("", "anything"), "an empty prefix manages nothing");
        assert!(!managed("nqn.", "nqn.x:y"));
    }
}
