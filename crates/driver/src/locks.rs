//! Per-volume in-flight guard. CSI: "the Plugin SHOULD return ABORTED when an operation is
//! already pending for the specified volume"; the CO retries. No global lock is held across I/O.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use crate::error::ServiceError;

#[derive(Debug, Clone, Default)]
pub struct Locks {
    held: Arc<Mutex<HashSet<String>>>,
}

/// Releases the key when dropped.
#[derive(Debug)]
pub struct Guard {
    held: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.held.lock().expect("locks").remove(&self.key);
    }
}

impl Locks {
    pub fn try_lock(&self, key: &str, what: &str) -> Result<Guard, ServiceError> {
        if !self.held.lock().expect("locks").insert(key.to_string()) {
            return Err(ServiceError::Aborted(format!(
                "an operation on {what} {key} is already in progress; the CO retries this call"
            )));
        }
        Ok(Guard { held: self.held.clone(), key: key.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_aborted_until_release() {
        let locks = Locks::default();
        let g = locks.try_lock("pvc-1", "volume").unwrap();
        let err = locks.try_lock("pvc-1", "volume").unwrap_err();
        assert!(matches!(err, ServiceError::Aborted(m) if m.contains("pvc-1")));
        assert!(locks.try_lock("pvc-2", "volume").is_ok());
        drop(g);
        assert!(locks.try_lock("pvc-1", "volume").is_ok());
    }
}
