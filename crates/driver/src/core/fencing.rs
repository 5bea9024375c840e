//! Attachment fencing: who may attach a volume (ControllerPublishVolume), decided from the
//! current holders alone. Pure: the caller builds the holders from Kubernetes
//! VolumeAttachments (status.attached) plus its own not-yet-recorded grants, so a restarted or
//! newly elected controller decides exactly like one that never stopped (docs/kubevirt.md).
//!
//! - Exclusive (every single-node access mode): one holder. No grace-period hand-off (the Go
//!   driver's 30 s hand-off let any node take a volume attached elsewhere, incident 16).
//! - Migratable (MULTI_NODE_MULTI_WRITER block, KubeVirt live migration): at most two holders.
//!   The second attach opens a window of `migrationTimeoutSeconds`; with two holders, a third
//!   node is refused, with a message that says whether the window is still open or expired.
//!   Detaching either holder closes the window.
//! - A holder whose Kubernetes Node object no longer exists does not block (the node is gone
//!   for good); a NotReady node keeps its fence (it may be partitioned and still writing).

/// The allow list of a disk no node may reach (storage fencing with no holder left): an
/// empty list would mean "any host".
pub const FENCED_HOST_NQN: &str = "nqn.2000-02.io.srvlab.rds-csi:fenced";

/// A node's host NQN under storage fencing: derived from its node id, so the controller
/// knows it without asking the node (`nqn.2014-08.org.nvmexpress:uuid:<uuid v5>`).
pub fn host_nqn_for(node_id: &str) -> String {
    const NS: uuid::Uuid = uuid::Uuid::from_u128(0x5d3c_3f4e_7a1b_4c2d_9e8f_0a1b_2c3d_4e5f);
    format!("nqn.2014-08.org.nvmexpress:uuid:{}", uuid::Uuid::new_v5(&NS, node_id.as_bytes()))
}

/// How many nodes may hold a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Exclusive,
    Migratable,
}

/// A node that holds (or was granted) the volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holder {
    /// The CSI node id (Kubernetes node names are mapped through CSINode).
    pub node: String,
    /// When it attached (unix seconds): the VolumeAttachment's creation, or the grant.
    pub since: i64,
    /// Whether its Node object still exists.
    pub node_exists: bool,
    /// Whether it was published read-only (`None`: not recorded).
    pub readonly: Option<bool>,
}

/// Why a publish is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Exclusive volume held by another node.
    HeldElsewhere { holder: String },
    /// Two nodes hold it and the migration window is open.
    TwoHolders { holders: [String; 2], window_ends: i64 },
    /// Two nodes hold it and the window has expired: the migration failed or hangs.
    WindowExpired { holders: [String; 2], expired_at: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The node already holds the volume: same answer again (idempotent).
    Already,
    /// The node holds the volume with the other `readonly` flag (CSI: "Volume published but
    /// is incompatible", ALREADY_EXISTS).
    Incompatible {
        published_readonly: bool,
    },
    /// Attach; `migration` when this opens a migration window (second holder).
    Grant {
        migration: bool,
    },
    Refuse(Refusal),
}

/// A decision and the stale holders it ignored (for StaleAttachmentIgnored events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub stale_ignored: Vec<String>,
}

/// The migration window of two live holders: it opened when the newer one attached.
pub fn window_end(holders: &[&Holder], timeout_s: i64) -> i64 {
    holders.iter().map(|h| h.since).max().unwrap_or(0).saturating_add(timeout_s)
}

