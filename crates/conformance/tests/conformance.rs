//! The CSI spec-rule conformance suite as tests: every rule once in mount mode and once in
//! block mode, each against a driver of its own (`rds-csi serve --controller --node
//! --emulated-rds DIR --data-plane loop`). Node rules need root (loop devices, mkfs, mounts):
//! without it they print why they are skipped, and under `CI` they fail instead.

macro_rules! tests {
    ($mode:expr; $($module:ident :: $name:ident => ($rpc:literal, $text:literal)),* $(,)?) => {
        $(
            #[doc = concat!($rpc, ": ", $text)]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                conformance::run_test($mode, stringify!($name)).await;
            }
        )*
    };
}

macro_rules! mount_tests {
    ($($t:tt)*) => { tests!(conformance::Mode::Mount; $($t)*); };
}

macro_rules! block_tests {
    ($($t:tt)*) => { tests!(conformance::Mode::Block; $($t)*); };
}

mod mount {
    conformance::for_each_rule!(mount_tests);
}

mod block {
    conformance::for_each_rule!(block_tests);
}

/// The list is the registry: no rule without a test, no test without a rule, names unique.
#[test]
fn every_rule_is_a_test_once() {
    let rules = conformance::rules();
    let mut names: Vec<&str> = rules.iter().map(|r| r.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), rules.len(), "rule names are unique");
    assert!(rules.len() >= 90, "{} rules", rules.len());
}

/// docs/conformance.md lists every rule with its text (the closing list per RPC).
#[test]
fn the_docs_list_every_rule() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/conformance.md"))
            .unwrap();
    let missing: Vec<String> = conformance::rules()
        .iter()
        .map(|r| format!("| {} | `{}` | {} |", r.rpc, r.name, r.text))
        .filter(|row| !doc.contains(row.as_str()))
        .collect();
    assert!(missing.is_empty(), "docs/conformance.md lacks:\n{}", missing.join("\n"));
}
