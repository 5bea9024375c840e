//! Deduplication of the driver's Kubernetes events (docs/observability.md "Kubernetes
//! events"): the same event (object, reason, note) is published once per window; repeats inside
//! it are counted and the next one after it says how many there were. A CO retrying a failing
//! RPC every few seconds thus costs one event per window, not one API write per retry. Pure:
//! the caller passes the time.

use std::collections::HashMap;

/// How long an identical event stays suppressed.
pub const WINDOW_S: i64 = 600;
/// Events remembered at most (the oldest are forgotten first).
const MAX_KEYS: usize = 2048;

#[derive(Debug, Default)]
pub struct Dedup {
    /// key → (when it was last published, repeats suppressed since).
    seen: HashMap<String, (i64, u32)>,
}

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Publish it; `repeats` identical events were suppressed before it.
    Publish {
        repeats: u32,
    },
    Suppress,
}

impl Dedup {
    /// Whether the event `key` (object, reason and note) is published at `now_s`.
    pub fn admit(&mut self, key: &str, now_s: i64) -> Admit {
        match self.seen.get_mut(key) {
            Some((last, repeats)) if now_s - *last < WINDOW_S => {
                *repeats += 1;
                Admit::Suppress
            }
            Some((last, repeats)) => {
                let before = *repeats;
                (*last, *repeats) = (now_s, 0);
                Admit::Publish { repeats: before }
            }
            None => {
                if self.seen.len() >= MAX_KEYS {
                    self.seen.retain(|_, (last, _)| now_s - *last < WINDOW_S);
                    if self.seen.len() >= MAX_KEYS {
                        let oldest =
                            self.seen.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| k.clone());
                        if let Some(k) = oldest {
                            self.seen.remove(&k);
                        }
                    }
                }
                self.seen.insert(key.to_string(), (now_s, 0));
                Admit::Publish { repeats: 0 }
            }
        }
    }

    /// The note to publish for `reason` with `note` on `object` (`namespace/name`) at `now_s`,
    /// or `None` while the same event is suppressed.
    pub fn publishable(
        &mut self,
        object: &str,
        reason: &str,
        note: &str,
        now_s: i64,
    ) -> Option<String> {
        match self.admit(&format!("{object}|{reason}|{note}"), now_s) {
            Admit::Publish { repeats } => Some(Dedup::note(note, repeats)),
            Admit::Suppress => None,
        }
    }

    /// The note to publish: `note`, plus how often it repeated meanwhile.
    pub fn note(note: &str, repeats: u32) -> String {
        if repeats == 0 {
            note.to_string()
        } else {
            format!("{note} (and {repeats} more time(s) in the last {} min)", WINDOW_S / 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_window_and_the_count_of_the_rest() {
        let mut d = Dedup::default();
        assert_eq!(d.admit("a", 0), Admit::Publish { repeats: 0 });
        assert_eq!(d.admit("a", 5), Admit::Suppress);
        assert_eq!(d.admit("a", 599), Admit::Suppress);
        assert_eq!(d.admit("b", 10), Admit::Publish { repeats: 0 }, "another event is its own");
        assert_eq!(d.admit("a", 600), Admit::Publish { repeats: 2 });
        assert_eq!(d.admit("a", 1300), Admit::Publish { repeats: 0 });
        assert_eq!(Dedup::note("x", 2), "x (and 2 more time(s) in the last 10 min)");
        assert_eq!(Dedup::note("x", 0), "x");
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = Dedup::default();
        for i in 0..(MAX_KEYS + 10) {
            d.admit(&i.to_string(), 0);
        }
        assert!(d.seen.len() <= MAX_KEYS);
        assert_eq!(d.admit(&(MAX_KEYS + 9).to_string(), 1), Admit::Suppress, "the newest stay");
    }
}
