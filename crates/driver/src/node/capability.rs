//! What a node request asks for: the kind of volume a capability makes of the device
//! (raw block, or a filesystem with its type, mount flags and read-only), and whether the
//! controller published it read-only. Staging and publishing both read it.

use std::collections::HashMap;

use csi::v1::{
    VolumeCapability,
    volume_capability::{AccessType, access_mode::Mode},
};

use super::invalid;
use crate::{
    core::{access, context::key, context::publish::READONLY, mount_options},
    error::ServiceError,
};

/// What a capability asks the node to make of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Block,
    Mount { fs_type: String, flags: Vec<String>, read_only: bool },
}

/// Checks a capability (access matrix, fs type, mount flags). The fs type comes from the
/// capability, else the volume context (`fsType`), else ext4.
pub(super) fn kind(
    cap: Option<&VolumeCapability>,
    ctx: &HashMap<String, String>,
) -> Result<Kind, ServiceError> {
    let cap = cap.ok_or_else(|| invalid("volume_capability is required"))?;
    access::check(cap).map_err(invalid)?;
    let read_only =
        cap.access_mode.as_ref().map(|m| m.mode) == Some(Mode::SingleNodeReaderOnly as i32);
    match &cap.access_type {
        Some(AccessType::Block(_)) => Ok(Kind::Block),
        Some(AccessType::Mount(m)) => {
            let fs_type = [m.fs_type.as_str(), ctx.get(key::FS_TYPE).map_or("", String::as_str)]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or("ext4")
                .to_string();
            // ext3: the Go driver's volumes of it are mounted; a blank one is never formatted
            // as ext3 (see `filesystem`).
            if !matches!(fs_type.as_str(), "ext4" | "xfs" | "ext3") {
                return Err(invalid(format!(
                    "fs_type {fs_type:?} is not supported: use ext4 or xfs"
                )));
            }
            let flags = mount_options::validate(&m.mount_flags).map_err(invalid)?;
            Ok(Kind::Mount { fs_type, flags, read_only })
        }
        None => Err(invalid("volume_capability needs access_type: block or mount")),
    }
}

/// Whether the controller published the volume read-only (PUBLISH_READONLY).
pub(super) fn published_readonly(publish: &HashMap<String, String>) -> bool {
    publish.get(READONLY).is_some_and(|v| v == "true")
}
