//! The pure core: identifiers, StorageClass parameters, capacity and access modes, and the
//! node's decisions (format-safety proof, mount options, mountinfo, fabrics options).
//! No I/O here (docs/architecture.md).

pub mod access;
pub mod blank;
pub mod breaker;
pub mod capacity;
pub mod context;
pub mod events;
pub mod fabrics;
pub mod fencing;
pub mod ids;
pub mod inventory;
pub mod lease;
pub mod mount_options;
pub mod mountinfo;
pub mod mutable;
pub mod paging;
pub mod params;
pub mod sightings;
pub mod snapshots;
pub mod topology;
