//! CSI "ValidateVolumeCapabilities", "ListVolumes", "GetCapacity" and "ControllerGetVolume".

use std::collections::BTreeSet;

use csi::v1::{volume_capability::access_mode::Mode as Am, *};
use tonic::Code;

use crate::harness::{Ctx, NODE, expect_code, must};

fn validate(id: &str, caps: Vec<VolumeCapability>) -> ValidateVolumeCapabilitiesRequest {
    ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    }
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn validate_requires_id(c: &mut Ctx) {
    let caps = vec![c.cap()];
    expect_code(
        c.c.validate_volume_capabilities(validate("", caps)).await,
        Code::InvalidArgument,
        "no volume_id",
    );
}

/// CSI: volume_capabilities REQUIRED → INVALID_ARGUMENT.
pub async fn validate_requires_capabilities(c: &mut Ctx) {
    let v = c.create("conformance-validate").await;
    expect_code(
        c.c.validate_volume_capabilities(validate(&v.volume_id, Vec::new())).await,
        Code::InvalidArgument,
        "no capabilities",
    );
}

/// CSI "Volume does not exist" → NOT_FOUND, whatever the id's form.
pub async fn validate_unknown_volume(c: &mut Ctx) {
    for id in ["some-vol-id", "pvc-00000000-0000-4000-8000-000000000000"] {
        let caps = vec![c.cap()];
        expect_code(c.c.validate_volume_capabilities(validate(id, caps)).await, Code::NotFound, id);
    }
}

/// CSI: "confirmed ... the Plugin MUST set this field" when every capability is supported,
/// echoing what was asked.
pub async fn validate_confirms_supported(c: &mut Ctx) {
    let v = c.create("conformance-validate").await;
    let caps = vec![c.cap(), c.cap_with(Am::SingleNodeMultiWriter)];
    let r = must(
        c.c.validate_volume_capabilities(validate(&v.volume_id, caps.clone())).await,
        "Validate",
    );
    let confirmed = r.confirmed.expect("confirmed");
    assert_eq!(confirmed.volume_capabilities, caps);
}

/// CSI: unsupported capabilities → OK, `confirmed` unset, a message saying why.
pub async fn validate_unsupported_not_confirmed(c: &mut Ctx) {
    let v = c.create("conformance-validate").await;
    let caps = vec![c.cap_with(Am::MultiNodeSingleWriter)];
    let r = must(c.c.validate_volume_capabilities(validate(&v.volume_id, caps)).await, "Validate");
    assert!(r.confirmed.is_none(), "{r:?}");
    assert!(!r.message.is_empty(), "the message says why");
}

async fn list_all(c: &mut Ctx, max: i32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = must(
            c.c.list_volumes(ListVolumesRequest {
                max_entries: max,
                starting_token: token.clone(),
            })
            .await,
            "ListVolumes",
        );
        if max > 0 {
            assert!(page.entries.len() <= max as usize, "a page has at most max_entries");
        }
        ids.extend(page.entries.into_iter().map(|e| e.volume.unwrap().volume_id));
        if page.next_token.is_empty() {
            return ids;
        }
        token = page.next_token;
    }
}

/// CSI "ListVolumes": every volume; a deleted one is gone.
pub async fn list_volumes_lists_what_exists(c: &mut Ctx) {
    let a = c.create("conformance-list-a").await;
    let b = c.create("conformance-list-b").await;
    let all: BTreeSet<String> = list_all(c, 0).await.into_iter().collect();
    assert_eq!(all, BTreeSet::from([a.volume_id.clone(), b.volume_id.clone()]));
    must(
        c.c.delete_volume(DeleteVolumeRequest {
            volume_id: a.volume_id.clone(),
            ..Default::default()
        })
        .await,
        "DeleteVolume",
    );
    assert_eq!(list_all(c, 0).await, vec![b.volume_id]);
}

/// CSI: max_entries bounds a page and next_token continues; together the pages list every
/// volume once.
pub async fn list_volumes_paginates(c: &mut Ctx) {
    let mut want = BTreeSet::new();
    for i in 0..5 {
        want.insert(c.create(&format!("conformance-page-{i}")).await.volume_id);
    }
    let paged = list_all(c, 2).await;
    assert_eq!(paged.len(), 5, "each volume once: {paged:?}");
    assert_eq!(paged.into_iter().collect::<BTreeSet<_>>(), want);
}

/// CSI: "the CO MAY ... not witness existing volumes" but a token stays usable: deleting the
/// last volume of a page does not invalidate the token.
pub async fn list_volumes_token_survives_deletion(c: &mut Ctx) {
    for i in 0..4 {
        c.create(&format!("conformance-tok-{i}")).await;
    }
    let first = must(
        c.c.list_volumes(ListVolumesRequest { max_entries: 2, starting_token: String::new() })
            .await,
        "page 1",
    );
    assert!(!first.next_token.is_empty());
    let last = first.entries.last().unwrap().volume.as_ref().unwrap().volume_id.clone();
    must(
        c.c.delete_volume(DeleteVolumeRequest { volume_id: last, ..Default::default() }).await,
        "DeleteVolume",
    );
    let rest = must(
        c.c.list_volumes(ListVolumesRequest { max_entries: 0, starting_token: first.next_token })
            .await,
        "page 2 after a deletion",
    );
    assert_eq!(rest.entries.len(), 2, "the two volumes after the page");
}

