//! The block copies (snapshots, restores, clones) running in this controller process and the
//! failures not reported yet (docs/snapshots.md); the copying itself is in snapshots.rs.

use std::{collections::HashMap, sync::Mutex};

/// The copies of this process: running ones (destination → source) and the failure of the
/// last attempt of each destination, until a call reports it.
#[derive(Debug, Default)]
pub struct Copies {
    pub(super) running: Mutex<HashMap<String, String>>,
    pub(super) failed: Mutex<HashMap<String, String>>,
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
}
