//! Several RDS appliances behind one driver (docs/topology.md): the backend part of volume
//! and snapshot ids, backend names, topology matching and the placement of new volumes.
//!
//! - Ids: the backend named [`DEFAULT_BACKEND`] keeps bare slots as ids (today's volumes and
//!   the Go driver's); any other backend's ids are `<name>:<slot>` (`:` never occurs in a slot).
//! - A backend is accessible from a topology (a node's, or one of CreateVolume's
//!   `accessibility_requirements`) when every one of the backend's segments is in it with the
//!   same value (CSI "Topology": the volume is accessible from nodes with those segments).
//! - Placement (CSI CreateVolume `accessibility_requirements`): only backends accessible from
//!   at least one requisite topology; ordered by the first preferred topology they match
//!   ("the CO prefers the earlier ones"), then by free space × weight; never a backend that
//!   cannot hold the volume; weight 0 takes new volumes only when named.

use std::collections::HashMap;

/// The name of the backend whose ids carry no prefix (the single-RDS flags' backend).
pub const DEFAULT_BACKEND: &str = "default";

/// Splits an id into its backend name and the slot part: `rds-b:pvc-1` → (`rds-b`, `pvc-1`),
/// `pvc-1` → ([`DEFAULT_BACKEND`], `pvc-1`).
pub fn split_id(id: &str) -> (&str, &str) {
    id.split_once(':').unwrap_or((DEFAULT_BACKEND, id))
}

/// The id of `slot` on `backend` (bare on the default backend).
pub fn external_id(backend: &str, slot: &str) -> String {
    if backend == DEFAULT_BACKEND { slot.to_string() } else { format!("{backend}:{slot}") }
}

/// A backend name: 1 to 32 characters of `a-z`, `0-9` and `-`, starting with a letter (it
/// goes into volume ids, which CSI bounds at 128 bytes, and into metric labels).
pub fn validate_backend_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "backend name {name:?} is not valid: use 1 to 32 characters of a-z, 0-9 and '-', starting with a letter (it becomes part of volume ids)"
        ))
    }
}

/// Whether a backend with `segments` is accessible from topology `t`.
pub fn accessible_from(segments: &HashMap<String, String>, t: &HashMap<String, String>) -> bool {
    segments.iter().all(|(k, v)| t.get(k) == Some(v))
}

/// What placement knows of one backend.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub segments: &'a HashMap<String, String>,
    pub weight: u32,
    /// Free bytes in the volume's pool; `None` when the backend could not be read.
    pub free: Option<u64>,
}

/// Why no backend can take a new volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceError {
    /// No backend is accessible from the requisite topologies (RESOURCE_EXHAUSTED).
    Topology(String),
    /// Every accessible backend is too full (RESOURCE_EXHAUSTED).
    NoRoom(String),
    /// Some accessible backend could not be read and none of the others can take it
    /// (UNAVAILABLE: the CO retries).
    Unreachable(String),
}

fn describe(t: &HashMap<String, String>) -> String {
    let mut kv: Vec<String> = t.iter().map(|(k, v)| format!("{k}={v}")).collect();
    kv.sort();
    format!("{{{}}}", kv.join(", "))
}

