//! The node's health check of published volumes (docs/operations.md): every
//! `--health-check-interval-seconds`, each pod volume mount of this driver under the kubelet
//! directory (`<kubelet>/pods/<pod uid>/volumes/kubernetes.io~csi/<pv>/mount`) is checked for
//! a stale mount. A new finding is logged, counted and, with `--node-events`, an event on the
//! PVC. Running pods keep a dead mount in their mount namespace; with `--recover-pods` a pod
//! whose mount can never come back (its device is gone or is not the volume's any more; not
//! for a read that fails or hangs, which an RDS outage also causes and which heals by itself)
//! and that has a controller owner is deleted, so its controller recreates it and
//! NodePublishVolume repairs the volume for the new pod. A pod without a controller is only
//! reported (deleting it would lose it).

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Weak},
    time::Duration,
};

use super::{
    NodeState,
    health::{self, Backing, Stale},
};
use crate::core::{ids, mountinfo::Mount};

/// What the check found at one pod volume mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub target: String,
    pub pod_uid: String,
    pub pv: String,
    pub reason: &'static str,
    pub message: String,
    /// `--recover-pods`: `deleted`, `no_controller`, `failed`, `pod_not_found`; else empty.
    pub recovery: &'static str,
}

/// `(pod uid, pv name)` of a pod volume mount path under `kubelet`.
pub fn pod_volume(kubelet: &Path, target: &str) -> Option<(String, String)> {
    let rest = Path::new(target).strip_prefix(kubelet.join("pods")).ok()?;
    let parts: Vec<&str> = rest.iter().filter_map(|p| p.to_str()).collect();
    match parts.as_slice() {
        [uid, "volumes", "kubernetes.io~csi", pv, "mount"] => {
            Some((uid.to_string(), pv.to_string()))
        }
        _ => None,
    }
}

/// A PV's bound claim `(namespace, name)` and its volume handle (when this driver's).
type PvInfo = (Option<(String, String)>, Option<String>);

/// Whether a stale mount can never come back by itself (then a pod restart is the cure).
fn structural(reason: &str) -> bool {
    matches!(reason, "device_gone" | "device_mismatch")
}

/// What the check remembers between runs.
#[derive(Debug, Default)]
pub struct Seen {
    /// Target → the reason last reported.
    reported: HashMap<String, &'static str>,
}

pub async fn run(state: Weak<NodeState>, interval: Duration) {
    let mut seen = Seen::default();
    loop {
        tokio::time::sleep(interval).await;
        let Some(st) = state.upgrade() else { break };
        st.check_published(&mut seen).await;
    }
}

