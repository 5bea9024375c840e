//! The node's per-volume circuit breaker, as a pure state machine (docs/operations.md).
//!
//! After `threshold` consecutive failures of one operation on one volume, the breaker opens:
//! the operation is answered UNAVAILABLE at once for `cool_down`, so a CO retry loop does not
//! hammer a broken device or a dead RDS. Then it is half-open: exactly one attempt goes
//! through; its success closes the breaker, its failure opens it again for another
//! cool-down. Any success resets the count. Outcomes that say nothing about the volume (bad
//! input, ABORTED, a precondition the CO must fix) are neutral. Time is passed in (`now`, a
//! monotonic offset), so every transition is tested without sleeping.

use std::time::Duration;

/// The breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive failures that open the breaker (0: never).
    pub threshold: u32,
    pub cool_down: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { threshold: 3, cool_down: Duration::from_secs(60) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Calls go through; `failures` consecutive ones so far.
    Closed { failures: u32 },
    /// Calls are refused until `until`.
    Open { until: Duration },
    /// One trial call may go through; `trial` while it runs.
    HalfOpen { trial: bool },
}

impl State {
    /// The metric label of the state.
    pub fn name(&self) -> &'static str {
        match self {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

/// The answer to [`Breaker::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// The one half-open attempt.
    Trial,
    /// Refused: the breaker is open (or its trial is running) for `retry_in` more.
    Refuse {
        retry_in: Duration,
    },
}

/// What an attempt told about the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Neutral,
}

/// A change of state, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: &'static str,
    pub to: &'static str,
    /// This transition opened the breaker from closed (a trip).
    pub trip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    pub state: State,
    /// The last failure's message, quoted in refusals.
    pub last_error: String,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: State::Closed { failures: 0 }, last_error: String::new() }
    }
}

impl Breaker {
    /// May an attempt start at `now`? An open breaker whose cool-down ended turns half-open
    /// and lets this attempt through as its trial.
    pub fn admit(&mut self, s: &Settings, now: Duration) -> (Admit, Option<Transition>) {
        match self.state {
            State::Closed { .. } => (Admit::Go, None),
            State::Open { until } if now < until => (Admit::Refuse { retry_in: until - now }, None),
            State::Open { .. } => {
                self.state = State::HalfOpen { trial: true };
                (Admit::Trial, Some(Transition { from: "open", to: "half_open", trip: false }))
            }
            State::HalfOpen { trial: true } => (Admit::Refuse { retry_in: s.cool_down }, None),
            State::HalfOpen { trial: false } => {
                self.state = State::HalfOpen { trial: true };
                (Admit::Trial, None)
            }
        }
    }

    /// Records how an admitted attempt ended.
    pub fn record(
        &mut self,
        s: &Settings,
        now: Duration,
        outcome: Outcome,
        error: &str,
    ) -> Option<Transition> {
        let from = self.state.name();
        let open = |b: &mut Breaker, trip: bool| {
            b.state = State::Open { until: now + s.cool_down };
            Some(Transition { from, to: "open", trip })
        };
        match (outcome, &self.state) {
            (Outcome::Failure, _) => self.last_error = error.to_string(),
            (Outcome::Success, _) => self.last_error.clear(),
            (Outcome::Neutral, _) => {}
        }
        match (outcome, self.state.clone()) {
            (Outcome::Success, State::Closed { .. }) => {
                self.state = State::Closed { failures: 0 };
                None
            }
            (Outcome::Success, _) => {
                self.state = State::Closed { failures: 0 };
                Some(Transition { from, to: "closed", trip: false })
            }
            (Outcome::Failure, State::Closed { failures }) => {
                let failures = failures + 1;
                if s.threshold > 0 && failures >= s.threshold {
                    open(self, true)
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            (Outcome::Failure, _) => open(self, false),
            // A neutral trial says nothing: the next call is the trial again.
            (Outcome::Neutral, State::HalfOpen { .. }) => {
                self.state = State::HalfOpen { trial: false };
                None
            }
            (Outcome::Neutral, _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Every transition: closed counts failures (a success or a neutral outcome in between
    /// does not add), trips at the threshold, refuses while open, lets exactly one trial
    /// through after the cool-down, the trial's failure reopens (not a trip), its success
    /// closes and resets, a neutral trial leaves it half-open for the next call.
    #[test]
    fn walks_every_transition() {
        let s = Settings { threshold: 3, cool_down: secs(60) };
        let mut b = Breaker::default();
        let fail = |b: &mut Breaker, t: u64| {
            assert_eq!(b.admit(&s, secs(t)).0, Admit::Go);
            b.record(&s, secs(t), Outcome::Failure, "mount failed")
        };
        assert_eq!(fail(&mut b, 0), None);
        assert_eq!(fail(&mut b, 1), None);
        assert_eq!(b.record(&s, secs(2), Outcome::Neutral, ""), None);
        assert_eq!(b.state, State::Closed { failures: 2 }, "neutral does not reset");
        assert_eq!(b.record(&s, secs(2), Outcome::Success, ""), None);
        assert_eq!(b.state, State::Closed { failures: 0 }, "success resets");
        fail(&mut b, 3);
        fail(&mut b, 4);
        let t = fail(&mut b, 5).unwrap();
        assert_eq!(t, Transition { from: "closed", to: "open", trip: true });
        assert_eq!(b.last_error, "mount failed");
        assert_eq!(b.admit(&s, secs(6)).0, Admit::Refuse { retry_in: secs(59) });
        assert_eq!(b.admit(&s, secs(64)).0, Admit::Refuse { retry_in: secs(1) });
        // Cool-down over: one trial, a second caller meanwhile is refused.
        let (a, t) = b.admit(&s, secs(65));
        assert_eq!(a, Admit::Trial);
        assert_eq!(t.unwrap(), Transition { from: "open", to: "half_open", trip: false });
        assert!(matches!(b.admit(&s, secs(65)).0, Admit::Refuse { .. }));
        // The trial fails: open again, not counted as a new trip.
        let t = b.record(&s, secs(66), Outcome::Failure, "still dead").unwrap();
        assert_eq!(t, Transition { from: "half_open", to: "open", trip: false });
        assert_eq!(b.state, State::Open { until: secs(126) });
        // Next trial is neutral (e.g. ABORTED): the one after is the trial again.
        assert_eq!(b.admit(&s, secs(126)).0, Admit::Trial);
        assert_eq!(b.record(&s, secs(126), Outcome::Neutral, ""), None);
        assert_eq!(b.state, State::HalfOpen { trial: false });
        assert_eq!(b.admit(&s, secs(127)).0, Admit::Trial);
        // The trial succeeds: closed, count reset.
        let t = b.record(&s, secs(127), Outcome::Success, "").unwrap();
        assert_eq!(t, Transition { from: "half_open", to: "closed", trip: false });
        assert_eq!(b, Breaker::default());
    }

    #[test]
    fn threshold_zero_never_opens() {
        let s = Settings { threshold: 0, cool_down: secs(60) };
        let mut b = Breaker::default();
        for t in 0..10 {
            assert_eq!(b.admit(&s, secs(t)).0, Admit::Go);
            assert_eq!(b.record(&s, secs(t), Outcome::Failure, "x"), None);
        }
    }
}
