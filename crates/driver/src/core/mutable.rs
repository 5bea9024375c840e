//! The mutable volume parameters (CSI ControllerModifyVolume, Kubernetes
//! VolumeAttributesClass; docs/storageclass.md "Changing a volume"): parsing, and their record
//! in the disk comment, where the controller reads them back (the volume context is immutable).

use std::collections::HashMap;

/// The keys ControllerModifyVolume accepts.
pub const KEYS: &[&str] =
    &["compress", "migrationTimeoutSeconds", "ctrlLossTmo", "reconnectDelay", "keepAliveTmo"];

/// Keys recorded in the comment (compress is a property of the disk itself).
const RECORDED: &[&str] =
    &["migrationTimeoutSeconds", "ctrlLossTmo", "reconnectDelay", "keepAliveTmo"];

/// Parsed mutable parameters: only those given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mutable {
    pub compress: Option<bool>,
    /// The other keys, validated, as given (by key).
    pub recorded: Vec<(&'static str, String)>,
}

fn int(key: &str, value: &str, min: i64, max: i64, form: &str) -> Result<String, String> {
    match value.trim().parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v.to_string()),
        _ => Err(format!("parameter {key}={value:?} is invalid: expected {form}")),
    }
}

/// The value of `compress` (StorageClass, VolumeAttributesClass).
pub fn compress(v: &str) -> Result<bool, String> {
    match v {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("parameter compress={v:?} is invalid: expected yes or no")),
    }
}

/// Parses ControllerModifyVolume's `mutable_parameters`: any other key is an error naming the
/// mutable ones.
pub fn parse(params: &HashMap<String, String>) -> Result<Mutable, String> {
    let mut m = Mutable::default();
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort();
    for key in keys {
        let v = params[key].as_str();
        let (name, value) = match key.as_str() {
            "compress" => {
                m.compress = Some(compress(v)?);
                continue;
            }
            "migrationTimeoutSeconds" => {
                ("migrationTimeoutSeconds", int(key, v, 30, 3600, "seconds between 30 and 3600")?)
            }
            "ctrlLossTmo" => (
                "ctrlLossTmo",
                int(key, v, -1, i32::MAX as i64, "seconds >= -1 (-1 = retry forever)")?,
            ),
            "reconnectDelay" => {
                ("reconnectDelay", int(key, v, 1, 3600, "seconds between 1 and 3600")?)
            }
            "keepAliveTmo" => ("keepAliveTmo", int(key, v, 0, 3600, "seconds between 0 and 3600")?),
            other => {
                return Err(format!(
                    "parameter {other:?} cannot be changed on an existing volume; the mutable parameters are {}",
                    KEYS.join(", ")
                ));
            }
        };
        m.recorded.push((name, value));
    }
    Ok(m)
}

/// The recorded mutable parameters of a disk comment of this driver.
pub fn recorded(comment: &str) -> HashMap<String, String> {
    let mut words = comment.split_whitespace();
    if words.next() != Some("rds-csi") {
        return HashMap::new();
    }
    words
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| RECORDED.contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `comment` with `m`'s recorded values set (replacing earlier ones, other words kept).
pub fn record(comment: &str, m: &Mutable) -> String {
    let mut words: Vec<String> = comment
        .split_whitespace()
        .filter(|w| {
            !w.split_once('=').is_some_and(|(k, _)| m.recorded.iter().any(|(r, _)| *r == k))
        })
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        words.push("rds-csi".into());
    }
    for (k, v) in &m.recorded {
        words.push(format!("{k}={v}"));
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_mutable_keys_with_valid_values() {
        let m = parse(&map(&[("compress", "yes"), ("ctrlLossTmo", "-1"), ("reconnectDelay", "2")]))
            .unwrap();
        assert_eq!(m.compress, Some(true));
        assert_eq!(
            m.recorded,
            vec![("ctrlLossTmo", "-1".to_string()), ("reconnectDelay", "2".to_string())]
        );
        let e = parse(&map(&[("volumePath", "/x")])).unwrap_err();
        assert!(
            e.contains("\"volumePath\" cannot be changed")
                && e.contains("compress, migrationTimeoutSeconds"),
            "{e}"
        );
        assert!(parse(&map(&[("compress", "maybe")])).unwrap_err().contains("yes or no"));
        assert!(
            parse(&map(&[("migrationTimeoutSeconds", "5")])).unwrap_err().contains("30 and 3600")
        );
    }

    #[test]
    fn recorded_in_the_comment_and_read_back() {
        let c = "rds-csi pvc=ns/a created=7";
        let m = parse(&map(&[("reconnectDelay", "2"), ("compress", "no")])).unwrap();
        let c2 = record(c, &m);
        assert_eq!(c2, "rds-csi pvc=ns/a created=7 reconnectDelay=2");
        let m2 = parse(&map(&[("reconnectDelay", "9"), ("keepAliveTmo", "0")])).unwrap();
        let c3 = record(&c2, &m2);
        assert_eq!(c3, "rds-csi pvc=ns/a created=7 keepAliveTmo=0 reconnectDelay=9");
        assert_eq!(recorded(&c3), map(&[("keepAliveTmo", "0"), ("reconnectDelay", "9")]));
        assert!(recorded("other reconnectDelay=1").is_empty(), "not ours");
        assert_eq!(crate::core::ids::comment_created(&c3), Some(7), "the time survives");
    }
}
