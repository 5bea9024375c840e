//! The node plugin's outcome events (docs/observability.md "Kubernetes events"), with
//! `--node-events`: a stage's outcome on the PVC (the volume context carries it), a failed
//! publish on the pod (the CSIDriver's `podInfoOnMount` passes it). Identical events are
//! published once per window ([`crate::core::events`]); ABORTED (another call on the volume)
//! is no event.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;

use super::{NodeService, kube::claim_ref};
use crate::{clock::now_s, core::context::key, error::ServiceError};

pub const STAGED: &str = "VolumeStaged";
pub const STAGE_FAILED: &str = "VolumeStageFailed";
pub const PUBLISH_FAILED: &str = "VolumePublishFailed";

/// The pod of a NodePublishVolume, from `podInfoOnMount`'s volume-context keys.
fn pod_of(ctx: &HashMap<String, String>) -> Option<ObjectReference> {
    Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(ctx.get("csi.storage.k8s.io/pod.namespace")?.clone()),
        name: Some(ctx.get("csi.storage.k8s.io/pod.name")?.clone()),
        uid: ctx.get("csi.storage.k8s.io/pod.uid").cloned(),
        ..Default::default()
    })
}

/// The PVC of a volume, from its volume context.
fn claim_of(ctx: &HashMap<String, String>) -> Option<ObjectReference> {
    Some(claim_ref(&(ctx.get(key::PVC_NAMESPACE)?.clone(), ctx.get(key::PVC_NAME)?.clone())))
}

impl NodeService {
    async fn publish_event(
        &self,
        object: Option<ObjectReference>,
        warning: bool,
        reason: &'static str,
        note: String,
    ) {
        let st = &self.state;
        let (Some(k), Some(object), true) = (&st.kube, object, st.cfg.node_events) else { return };
        let name = format!(
            "{}/{}",
            object.namespace.as_deref().unwrap_or(""),
            object.name.as_deref().unwrap_or("")
        );
        let note = st.events.lock().unwrap_or_else(|p| p.into_inner()).publishable(
            &name,
            reason,
            &note,
            now_s(),
        );
        if let Some(note) = note {
            k.event_on(object, warning, reason, "Stage", note).await;
        }
    }
    /// A NodeStageVolume's outcome on the PVC.
    pub(super) async fn stage_outcome<T>(
        &self,
        vid: &str,
        ctx: &HashMap<String, String>,
        result: &Result<T, ServiceError>,
    ) {
        let node = &self.node_id;
        match result {
            Ok(_) => {
                let note = format!("{vid} staged on node {node}");
                self.publish_event(claim_of(ctx), false, STAGED, note).await
            }
            Err(ServiceError::Aborted(_)) => {}
            Err(e) => {
                let note = format!("staging {vid} on node {node} failed: {e}");
                self.publish_event(claim_of(ctx), true, STAGE_FAILED, note).await
            }
        }
    }

    /// A failed NodePublishVolume, on the pod.
    pub(super) async fn publish_outcome<T>(
        &self,
        vid: &str,
        ctx: &HashMap<String, String>,
        result: &Result<T, ServiceError>,
    ) {
        if let Err(e) = result
            && !matches!(e, ServiceError::Aborted(_))
        {
            let note = format!("publishing {vid} on node {} failed: {e}", self.node_id);
            self.publish_event(pod_of(ctx), true, PUBLISH_FAILED, note).await
        }
    }
}