/// CSI "Invalid starting_token" → ABORTED.
pub async fn list_volumes_foreign_token(c: &mut Ctx) {
    let v = c.create("conformance-token").await;
    for token in ["invalid-token", "5", v.volume_id.as_str()] {
        expect_code(
            c.c.list_volumes(ListVolumesRequest { max_entries: 0, starting_token: token.into() })
                .await,
            Code::Aborted,
            &format!("token {token:?}"),
        );
    }
}

/// CSI: "The value of this field MUST NOT be negative" → INVALID_ARGUMENT.
pub async fn list_volumes_negative_max_entries(c: &mut Ctx) {
    expect_code(
        c.c.list_volumes(ListVolumesRequest { max_entries: -1, starting_token: String::new() })
            .await,
        Code::InvalidArgument,
        "max_entries -1",
    );
}

/// CSI LIST_VOLUMES_PUBLISHED_NODES: each entry's status names the nodes it is published to.
pub async fn list_volumes_published_nodes(c: &mut Ctx) {
    let v = c.create("conformance-published").await;
    let other = c.create("conformance-unpublished").await;
    c.publish(&v).await;
    let list = must(c.c.list_volumes(ListVolumesRequest::default()).await, "ListVolumes");
    for e in list.entries {
        let id = e.volume.unwrap().volume_id;
        let nodes = e.status.expect("status").published_node_ids;
        if id == v.volume_id {
            assert_eq!(nodes, vec![NODE.to_string()]);
        } else {
            assert_eq!(id, other.volume_id);
            assert!(nodes.is_empty(), "{nodes:?}");
        }
    }
}

/// CSI "GetCapacity": available_capacity; maximum_volume_size ≤ available.
pub async fn get_capacity_reports(c: &mut Ctx) {
    let caps = vec![c.cap()];
    let r = must(
        c.c.get_capacity(GetCapacityRequest { volume_capabilities: caps, ..Default::default() })
            .await,
        "GetCapacity",
    );
    assert!(r.available_capacity > 0, "{r:?}");
    let max = r.maximum_volume_size.expect("maximum_volume_size");
    assert!(max > 0 && max <= r.available_capacity, "{r:?}");
    let before = r.available_capacity;
    c.create("conformance-capacity").await;
    let after = must(c.c.get_capacity(GetCapacityRequest::default()).await, "GetCapacity")
        .available_capacity;
    assert!(after <= before, "a volume does not add capacity");
}

/// CSI "GetCapacity": for capabilities the plugin cannot provide, no capacity.
pub async fn get_capacity_unsupported(c: &mut Ctx) {
    let caps = vec![c.cap_with(Am::MultiNodeSingleWriter)];
    let r = must(
        c.c.get_capacity(GetCapacityRequest { volume_capabilities: caps, ..Default::default() })
            .await,
        "GetCapacity",
    );
    assert_eq!(r.available_capacity, 0, "{r:?}");
}

/// CSI: volume_id REQUIRED → INVALID_ARGUMENT.
pub async fn get_volume_requires_id(c: &mut Ctx) {
    expect_code(
        c.c.controller_get_volume(ControllerGetVolumeRequest { volume_id: String::new() }).await,
        Code::InvalidArgument,
        "no volume_id",
    );
}

/// CSI "Volume does not exist" → NOT_FOUND.
pub async fn get_volume_unknown(c: &mut Ctx) {
    for id in ["some-vol-id", "pvc-00000000-0000-4000-8000-000000000000"] {
        expect_code(
            c.c.controller_get_volume(ControllerGetVolumeRequest { volume_id: id.into() }).await,
            Code::NotFound,
            id,
        );
    }
}

/// CSI "ControllerGetVolume": the volume, a volume_condition (VOLUME_CONDITION) and the
/// published node ids (LIST_VOLUMES_PUBLISHED_NODES).
pub async fn get_volume_reports(c: &mut Ctx) {
    let v = c.create("conformance-get").await;
    let get = |id: &str| ControllerGetVolumeRequest { volume_id: id.into() };
    let r = must(c.c.controller_get_volume(get(&v.volume_id)).await, "ControllerGetVolume");
    assert_eq!(r.volume.as_ref().unwrap().volume_id, v.volume_id);
    assert_eq!(r.volume.unwrap().capacity_bytes, v.capacity_bytes);
    let status = r.status.expect("status");
    let cond = status.volume_condition.expect("volume_condition");
    assert!(!cond.abnormal, "{}", cond.message);
    assert!(status.published_node_ids.is_empty());
    c.publish(&v).await;
    let r = must(c.c.controller_get_volume(get(&v.volume_id)).await, "ControllerGetVolume");
    assert_eq!(r.status.unwrap().published_node_ids, vec![NODE.to_string()]);
}
