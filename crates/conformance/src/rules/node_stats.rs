//! CSI "NodeGetVolumeStats" and "NodeExpandVolume" (error table: the volume does not exist on
//! volume_path → NOT_FOUND; required fields INVALID_ARGUMENT).

use csi::v1::{volume_capability::access_mode::Mode as Am, volume_usage::Unit, *};
use tonic::Code;

use crate::harness::{Ctx, GIB, NODE, expect_code, must, must_ok};

fn stats(id: &str, path: &str) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.into(),
        ..Default::default()
    }
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn stats_requires_volume_id(c: &mut Ctx) {
    let (_, _, t) = c.up("conformance-stats").await;
    expect_code(
        c.n.node_get_volume_stats(stats("", &t.display().to_string())).await,
        Code::InvalidArgument,
        "no volume_id",
    );
}

/// CSI: volume_path REQUIRED → INVALID_ARGUMENT.
pub async fn stats_requires_path(c: &mut Ctx) {
    let (v, _, _) = c.up("conformance-stats").await;
    expect_code(
        c.n.node_get_volume_stats(stats(&v.volume_id, "")).await,
        Code::InvalidArgument,
        "no volume_path",
    );
}

/// CSI "Volume does not exist" on volume_path → NOT_FOUND: a path that does not exist,
/// absolute or relative, for a real volume or an unknown one.
pub async fn stats_path_not_found(c: &mut Ctx) {
    let (v, _, _) = c.up("conformance-stats").await;
    for (id, path) in [
        (v.volume_id.as_str(), "/not/a/valid/path"),
        (v.volume_id.as_str(), "some/path"),
        ("id", "some/path"),
        ("pvc-00000000-0000-4000-8000-000000000000", "/not/a/valid/path"),
    ] {
        expect_code(
            c.n.node_get_volume_stats(stats(id, path)).await,
            Code::NotFound,
            &format!("{id} at {path}"),
        );
    }
}

/// CSI "Volume does not exist" on volume_path → NOT_FOUND: the path holds another volume.
pub async fn stats_other_volume(c: &mut Ctx) {
    let (a, _, _) = c.up("conformance-stats-a").await;
    let (_, _, tb) = c.up("conformance-stats-b").await;
    expect_code(
        c.n.node_get_volume_stats(stats(&a.volume_id, &tb.display().to_string())).await,
        Code::NotFound,
        "volume a at volume b's target",
    );
}

/// CSI "NodeGetVolumeStats": usage in bytes (and inodes for a filesystem), never negative;
/// volume_condition is set (VOLUME_CONDITION) and normal for a healthy volume.
pub async fn stats_reports_usage(c: &mut Ctx) {
    let (v, _, t) = c.up("conformance-stats").await;
    for path in [t.clone(), c.staging(&v)] {
        if c.is_block() && path != t {
            continue; // nothing is staged at a block volume's staging path
        }
        let r = must(
            c.n.node_get_volume_stats(stats(&v.volume_id, &path.display().to_string())).await,
            "stats",
        );
        let cond = r.volume_condition.expect("volume_condition");
        assert!(!cond.abnormal, "{}", cond.message);
        let bytes = r.usage.iter().find(|u| u.unit == Unit::Bytes as i32).expect("bytes");
        assert!(bytes.total > 0 && bytes.total <= v.capacity_bytes, "{bytes:?}");
        assert!(bytes.available >= 0 && bytes.used >= 0);
        if c.is_block() {
            assert_eq!(bytes.total, v.capacity_bytes, "a block volume's size");
        } else {
            let inodes = r.usage.iter().find(|u| u.unit == Unit::Inodes as i32).expect("inodes");
            assert!(inodes.total > 0 && inodes.used > 0 && inodes.available >= 0, "{inodes:?}");
        }
    }
}

fn node_expand(id: &str, path: &str, bytes: i64) -> NodeExpandVolumeRequest {
    NodeExpandVolumeRequest {
        volume_id: id.into(),
        volume_path: path.into(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        ..Default::default()
    }
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn node_expand_requires_volume_id(c: &mut Ctx) {
    let (_, _, t) = c.up("conformance-nexp").await;
    expect_code(
        c.n.node_expand_volume(node_expand("", &t.display().to_string(), GIB)).await,
        Code::InvalidArgument,
        "no volume_id",
    );
}

/// CSI: volume_path REQUIRED → INVALID_ARGUMENT.
pub async fn node_expand_requires_path(c: &mut Ctx) {
    let (v, _, _) = c.up("conformance-nexp").await;
    expect_code(
        c.n.node_expand_volume(node_expand(&v.volume_id, "", GIB)).await,
        Code::InvalidArgument,
        "no volume_path",
    );
}

/// CSI "Volume does not exist" on volume_path → NOT_FOUND (missing or relative path).
pub async fn node_expand_path_not_found(c: &mut Ctx) {
    let (v, _, _) = c.up("conformance-nexp").await;
    for (id, path) in [
        (v.volume_id.as_str(), "/not/a/valid/path"),
        (v.volume_id.as_str(), "some/path"),
        ("id", "some/path"),
    ] {
        expect_code(
            c.n.node_expand_volume(node_expand(id, path, GIB)).await,
            Code::NotFound,
            &format!("{id} at {path}"),
        );
    }
}

/// CSI "NodeExpandVolume" after ControllerExpandVolume with node_expansion_required: the
/// volume is grown on the node (the filesystem online; xfs, which grows online everywhere).
pub async fn node_expand_after_controller_expand(c: &mut Ctx) {
    let v = c.create("conformance-nexp").await;
    let cap = c.cap_fs("xfs", Am::SingleNodeWriter);
    let pc = must_ok(
        c.controller_publish(&v, NODE, cap.clone(), false).await,
        "ControllerPublishVolume",
    );
    let req = c.stage_req(&v, &pc, cap.clone());
    must_ok(c.stage_with(req).await, "NodeStageVolume");
    let t = c.target("pod-grow");
    let req = c.node_publish_req(&v, &pc, &t, cap.clone(), false);
    must_ok(c.node_publish_with(req).await, "NodePublishVolume");
    let grown = must(
        c.c.controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(CapacityRange { required_bytes: 2 * GIB, limit_bytes: 0 }),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await,
        "ControllerExpandVolume",
    );
    let req = NodeExpandVolumeRequest {
        volume_capability: Some(cap),
        ..node_expand(&v.volume_id, &t.display().to_string(), 2 * GIB)
    };
    let r = must(c.n.node_expand_volume(req).await, "NodeExpandVolume");
    assert!(r.capacity_bytes >= 2 * GIB, "{r:?}");
    let s = must(
        c.n.node_get_volume_stats(stats(&v.volume_id, &t.display().to_string())).await,
        "stats",
    );
    let bytes = s.usage.iter().find(|u| u.unit == Unit::Bytes as i32).unwrap();
    if grown.node_expansion_required {
        assert!(bytes.total > GIB + GIB / 2, "the filesystem grew: {bytes:?}");
    } else {
        assert_eq!(bytes.total, 2 * GIB, "the block device grew");
    }
}
