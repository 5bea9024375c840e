//! The keys of the maps the controller hands to the node: the volume context (CreateVolume's
//! answer, kept by Kubernetes in the PV's volumeAttributes) and the publish context
//! (ControllerPublishVolume's answer, kept in the VolumeAttachment's attachmentMetadata).
//! Both sides read them from here, so neither imports the other.

/// Volume-context keys, compatible with the Go driver (its nodes read them).
pub mod key {
    pub const RDS_ADDRESS: &str = "rdsAddress";
    pub const NVME_ADDRESS: &str = "nvmeAddress";
    pub const NVME_PORT: &str = "nvmePort";
    pub const NQN: &str = "nqn";
    pub const VOLUME_PATH: &str = "volumePath";
    /// The RDS backend of a volume other than `default` (docs/topology.md).
    pub const BACKEND: &str = "rdsBackend";
    pub const CTRL_LOSS_TMO: &str = "ctrlLossTmo";
    pub const RECONNECT_DELAY: &str = "reconnectDelay";
    pub const KEEP_ALIVE_TMO: &str = "keepAliveTmo";
    pub const MIGRATION_TIMEOUT: &str = "migrationTimeoutSeconds";
    pub const FS_TYPE: &str = "fsType";
    pub const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
    pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
    /// `snapshot:<id>` or `volume:<id>`: the volume was filled from that source, so a blank
    /// device on the node means the copy failed and is never formatted.
    pub const CONTENT_SOURCE: &str = "contentSource";
}

/// Publish-context keys (ControllerPublishVolume → NodeStage/NodePublish).
pub mod publish {
    /// The host NQN the node must connect with (storage fencing).
    pub const HOST_NQN: &str = "hostNqn";
    /// The disk's size in bytes when it was published.
    pub const CAPACITY: &str = "capacityBytes";
    /// `"true"` when the volume was published read-only (PUBLISH_READONLY): the node stages
    /// and publishes it read-only and never formats it.
    pub const READONLY: &str = "readonly";
}
