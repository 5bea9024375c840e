use super::*;

const NODES: [&str; 2] = ["a", "b"];

fn disk(slot: &str, allowed: &[&str]) -> SeenDisk {
    SeenDisk {
        slot: slot.into(),
        file: format!("pool/v/{slot}.img"),
        size: 8 * MIB,
        export: true,
        allowed: allowed.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn a_seed_gives_the_same_schedule() {
    let run = |seed| {
        let (mut m, mut rng) = (Model::default(), Rng::new(seed));
        (0..200)
            .map(|_| {
                let s = m.next_step(&mut rng, seed, &NODES);
                m.apply(&s.action, Some("snap-x".into()));
                s
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    let steps = run(7);
    let kinds: BTreeSet<String> = steps
        .iter()
        .map(|s| format!("{:?}", s.action).split([' ', '{']).next().unwrap().to_string())
        .collect();
    for k in [
        "Create",
        "Delete",
        "Expand",
        "Snapshot",
        "Publish",
        "Unpublish",
        "Write",
        "RestartController",
    ] {
        assert!(kinds.contains(k), "{k} in {kinds:?}");
    }
}

#[test]
fn never_more_grants_than_the_access_mode_allows() {
    let (mut m, mut rng) = (Model::default(), Rng::new(3));
    for _ in 0..2000 {
        let s = m.next_step(&mut rng, 3, &NODES);
        if let Action::Publish { id, node } = &s.action {
            let v = &m.vols[id];
            assert!(!v.grants.contains(node));
            assert!(v.grants.len() < if v.rwx_block { 2 } else { 1 }, "{v:?}");
        }
        if let Action::PublishConflict { id, .. } = &s.action {
            assert!(!m.vols[id].rwx_block && m.vols[id].grants.len() == 1);
        }
        m.apply(&s.action, Some("snap-x".into()));
    }
}

#[test]
fn the_rds_is_checked_against_the_model() {
    let mut m = Model::default();
    m.apply(&Action::Create { name: "pvc-1".into(), size: 8 * MIB, rwx_block: false }, None);
    let fenced = [FENCED_HOST_NQN];
    let files = vec!["pool/v/pvc-1.img".to_string()];
    assert!(check_rds(&m, &[disk("pvc-1", &fenced)], &files, "pool/v/").is_empty());

    let host_a = host_nqn_for("a");
    m.apply(&Action::Publish { id: "pvc-1".into(), node: "a".into() }, None);
    assert!(check_rds(&m, &[disk("pvc-1", &[&host_a])], &files, "pool/v/").is_empty());
    let two = check_rds(&m, &[disk("pvc-1", &[&host_a, &host_nqn_for("b")])], &files, "pool/v/");
    assert!(two[0].contains("allowing"), "{two:?}");

    let extra = vec![files[0].clone(), "pool/v/pvc-9.img".to_string()];
    let bad =
        check_rds(&m, &[disk("pvc-1", &[&host_a]), disk("pvc-2", &fenced)], &extra, "pool/v/");
    assert!(bad.iter().any(|b| b.contains("disk pvc-2") && b.contains("not accounted")), "{bad:?}");
    assert!(bad.iter().any(|b| b.contains("pvc-9.img belongs to no disk")), "{bad:?}");
    let lost = check_rds(&m, &[], &[], "pool/v/");
    assert!(lost[0].contains("has no disk"), "{lost:?}");
    let mut shared = disk("pvc-3", &fenced);
    shared.file = "pool/v/pvc-1.img".into();
    let bad = check_rds(&m, &[disk("pvc-1", &[&host_a]), shared], &files, "pool/v/");
    assert!(bad.iter().any(|b| b.contains("share the file")), "{bad:?}");
}

#[test]
fn patterns_are_blocks_from_their_seed() {
    assert_eq!(pattern(1).len(), BLOCK);
    assert_eq!(pattern(1), pattern(1));
    assert_ne!(pattern(1), pattern(2));
}

#[test]
fn the_loop_plane_stages_writes_and_unstages_before_unpublishing() {
    let mut m = Model::new(true);
    let mut rng = Rng::new(11);
    let mut kinds = BTreeSet::new();
    for _ in 0..3000 {
        let s = m.next_step(&mut rng, 11, &NODES);
        match &s.action {
            Action::Stage { id } => {
                let v = &m.vols[id];
                assert!(!v.rwx_block && !v.staged && v.grants.contains("a"), "{v:?}");
                assert!(v.formatted || !v.filled, "a blank copy is never staged: {v:?}");
            }
            Action::WriteFile { id, .. } | Action::Unstage { id } => assert!(m.vols[id].staged),
            Action::Unpublish { id, node } => {
                assert!(!(m.vols[id].staged && node == "a"), "unpublished while staged")
            }
            Action::Write { id, .. } => assert!(m.vols[id].rwx_block, "raw writes only to block"),
            _ => {}
        }
        kinds.insert(format!("{:?}", s.action).split([' ', '{']).next().unwrap().to_string());
        m.apply(&s.action, Some("snap-x".into()));
    }
    for k in ["Stage", "WriteFile", "Unstage", "Write"] {
        assert!(kinds.contains(k), "{k} in {kinds:?}");
    }
    let files = m.vols.values().map(|v| v.files.len()).sum::<usize>();
    assert!(files > 0, "files were written and carried into copies");
}
