//! The node's circuit breakers, one per (volume, operation), over `core::breaker`
//! (docs/operations.md). In memory: a restarted node plugin starts with every breaker closed.

use std::{
    collections::HashMap,
    future::Future,
    sync::Mutex,
    time::{Duration, Instant},
};

use tonic::Code;

use crate::{
    core::breaker::{Admit, Breaker, Outcome, Settings, State},
    error::ServiceError,
    metrics::HealMetrics,
};

#[derive(Debug)]
pub struct Breakers {
    settings: Settings,
    origin: Instant,
    map: Mutex<HashMap<(String, &'static str), Breaker>>,
    metrics: HealMetrics,
}

/// What an RPC's result says about the volume: only failures of the node's own work count
/// (a broken device, a dead connection, a command that failed or hung); bad input, ABORTED
/// and preconditions the CO must fix are neutral.
pub fn outcome<T>(result: &Result<T, ServiceError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(e) => match e.code() {
            Code::Internal
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::DataLoss => Outcome::Failure,
            _ => Outcome::Neutral,
        },
    }
}

impl Breakers {
    pub fn new(settings: Settings, metrics: HealMetrics) -> Breakers {
        Breakers { settings, origin: Instant::now(), map: Mutex::default(), metrics }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn open_count(map: &HashMap<(String, &'static str), Breaker>) -> i64 {
        map.values().filter(|b| !matches!(b.state, State::Closed { .. })).count() as i64
    }

    /// Runs `work` unless the breaker of (`volume_id`, `operation`) is open: then UNAVAILABLE
    /// at once, saying when the next attempt goes through.
    pub async fn run<T>(
        &self,
        volume_id: &str,
        operation: &'static str,
        work: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        let key = (volume_id.to_string(), operation);
        {
            let mut map = self.map.lock().expect("breakers");
            let b = map.entry(key.clone()).or_default();
            let (admit, transition) = b.admit(&self.settings, self.now());
            let last = b.last_error.clone();
            if let Some(t) = transition {
                tracing::info!(volume_id, operation, from = t.from, to = t.to, "circuit breaker");
                let open = Self::open_count(&map);
                self.metrics.breaker(operation, t.to, t.trip, open);
            }
            if let Admit::Refuse { retry_in } = admit {
                return Err(ServiceError::Unavailable(format!(
                    "{operation} of {volume_id} failed {} times in a row (last: {last}); the node's circuit breaker holds further attempts for {}s so a broken device or RDS is not hammered. \
                     Fix the cause; the next attempt goes through then (restarting the node plugin also resets it)",
                    self.settings.threshold,
                    retry_in.as_secs().max(1)
                )));
            }
        }
        let result = work.await;
        let out = outcome(&result);
        let mut map = self.map.lock().expect("breakers");
        let b = map.entry(key.clone()).or_default();
        let error = result.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
        let transition = b.record(&self.settings, self.now(), out, &error);
        if matches!(b.state, State::Closed { failures: 0 }) {
            map.remove(&key);
        }
        if let Some(t) = transition {
            if t.trip {
                tracing::warn!(volume_id, operation, error = %error, "circuit breaker opened");
            } else {
                tracing::info!(volume_id, operation, from = t.from, to = t.to, "circuit breaker");
            }
            let open = Self::open_count(&map);
            self.metrics.breaker(operation, t.to, t.trip, open);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_after_the_threshold_and_refuses_without_running() {
        let metrics = HealMetrics::default();
        let b = Breakers::new(
            Settings { threshold: 2, cool_down: Duration::from_secs(600) },
            metrics.clone(),
        );
        let fail = || async { Err::<(), _>(ServiceError::Internal("mkfs died".into())) };
        assert!(b.run("pvc-1", "NodeStageVolume", fail()).await.is_err());
        // Neutral outcomes do not count.
        let bad = || async { Err::<(), _>(ServiceError::InvalidArgument("x".into())) };
        assert!(b.run("pvc-1", "NodeStageVolume", bad()).await.is_err());
        assert!(b.run("pvc-1", "NodeStageVolume", fail()).await.is_err());
        let mut ran = false;
        let err = b
            .run("pvc-1", "NodeStageVolume", async {
                ran = true;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(!ran, "an open breaker does not run the operation");
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.to_string().contains("last: mkfs died"), "{err}");
        // Other volumes and other operations are not affected.
        assert!(b.run("pvc-2", "NodeStageVolume", async { Ok(()) }).await.is_ok());
        assert!(b.run("pvc-1", "NodePublishVolume", async { Ok(()) }).await.is_ok());
        let mut text = String::new();
        let mut r = prometheus_client::registry::Registry::default();
        metrics.register_for_test(&mut r);
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("node_breaker_trips_total{operation=\"NodeStageVolume\"} 1"),
            "{text}"
        );
        assert!(text.contains("node_breakers_open 1"), "{text}");
    }
}
