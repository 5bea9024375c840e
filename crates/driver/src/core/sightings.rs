//! Grace periods for cleanups, pure (docs/operations.md): a thing is an orphan only after it
//! has been seen unused, continuously, for the whole grace period, measured from the first
//! sighting by this process (never from a time it cannot know). A use in between, or a
//! sweep that does not see it, starts the clock again. Used by the node's orphan NVMe
//! cleanup and the controller's RDS orphan report.

use std::{collections::HashMap, time::Duration};

/// What a sweep decided about one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// In use (the reason); its clock is reset.
    InUse(String),
    /// Unused, but not for the whole grace period yet.
    Waiting { left: Duration },
    /// Unused for at least the grace period.
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct Sightings {
    first_unused: HashMap<String, Duration>,
}

impl Sightings {
    /// Decides about every thing seen in this sweep at `now`: `(key, why it is in use)`.
    /// Things not seen are forgotten.
    pub fn observe(
        &mut self,
        now: Duration,
        grace: Duration,
        seen: &[(String, Option<String>)],
    ) -> Vec<(String, Decision)> {
        self.first_unused.retain(|k, _| seen.iter().any(|(s, used)| s == k && used.is_none()));
        seen.iter()
            .map(|(key, used)| {
                let d = match used {
                    Some(why) => Decision::InUse(why.clone()),
                    None => {
                        let first = *self.first_unused.entry(key.clone()).or_insert(now);
                        let unused_for = now.saturating_sub(first);
                        if unused_for >= grace {
                            Decision::Orphan
                        } else {
                            Decision::Waiting { left: grace - unused_for }
                        }
                    }
                };
                (key.clone(), d)
            })
            .collect()
    }

    /// Things unused and waiting out the grace period (for a gauge).
    pub fn waiting(&self) -> usize {
        self.first_unused.len()
    }

    /// Forgets `key` (it was cleaned up).
    pub fn forget(&mut self, key: &str) {
        self.first_unused.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn orphan_only_after_a_whole_grace_period_unused() {
        let mut x = Sightings::default();
        let unused = |k: &str| (k.to_string(), None);
        let used = |k: &str| (k.to_string(), Some("mounted at /m".to_string()));
        let d = x.observe(s(100), s(60), &[unused("a"), used("b")]);
        assert_eq!(d[0].1, Decision::Waiting { left: s(60) }, "first sighting: the clock starts");
        assert_eq!(d[1].1, Decision::InUse("mounted at /m".into()));
        assert_eq!(x.waiting(), 1);
        assert_eq!(
            x.observe(s(130), s(60), &[unused("a")])[0].1,
            Decision::Waiting { left: s(30) }
        );
        // Used in between: the clock starts again.
        x.observe(s(140), s(60), &[used("a")]);
        assert_eq!(
            x.observe(s(170), s(60), &[unused("a")])[0].1,
            Decision::Waiting { left: s(60) }
        );
        assert_eq!(x.observe(s(230), s(60), &[unused("a")])[0].1, Decision::Orphan);
        // Not seen in a sweep (disconnected by someone else): forgotten.
        x.observe(s(231), s(60), &[]);
        assert_eq!(x.waiting(), 0);
        assert_eq!(
            x.observe(s(232), s(60), &[unused("a")])[0].1,
            Decision::Waiting { left: s(60) }
        );
        // Grace zero: the first sighting decides.
        let mut z = Sightings::default();
        assert_eq!(z.observe(s(1), s(0), &[unused("a")])[0].1, Decision::Orphan);
        z.forget("a");
        assert_eq!(z.waiting(), 0);
    }
}
