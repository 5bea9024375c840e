//! The controller's pure core: identifiers, StorageClass parameters, capacity and access modes.
//! No I/O here (docs/architecture.md).

pub mod access;
pub mod capacity;
pub mod fabrics;
pub mod ids;
pub mod mountinfo;
pub mod params;
pub mod snapshots;
