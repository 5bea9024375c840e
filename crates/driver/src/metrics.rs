//! Prometheus metrics of the driver (prometheus-client, one registry per process, no globals).
//!
//! Every metric is prefixed `rds_csi_`. The RPC family is labelled by CSI method and by the
//! canonical gRPC code name, so `rds_csi_grpc_requests_total{method="CreateVolume",code="OK"}`.

use std::{collections::HashMap, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::Registry,
};
use tonic::Code;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type HistogramFamily = Family<RpcLabels, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// Per-RPC counters and latency histograms.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    requests: Family<RpcLabels, Counter>,
    duration: HistogramFamily,
    round_trips: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl RpcMetrics {
    /// Records the RDS round trips one RPC made.
    pub fn observe_round_trips(&self, method: &'static str, count: u64) {
        self.round_trips.get_or_create(&MethodLabels { method }).observe(count as f64);
    }

    /// Records one finished RPC.
    pub fn observe(&self, method: &'static str, code: Code, elapsed: Duration) {
        let labels = RpcLabels { method, code: code_name(code) };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The outcomes of ControllerPublishVolume (`rds_csi_attach_total{outcome}`).
const ATTACH_OUTCOMES: [&str; 7] = [
    "granted",
    "granted_migration",
    "already_attached",
    "conflict",
    "too_many_nodes",
    "migration_window_expired",
    "unavailable",
];

/// Attachment fencing (ControllerPublish/Unpublish): outcomes, conflicts, migrations.
#[derive(Debug, Clone)]
pub struct AttachMetrics {
    attaches: Family<OutcomeLabels, Counter>,
    detaches: Family<OutcomeLabels, Counter>,
    conflicts: Counter,
    migrations_active: Gauge,
    migration_timeouts: Counter,
    migration_duration: Histogram,
    decision: Histogram,
    /// 1 while this instance runs the controller's background loops (the Lease holder).
    pub leader: Gauge,
}

impl Default for AttachMetrics {
    fn default() -> Self {
        AttachMetrics {
            attaches: Family::default(),
            detaches: Family::default(),
            conflicts: Counter::default(),
            migrations_active: Gauge::default(),
            migration_timeouts: Counter::default(),
            // 1 s .. ~70 min: live migrations take seconds to minutes.
            migration_duration: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 10 µs .. ~1 s: the decision itself is in-memory.
            decision: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
            leader: Gauge::default(),
        }
    }
}

impl AttachMetrics {
    pub fn attach(&self, outcome: &'static str) {
        self.attaches.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn detach(&self, outcome: &'static str) {
        self.detaches.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn conflict(&self) {
        self.conflicts.inc();
    }

    pub fn decision(&self, elapsed: Duration) {
        self.decision.observe(elapsed.as_secs_f64());
    }

    pub fn migration_started(&self) {
        self.migrations_active.inc();
    }

    /// The current count of volumes attached to two nodes.
    pub fn migrations_active(&self) -> i64 {
        self.migrations_active.get()
    }

    /// Volumes attached to two nodes right now (the sweep's count).
    pub fn set_migrations_active(&self, n: i64) {
        self.migrations_active.set(n);
    }

    /// A migration window expired with both nodes still attached.
    pub fn migration_timed_out(&self) {
        self.migration_timeouts.inc();
    }

    /// A migration ended (one of its two nodes detached) after `seconds`.
    pub fn migration_finished(&self, seconds: i64) {
        if self.migrations_active.get() > 0 {
            self.migrations_active.dec();
        }
        self.migration_duration.observe(seconds.max(0) as f64);
    }

    fn register(&self, registry: &mut Registry) {
        // Every outcome exists from the start (at 0), so rates and alerts see it before it
        // first happens.
        for outcome in ATTACH_OUTCOMES {
            let _ = self.attaches.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["detached", "not_attached"] {
            let _ = self.detaches.get_or_create(&OutcomeLabels { outcome });
        }
        registry.register(
            "migration_timeouts",
            "Migration windows that expired with both nodes still attached",
            self.migration_timeouts.clone(),
        );
        registry.register("attach", "ControllerPublishVolume outcomes (granted, granted_migration, already_attached, conflict, too_many_nodes, migration_window_expired, unavailable)", self.attaches.clone());
        registry.register(
            "detach",
            "ControllerUnpublishVolume outcomes (detached, not_attached)",
            self.detaches.clone(),
        );
        registry.register(
            "attachment_conflicts",
            "Publishes refused by the fence",
            self.conflicts.clone(),
        );
        registry.register(
            "migrations_active",
            "Live migrations in progress (volumes attached to two nodes) started by this process",
            self.migrations_active.clone(),
        );
        registry.register(
            "migration_duration_seconds",
            "From the second attach to the detach that ended a migration",
            self.migration_duration.clone(),
        );
        registry.register(
            "attach_decision_seconds",
            "Time to decide a ControllerPublishVolume once the volume is read",
            self.decision.clone(),
        );
        registry.register(
            "leader",
            "1 while this controller instance runs the background loops (holds the Lease)",
            self.leader.clone(),
        );
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    operation: &'static str,
    to: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The self-healing loops (docs/operations.md): the node's circuit breakers, orphan NVMe
/// cleanup, stale mounts and repairs; the controller's orphan report and stale attachments.
#[derive(Debug, Clone, Default)]
pub struct HealMetrics {
    breaker_trips: Family<OperationLabels, Counter>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    breakers_open: Gauge,
    orphan_subsystems: Family<ActionLabels, Counter>,
    orphan_candidates: Gauge,
    orphan_sweep: Family<DecisionLabels, Gauge>,
    stale_mounts: Family<ReasonLabels, Counter>,
    repairs: Family<ActionLabels, Counter>,
    mount_storms: Counter,
    pods_recovered: Family<ActionLabels, Counter>,
    rds_orphans: Family<KindLabels, Gauge>,
    /// Each backend's last count (the gauge is their sum: each reconciles its own RDS).
    rds_orphans_by_backend: std::sync::Arc<std::sync::Mutex<HashMap<(String, &'static str), i64>>>,
    rds_orphans_deleted: Family<KindLabels, Counter>,
    stale_attachments: Family<ActionLabels, Counter>,
    held_copies: Family<ActionLabels, Counter>,
    last_pause_ms: Gauge,
}

impl HealMetrics {
    /// A breaker changed state (`trip`: it opened from closed).
    pub fn breaker(&self, operation: &'static str, to: &'static str, trip: bool, open_now: i64) {
        self.breaker_transitions.get_or_create(&TransitionLabels { operation, to }).inc();
        if trip {
            self.breaker_trips.get_or_create(&OperationLabels { operation }).inc();
        }
        self.breakers_open.set(open_now);
    }

    /// An orphan NVMe subsystem decision: disconnected, would_disconnect, disconnect_failed.
    pub fn orphan_subsystem(&self, action: &'static str) {
        self.orphan_subsystems.get_or_create(&ActionLabels { action }).inc();
    }

    /// Managed subsystems seen unused and waiting out the grace period.
    pub fn set_orphan_candidates(&self, n: i64) {
        self.orphan_candidates.set(n);
    }

    /// The last orphan sweep's decisions: in_use, waiting, orphan (managed subsystems each).
    pub fn set_orphan_sweep(&self, decision: &'static str, n: i64) {
        self.orphan_sweep.get_or_create(&DecisionLabels { decision }).set(n);
    }

    /// A stale mount was detected (device_gone, device_mismatch, io_error, io_hang).
    pub fn stale_mount(&self, reason: &'static str) {
        self.stale_mounts.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A repair by NodeStage/NodePublish: staging_remounted, target_rebound, reattached.
    pub fn repair(&self, action: &'static str) {
        self.repairs.get_or_create(&ActionLabels { action }).inc();
    }

    pub fn mount_storm(&self) {
        self.mount_storms.inc();
    }

    /// `--recover-pods`: deleted, no_controller, failed.
    pub fn pod_recovery(&self, action: &'static str) {
        self.pods_recovered.get_or_create(&ActionLabels { action }).inc();
    }

    /// Orphans found on `backend`'s RDS by its last reconcile (disk, file); the gauge is
    /// the sum over the backends.
    pub fn set_rds_orphans(&self, backend: &str, kind: &'static str, n: i64) {
        let mut by = self.rds_orphans_by_backend.lock().expect("orphan counts");
        by.insert((backend.to_string(), kind), n);
        let total = by.iter().filter(|((_, k), _)| *k == kind).map(|(_, n)| n).sum();
        self.rds_orphans.get_or_create(&KindLabels { kind }).set(total);
    }

    pub fn rds_orphan_deleted(&self, kind: &'static str) {
        self.rds_orphans_deleted.get_or_create(&KindLabels { kind }).inc();
    }

    /// A stale VolumeAttachment: fenced, deleted, failed.
    pub fn stale_attachment(&self, action: &'static str) {
        self.stale_attachments.get_or_create(&ActionLabels { action }).inc();
    }

    /// A point-in-time copy that held its sources' writes ended: done (with the pause), or
    /// refused (the pause bound).
    pub fn held_copy(&self, action: &'static str, paused: Option<std::time::Duration>) {
        self.held_copies.get_or_create(&ActionLabels { action }).inc();
        if let Some(p) = paused {
            self.last_pause_ms.set(p.as_millis() as i64);
        }
    }

    #[cfg(test)]
    pub fn register_for_test(&self, r: &mut Registry) {
        self.register(r);
    }

    /// Creates every known label value at 0, so that each series exists from the start.
    fn zero(&self) {
        let actions: [(&Family<ActionLabels, Counter>, &[&'static str]); 5] = [
            (
                &self.orphan_subsystems,
                &["disconnected", "would_disconnect", "disconnect_failed", "busy"],
            ),
            (&self.repairs, &["staging_remounted", "target_rebound", "reattached"]),
            (&self.pods_recovered, &["deleted", "no_controller", "failed"]),
            (&self.stale_attachments, &["fenced", "deleted", "failed", "busy"]),
            (&self.held_copies, &["done", "refused", "failed"]),
        ];
        for (family, values) in actions {
            for action in values {
                let _ = family.get_or_create(&ActionLabels { action });
            }
        }
        for reason in ["device_gone", "device_mismatch", "io_error", "io_hang"] {
            let _ = self.stale_mounts.get_or_create(&ReasonLabels { reason });
        }
        for operation in ["NodeStageVolume", "NodePublishVolume", "NodeUnstageVolume"] {
            let _ = self.breaker_trips.get_or_create(&OperationLabels { operation });
        }
        for kind in ["disk", "file"] {
            let _ = self.rds_orphans.get_or_create(&KindLabels { kind });
            let _ = self.rds_orphans_deleted.get_or_create(&KindLabels { kind });
        }
    }

    fn register(&self, r: &mut Registry) {
        self.zero();
        r.register(
            "controller_held_copies",
            "Point-in-time copies that held their sources' writes, by outcome (done, refused)",
            self.held_copies.clone(),
        );
        r.register(
            "controller_copy_last_pause_milliseconds",
            "How long the last point-in-time copy held its sources' writes",
            self.last_pause_ms.clone(),
        );
        r.register(
            "node_breaker_trips",
            "Per-volume circuit breakers opened after consecutive failures, by operation",
            self.breaker_trips.clone(),
        );
        r.register(
            "node_breaker_transitions",
            "Circuit breaker state changes, by operation and new state",
            self.breaker_transitions.clone(),
        );
        r.register(
            "node_breakers_open",
            "Circuit breakers open or half-open now",
            self.breakers_open.clone(),
        );
        r.register(
            "node_orphan_subsystems",
            "Orphan NVMe subsystem decisions (disconnected, would_disconnect, disconnect_failed)",
            self.orphan_subsystems.clone(),
        );
        r.register(
            "node_orphan_candidates",
            "Managed NVMe subsystems seen unused, waiting out the grace period",
            self.orphan_candidates.clone(),
        );
        r.register(
            "node_orphan_last_sweep",
            "Managed NVMe subsystems by the last orphan sweep's decision (in_use, waiting, orphan)",
            self.orphan_sweep.clone(),
        );
        r.register(
            "node_stale_mounts",
            "Stale mounts detected, by reason (device_gone, device_mismatch, io_error, io_hang)",
            self.stale_mounts.clone(),
        );
        r.register(
            "node_repairs",
            "Repairs made by NodeStage/NodePublish (staging_remounted, target_rebound, reattached)",
            self.repairs.clone(),
        );
        r.register(
            "node_mount_storms",
            "Stacked mounts refused and cleaned down to one",
            self.mount_storms.clone(),
        );
        r.register(
            "node_pod_recoveries",
            "--recover-pods decisions (deleted, no_controller, failed)",
            self.pods_recovered.clone(),
        );
        r.register("rds_orphans", "Managed disks and files on the RDS without a PV, by kind (disk, file), at the last reconcile", self.rds_orphans.clone());
        r.register(
            "rds_orphans_deleted",
            "Orphans deleted from the RDS (--delete-orphans), by kind",
            self.rds_orphans_deleted.clone(),
        );
        r.register(
            "stale_attachments",
            "Stale VolumeAttachments reconciled (fenced, deleted, failed)",
            self.stale_attachments.clone(),
        );
    }
}

/// The process's registry and the metric handles the services update.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub rpc: RpcMetrics,
    pub attach: AttachMetrics,
    pub heal: HealMetrics,
}

impl Metrics {
    pub fn new(version: &'static str) -> Self {
        let mut registry = Registry::with_prefix("rds_csi");
        let requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "CSI RPCs answered, by method and gRPC code",
            requests.clone(),
        );
        // 1 ms .. ~65 s: RouterOS round trips are milliseconds, mkfs and NVMe connects seconds.
        let duration: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 17)));
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a CSI RPC, by method and gRPC code",
            duration.clone(),
        );
        registry.register("build", "Driver build information", Info::new(BuildLabels { version }));
        let round_trips: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| {
                Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0])
            });
        registry.register(
            "rds_round_trips_per_rpc",
            "RDS round trips (SSH commands, REST requests) made by one CSI RPC, by method",
            round_trips.clone(),
        );
        let attach = AttachMetrics::default();
        attach.register(&mut registry);
        let heal = HealMetrics::default();
        heal.register(&mut registry);
        Self { registry, rpc: RpcMetrics { requests, duration, round_trips }, attach, heal }
    }

    /// Adds the RDS connection metrics (`rds_csi_rds_*`).
    pub fn register_rds(&mut self, health: &routeros::transport::Health) {
        health.register(&mut self.registry);
    }

    /// The connection metrics of one of several backends, labelled `backend="<name>"`.
    pub fn register_rds_backend(&mut self, health: &routeros::transport::Health, name: &str) {
        let sub =
            self.registry.sub_registry_with_label(("backend".into(), name.to_string().into()));
        health.register(sub);
    }

    /// The registry in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}

/// Canonical upper-case gRPC code names (as in grpc-go and the gRPC spec), used as labels.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rds_orphan_gauge_sums_the_backends_last_reports() {
        let m = Metrics::new("1.2.3+abc");
        m.heal.set_rds_orphans("rds-a", "disk", 2);
        m.heal.set_rds_orphans("rds-b", "disk", 3);
        m.heal.set_rds_orphans("rds-b", "file", 1);
        let text = m.encode();
        assert!(text.contains(r#"rds_csi_rds_orphans{kind="disk"} 5"#), "{text}");
        assert!(text.contains(r#"rds_csi_rds_orphans{kind="file"} 1"#), "{text}");
        // A backend's next report replaces its own count only.
        m.heal.set_rds_orphans("rds-a", "disk", 0);
        assert!(m.encode().contains(r#"rds_csi_rds_orphans{kind="disk"} 3"#));
    }

    #[test]
    fn counts_and_times_by_method_and_code() {
        let m = Metrics::new("1.2.3+abc");
        m.rpc.observe("Probe", Code::Ok, Duration::from_millis(2));
        m.rpc.observe("Probe", Code::Ok, Duration::from_millis(3));
        m.rpc.observe("CreateVolume", Code::Unimplemented, Duration::from_micros(10));
        let text = m.encode();
        assert!(
            text.contains(r#"rds_csi_grpc_requests_total{method="Probe",code="OK"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"rds_csi_grpc_requests_total{method="CreateVolume",code="UNIMPLEMENTED"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"rds_csi_grpc_request_duration_seconds_count{method="Probe",code="OK"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"rds_csi_build_info{version="1.2.3+abc"} 1"#), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
