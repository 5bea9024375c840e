//! The block copies (snapshots, restores, clones, group snapshots) of this controller process:
//! the running ones, the failures not reported yet, the sources whose writes a copy holds, and
//! the copy rate measured so far (docs/snapshots.md). The copying itself is in copying.rs.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

/// Why the last attempt of a copy failed, until a call reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// RouterOS failed; the next call starts the copy again (UNAVAILABLE).
    Retry(String),
    /// The copy cannot be taken at one instant under the pause bound (FAILED_PRECONDITION).
    Refused(String),
}

/// The copies of this process.
#[derive(Debug, Default)]
pub struct Copies {
    /// Running copies: destination → source.
    pub(super) running: Mutex<HashMap<String, String>>,
    pub(super) failed: Mutex<HashMap<String, Failure>>,
    /// Sources whose NVMe/TCP export a running copy has withdrawn.
    held: Mutex<HashSet<String>>,
    /// Bytes per second of `/disk copy`, measured on this RDS (smoothed).
    rate: Mutex<Option<f64>>,
}

impl Copies {
    /// The running copy that reads or writes `slot`, described (`src → dst`).
    pub fn involving(&self, slot: &str) -> Option<String> {
        self.running
            .lock()
            .expect("copies")
            .iter()
            .find(|(dst, src)| *dst == slot || *src == slot)
            .map(|(dst, src)| format!("{src} → {dst}"))
    }

    pub(super) fn is_running(&self, dst: &str) -> bool {
        self.running.lock().expect("copies").contains_key(dst)
    }

    /// Whether a running copy holds the writes of `slot` (its export is withdrawn).
    pub fn holds(&self, slot: &str) -> bool {
        self.held.lock().expect("copies").contains(slot)
    }

    /// Marks `slot` held; false when another copy holds it already.
    pub(super) fn hold(&self, slot: &str) -> bool {
        self.held.lock().expect("copies").insert(slot.to_string())
    }

    pub(super) fn release(&self, slot: &str) {
        self.held.lock().expect("copies").remove(slot);
    }

    /// The measured copy rate (bytes per second), once a copy has run.
    pub fn rate(&self) -> Option<f64> {
        *self.rate.lock().expect("copies")
    }

    /// Records one copied chunk: `bytes` in `took`.
    pub(super) fn observe(&self, bytes: u64, took: Duration) {
        let secs = took.as_secs_f64().max(1e-3);
        let now = bytes as f64 / secs;
        let mut rate = self.rate.lock().expect("copies");
        *rate = Some(match *rate {
            Some(r) => 0.5 * r + 0.5 * now,
            None => now,
        });
    }
}

/// How long copying `bytes` takes at `rate` bytes per second.
pub fn estimate(bytes: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / rate.max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_exclusive_and_rates_smoothed() {
        let c = Copies::default();
        assert!(c.hold("pvc-1") && !c.hold("pvc-1") && c.holds("pvc-1"));
        c.release("pvc-1");
        assert!(!c.holds("pvc-1"));
        assert_eq!(c.rate(), None);
        c.observe(100, Duration::from_secs(1));
        c.observe(300, Duration::from_secs(1));
        assert_eq!(c.rate(), Some(200.0));
        assert_eq!(estimate(400, 200.0), Duration::from_secs(2));
    }
}
