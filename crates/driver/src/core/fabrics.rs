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

/// The longest volume id (`pvc-<uuid>`): prefixes must leave room for it in an NQN.
const VOLUME_ID_LEN: usize = 40;

/// Checks the NQN rules (NVMe Base spec §4.5) on the part of an NQN up to and including its
/// first `:`: `nqn.YYYY-MM.<reverse domain>:`, with a real month and a domain of lower-case
/// letters, digits, `-` and `.`, and room left for a volume id within 223 bytes.
fn check_nqn_head(prefix: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{prefix:?} is not a valid NQN prefix: {why} (the form is nqn.YYYY-MM.reverse.domain:..., e.g. nqn.2000-02.com.mikrotik:)"
        ))
    };
    let Some(rest) = prefix.strip_prefix("nqn.") else { return bad("it must start with \"nqn.\"") };
    let date = rest.get(..8).unwrap_or("");
    let (year, month) = (date.get(..4).unwrap_or(""), date.get(5..7).unwrap_or(""));
    if date.len() != 8
        || !year.bytes().all(|b| b.is_ascii_digit())
        || date.as_bytes()[4] != b'-'
        || !month.parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
        || date.as_bytes()[7] != b'.'
    {
        return bad("it needs a date YYYY-MM after \"nqn.\"");
    }
    let Some((domain, _)) = rest[8..].split_once(':') else {
        return bad("the reverse domain must end with ':'");
    };
    if domain.is_empty()
        || domain.starts_with(['.', '-'])
        || !domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return bad("the reverse domain may hold only lower-case letters, digits, '-' and '.'");
    }
    if prefix.len() + VOLUME_ID_LEN > routeros::types::Nqn::MAX_LEN {
        return bad("it leaves no room for a volume id within the 223-byte NQN limit");
    }
    if let Some(c) =
        prefix.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\\' | ',' | '$'))
    {
        return bad(&format!("it contains {c:?}"));
    }
    Ok(())
}

/// Checks the controller's `--nqn-prefix` (every NQN it creates is this plus the volume id):
/// the NQN rules, ending with `:`.
pub fn validate_nqn_prefix(prefix: &str) -> Result<(), String> {
    check_nqn_head(prefix)?;
    if !prefix.ends_with(':') {
        return Err(format!("{prefix:?} must end with ':' (the volume id follows it)"));
    }
    Ok(())
}

/// Checks a managed-NQN prefix (validated at start-up): the NQN rules, and it must name more
/// than a vendor, i.e. have characters after its last `:` (`nqn.2000-02.com.mikrotik:pvc-`).
/// A bare vendor prefix would match the NVMe/TCP root disks of diskless nodes booted from the
/// same RDS (incident 3).
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    check_nqn_head(prefix).map_err(|e| format!("managed NQN prefix: {e}"))?;
    match prefix.rsplit_once(':') {
        Some((_, tail)) if !tail.is_empty() => Ok(()),
        _ => Err(format!(
            "managed NQN prefix {prefix:?} must go past the vendor part, e.g. \"nqn.2000-02.com.mikrotik:pvc-\": \
             a vendor-only prefix also matches system disks served by the same RDS"
        )),
    }
}

/// The second, independent guard before the node touches a subsystem for a volume: the NQN
/// is exactly `<nqn prefix><volume id>`, the volume id is a managed one (`pvc-<uuid>`), and
/// the NQN is inside the managed prefix.
pub fn is_volume_nqn(nqn_prefix: &str, managed_prefix: &str, volume_id: &str, nqn: &str) -> bool {
    crate::core::ids::is_managed_volume_id(volume_id)
        && nqn.strip_prefix(nqn_prefix) == Some(volume_id)
        && managed(managed_prefix, nqn)
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

    #[test]
    fn nqn_prefix_rules() {
        assert_eq!(validate_nqn_prefix("nqn.2000-02.com.mikrotik:"), Ok(()));
        assert_eq!(validate_prefix("nqn.2026-09.com.mikrotik:rds2216.pvc-"), Ok(()));
        for (bad, why) in [
            ("nqn.2000-02.com.mikrotik", "end with ':'"),
            ("nqn.2000-13.com.mikrotik:", "YYYY-MM"),
            ("nqn.20-02.com.mikrotik:", "YYYY-MM"),
            ("nqn.2000-02.Com.Mikrotik:", "lower-case"),
            ("nqn.2000-02.:", "lower-case"),
            ("nqn.2000-02.com.mikrotik:a,b:", "','"),
            ("iqn.2000-02.com.mikrotik:", "start with"),
        ] {
            let err = validate_nqn_prefix(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = format!("nqn.2000-02.{}:", "a".repeat(180));
        assert!(validate_nqn_prefix(&long).unwrap_err().contains("223"));
    }

    #[test]
    fn volume_nqns_are_exactly_prefix_and_id() {
        let (p, m) = ("nqn.2000-02.com.mikrotik:", "nqn.2000-02.com.mikrotik:pvc-");
        let id = "pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
        assert!(is_volume_nqn(p, m, id, &format!("{p}{id}")));
        assert!(!is_volume_nqn(p, m, id, &format!("{p}{id}-x")), "longer");
        assert!(!is_volume_nqn(p, m, id, &format!("nqn.2000-02.com.other:{id}")), "other vendor");
        assert!(!is_volume_nqn(p, m, "pvc-1", &format!("{p}pvc-1")), "not a managed id");
        assert!(!is_volume_nqn(p, "nqn.2000-02.com.mikrotik:snap-", id, &format!("{p}{id}")));
    }
}
