//! Leader election over a Kubernetes Lease, the decision part (no I/O).
//!
//! Like client-go's leader election, expiry is judged on the local monotonic clock, never by
//! comparing another machine's `renewTime` with ours: a follower remembers when it first saw
//! the current record (holder and renew time) and takes over only after the record stayed
//! unchanged for a whole lease duration. The holder counts its own leadership from the moment
//! it sent its last successful renewal and gives it up after the renew deadline, which is
//! shorter than the lease duration, so two instances never both believe they lead (as long
//! as clocks run at the same rate, which is all client-go assumes too).

use std::time::Duration;

/// What the API server holds: the Lease's spec fields the election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    /// The holder's `renewTime`, as written (compared only for change).
    pub renew_time: Option<String>,
    pub duration_s: i64,
    pub transitions: i32,
}

/// Timing of the election (client-go's defaults are 15 s, 10 s, 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a follower waits on an unchanged record before it takes over.
    pub lease: Duration,
    /// How long the holder keeps acting after its last successful renewal.
    pub renew_deadline: Duration,
    /// How often the holder renews and a follower looks.
    pub retry: Duration,
}

impl Timing {
    /// The timing for a lease of `lease` seconds: renew deadline 2/3 of it, retry 2/15 of it
    /// (15 s gives client-go's 10 s and 2 s).
    pub fn for_lease(lease: Duration) -> Result<Timing, String> {
        if lease < Duration::from_secs(2) {
            return Err("the lease duration must be at least 2 seconds".into());
        }
        Ok(Timing { lease, renew_deadline: lease * 2 / 3, retry: lease * 2 / 15 })
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: write a new renew time.
    Renew,
    /// Nobody holds it, or its holder stopped renewing: write ourselves as holder
    /// (`transitions` is the new count).
    TakeOver { transitions: i32 },
    /// Another instance holds it and renews: follow.
    Follow { holder: String },
}

/// A follower's memory of the record it last saw and when (monotonic milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    seen: Option<(Option<String>, Option<String>)>,
    since_ms: u64,
}

/// Decides the next step for instance `me` at monotonic time `now_ms`.
pub fn decide(
    record: Option<&LeaseRecord>,
    me: &str,
    observed: &mut Observed,
    timing: &Timing,
    now_ms: u64,
) -> Step {
    let Some(r) = record else {
        return Step::Create;
    };
    let current = (r.holder.clone(), r.renew_time.clone());
    if observed.seen.as_ref() != Some(&current) {
        observed.seen = Some(current);
        observed.since_ms = now_ms;
    }
    match r.holder.as_deref() {
        Some(h) if h == me => Step::Renew,
        None | Some("") => Step::TakeOver { transitions: r.transitions.saturating_add(1) },
        Some(h) => {
            // The holder's own duration counts when longer than ours (an instance with a
            // longer lease must not be overtaken before it would give up).
            let wait = timing.lease.max(Duration::from_secs(r.duration_s.max(0) as u64));
            if now_ms.saturating_sub(observed.since_ms) >= wait.as_millis() as u64 {
                Step::TakeOver { transitions: r.transitions.saturating_add(1) }
            } else {
                Step::Follow { holder: h.to_string() }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, renew: &str) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            renew_time: Some(renew.into()),
            duration_s: 15,
            transitions: 3,
        }
    }

    fn timing() -> Timing {
        Timing::for_lease(Duration::from_secs(15)).unwrap()
    }

    #[test]
    fn client_go_defaults_for_fifteen_seconds() {
        let t = timing();
        assert_eq!((t.renew_deadline.as_secs(), t.retry.as_secs()), (10, 2));
        assert!(Timing::for_lease(Duration::from_secs(1)).is_err());
    }

    #[test]
    fn no_lease_is_created_and_our_own_is_renewed() {
        let mut o = Observed::default();
        assert_eq!(decide(None, "a", &mut o, &timing(), 0), Step::Create);
        assert_eq!(decide(Some(&rec("a", "t1")), "a", &mut o, &timing(), 1), Step::Renew);
    }

    #[test]
    fn a_renewing_holder_is_followed_however_long() {
        let mut o = Observed::default();
        for i in 0..100u64 {
            let r = rec("a", &format!("t{i}"));
            let step = decide(Some(&r), "b", &mut o, &timing(), i * 2_000);
            assert_eq!(step, Step::Follow { holder: "a".into() }, "at {i}");
        }
    }

    #[test]
    fn a_silent_holder_is_taken_over_after_one_lease_duration_of_our_clock() {
        let mut o = Observed::default();
        let r = rec("a", "2020-01-01T00:00:00Z"); // an old wall-clock time does not matter
        assert_eq!(
            decide(Some(&r), "b", &mut o, &timing(), 5_000),
            Step::Follow { holder: "a".into() }
        );
        assert_eq!(
            decide(Some(&r), "b", &mut o, &timing(), 19_999),
            Step::Follow { holder: "a".into() }
        );
        assert_eq!(
            decide(Some(&r), "b", &mut o, &timing(), 20_000),
            Step::TakeOver { transitions: 4 }
        );
    }

    #[test]
    fn the_longer_of_the_two_durations_counts() {
        let mut o = Observed::default();
        let r = LeaseRecord { duration_s: 60, ..rec("a", "t") };
        decide(Some(&r), "b", &mut o, &timing(), 0);
        assert_eq!(
            decide(Some(&r), "b", &mut o, &timing(), 59_000),
            Step::Follow { holder: "a".into() }
        );
        assert_eq!(
            decide(Some(&r), "b", &mut o, &timing(), 60_000),
            Step::TakeOver { transitions: 4 }
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut o = Observed::default();
        let r = LeaseRecord { holder: None, ..rec("a", "t") };
        assert_eq!(decide(Some(&r), "b", &mut o, &timing(), 0), Step::TakeOver { transitions: 4 });
    }
}
