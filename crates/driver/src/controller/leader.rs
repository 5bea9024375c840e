//! Leader election for the controller's own background loops (the migration-window sweep),
//! over a `coordination.k8s.io/v1` Lease: with `replicas: 2` every replica serves RPCs (the
//! CSI sidecars elect their own leaders and only theirs call), but only the Lease holder
//! sweeps. The decisions are in [`crate::core::lease`]; this is the Kubernetes side:
//! optimistic concurrency on the Lease's resourceVersion, so two instances can never both
//! write themselves as holder of the same record.
//!
//! RBAC: leases (coordination.k8s.io) in the controller's namespace: get, create, update.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use crate::core::lease::{self, LeaseRecord, Observed, Step, Timing};

/// Whether this instance leads, and until when it may act on it without a renewal.
#[derive(Clone, Debug)]
pub struct Leadership {
    until: Arc<std::sync::Mutex<Option<Instant>>>,
    always: bool,
    /// `rds_csi_leader`, when reported.
    gauge: Option<Gauge>,
}

impl Leadership {
    /// A process that is the only controller (attachment state in memory): it always leads.
    pub fn always() -> Leadership {
        Leadership { until: Arc::default(), always: true, gauge: None }
    }

    fn elected() -> Leadership {
        Leadership { until: Arc::default(), always: false, gauge: None }
    }

    /// Reports this instance's leadership in `gauge` (`rds_csi_leader`): set now, and by the
    /// elector after every attempt (a lapse shows within one retry period).
    pub fn report_to(mut self, gauge: Gauge) -> Leadership {
        self.gauge = Some(gauge);
        self.publish();
        self
    }

    fn publish(&self) {
        if let Some(g) = &self.gauge {
            g.set(i64::from(self.is_leader()));
        }
    }

    /// Whether this instance may run the background loops now.
    pub fn is_leader(&self) -> bool {
        self.always || self.until.lock().expect("leadership").is_some_and(|u| Instant::now() < u)
    }

    fn set(&self, until: Option<Instant>) {
        *self.until.lock().expect("leadership") = until;
    }
}

/// One instance's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    leadership: Leadership,
}

/// A Lease name for `driver`'s controller: the driver name with dots as dashes.
pub fn lease_name(driver: &str) -> String {
    format!("{}-controller", driver.replace(['.', '/', '_'], "-"))
}

fn record(l: &Lease) -> LeaseRecord {
    let spec = l.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        duration_s: spec.lease_duration_seconds.unwrap_or(0) as i64,
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> (Elector, Leadership) {
        Self::reporting(client, namespace, name, identity, timing, None)
    }

    /// [`Elector::new`], reporting leadership in `gauge` (`rds_csi_leader`).
    pub fn reporting(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
        gauge: Option<Gauge>,
    ) -> (Elector, Leadership) {
        let mut leadership = Leadership::elected();
        if let Some(g) = gauge {
            leadership = leadership.report_to(g);
        }
        let elector = Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            leadership: leadership.clone(),
        };
        (elector, leadership)
    }

    /// Deadline of one API call: a hung call must not hold leadership past the renew deadline.
    fn call_timeout(&self) -> Duration {
        self.timing.renew_deadline / 2
    }

    fn spec(&self, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One look at the Lease and, when due, one write. Returns whether this instance holds
    /// it now.
    async fn attempt(&self, observed: &mut Observed, epoch: Instant) -> Result<bool, String> {
        let started = Instant::now();
        let t = self.call_timeout();
        let current = tokio::time::timeout(t, self.api.get_opt(&self.name))
            .await
            .map_err(|_| "reading the Lease timed out".to_string())?
            .map_err(|e| format!("reading the Lease: {e}"))?;
        let now_ms = started.duration_since(epoch).as_millis() as u64;
        let step = lease::decide(
            current.as_ref().map(record).as_ref(),
            &self.identity,
            observed,
            &self.timing,
            now_ms,
        );
        let (lease, create) = match (step, current) {
            (Step::Follow { .. }, _) | (Step::Renew | Step::TakeOver { .. }, None) => {
                return Ok(false);
            }
            (Step::Create, _) => (
                Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(self.spec(None, 0)),
                },
                true,
            ),
            (Step::Renew, Some(mut l)) => {
                let spec = l.spec.clone().unwrap_or_default();
                l.spec = Some(self.spec(spec.acquire_time, spec.lease_transitions.unwrap_or(0)));
                (l, false)
            }
            (Step::TakeOver { transitions }, Some(mut l)) => {
                l.spec = Some(self.spec(None, transitions));
                (l, false)
            }
        };
        let pp = PostParams::default();
        let write = async {
            // The resourceVersion read above goes with a replace: a concurrent writer makes
            // it fail with 409 instead of both succeeding.
            if create {
                self.api.create(&pp, &lease).await
            } else {
                self.api.replace(&self.name, &pp, &lease).await
            }
        };
        match tokio::time::timeout(t, write).await {
            Ok(Ok(_)) => {
                self.leadership.set(Some(started + self.timing.renew_deadline));
                Ok(true)
            }
            // Someone else wrote the Lease first (resourceVersion or name conflict).
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => Ok(false),
            Ok(Err(e)) => Err(format!("writing the Lease: {e}")),
            Err(_) => Err("writing the Lease timed out".into()),
        }
    }

    /// Runs the election until the task is dropped: renews while leading, takes over a Lease
    /// whose holder stopped renewing for a lease duration.
    pub async fn run(self) {
        let epoch = Instant::now();
        let mut observed = Observed::default();
        let mut leading = false;
        loop {
            let now_leading = match self.attempt(&mut observed, epoch).await {
                Ok(true) => true,
                Ok(false) => {
                    // Another instance holds the Lease (or wrote it first): stop at once.
                    self.leadership.set(None);
                    false
                }
                Err(e) => {
                    // Not renewed: leadership ends at the renew deadline already set.
                    tracing::warn!(lease = %self.name, error = %e, "leader election");
                    self.leadership.is_leader()
                }
            };
            self.leadership.publish();
            if now_leading != leading {
                leading = now_leading;
                if leading {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading: this instance runs the background loops");
                } else {
                    tracing::info!(lease = %self.name, identity = %self.identity, "not leading");
                }
            }
            tokio::time::sleep(self.timing.retry).await;
        }
    }

    /// Gives the Lease up (on shutdown) so that another instance takes over at once.
    pub async fn release(api: &Api<Lease>, name: &str, identity: &str, timeout: Duration) {
        let release = async {
            let Some(mut l) = api.get_opt(name).await.ok().flatten() else { return };
            let Some(spec) = l.spec.as_mut() else { return };
            if spec.holder_identity.as_deref() != Some(identity) {
                return;
            }
            spec.holder_identity = None;
            match api.replace(name, &PostParams::default(), &l).await {
                Ok(_) => tracing::info!(lease = name, "leadership released"),
                Err(e) => tracing::warn!(lease = name, error = %e, "cannot release the Lease"),
            }
        };
        let _ = tokio::time::timeout(timeout, release).await;
    }

    /// What [`Elector::release`] needs, to keep after `run` took the elector.
    pub fn release_handle(&self) -> (Api<Lease>, String, String) {
        (self.api.clone(), self.name.clone(), self.identity.clone())
    }
}