/// Decides whether `node` may attach (read-only when `readonly`) a volume held by
/// `holders`, at `now`.
pub fn decide(
    holders: &[Holder],
    node: &str,
    access: Access,
    readonly: bool,
    timeout_s: i64,
    now: i64,
) -> Outcome {
    // Ordered by attach time then name: the answer must not depend on listing order (a
    // restarted controller lists the same holders in another order).
    let mut sorted: Vec<&Holder> = holders.iter().collect();
    sorted.sort_by(|a, b| (a.since, &a.node).cmp(&(b.since, &b.node)));
    let (live, stale): (Vec<&Holder>, Vec<&Holder>) =
        sorted.into_iter().partition(|h| h.node_exists);
    let stale_ignored = stale.iter().filter(|h| h.node != node).map(|h| h.node.clone()).collect();
    let decision = if let Some(h) = live.iter().find(|h| h.node == node) {
        match h.readonly {
            Some(published_readonly) if published_readonly != readonly => {
                Decision::Incompatible { published_readonly }
            }
            _ => Decision::Already,
        }
    } else {
        match (access, live.as_slice()) {
            (_, []) => Decision::Grant { migration: false },
            (Access::Exclusive, [h, ..]) => {
                Decision::Refuse(Refusal::HeldElsewhere { holder: h.node.clone() })
            }
            (Access::Migratable, [_]) => Decision::Grant { migration: true },
            (Access::Migratable, [a, b, ..]) => {
                let end = window_end(&[a, b], timeout_s);
                let holders = [a.node.clone(), b.node.clone()];
                if now >= end {
                    Decision::Refuse(Refusal::WindowExpired { holders, expired_at: end })
                } else {
                    Decision::Refuse(Refusal::TwoHolders { holders, window_ends: end })
                }
            }
        }
    };
    Outcome { decision, stale_ignored }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn h(node: &str, since: i64) -> Holder {
        Holder { node: node.into(), since, node_exists: true, readonly: None }
    }

    #[test]
    fn exclusive_volumes_have_one_holder() {
        assert_eq!(
            decide(&[], "a", Access::Exclusive, false, 300, 0).decision,
            Decision::Grant { migration: false }
        );
        assert_eq!(
            decide(&[h("a", 0)], "a", Access::Exclusive, false, 300, 5).decision,
            Decision::Already
        );
        assert_eq!(
            decide(&[h("a", 0)], "b", Access::Exclusive, false, 300, 5).decision,
            Decision::Refuse(Refusal::HeldElsewhere { holder: "a".into() })
        );
        // The holder's Node object is gone: it does not block, and it is reported.
        let gone = Holder { node_exists: false, ..h("a", 0) };
        let o = decide(&[gone], "b", Access::Exclusive, false, 300, 5);
        assert_eq!(o.decision, Decision::Grant { migration: false });
        assert_eq!(o.stale_ignored, ["a"]);
        // Published read-write: a read-only publish to the same node is incompatible.
        let rw = Holder { readonly: Some(false), ..h("a", 0) };
        assert_eq!(
            decide(std::slice::from_ref(&rw), "a", Access::Exclusive, true, 300, 5).decision,
            Decision::Incompatible { published_readonly: false }
        );
        assert_eq!(
            decide(&[rw], "a", Access::Exclusive, false, 300, 5).decision,
            Decision::Already
        );
    }

    #[test]
    fn migratable_volumes_have_two_holders_and_a_window() {
        assert_eq!(
            decide(&[h("a", 0)], "b", Access::Migratable, false, 300, 10).decision,
            Decision::Grant { migration: true }
        );
        let two = [h("a", 0), h("b", 100)];
        assert_eq!(
            decide(&two, "b", Access::Migratable, false, 300, 500).decision,
            Decision::Already
        );
        assert_eq!(
            decide(&two, "c", Access::Migratable, false, 300, 399).decision,
            Decision::Refuse(Refusal::TwoHolders {
                holders: ["a".into(), "b".into()],
                window_ends: 400
            })
        );
        assert_eq!(
            decide(&two, "c", Access::Migratable, false, 300, 400).decision,
            Decision::Refuse(Refusal::WindowExpired {
                holders: ["a".into(), "b".into()],
                expired_at: 400
            })
        );
    }

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Op {
        Publish(u8),
        Unpublish(u8),
        DeleteNode(u8),
        Tick(u16),
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4).prop_map(Op::Publish),
            2 => (0u8..4).prop_map(Op::Unpublish),
            1 => (0u8..4).prop_map(Op::DeleteNode),
            2 => (0u16..400).prop_map(Op::Tick),
            1 => Just(Op::Restart),
        ]
    }

    /// The cluster as the decision sees it: holders come from the VolumeAttachments (kept
    /// across restarts) and the grants not yet recorded in them (lost on a restart).
    #[derive(Default)]
    struct Cluster {
        recorded: Vec<Holder>,
        unrecorded: Vec<Holder>,
        deleted: Vec<String>,
    }

    impl Cluster {
        fn holders(&self) -> Vec<Holder> {
            self.recorded
                .iter()
                .chain(&self.unrecorded)
                .map(|x| Holder { node_exists: !self.deleted.contains(&x.node), ..x.clone() })
                .collect()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn fencing_invariants_hold_over_any_history(
            ops in proptest::collection::vec(op(), 1..60),
            migratable in any::<bool>(),
        ) {
            let access = if migratable { Access::Migratable } else { Access::Exclusive };
            let timeout = 300;
            let mut c = Cluster::default();
            let mut now = 1_000i64;
            for op in ops {
                match op {
                    Op::Publish(n) => {
                        let node = format!("n{n}");
                        if c.deleted.contains(&node) {
                            continue;
                        }
                        let holders = c.holders();
                        let out = decide(&holders, &node, access, false, timeout, now);
                        // A fresh controller (rebuilt from the same holders) decides the same.
                        let rebuilt: Vec<Holder> = holders.iter().rev().cloned().collect();
                        prop_assert_eq!(&decide(&rebuilt, &node, access, false, timeout, now).decision, &out.decision);
                        let live: Vec<&Holder> = holders.iter().filter(|x| x.node_exists).collect();
                        if let Decision::Grant { migration } = out.decision {
                            prop_assert_eq!(migration, live.len() == 1);
                            if live.len() == 2 {
                                prop_assert!(false, "granted a third holder");
                            }
                            c.unrecorded.push(Holder { node: node.clone(), since: now, node_exists: true, readonly: None });
                        }
                        if let Decision::Refuse(Refusal::TwoHolders { window_ends, .. }) = out.decision {
                            prop_assert!(now < window_ends);
                        }
                    }
                    Op::Unpublish(n) => {
                        let node = format!("n{n}");
                        c.recorded.retain(|x| x.node != node);
                        c.unrecorded.retain(|x| x.node != node);
                    }
                    Op::DeleteNode(n) => {
                        // The Node object goes; its attachment is force-detached later.
                        let node = format!("n{n}");
                        c.deleted.push(node);
                    }
                    Op::Tick(dt) => {
                        now += i64::from(dt);
                        // The attacher records grants in VolumeAttachments as time passes.
                        let moved: Vec<Holder> = c.unrecorded.drain(..).collect();
                        c.recorded.extend(moved);
                    }
                    Op::Restart => {
                        // A new controller: unrecorded grants were already answered, so the
                        // attacher records them; nothing else survives.
                        let moved: Vec<Holder> = c.unrecorded.drain(..).collect();
                        c.recorded.extend(moved);
                    }
                }
                let live = c.holders().into_iter().filter(|x| x.node_exists).count();
                match access {
                    Access::Exclusive => prop_assert!(live <= 1, "two exclusive holders"),
                    Access::Migratable => prop_assert!(live <= 2, "three holders"),
                }
            }
        }
    }
}
