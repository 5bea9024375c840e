//! The operator tools' Kubernetes reads, each with a deadline: the PVs and VolumeAttachments
//! of this driver (LIST), the CSIDriver object (GET), and the driver's pods in its namespace
//! (LIST, for the sidecars' versions). Read only: the tools never write to the cluster.

use std::{collections::HashMap, path::Path, time::Duration};

use k8s_openapi::api::{
    core::v1::{PersistentVolume, Pod},
    storage::v1::{CSIDriver, VolumeAttachment},
};
use kube::{Api, Client, api::ListParams};

use super::bounded;
use crate::core::inventory::{AttachmentRef, ClusterView, PvRef};

pub struct ClusterReader {
    client: Client,
    driver: String,
    deadline: Duration,
    /// The RDS backend the tool looks at (`--backend`): the view keeps its volumes only.
    backend: String,
}

/// The label every object of the chart carries.
pub const PODS_SELECTOR: &str = "app.kubernetes.io/name=rds-csi";

impl ClusterReader {
    pub fn new(client: Client, driver: &str, deadline: Duration) -> ClusterReader {
        ClusterReader {
            client,
            driver: driver.to_string(),
            deadline,
            backend: crate::core::topology::DEFAULT_BACKEND.into(),
        }
    }

    /// The view of backend `name` only (docs/topology.md).
    pub fn on_backend(mut self, name: &str) -> ClusterReader {
        self.backend = name.to_string();
        self
    }

    /// A client from `kubeconfig`, else from the environment (KUBECONFIG, ~/.kube/config, the
    /// pod's service account). The error says why there is none.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        driver: &str,
        deadline: Duration,
    ) -> Result<ClusterReader, String> {
        let config = match kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
                let opts = kube::config::KubeConfigOptions::default();
                kube::Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
            }
            None => kube::Config::infer().await.map_err(|e| {
                tracing::debug!(error = %e, "no Kubernetes configuration");
                "no cluster access (no kubeconfig, not in a pod; --kubeconfig names one): RDS state only"
                    .to_string()
            })?,
        };
        let client = Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
        Ok(ClusterReader::new(client, driver, deadline))
    }

    /// The PVs and VolumeAttachments of this driver.
    pub async fn view(&self) -> Result<ClusterView, String> {
        let lp = ListParams::default();
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pvs = bounded(self.deadline, "listing PersistentVolumes", pvs.list(&lp)).await?;
        let mut by_name = HashMap::new();
        let mut view = ClusterView::default();
        for pv in pvs.items {
            let spec = pv.spec.unwrap_or_default();
            let Some(csi) = spec.csi.filter(|c| c.driver == self.driver) else { continue };
            let name = pv.metadata.name.unwrap_or_default();
            let attrs = csi.volume_attributes.unwrap_or_default();
            by_name.insert(name.clone(), csi.volume_handle.clone());
            view.pvs.insert(
                csi.volume_handle,
                PvRef {
                    name,
                    claim: spec
                        .claim_ref
                        .and_then(|c| Some(format!("{}/{}", c.namespace?, c.name?))),
                    phase: pv.status.and_then(|s| s.phase),
                    migration_timeout_s: attrs
                        .get("migrationTimeoutSeconds")
                        .and_then(|v| v.parse().ok()),
                },
            );
        }
        let vas: Api<VolumeAttachment> = Api::all(self.client.clone());
        let vas = bounded(self.deadline, "listing VolumeAttachments", vas.list(&lp)).await?;
        for va in vas.items.into_iter().filter(|v| v.spec.attacher == self.driver) {
            let source = &va.spec.source;
            let volume = match (&source.persistent_volume_name, &source.inline_volume_spec) {
                (Some(pv), _) => by_name.get(pv).cloned().unwrap_or_else(|| format!("pv/{pv}")),
                (None, Some(inline)) => {
                    inline.csi.as_ref().map(|c| c.volume_handle.clone()).unwrap_or_default()
                }
                (None, None) => String::new(),
            };
            let status = va.status.unwrap_or_default();
            let error = status
                .detach_error
                .or(status.attach_error)
                .and_then(|e| e.message)
                .filter(|m| !m.is_empty());
            view.attachments.push(AttachmentRef {
                name: va.metadata.name.unwrap_or_default(),
                volume,
                node: va.spec.node_name,
                attached: status.attached,
                deleting: va.metadata.deletion_timestamp.is_some(),
                error,
                created: va.metadata.creation_timestamp.map(|t| t.0.as_second()),
            });
        }
        Ok(view.on_backend(&self.backend))
    }

    /// The CSIDriver object of this driver, `None` when there is none.
    pub async fn csidriver(&self) -> Result<Option<CSIDriver>, String> {
        let api: Api<CSIDriver> = Api::all(self.client.clone());
        bounded(self.deadline, "reading the CSIDriver", api.get_opt(&self.driver)).await
    }

    /// `(pod, container, image)` of the driver's pods in `namespace`.
    pub async fn images(&self, namespace: &str) -> Result<Vec<(String, String, String)>, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let lp = ListParams::default().labels(PODS_SELECTOR);
        let what = format!("listing the driver's pods in {namespace}");
        let pods = bounded(self.deadline, &what, api.list(&lp)).await?;
        let mut out = Vec::new();
        for p in pods.items {
            let pod = p.metadata.name.unwrap_or_default();
            for c in p.spec.map(|s| s.containers).unwrap_or_default() {
                out.push((pod.clone(), c.name, c.image.unwrap_or_default()));
            }
        }
        Ok(out)
    }
}