/// The backends that may hold a new volume of `size` bytes, best first (indexes into `cands`).
pub fn place(
    cands: &[Candidate],
    requisite: &[HashMap<String, String>],
    preferred: &[HashMap<String, String>],
    size: u64,
) -> Result<Vec<usize>, PlaceError> {
    let accessible: Vec<usize> = (0..cands.len())
        .filter(|&i| {
            requisite.is_empty() || requisite.iter().any(|t| accessible_from(cands[i].segments, t))
        })
        .filter(|&i| cands[i].weight > 0)
        .collect();
    if accessible.is_empty() {
        let wanted: Vec<String> = requisite.iter().map(describe).collect();
        let have: Vec<String> = cands
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    c.name,
                    describe(c.segments),
                    if c.weight == 0 { " (weight 0)" } else { "" }
                )
            })
            .collect();
        return Err(PlaceError::Topology(format!(
            "no backend is accessible from the requested topology {}: the backends are {}",
            wanted.join(" or "),
            have.join(", ")
        )));
    }
    let rank = |i: usize| {
        preferred.iter().position(|t| accessible_from(cands[i].segments, t)).unwrap_or(usize::MAX)
    };
    let mut fit: Vec<usize> =
        accessible.iter().copied().filter(|&i| cands[i].free.is_some_and(|f| f >= size)).collect();
    if fit.is_empty() {
        let state: Vec<String> = accessible
            .iter()
            .map(|&i| match cands[i].free {
                Some(f) => format!("{} has {f} bytes free", cands[i].name),
                None => format!("{} cannot be reached", cands[i].name),
            })
            .collect();
        let msg = format!("no backend can hold {size} bytes: {}", state.join(", "));
        return Err(if accessible.iter().any(|&i| cands[i].free.is_none()) {
            PlaceError::Unreachable(msg)
        } else {
            PlaceError::NoRoom(msg)
        });
    }
    fit.sort_by_key(|&i| {
        let score = u128::from(cands[i].free.unwrap_or(0)) * u128::from(cands[i].weight);
        (rank(i), std::cmp::Reverse(score), cands[i].name)
    });
    Ok(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(z: &str) -> HashMap<String, String> {
        HashMap::from([("topology.rds.csi.srvlab.io/zone".to_string(), z.to_string())])
    }

    #[test]
    fn ids_split_and_join() {
        assert_eq!(split_id("pvc-1"), ("default", "pvc-1"));
        assert_eq!(split_id("rds-b:pvc-1"), ("rds-b", "pvc-1"));
        assert_eq!(external_id("default", "pvc-1"), "pvc-1");
        assert_eq!(external_id("rds-b", "snap-1"), "rds-b:snap-1");
        for id in ["pvc-1", "rds-b:pvc-1", "x:y"] {
            let (b, l) = split_id(id);
            assert_eq!(external_id(b, l), id, "round trip");
        }
    }

    #[test]
    fn names() {
        for ok in ["default", "rds-a", "rack2"] {
            assert!(validate_backend_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "RDS", "a:b", "-a", "a-", "2a", &"a".repeat(33)] {
            assert!(validate_backend_name(bad).unwrap_err().contains("a-z"), "{bad}");
        }
    }

    #[test]
    fn accessibility() {
        let t = HashMap::from([
            ("topology.rds.csi.srvlab.io/zone".to_string(), "a".to_string()),
            ("topology.rds.csi.srvlab.io/rds-b".to_string(), "true".to_string()),
        ]);
        assert!(accessible_from(&zone("a"), &t));
        assert!(!accessible_from(&zone("b"), &t));
        assert!(accessible_from(&HashMap::new(), &t), "no segments: everywhere");
        let b = HashMap::from([("topology.rds.csi.srvlab.io/rds-b".to_string(), "true".into())]);
        assert!(accessible_from(&b, &t), "a key per backend lets a node reach several");
    }

    #[test]
    fn placement() {
        let (a, b) = (zone("a"), zone("b"));
        let c = |name, segments, free, weight| Candidate { name, segments, free, weight };
        let both = [c("rds-a", &a, Some(100), 1), c("rds-b", &b, Some(300), 1)];
        // By capacity: the emptier first.
        assert_eq!(place(&both, &[], &[], 10), Ok(vec![1, 0]));
        // By topology: requisite filters, preferred orders.
        assert_eq!(place(&both, std::slice::from_ref(&a), &[], 10), Ok(vec![0]));
        assert_eq!(
            place(&both, &[a.clone(), b.clone()], std::slice::from_ref(&a), 10),
            Ok(vec![0, 1])
        );
        // Never a backend that cannot hold it.
        assert_eq!(place(&both, &[], std::slice::from_ref(&a), 200), Ok(vec![1]));
        let err = place(&both, &[], &[], 400).unwrap_err();
        assert!(
            matches!(&err, PlaceError::NoRoom(m) if m.contains("rds-a has 100 bytes free")),
            "{err:?}"
        );
        let err = place(&both, &[zone("c")], &[], 1).unwrap_err();
        assert!(
            matches!(&err, PlaceError::Topology(m) if m.contains("zone=c") && m.contains("rds-b")),
            "{err:?}"
        );
        // Weight scales free space; 0 never takes a new volume unless named.
        let weighted = [c("rds-a", &a, Some(100), 4), c("rds-b", &b, Some(300), 1)];
        assert_eq!(place(&weighted, &[], &[], 10), Ok(vec![0, 1]));
        let drained = [c("rds-a", &a, Some(100), 0), c("rds-b", &b, Some(300), 1)];
        assert_eq!(place(&drained, &[], &[], 10), Ok(vec![1]));
        // Unreachable: the other one is used; alone, the CO retries.
        let down = [c("rds-a", &a, None, 1), c("rds-b", &b, Some(300), 1)];
        assert_eq!(place(&down, &[], &[], 10), Ok(vec![1]));
        let err = place(&down, std::slice::from_ref(&a), &[], 10).unwrap_err();
        assert!(
            matches!(&err, PlaceError::Unreachable(m) if m.contains("rds-a cannot be reached")),
            "{err:?}"
        );
    }
}
