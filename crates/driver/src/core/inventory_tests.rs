use super::*;

const A: &str = "pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
const B: &str = "pvc-1f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
const C: &str = "pvc-2f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
const SNAP: &str = "snap-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b-at-0f8e4b1c2a";
const NOW: i64 = 1_800_000_000;

fn disk(slot: &str, comment: &str) -> Disk {
    Disk {
        slot: slot.into(),
        file: Some(format!("storage-pool/metal-csi/{slot}.img")),
        size: 1 << 30,
        export: true,
        nqn: Some(format!("nqn.2000-02.com.mikrotik:{slot}")),
        comment: comment.into(),
        ..Disk::default()
    }
}

fn file(slot: &str, modified: Option<i64>) -> FileEntry {
    FileEntry {
        name: format!("storage-pool/metal-csi/{slot}.img"),
        kind: ".img file".into(),
        size: Some(1 << 30),
        modified,
    }
}

fn managed(f: &FilePath) -> bool {
    f.as_str().starts_with("storage-pool/metal-csi/")
}

fn cluster() -> ClusterView {
    let pv = PvRef {
        name: "pv-a".into(),
        claim: Some("db/data".into()),
        phase: Some("Bound".into()),
        migration_timeout_s: Some(600),
    };
    ClusterView {
        pvs: HashMap::from([(A.to_string(), pv)]),
        attachments: vec![
            AttachmentRef {
                name: "csi-1".into(),
                volume: A.into(),
                node: "n1".into(),
                attached: true,
                created: Some(NOW - 1000),
                ..AttachmentRef::default()
            },
            AttachmentRef {
                name: "csi-2".into(),
                volume: A.into(),
                node: "n2".into(),
                attached: true,
                created: Some(NOW - 100),
                ..AttachmentRef::default()
            },
        ],
    }
}

#[test]
fn orphans_are_old_managed_items_without_a_pv() {
    let disks = vec![
        disk(A, &format!("rds-csi pvc=db/data created={}", NOW - 9000)),
        disk(B, &format!("rds-csi created={}", NOW - 9000)),
        disk(C, &format!("rds-csi created={}", NOW - 10)),
        disk(SNAP, "rds-csi snapshot source=x created=1 mechanism=disk-copy ready"),
        disk(
            "pvc-3f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b",
            "rds-csi volume source=x created=1 mechanism=disk-copy copying=5",
        ),
    ];
    let leftover = "pvc-4f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
    let files = vec![
        file(A, None),
        file(B, None),
        file(leftover, Some(NOW - 7200)),
        file("other", Some(0)),
    ];
    let got = orphan_candidates(&disks, &files, &cluster().handles(), managed, NOW, 3600);
    let names: Vec<(&str, &str, Option<i64>)> =
        got.iter().map(|c| (c.kind, c.name.as_str(), c.age_s)).collect();
    assert_eq!(
        names,
        [
            ("disk", B, Some(9000)),
            ("file", &format!("storage-pool/metal-csi/{leftover}.img")[..], Some(7200))
        ],
        "bound A, young C, the snapshot, the copy in progress and a foreign file are not orphans"
    );
    let outside = orphan_candidates(&disks, &files, &HashSet::new(), |_| false, NOW, 3600);
    assert_eq!(
        outside.iter().filter(|c| c.kind == "disk").count(),
        0,
        "files outside the base paths are never ours"
    );
}

#[test]
fn volume_rows_join_the_rds_and_the_cluster() {
    let disks = vec![
        disk(A, &format!("rds-csi pvc=db/old created={}", NOW - 9000)),
        disk(B, &format!("rds-csi pvc=web/cache created={}", NOW - 9000)),
        disk(
            C,
            &format!(
                "rds-csi volume source={SNAP} created={} mechanism=disk-copy pvc=db/clone copying=5",
                NOW - 5
            ),
        ),
        disk(SNAP, "rds-csi snapshot source=x created=1 mechanism=disk-copy ready"),
    ];
    let rows = volumes(&disks, &[], Some(&cluster()), managed, NOW, 3600);
    let view: Vec<(&str, &str, Option<&str>, Vec<String>)> = rows
        .iter()
        .map(|r| (r.volume.as_str(), r.state, r.pvc.as_deref(), r.holders.clone()))
        .collect();
    assert_eq!(
        view,
        [
            (A, "bound", Some("db/data"), vec!["n1".to_string(), "n2".to_string()]),
            (B, "orphan", Some("web/cache"), vec![]),
            (C, "copying", Some("db/clone"), vec![]),
        ],
        "the PV's claim wins over the comment's (a restore's copy record has one too); snapshots are not volumes"
    );
    assert_eq!(rows[2].source.as_deref(), Some(SNAP));
    let blind = volumes(
        &disks,
        &[file("pvc-5f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b", None)],
        None,
        managed,
        NOW,
        3600,
    );
    let states: Vec<&str> = blind.iter().map(|r| r.state).collect();
    assert_eq!(states, ["unknown", "unknown", "copying", "leftover-file"]);
    assert_eq!(
        blind[1].pvc.as_deref(),
        Some("web/cache"),
        "without the cluster: the comment's PVC"
    );
}

#[test]
fn snapshot_rows_say_how_far_a_copy_is() {
    let mut copying = disk(
        SNAP,
        "rds-csi snapshot source=pvc-x created=100 mechanism=disk-copy group=group-1 paused=* held=100 copying=4096",
    );
    copying.export = false;
    let rows = snapshots(&[copying, disk(A, "rds-csi created=1")], 160);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.state, r.copied, r.mechanism.as_deref(), r.group.as_deref(), r.age_s, r.holding_writes),
        ("copying", Some(4096), Some("disk-copy"), Some("group-1"), Some(60), true)
    );
}

#[test]
fn attachment_rows_show_the_fence_and_the_migration_window() {
    let c = cluster();
    let nqn = |n: &str| format!("host:{n}");
    let mut d = disk(A, "");
    d.allowed_hosts = vec!["host:n1".into()];
    let rows = attachments(&c, Some(&[d.clone()]), nqn, NOW);
    let view: Vec<(&str, &str, Option<i64>)> =
        rows.iter().map(|r| (r.node.as_str(), r.fence, r.migration_left_s)).collect();
    assert_eq!(view, [("n1", "allowed", Some(500)), ("n2", "fenced-out", Some(500))]);
    d.allowed_hosts.clear();
    assert_eq!(attachments(&c, Some(&[d]), nqn, NOW)[0].fence, "any-host");
    assert_eq!(attachments(&c, Some(&[]), nqn, NOW)[0].fence, "no-disk");
    assert_eq!(attachments(&c, None, nqn, NOW)[0].fence, "unknown");
    let late = attachments(&c, None, nqn, NOW + 1000);
    assert_eq!(late[0].migration_left_s, Some(-500), "an expired window is negative");
}

#[test]
fn allow_lists_name_the_nodes() {
    let c = cluster();
    assert_eq!(allows(&[], Some(&c)), "any host");
    assert_eq!(allows(&[FENCED_HOST_NQN.into()], Some(&c)), "no host (fenced)");
    let hosts =
        vec![host_nqn_for("n2"), host_nqn_for("n1"), "nqn.2014-08.org.nvmexpress:uuid:x".into()];
    assert_eq!(allows(&hosts, Some(&c)), "n1,n2,+1 host(s)");
    assert_eq!(allows(&hosts, None), "+3 host(s)");
}