impl NodeState {
    /// One check of every pod volume mount of this driver.
    pub async fn check_published(self: &Arc<Self>, seen: &mut Seen) -> Vec<Finding> {
        let mounts = match self.host.mounts().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "health check skipped: cannot read mountinfo");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let mut healthy = Vec::new();
        for m in &mounts {
            let Some((uid, pv)) = pod_volume(&self.cfg.kubelet_dir, &m.target) else { continue };
            // The PV, read at most once per mount: (claim, volume handle).
            let mut pv_info = None;
            let Some((vid, why)) = self.judge(m, &pv, &mut pv_info).await else {
                healthy.push(m.target.clone());
                continue;
            };
            let reason = why.reason();
            if seen.reported.get(&m.target) == Some(&reason) {
                continue;
            }
            seen.reported.insert(m.target.clone(), reason);
            self.heal.stale_mount(reason);
            let message = format!("volume {vid} at {}: {}", m.target, why.message());
            tracing::warn!(volume_id = %vid, target = %m.target, pod_uid = %uid, reason, "{message}");
            let claim = self.pv_info(&pv, &mut pv_info).await.0;
            if let (Some(k), Some(c)) = (&self.kube, &claim)
                && self.cfg.node_events
            {
                k.event(c, true, "StaleMount", message.clone()).await;
            }
            let recovery = if self.cfg.recover_pods && structural(reason) {
                self.recover(&uid, claim.as_ref(), &vid).await
            } else {
                ""
            };
            out.push(Finding {
                target: m.target.clone(),
                pod_uid: uid,
                pv,
                reason,
                message,
                recovery,
            });
        }
        seen.reported.retain(|t, _| !healthy.contains(t) && mounts.iter().any(|m| &m.target == t));
        out
    }

    /// PV `pv`'s (claim, volume handle of this driver), read once into `cache` (both `None`
    /// without Kubernetes or when it cannot be read).
    async fn pv_info(&self, pv: &str, cache: &mut Option<PvInfo>) -> PvInfo {
        if cache.is_none() {
            let got = match &self.kube {
                Some(k) => k.pv(pv).await.unwrap_or_default(),
                None => (None, None),
            };
            *cache = Some(got);
        }
        cache.clone().unwrap_or_default()
    }

    /// The volume of a pod volume mount and why it is stale, if it is this driver's and stale.
    async fn judge(
        &self,
        m: &Mount,
        pv: &str,
        cache: &mut Option<PvInfo>,
    ) -> Option<(String, Stale)> {
        let vid = match self.plane.owner(&self.host, m.major_minor) {
            Some(v) => v,
            // Not a device of a volume now (gone, or not the volume's): the PV names the
            // volume, when it is this driver's; without Kubernetes only a vanished device of
            // this plane counts, named by the PV.
            None => {
                let dead = self.host.block_device(m.major_minor).is_none()
                    && m.source.starts_with(self.plane.device_prefix());
                match self.pv_info(pv, cache).await.1 {
                    // The handle's slot part: volumes of every RDS backend (docs/topology.md).
                    Some(h) if ids::is_managed_volume_id(crate::core::topology::split_id(&h).1) => {
                        h
                    }
                    None if dead && self.kube.is_none() => pv.to_string(),
                    _ => return None,
                }
            }
        };
        let current = self.plane.find(&self.host, &vid);
        match health::backing(&self.host, m, current.as_ref()).await {
            Ok(Backing::Stale(why)) => Some((vid, why)),
            Ok(Backing::Live) => {
                let dev = current?;
                if self.plane.abnormal(&self.host, &vid).is_some() {
                    return None;
                }
                health::probe(Some(Path::new(&m.target)), &dev, self.cfg.io_probe_timeout)
                    .await
                    .map(|why| (vid, why))
            }
            Err(_) => None,
        }
    }

    /// `--recover-pods`: deletes the pod `uid` when a controller owns it.
    async fn recover(
        &self,
        uid: &str,
        claim: Option<&(String, String)>,
        vid: &str,
    ) -> &'static str {
        let Some(k) = &self.kube else { return "failed" };
        let pod = match k.pod(uid).await {
            Ok(Some(p)) => p,
            Ok(None) => return "pod_not_found",
            Err(e) => {
                tracing::warn!(error = %e, pod_uid = uid, "recover-pods: cannot list this node's pods");
                self.heal.pod_recovery("failed");
                return "failed";
            }
        };
        let action = match &pod.controller {
            None => {
                let note = format!(
                    "pod {}/{} holds a stale mount of volume {vid} and has no controller: restart it by hand (rds-csi deletes only pods a controller recreates)",
                    pod.namespace, pod.name
                );
                tracing::warn!(pod = %pod.name, namespace = %pod.namespace, "{note}");
                if let Some(c) = claim {
                    k.event(c, true, "StaleMountNeedsRestart", note).await;
                }
                "no_controller"
            }
            Some(owner) => match k.delete_pod(&pod).await {
                Ok(()) => {
                    let note = format!(
                        "pod {}/{} deleted: it held a stale mount of volume {vid}; {owner} recreates it on the repaired volume",
                        pod.namespace, pod.name
                    );
                    tracing::warn!(pod = %pod.name, namespace = %pod.namespace, "{note}");
                    if let Some(c) = claim {
                        k.event(c, true, "PodRecovered", note).await;
                    }
                    "deleted"
                }
                Err(e) => {
                    tracing::error!(error = %e, pod = %pod.name, "recover-pods: deleting the pod failed");
                    "failed"
                }
            },
        };
        self.heal.pod_recovery(action);
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_volume_paths() {
        let k = Path::new("/var/lib/kubelet");
        assert_eq!(
            pod_volume(k, "/var/lib/kubelet/pods/u-1/volumes/kubernetes.io~csi/pvc-9/mount"),
            Some(("u-1".into(), "pvc-9".into()))
        );
        assert_eq!(
            pod_volume(k, "/var/lib/kubelet/pods/u-1/volumes/kubernetes.io~empty-dir/x"),
            None
        );
        assert_eq!(
            pod_volume(
                k,
                "/var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/abc/globalmount"
            ),
            None
        );
        assert_eq!(pod_volume(k, "/elsewhere/pods/u/volumes/kubernetes.io~csi/p/mount"), None);
        assert!(structural("device_gone") && structural("device_mismatch"));
        assert!(!structural("io_hang") && !structural("io_error"), "an outage heals by itself");
    }
}
