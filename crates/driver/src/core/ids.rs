//! Volume identifiers (drop-in compatible with the Go driver).
//!
//! - A CSI name of the form `pvc-<uuid>` (what external-provisioner sends) *is* the slot and
//!   the volume id, so volumes made by the Go driver are found and managed.
//! - Any other name maps deterministically to `pvc-<UUIDv5(name)>`; the original name is kept
//!   in the disk comment.
//! - NQN = prefix + slot; backing file = `<volumePath>/<slot>.img`.
//!
//! A second RDS can be added later without renaming anything: volumes of the first keep bare
//! slots as ids; another RDS's ids would carry a `<rds>:` prefix (`:` never occurs in a slot).

use routeros::types::{FilePath, Nqn, Slot};
use uuid::Uuid;

/// The namespace of derived ids: UUIDv5(DNS, "rds.csi.srvlab.io").
fn namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"rds.csi.srvlab.io")
}

fn is_pvc_uuid(name: &str) -> bool {
    name.strip_prefix("pvc-").and_then(|u| Uuid::parse_str(u).ok()).is_some_and(|u| {
        // Only the canonical lower-case hyphenated form is used verbatim.
        name[4..] == u.hyphenated().to_string()
    })
}

/// The slot (= volume id) for a CreateVolume name, and whether it was derived.
pub fn slot_for_name(name: &str) -> (Slot, bool) {
    if is_pvc_uuid(name) {
        (Slot::new(name).expect("pvc-<uuid> is a valid slot"), false)
    } else {
        let id = format!("pvc-{}", Uuid::new_v5(&namespace(), name.as_bytes()).hyphenated());
        (Slot::new(&id).expect("pvc-<uuid> is a valid slot"), true)
    }
}

/// Whether `id` is a volume id this driver manages: `pvc-` and a canonical lower-case UUID
/// (provisioner names and derived ids alike; the Go driver's volumes have the same form).
pub fn is_managed_volume_id(id: &str) -> bool {
    is_pvc_uuid(id)
}

/// Parses the volume id of a request. Empty is an error (CSI: the field is REQUIRED, so
/// INVALID_ARGUMENT); an id this driver never makes is `Ok(None)`: such a volume does not
/// exist here (DeleteVolume answers OK, the other RPCs NOT_FOUND), and no RouterOS command
/// is ever built from it.
pub fn parse_volume_id(id: &str) -> Result<Option<Slot>, String> {
    if id.is_empty() {
        return Err("volume_id is required".into());
    }
    Ok(is_managed_volume_id(id).then(|| Slot::new(id).expect("pvc-<uuid> is a valid slot")))
}

/// The NOT_FOUND message for an id [`parse_volume_id`] does not accept.
pub fn foreign_volume(id: &str) -> String {
    format!(
        "volume {id:?} does not exist: this driver's volume ids are pvc-<uuid> (lower case); check the PV's volumeHandle"
    )
}

pub fn nqn(prefix: &str, slot: &Slot) -> Result<Nqn, String> {
    Nqn::new(&format!("{prefix}{slot}")).map_err(|e| e.to_string())
}

pub fn backing_file(volume_path: &FilePath, slot: &Slot) -> Result<FilePath, String> {
    volume_path.join(&format!("{slot}.img")).map_err(|e| e.to_string())
}

/// The disk comment: marks the disk as ours, keeps a derived id's original name, the PVC and
/// the creation time (seconds since the epoch; RouterOS keeps no time on `/disk`, and the
/// orphan report needs the disk's age, docs/operations.md).
pub fn comment(name: &str, derived: bool, pvc: Option<(&str, &str)>, created: i64) -> String {
    let mut c = String::from("rds-csi");
    if derived {
        c.push_str(&format!(" name={name}"));
    }
    if let Some((ns, pvc)) = pvc {
        c.push_str(&format!(" pvc={ns}/{pvc}"));
    }
    c.push_str(&format!(" created={created}"));
    c
}

/// The `created=` time of a disk comment of this driver (volumes and copies).
pub fn comment_created(comment: &str) -> Option<i64> {
    let mut words = comment.split_whitespace();
    if words.next()? != "rds-csi" {
        return None;
    }
    words.find_map(|w| w.strip_prefix("created=")).and_then(|t| t.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioner_names_are_the_slot() {
        let name = "pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
        assert_eq!(slot_for_name(name), (Slot::new(name).unwrap(), false));
    }

    #[test]
    fn other_names_map_deterministically() {
        let (a, derived) = slot_for_name("my volume/1");
        assert!(derived);
        assert!(a.as_str().starts_with("pvc-") && a.as_str().len() == 40, "{a}");
        assert_eq!(slot_for_name("my volume/1").0, a, "deterministic");
        assert_ne!(slot_for_name("my volume/2").0, a);
        assert!(
            slot_for_name("PVC-0F8E4B1C-2A3D-4E5F-9A8B-7C6D5E4F3A2B").1,
            "non-canonical UUIDs are derived"
        );
    }

    #[test]
    fn nqn_file_and_comment() {
        let (slot, _) = slot_for_name("pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b");
        assert_eq!(
            nqn("nqn.2000-02.com.mikrotik:", &slot).unwrap().as_str(),
            "nqn.2000-02.com.mikrotik:pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b"
        );
        let file = backing_file(&FilePath::new("/storage-pool/metal-csi").unwrap(), &slot).unwrap();
        assert_eq!(
            file.absolute(),
            "/storage-pool/metal-csi/pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b.img"
        );
        let c = comment("x", true, Some(("ns", "data")), 1_795_300_000);
        assert_eq!(c, "rds-csi name=x pvc=ns/data created=1795300000");
        assert_eq!(comment_created(&c), Some(1_795_300_000));
        assert_eq!(comment_created("rds-csi snapshot source=pvc-1 created=7 ready"), Some(7));
        assert_eq!(comment_created("rds-csi pvc=ns/data"), None, "older volumes: no time");
        assert_eq!(comment_created("other created=5"), None, "not ours");
        assert_eq!(parse_volume_id("a/b"), Ok(None));
        assert_eq!(parse_volume_id("some-vol-id"), Ok(None));
        assert_eq!(parse_volume_id("PVC-0F8E4B1C-2A3D-4E5F-9A8B-7C6D5E4F3A2B"), Ok(None));
        assert_eq!(parse_volume_id("pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b"), Ok(Some(slot)));
        assert!(parse_volume_id("").unwrap_err().contains("required"));
    }
}
