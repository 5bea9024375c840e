//! Validation of names the operator configures. Pure: no I/O.

/// CSI "GetPluginInfo": the name MUST follow domain name notation (RFC 1035 §2.3.1), be 63
/// characters or less, begin and end with an alphanumeric character, with dashes, dots and
/// alphanumerics between.
pub fn validate_driver_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid driver name {name:?}: {why}; use a domain-style name such as rds.csi.srvlab.io \
             (the default, which keeps volumes of the existing Go driver working)"
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 63 {
        return bad("it is longer than 63 characters");
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if !name.starts_with(alnum) || !name.ends_with(alnum) {
        return bad("it must begin and end with a letter or digit");
    }
    if let Some(c) = name.chars().find(|&c| !(alnum(c) || c == '-' || c == '.')) {
        return bad(&format!("it contains {c:?}; only letters, digits, '-' and '.' are allowed"));
    }
    Ok(())
}

/// The topology key this driver reports in `NodeGetInfo`, derived from the driver name so that
/// the default (`topology.rds.csi.srvlab.io/zone`) matches the existing Go driver.
pub fn topology_zone_key(driver_name: &str) -> String {
    format!("topology.{driver_name}/zone")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_domain_names() {
        for ok in ["rds.csi.srvlab.io", "a", "x-1.y", &"a".repeat(63)] {
            assert_eq!(validate_driver_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_with_reason() {
        let cases = [
            ("", "empty"),
            (&"a".repeat(64) as &str, "63"),
            ("-abc", "begin and end"),
            ("abc.", "begin and end"),
            ("rds_csi", "'_'"),
            ("rds csi", "' '"),
        ];
        for (name, why) in cases {
            let err = validate_driver_name(name).unwrap_err();
            assert!(err.contains(why), "{name:?}: {err}");
        }
    }

    #[test]
    fn topology_key_matches_go_driver_by_default() {
        assert_eq!(topology_zone_key("rds.csi.srvlab.io"), "topology.rds.csi.srvlab.io/zone");
    }
}
