//! The readiness source behind `Probe` and `/readyz`.
//!
//! CSI "Probe": a plugin that is healthy but still initialising answers successfully with
//! `ready = false`. Whatever the driver depends on (the RouterOS connection on the controller)
//! sets the state here; the Identity service and the HTTP server only read it.

use std::sync::Arc;

use tokio::sync::watch;

/// Whether the driver can serve its Controller/Node RPCs right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyState {
    Ready,
    /// Not ready, with the reason an operator should see (e.g. "RouterOS unreachable: ...").
    NotReady(String),
    /// Serving, but some of several RDS backends are down (their volumes are unavailable):
    /// which, and why (docs/topology.md).
    Degraded(String),
}

impl ReadyState {
    pub fn is_ready(&self) -> bool {
        matches!(self, ReadyState::Ready | ReadyState::Degraded(_))
    }
}

/// The controller's readiness from its backends' (named): ready while all are, degraded
/// (still ready) while some are, not ready when none is. Each state names the backends down.
pub fn combine(parts: &[(String, ReadyState)]) -> ReadyState {
    let down: Vec<String> = parts
        .iter()
        .filter_map(|(name, s)| match s {
            ReadyState::Ready => None,
            ReadyState::NotReady(r) | ReadyState::Degraded(r) => {
                Some(format!("backend {name}: {r}"))
            }
        })
        .collect();
    if down.is_empty() {
        ReadyState::Ready
    } else if down.len() < parts.len() {
        ReadyState::Degraded(down.join("; "))
    } else {
        ReadyState::NotReady(down.join("; "))
    }
}

/// Keeps `into` equal to [`combine`] of `parts` as they change.
pub fn mirror_combined(
    parts: Vec<(String, Readiness)>,
    into: Readiness,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut watches: Vec<watch::Receiver<ReadyState>> =
            parts.iter().map(|(_, r)| r.subscribe()).collect();
        loop {
            let now: Vec<(String, ReadyState)> =
                parts.iter().map(|(n, r)| (n.clone(), r.get())).collect();
            into.set(combine(&now));
            let changed =
                futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())))
                    .await;
            if changed.0.is_err() {
                return;
            }
        }
    })
}

/// Shared, cheaply cloned handle to the current readiness.
#[derive(Debug, Clone)]
pub struct Readiness {
    state: Arc<watch::Sender<ReadyState>>,
}

impl Readiness {
    pub fn new(initial: ReadyState) -> Self {
        Self { state: Arc::new(watch::Sender::new(initial)) }
    }

    pub fn set(&self, state: ReadyState) {
        self.state.send_replace(state);
    }

    pub fn get(&self) -> ReadyState {
        self.state.borrow().clone()
    }

    /// Watch changes, e.g. to log or export them.
    pub fn subscribe(&self) -> watch::Receiver<ReadyState> {
        self.state.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_combine() {
        let up = || ReadyState::Ready;
        let down = |r: &str| ReadyState::NotReady(r.into());
        let parts = |a, b| vec![("rds-a".to_string(), a), ("rds-b".to_string(), b)];
        assert_eq!(combine(&parts(up(), up())), ReadyState::Ready);
        let one = combine(&parts(up(), down("RDS unreachable: eof")));
        assert_eq!(one, ReadyState::Degraded("backend rds-b: RDS unreachable: eof".into()));
        assert!(one.is_ready(), "the other backend still serves");
        let both = combine(&parts(down("x"), down("y")));
        assert_eq!(both, ReadyState::NotReady("backend rds-a: x; backend rds-b: y".into()));
    }

    #[test]
    fn clones_share_state() {
        let a = Readiness::new(ReadyState::NotReady("starting".into()));
        let b = a.clone();
        assert!(!b.get().is_ready());
        a.set(ReadyState::Ready);
        assert!(b.get().is_ready());
    }
}
