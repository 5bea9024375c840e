//! The RouterOS client's audit log: every mutation written once. In a test binary of its own:
//! tracing's per-thread subscriber (`with_default`) misses events when other tests of the same
//! process register the callsite concurrently.

mod lab;

use lab::{Lab, new_disk, slot};
use rds_emulator::emulator::{DropRule, DropWhen, Faults};

#[test]
fn every_mutation_is_audited_once() {
    use std::sync::{Arc as A, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Audit(A<Mutex<Vec<String>>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Audit {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if event.metadata().target() == "audit" {
                let mut text = String::new();
                struct V<'a>(&'a mut String);
                impl tracing::field::Visit for V<'_> {
                    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                        self.0.push_str(&format!("{}={v:?} ", f.name()));
                    }
                }
                event.record(&mut V(&mut text));
                self.0.lock().unwrap().push(text);
            }
        }
    }
    let audit = Audit::default();
    let subscriber = tracing_subscriber::registry().with(audit.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let lab = Lab::start().await;
            let (rds, _) = lab.rds();
            lab.faults(Faults {
                drop: vec![DropRule {
                    pattern: "^/disk add".into(),
                    nth: 1,
                    when: DropWhen::After,
                }],
                ..Faults::default()
            });
            rds.create_disk(&new_disk("pvc-audit", 1 << 20)).await.unwrap();
            rds.get_disk(&slot("pvc-audit")).await.unwrap();
            lab.faults(Faults::default());
            assert!(rds.create_disk(&new_disk("pvc-audit2", 1 << 50)).await.is_err());
        })
    });
    let lines = audit.0.lock().unwrap().clone();
    assert_eq!(
        lines.len(),
        2,
        "one line per mutation, none for reads, retries not repeated: {lines:?}"
    );
    assert!(
        lines[0].contains("op=\"create_disk\"")
            && lines[0].contains("subject=pvc-audit")
            && lines[0].contains("outcome=\"ok\""),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("outcome=\"no_space\"") && lines[1].contains("not enough disk space"),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l.contains("duration_ms=")), "{lines:?}");
}
