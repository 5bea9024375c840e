//! The CSI spec-rule conformance suite (docs/conformance.md).
//!
//! Each rule of the CSI spec (v1.12: the per-RPC error tables, idempotency, pagination,
//! capability-gated behaviour, the stage/publish rules per access mode, snapshots) is one
//! async check, run black-box over gRPC against `rds-csi serve --controller --node
//! --emulated-rds DIR` with a driver of its own ([`harness::run`]), in mount and in block
//! mode. `tests/conformance.rs` makes each rule one test per mode; `csi-conformance` runs
//! them all (the VM run over native NVMe/TCP uses it); `csi-conformance --list` prints the
//! rules per RPC.

pub mod ctx;
pub mod harness;
pub mod rules;
pub mod target;

pub use harness::{Mode, Outcome, Plane, RuleFn, Target};

/// One rule of the suite.
#[derive(Clone, Copy)]
pub struct Rule {
    /// The function name (unique), also the test name.
    pub name: &'static str,
    /// The RPC (or RPCs) the rule is about.
    pub rpc: &'static str,
    /// The rule, as the spec states it.
    pub text: &'static str,
    /// Needs the node's data plane (root, mounts, loop devices).
    pub node: bool,
    pub run: RuleFn,
}

/// Calls `$m! { module::rule => ("RPC", "rule text"), ... }` with every rule of the suite, so
/// that the registry ([`rules()`]) and the tests are made from one list.
#[macro_export]
macro_rules! for_each_rule {
    ($m:ident) => {
        $m! {
            identity::plugin_info => ("GetPluginInfo", "name and vendor_version are REQUIRED; the name is at most 63 characters of domain-name notation"),
            identity::plugin_capabilities => ("GetPluginCapabilities", "a plugin with a Controller service reports CONTROLLER_SERVICE; topology constraints are reported when segments are"),
            identity::probe_ready => ("Probe", "a ready plugin answers OK with ready=true"),
            identity::controller_capabilities_are_served => ("ControllerGetCapabilities", "every advertised controller capability is served; an RPC that is not advertised answers UNIMPLEMENTED"),
            identity::node_capabilities_are_served => ("NodeGetCapabilities", "every advertised node capability is served; SINGLE_NODE_MULTI_WRITER is advertised with the modes it covers"),
            identity::node_info => ("NodeGetInfo", "node_id is REQUIRED; accessible_topology is set when the plugin reports topology"),
            create::create_requires_name => ("CreateVolume", "name is REQUIRED: INVALID_ARGUMENT"),
            create::create_requires_capabilities => ("CreateVolume", "volume_capabilities is REQUIRED: INVALID_ARGUMENT"),
            create::create_unsupported_capability => ("CreateVolume", "a capability the plugin cannot provide: INVALID_ARGUMENT"),
            create::create_without_capacity => ("CreateVolume", "capacity_range is OPTIONAL: the plugin picks a size"),
            create::create_within_capacity_range => ("CreateVolume", "the volume's capacity is at least required_bytes and at most limit_bytes"),
            create::create_is_idempotent => ("CreateVolume", "the same name and parameters again: OK with the same volume"),
            create::create_same_name_other_size => ("CreateVolume", "the same name with an incompatible capacity_range: ALREADY_EXISTS"),
            create::create_max_length_name => ("CreateVolume", "names up to 128 bytes are supported"),
            create::create_unsupported_range => ("CreateVolume", "an unsupported capacity_range: OUT_OF_RANGE"),
            create::create_from_snapshot => ("CreateVolume", "a volume from a snapshot: content_source set, at least the snapshot's size, the snapshot's data"),
            create::create_from_missing_snapshot => ("CreateVolume", "a source snapshot that does not exist, whatever its id's form: NOT_FOUND"),
            create::create_from_volume => ("CreateVolume", "a clone of a volume: content_source set, the source's data"),
            create::create_from_missing_volume => ("CreateVolume", "a source volume that does not exist, whatever its id's form: NOT_FOUND"),
            delete::delete_requires_id => ("DeleteVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            delete::delete_unknown_is_ok => ("DeleteVolume", "a volume that does not exist, whatever its id's form: OK"),
            delete::delete_twice_is_ok => ("DeleteVolume", "deleting a deleted volume: OK (idempotent); the volume's file is gone"),
            delete::delete_in_use => ("DeleteVolume", "a volume in use (published to a node): FAILED_PRECONDITION"),
            delete::delete_removes_leftover_file => ("DeleteVolume", "no artifact of a deleted volume remains: a leftover backing file is removed"),
            volumes::validate_requires_id => ("ValidateVolumeCapabilities", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            volumes::validate_requires_capabilities => ("ValidateVolumeCapabilities", "volume_capabilities is REQUIRED: INVALID_ARGUMENT"),
            volumes::validate_unknown_volume => ("ValidateVolumeCapabilities", "a volume that does not exist: NOT_FOUND"),
            volumes::validate_confirms_supported => ("ValidateVolumeCapabilities", "supported capabilities are confirmed, echoing what was asked"),
            volumes::validate_unsupported_not_confirmed => ("ValidateVolumeCapabilities", "unsupported capabilities: OK without confirmed, with a message"),
            volumes::list_volumes_lists_what_exists => ("ListVolumes", "created volumes are listed, deleted ones are not"),
            volumes::list_volumes_paginates => ("ListVolumes", "max_entries bounds a page; next_token continues it; every volume once"),
            volumes::list_volumes_token_survives_deletion => ("ListVolumes", "a token stays valid when the last volume of its page is deleted"),
            volumes::list_volumes_foreign_token => ("ListVolumes", "a starting_token the plugin did not issue: ABORTED"),
            volumes::list_volumes_negative_max_entries => ("ListVolumes", "max_entries MUST NOT be negative: INVALID_ARGUMENT"),
            volumes::list_volumes_published_nodes => ("ListVolumes", "LIST_VOLUMES_PUBLISHED_NODES: published_node_ids name the nodes a volume is published to"),
            volumes::get_capacity_reports => ("GetCapacity", "available_capacity is reported; maximum_volume_size does not exceed it"),
            volumes::get_capacity_unsupported => ("GetCapacity", "capabilities the plugin cannot provide: 0 available"),
            volumes::get_volume_requires_id => ("ControllerGetVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            volumes::get_volume_unknown => ("ControllerGetVolume", "a volume that does not exist: NOT_FOUND"),
            volumes::get_volume_reports => ("ControllerGetVolume", "the volume, its condition (VOLUME_CONDITION) and published_node_ids"),
            publish::publish_requires_volume_id => ("ControllerPublishVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            publish::publish_requires_node_id => ("ControllerPublishVolume", "node_id is REQUIRED: INVALID_ARGUMENT"),
            publish::publish_requires_capability => ("ControllerPublishVolume", "volume_capability is REQUIRED: INVALID_ARGUMENT"),
            publish::publish_unknown_volume => ("ControllerPublishVolume", "a volume that does not exist, whatever its id's form: NOT_FOUND"),
            publish::publish_unknown_node => ("ControllerPublishVolume", "a node that does not exist: NOT_FOUND"),
            publish::publish_is_idempotent => ("ControllerPublishVolume", "publishing again to the same node: OK with the same publish_context"),
            publish::publish_readonly_incompatible => ("ControllerPublishVolume", "published to the node with the other readonly flag: ALREADY_EXISTS"),
            publish::publish_to_another_node => ("ControllerPublishVolume", "a single-node volume published to another node: FAILED_PRECONDITION"),
            publish::unpublish_requires_volume_id => ("ControllerUnpublishVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            publish::unpublish_not_published_is_ok => ("ControllerUnpublishVolume", "a volume not published to the node: OK"),
            publish::unpublish_unknown_volume_is_ok => ("ControllerUnpublishVolume", "a volume that does not exist can be regarded as unpublished: OK"),
            publish::expand_requires_id => ("ControllerExpandVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            publish::expand_requires_capacity => ("ControllerExpandVolume", "capacity_range is REQUIRED: INVALID_ARGUMENT"),
            publish::expand_unknown_volume => ("ControllerExpandVolume", "a volume that does not exist: NOT_FOUND"),
            publish::expand_grows => ("ControllerExpandVolume", "the volume grows to at least required_bytes; node_expansion_required for a filesystem"),
            publish::expand_already_large_is_ok => ("ControllerExpandVolume", "a volume already at least as large: OK"),
            publish::expand_unsupported_range => ("ControllerExpandVolume", "an unsupported capacity_range: OUT_OF_RANGE"),
            snapshots::snapshot_requires_name => ("CreateSnapshot", "name is REQUIRED: INVALID_ARGUMENT"),
            snapshots::snapshot_requires_source => ("CreateSnapshot", "source_volume_id is REQUIRED: INVALID_ARGUMENT"),
            snapshots::snapshot_unknown_source => ("CreateSnapshot", "a source volume that does not exist: NOT_FOUND"),
            snapshots::snapshot_is_idempotent => ("CreateSnapshot", "the same name and source again: OK with the same snapshot"),
            snapshots::snapshot_same_name_other_source => ("CreateSnapshot", "the same name for another source: ALREADY_EXISTS"),
            snapshots::snapshot_max_length_name => ("CreateSnapshot", "names up to 128 bytes are supported"),
            snapshots::delete_snapshot_requires_id => ("DeleteSnapshot", "snapshot_id is REQUIRED: INVALID_ARGUMENT"),
            snapshots::delete_snapshot_unknown_is_ok => ("DeleteSnapshot", "a snapshot that does not exist, whatever its id's form: OK"),
            snapshots::delete_snapshot_twice_is_ok => ("DeleteSnapshot", "deleting a deleted snapshot: OK; restored volumes keep their data"),
            snapshots::list_snapshots_by_id => ("ListSnapshots", "snapshot_id lists that snapshot only; an unknown id lists nothing"),
            snapshots::list_snapshots_by_source => ("ListSnapshots", "source_volume_id lists that volume's snapshots only; an unknown source lists nothing"),
            snapshots::list_snapshots_paginates => ("ListSnapshots", "max_entries bounds a page; next_token continues it; every snapshot once"),
            snapshots::list_snapshots_foreign_token => ("ListSnapshots", "a starting_token the plugin did not issue: ABORTED"),
            snapshots::get_snapshot_requires_id => ("GetSnapshot", "snapshot_id is REQUIRED: INVALID_ARGUMENT"),
            snapshots::get_snapshot_unknown => ("GetSnapshot", "a snapshot that does not exist, whatever its id's form: NOT_FOUND"),
            snapshots::get_snapshot_reports => ("GetSnapshot", "the snapshot's id, source, size, creation time and readiness"),
            groups::group_capability_advertised => ("GroupControllerGetCapabilities", "GROUP_CONTROLLER_SERVICE is reported with CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT, and the group RPCs answer"),
            groups::group_requires_name => ("CreateVolumeGroupSnapshot", "name is REQUIRED: INVALID_ARGUMENT"),
            groups::group_requires_sources => ("CreateVolumeGroupSnapshot", "source_volume_ids is REQUIRED: INVALID_ARGUMENT"),
            groups::group_unknown_source => ("CreateVolumeGroupSnapshot", "a source volume that does not exist: NOT_FOUND"),
            groups::group_is_idempotent => ("CreateVolumeGroupSnapshot", "the same name and volumes again: OK with the same group; every member a ready snapshot of its volume with the group's id"),
            groups::group_same_name_other_volumes => ("CreateVolumeGroupSnapshot", "the same name for other volumes: ALREADY_EXISTS"),
            groups::get_group_requires_id => ("GetVolumeGroupSnapshot", "group_snapshot_id is REQUIRED: INVALID_ARGUMENT"),
            groups::get_group_unknown => ("GetVolumeGroupSnapshot", "a group snapshot that does not exist, whatever its id's form: NOT_FOUND"),
            groups::delete_group_requires_id => ("DeleteVolumeGroupSnapshot", "group_snapshot_id is REQUIRED: INVALID_ARGUMENT"),
            groups::delete_group_unknown_is_ok => ("DeleteVolumeGroupSnapshot", "a group snapshot that does not exist, whatever its id's form: OK"),
            groups::delete_group_removes_members => ("DeleteVolumeGroupSnapshot", "the group and its members are gone; deleting again: OK"),
            groups::group_member_restores_alone => ("CreateVolume", "a member of a group snapshot is a snapshot: a volume restored from it alone holds its volume's data"),
            modify::modify_capability_advertised => ("ControllerModifyVolume", "MODIFY_VOLUME is advertised and the RPC answers"),
            modify::modify_requires_volume_id => ("ControllerModifyVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            modify::modify_requires_parameters => ("ControllerModifyVolume", "mutable_parameters is REQUIRED: INVALID_ARGUMENT"),
            modify::modify_unknown_volume => ("ControllerModifyVolume", "a volume that does not exist: NOT_FOUND"),
            modify::modify_immutable_key => ("ControllerModifyVolume", "a key that cannot be modified: INVALID_ARGUMENT naming the mutable ones"),
            modify::modify_is_idempotent => ("ControllerModifyVolume", "mutable parameters applied again: OK"),
            modify::create_with_mutable_parameters => ("CreateVolume", "mutable_parameters are accepted (a bad one is INVALID_ARGUMENT); the volume is modifiable afterwards"),
            stage::stage_requires_volume_id => ("NodeStageVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            stage::stage_requires_staging_path => ("NodeStageVolume", "staging_target_path is REQUIRED: INVALID_ARGUMENT"),
            stage::stage_requires_capability => ("NodeStageVolume", "volume_capability is REQUIRED: INVALID_ARGUMENT"),
            stage::stage_is_idempotent => ("NodeStageVolume", "staging again with the same arguments: OK, nothing stacked"),
            stage::stage_incompatible => ("NodeStageVolume", "staged again with an incompatible capability: ALREADY_EXISTS (another filesystem); a filesystem over a block volume's data: FAILED_PRECONDITION, the data untouched"),
            stage::stage_readonly_never_formats => ("NodeStageVolume", "a volume published read-only is staged read-only and never formatted"),
            stage::stage_restored_blank_is_refused => ("NodeStageVolume", "a restored volume whose data did not arrive is never formatted: FAILED_PRECONDITION"),
            stage::unstage_requires_volume_id => ("NodeUnstageVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            stage::unstage_requires_staging_path => ("NodeUnstageVolume", "staging_target_path is REQUIRED: INVALID_ARGUMENT"),
            stage::unstage_twice_is_ok => ("NodeUnstageVolume", "unstaging an unstaged volume: OK; nothing stays attached"),
            node_publish::node_publish_requires_volume_id => ("NodePublishVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            node_publish::node_publish_requires_target => ("NodePublishVolume", "target_path is REQUIRED: INVALID_ARGUMENT"),
            node_publish::node_publish_requires_capability => ("NodePublishVolume", "volume_capability is REQUIRED: INVALID_ARGUMENT"),
            node_publish::node_publish_without_staging_path => ("NodePublishVolume", "STAGE_UNSTAGE_VOLUME set but no staging_target_path: FAILED_PRECONDITION"),
            node_publish::node_publish_is_idempotent => ("NodePublishVolume", "the same target and arguments again: OK, nothing stacked"),
            node_publish::node_publish_readonly_incompatible => ("NodePublishVolume", "the same target with the other readonly flag: ALREADY_EXISTS"),
            node_publish::node_publish_single_writer_elsewhere => ("NodePublishVolume", "SINGLE_NODE_SINGLE_WRITER already published at another target: FAILED_PRECONDITION"),
            node_publish::node_publish_multi_writer_elsewhere => ("NodePublishVolume", "SINGLE_NODE_MULTI_WRITER at another target: OK"),
            node_publish::node_publish_readonly => ("NodePublishVolume", "readonly: the volume is published read-only (and read-only through ControllerPublishVolume)"),
            node_publish::node_unpublish_requires_volume_id => ("NodeUnpublishVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            node_publish::node_unpublish_requires_target => ("NodeUnpublishVolume", "target_path is REQUIRED: INVALID_ARGUMENT"),
            node_publish::node_unpublish_removes_target => ("NodeUnpublishVolume", "the SP deletes the file or directory it created at target_path; again: OK"),
            node_stats::stats_requires_volume_id => ("NodeGetVolumeStats", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            node_stats::stats_requires_path => ("NodeGetVolumeStats", "volume_path is REQUIRED: INVALID_ARGUMENT"),
            node_stats::stats_path_not_found => ("NodeGetVolumeStats", "the volume does not exist on volume_path (missing or relative path): NOT_FOUND"),
            node_stats::stats_other_volume => ("NodeGetVolumeStats", "volume_path holds another volume: NOT_FOUND"),
            node_stats::stats_reports_usage => ("NodeGetVolumeStats", "usage (bytes, and inodes for a filesystem) and volume_condition (VOLUME_CONDITION)"),
            node_stats::node_expand_requires_volume_id => ("NodeExpandVolume", "volume_id is REQUIRED: INVALID_ARGUMENT"),
            node_stats::node_expand_requires_path => ("NodeExpandVolume", "volume_path is REQUIRED: INVALID_ARGUMENT"),
            node_stats::node_expand_path_not_found => ("NodeExpandVolume", "the volume does not exist on volume_path (missing or relative path): NOT_FOUND"),
            node_stats::node_expand_after_controller_expand => ("NodeExpandVolume", "after ControllerExpandVolume the node grows the volume; capacity_bytes reports it"),
            lifecycle::lifecycle_keeps_data => ("all", "create, publish, stage, publish, write, unpublish, unstage, stage and publish again: the data is still there"),
            lifecycle::lifecycle_every_call_twice => ("all", "every RPC of the lifecycle, each called twice: idempotent"),
        }
    };
}

macro_rules! registry {
    ($($module:ident :: $name:ident => ($rpc:literal, $text:literal)),* $(,)?) => {
        /// Every rule of the suite, in order.
        pub fn rules() -> Vec<Rule> {
            vec![$(
                Rule {
                    name: stringify!($name),
                    rpc: $rpc,
                    text: $text,
                    node: matches!(stringify!($module), "stage" | "node_publish" | "node_stats" | "lifecycle"),
                    run: {
                        fn run(c: &mut harness::Ctx) -> futures::future::BoxFuture<'_, ()> {
                            Box::pin(rules::$module::$name(c))
                        }
                        run
                    },
                },
            )*]
        }
    };
}

for_each_rule!(registry);

/// Runs the rule `name` in `mode` as a test: skipped (with the reason) where node rules
/// cannot run, which under `CI` is a failure; panics with what failed.
pub async fn run_test(mode: Mode, name: &str) {
    let rule = rules().into_iter().find(|r| r.name == name).expect("a rule of the suite");
    if rule.node
        && let Err(why) = harness::node_rules_possible()
    {
        assert!(std::env::var_os("CI").is_none(), "the conformance suite must run in CI: {why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    if let Err(e) = harness::run(&Target::from_env(), mode, rule.run).await {
        panic!("{} ({}): {}\n{e}", rule.name, rule.rpc, rule.text);
    }
}
