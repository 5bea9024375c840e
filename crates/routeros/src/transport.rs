//! What the SSH and REST transports share: the [`Transport`] trait, the connection state they
//! publish (for Probe/readiness), their metrics, and the reconnect backoff.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::sync::watch;

use crate::{
    error::RosError,
    ops::{Answer, Op},
};

tokio::task_local! {
    /// Round trips made by the current task scope (set by the caller, e.g. one CSI RPC), so
    /// concurrent calls and background copies are counted apart.
    pub static ROUND_TRIPS: std::cell::Cell<u64>;
}

/// Runs `fut` counting the round trips it makes; returns its output and the count.
pub async fn count_round_trips<T>(fut: impl std::future::Future<Output = T>) -> (T, u64) {
    ROUND_TRIPS
        .scope(std::cell::Cell::new(0), async move {
            let out = fut.await;
            (out, ROUND_TRIPS.with(std::cell::Cell::get))
        })
        .await
}

/// A way to run typed operations on the RDS.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Runs one operation (one or a few round trips), with the transport's deadline.
    async fn call(&self, op: &Op) -> Result<Answer, RosError>;
    /// `ssh` or `rest`.
    fn name(&self) -> &'static str;
    /// The connection state, for readiness.
    fn state(&self) -> watch::Receiver<ConnState>;
    /// Network round trips made so far (SSH exec channels, HTTP requests).
    fn round_trips(&self) -> u64;
}

/// Whether the RDS is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    Connected,
    /// Not connected, with the last reason.
    Disconnected(String),
}

impl ConnState {
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnState::Connected)
    }
}

/// Exponential backoff with jitter: 1 s, 2 s, 4 s, 8 s, 16 s, 16 s, ... (±20 %), never ending.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, attempt: 0 }
    }

    /// The RouterOS connection manager's: 1 s → 16 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(16))
    }

    /// The next delay (with jitter).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.initial.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = rand::random_range(0.8..1.2);
        base.mul_f64(jitter)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Connection state and its metrics, shared by a transport and its monitor.
#[derive(Debug)]
pub struct Health {
    state: watch::Sender<ConnState>,
    round_trips: AtomicU64,
    /// Set by the first `up()`; later `up()`s after a `down()` are reconnects.
    ever_connected: AtomicBool,
    down_since: std::sync::Mutex<Option<Instant>>,
    connected_gauge: Gauge,
    reconnects: Counter,
    reconnect_seconds: Histogram,
    round_trip_counter: Counter,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            state: watch::Sender::new(ConnState::Disconnected("not connected yet".into())),
            round_trips: AtomicU64::new(0),
            ever_connected: AtomicBool::new(false),
            down_since: std::sync::Mutex::new(Some(Instant::now())),
            connected_gauge: Gauge::default(),
            reconnects: Counter::default(),
            reconnect_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 14),
            ),
            round_trip_counter: Counter::default(),
        })
    }

    /// Registers `rds_connection_state`, `rds_reconnects`, `rds_reconnect_duration_seconds`
    /// and `rds_round_trips` (a registry prefixed `rds_csi` gives the `rds_csi_` names).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rds_connection_state",
            "1 when the RDS management connection is up",
            self.connected_gauge.clone(),
        );
        registry.register(
            "rds_reconnects",
            "Successful reconnections to the RDS",
            self.reconnects.clone(),
        );
        registry.register(
            "rds_reconnect_duration_seconds",
            "How long the RDS connection was down before a reconnect",
            self.reconnect_seconds.clone(),
        );
        registry.register(
            "rds_round_trips",
            "Network round trips to the RDS",
            self.round_trip_counter.clone(),
        );
    }

    pub fn subscribe(&self) -> watch::Receiver<ConnState> {
        self.state.subscribe()
    }

    pub fn state(&self) -> ConnState {
        self.state.borrow().clone()
    }

    pub fn round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.round_trip_counter.inc();
        let _ = ROUND_TRIPS.try_with(|c| c.set(c.get() + 1));
    }

    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    pub fn up(&self) {
        let mut down = self.down_since.lock().expect("health lock");
        if let Some(since) = down.take() {
            if self.ever_connected.swap(true, Ordering::Relaxed) {
                self.reconnects.inc();
                self.reconnect_seconds.observe(since.elapsed().as_secs_f64());
            }
            tracing::info!(down_s = since.elapsed().as_secs_f64(), "RDS connection up");
        }
        self.connected_gauge.set(1);
        self.state.send_replace(ConnState::Connected);
    }

    pub fn down(&self, reason: &str) {
        let mut down = self.down_since.lock().expect("health lock");
        if down.is_none() {
            *down = Some(Instant::now());
            tracing::warn!(reason, "RDS connection down");
        }
        self.connected_gauge.set(0);
        self.state.send_replace(ConnState::Disconnected(reason.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_sixteen_seconds_with_jitter_and_never_ends() {
        let mut b = Backoff::reconnect();
        let delays: Vec<f64> = (0..8).map(|_| b.next_delay().as_secs_f64()).collect();
        for (d, base) in delays.iter().zip([1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0, 16.0]) {
            assert!(*d >= base * 0.8 && *d <= base * 1.2, "{delays:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }

    #[tokio::test]
    async fn round_trips_are_counted_per_scope() {
        let h = Health::new();
        let (_, n) = count_round_trips(async {
            h.round_trip();
            h.round_trip();
        })
        .await;
        assert_eq!(n, 2);
        h.round_trip(); // outside any scope: counted globally only
        assert_eq!(h.round_trips(), 3);
    }

    #[test]
    fn health_counts_reconnects_not_the_first_connect() {
        let h = Health::new();
        let mut reg = Registry::with_prefix("rds_csi");
        h.register(&mut reg);
        h.down("connection refused"); // failed first attempts are not reconnects
        h.up();
        h.down("eof");
        h.up();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("rds_csi_rds_reconnects_total 1"), "{text}");
        assert!(text.contains("rds_csi_rds_connection_state 1"), "{text}");
        assert!(text.contains("rds_csi_rds_reconnect_duration_seconds_count 1"), "{text}");
    }
}
