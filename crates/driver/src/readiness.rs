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
}

impl ReadyState {
    pub fn is_ready(&self) -> bool {
        matches!(self, ReadyState::Ready)
    }
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
    fn clones_share_state() {
        let a = Readiness::new(ReadyState::NotReady("starting".into()));
        let b = a.clone();
        assert!(!b.get().is_ready());
        a.set(ReadyState::Ready);
        assert!(b.get().is_ready());
    }
}
