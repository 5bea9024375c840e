//! Two controller replicas (`replicas: 2`): leader election over a Lease and the migration
//! sweep, with both instances' kube-rs clients on one stateful mock API server (tower-test)
//! that checks Lease and PV resourceVersions as the API server does.

mod support;

use std::time::{Duration, Instant};

use driver::controller::{
    kube_cluster::KubeCluster,
    leader::{Elector, Leadership},
    sweep,
};
use driver::core::lease::Timing;
use serde_json::{Value, json};
use support::kube::{self as k8s, SharedApi};

const DRIVER: &str = "rds.csi.srvlab.io";
const NS: &str = "kube-system";
const LEASE: &str = "rds-csi-srvlab-io-controller";

fn ago(seconds: i64) -> String {
    let t = k8s_openapi::jiff::Timestamp::now().as_second() - seconds;
    k8s_openapi::jiff::Timestamp::from_second(t).unwrap().to_string()
}

fn timing() -> Timing {
    Timing::for_lease(Duration::from_secs(2)).unwrap()
}

async fn until(what: &str, within: Duration, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// The MigrationFailed events posted, as (client, volume named in the note).
fn failures(api: &SharedApi) -> Vec<(String, String)> {
    api.writes("POST", "/events")
        .into_iter()
        .filter(|(_, _, b)| b["reason"] == "MigrationFailed")
        .map(|(who, _, b)| {
            let note = b["note"].as_str().unwrap().to_string();
            let vid = note.split_whitespace().nth(3).unwrap().to_string();
            (who, vid)
        })
        .collect()
}

fn lease(api: &SharedApi) -> Value {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{LEASE}");
    api.state.lock().unwrap().leases.get(&path).cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_sweeps_and_the_other_takes_over_when_it_stops_renewing() {
    let rds = support::rds::rds().await;
    let (v1, v2) =
        ("pvc-0a1b2c3d-0000-4000-8000-000000000001", "pvc-0a1b2c3d-0000-4000-8000-000000000002");
    let api = SharedApi::default();
    {
        let mut s = api.state.lock().unwrap();
        s.nodes = vec![k8s::node("n1"), k8s::node("n2")];
        s.csinodes = vec![k8s::csinode("n1", DRIVER, "n1"), k8s::csinode("n2", DRIVER, "n2")];
        // v1's window (30 s) expired long ago; v2's (5 s) expires after the first leader
        // has stopped: the successor must report it, and must not report v1 again.
        s.pvs = vec![
            k8s::pv(
                DRIVER,
                "pv-1",
                v1,
                "apps",
                "disk-1",
                json!({ "migrationTimeoutSeconds": "30" }),
            ),
            k8s::pv(
                DRIVER,
                "pv-2",
                v2,
                "apps",
                "disk-2",
                json!({ "migrationTimeoutSeconds": "5" }),
            ),
        ];
        s.vas = vec![
            k8s::va(DRIVER, "va-1a", "pv-1", "n1", true, &ago(7200)),
            k8s::va(DRIVER, "va-1b", "pv-1", "n2", true, &ago(100)),
            k8s::va(DRIVER, "va-2a", "pv-2", "n1", true, &ago(7200)),
            k8s::va(DRIVER, "va-2b", "pv-2", "n2", true, &ago(0)),
        ];
    }
    let mut instances = Vec::new();
    for who in ["a", "b"] {
        let cluster = KubeCluster::start(api.client(who), DRIVER, Some(who.into()));
        cluster.wait_ready(Duration::from_secs(5)).await.unwrap();
        let (backend, conn) = k8s::backend_on(&rds, cluster, false, 0);
        let (elector, leadership) =
            Elector::new(api.client(&format!("{who}-lease")), NS, LEASE, who, timing());
        instances.push((backend, conn, elector, leadership));
    }
    let (b_backend, _b_conn, b_elector, b_lead) = instances.pop().unwrap();
    let (a_backend, _a_conn, a_elector, a_lead) = instances.pop().unwrap();

    // A starts first and leads; B follows. Both sweep every 100 ms when they lead.
    let a_task = tokio::spawn(a_elector.run());
    until("a leads", Duration::from_secs(5), || a_lead.is_leader()).await;
    let b_task = tokio::spawn(b_elector.run());
    let every = Duration::from_millis(100);
    let sweeps = [
        tokio::spawn(sweep::run(std::sync::Arc::downgrade(&a_backend), a_lead.clone(), every)),
        tokio::spawn(sweep::run(std::sync::Arc::downgrade(&b_backend), b_lead.clone(), every)),
    ];
    until("v1 reported", Duration::from_secs(5), || !failures(&api).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!b_lead.is_leader(), "one leader at a time");
    assert_eq!(failures(&api), [("a".to_string(), v1.to_string())], "reported once, by the leader");
    assert_eq!(lease(&api)["spec"]["holderIdentity"], "a");

    // A stops renewing (its process hangs, say) but its sweep loop keeps running.
    a_task.abort();
    let stopped = Instant::now();
    until("b leads", Duration::from_secs(10), || b_lead.is_leader()).await;
    let failover = stopped.elapsed();
    let bound = timing().lease + Duration::from_secs(1);
    assert!(failover <= bound, "failover took {failover:?}, more than a lease period ({bound:?})");
    assert!(!a_lead.is_leader(), "A gave up at its renew deadline, before B took over");
    let l = lease(&api);
    assert_eq!(
        (l["spec"]["holderIdentity"].as_str(), l["spec"]["leaseTransitions"].as_i64()),
        (Some("b"), Some(1))
    );

    // v2's window expires: B reports it; nobody reports v1 again; A never sweeps again.
    until("v2 reported", Duration::from_secs(10), || failures(&api).len() == 2).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        failures(&api),
        [("a".to_string(), v1.to_string()), ("b".to_string(), v2.to_string())],
        "each expired window reported exactly once across both replicas"
    );
    // B tried to claim v1 on a stale PV from its cache: refused by the resourceVersion.
    let claims_b: Vec<(String, String, Value)> = api
        .writes("PATCH", "/api/v1/persistentvolumes/pv-1")
        .into_iter()
        .filter(|(w, _, _)| w == "b")
        .collect();
    assert!(claims_b.iter().all(|(_, _, body)| body["metadata"]["resourceVersion"] == "1"));
    let pv1 = api.state.lock().unwrap().pvs[0].clone();
    assert!(
        pv1["metadata"]["annotations"]["rds.csi.srvlab.io/reported"]
            .as_str()
            .is_some_and(|k| k.starts_with("migration-window-")),
        "{pv1}"
    );
    for t in sweeps.into_iter().chain([b_task]) {
        t.abort();
    }
}

#[tokio::test]
async fn a_released_lease_passes_at_once_and_a_single_controller_always_leads() {
    assert!(Leadership::always().is_leader());
    let api = SharedApi::default();
    let gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    let (a, a_lead) =
        Elector::reporting(api.client("a"), NS, LEASE, "a", timing(), Some(gauge.clone()));
    assert_eq!(gauge.get(), 0, "rds_csi_leader before the first election");
    let (b, b_lead) = Elector::new(api.client("b"), NS, LEASE, "b", timing());
    let (lease_api, name, identity) = a.release_handle();
    let a_task = tokio::spawn(a.run());
    until("a leads", Duration::from_secs(5), || a_lead.is_leader()).await;
    let b_task = tokio::spawn(b.run());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b_lead.is_leader());
    assert_eq!(gauge.get(), 1, "rds_csi_leader while leading");
    // A shuts down cleanly: it stops, then gives the Lease up.
    a_task.abort();
    Elector::release(&lease_api, &name, &identity, Duration::from_secs(2)).await;
    let took = until("b leads", Duration::from_secs(5), || b_lead.is_leader()).await;
    assert!(took < timing().lease, "took {took:?}: a released Lease needs no expiry");
    // The Lease was created once, by A; B took it over with one transition.
    let creates = api.writes("POST", "/leases");
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(creates[0].0, "a");
    let l = lease(&api);
    assert_eq!(
        (l["spec"]["holderIdentity"].as_str(), l["spec"]["leaseTransitions"].as_i64()),
        (Some("b"), Some(1))
    );
    b_task.abort();
}
