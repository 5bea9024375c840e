//! The Grafana dashboard (`deploy/grafana/rds-csi.json`) against the metrics the driver really
//! exports: the real binary (controller and node, on the embedded emulator) walks a volume
//! through the controller steps of the demo (create, snapshot, publish, unpublish, capacity),
//! then `/metrics` is scraped; every metric any panel's query names must be in it. And the
//! JSON loads as a dashboard: unique panel ids, a data source and at least one query on
//! every panel, panels inside the 24-column grid.

mod support;

use std::collections::BTreeSet;

use csi::v1::{controller_client::ControllerClient, volume_capability::access_mode::Mode, *};
use serde_json::Value;
use support::{
    Daemon, cap,
    controller::{GIB, create, snap_req},
};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/rds-csi.json");
const VID: &str = "pvc-0d0d0d0d-0000-4000-8000-00000000000d";

/// Every sample name the exposition can hold: `# TYPE` families expanded by their type (a
/// family without samples yet still names its series), plus the samples seen.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The `rds_csi_*` metric names in a PromQL expression.
fn metrics_in(expr: &str) -> Vec<String> {
    expr.match_indices("rds_csi_")
        .map(|(at, _)| {
            let rest = &expr[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_panel_queries_metrics_the_driver_exports() {
    let dir = tempfile::tempdir().unwrap();
    let rds = dir.path().join("rds");
    let daemon = Daemon::start_with(&[
        "--controller",
        "--node",
        "--node-id",
        "node-a",
        "--emulated-rds",
        rds.to_str().unwrap(),
        "--data-plane",
        "loop",
        "--metrics-address",
        "127.0.0.1:0",
    ]);
    let mut c = ControllerClient::new(daemon.ready_channel().await);
    c.create_volume(create(VID, GIB, &[])).await.unwrap();
    c.create_snapshot(snap_req("nightly", VID, &[])).await.unwrap();
    let publish = ControllerPublishVolumeRequest {
        volume_id: VID.into(),
        node_id: "node-a".into(),
        volume_capability: Some(cap(false, Mode::SingleNodeWriter)),
        ..Default::default()
    };
    c.controller_publish_volume(publish).await.unwrap();
    let unpublish = ControllerUnpublishVolumeRequest {
        volume_id: VID.into(),
        node_id: "node-a".into(),
        ..Default::default()
    };
    c.controller_unpublish_volume(unpublish).await.unwrap();
    c.get_capacity(GetCapacityRequest::default()).await.unwrap();
    let (status, text) = daemon.http_get("/metrics");
    assert_eq!(status, 200);
    let have = exported(&text);
    assert!(have.contains("rds_csi_grpc_requests_total"), "{text}");

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).expect("the JSON loads");
    assert_eq!(dashboard["uid"], "rds-csi");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "duplicate panel id {}", p["id"]);
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_i64().unwrap(), grid["w"].as_i64().unwrap());
        assert!(x >= 0 && w > 0 && x + w <= 24, "{} outside the grid", p["title"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        let refs: BTreeSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
        assert_eq!(refs.len(), targets.len(), "{}: refIds repeat", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names = metrics_in(expr);
            assert!(!names.is_empty(), "{}: {expr} names no rds-csi metric", p["title"]);
            for n in names {
                if !have.contains(&n) {
                    missing.push(format!("{}: {n}", p["title"]));
                }
                used.insert(n);
            }
        }
    }
    assert!(missing.is_empty(), "queries name metrics /metrics does not export: {missing:?}");
    // The variables' queries too.
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            for n in metrics_in(q) {
                assert!(have.contains(&n), "variable {}: {n}", v["name"]);
            }
        }
    }
    assert!(used.len() >= 25, "the dashboard covers the driver's metrics: {used:?}");
}
