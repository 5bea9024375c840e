//! The running emulator as a Rust API: one store shared by every transport, the command log,
//! and fault injection. Transports (SSH, REST) call [`Emulator::execute`]; tests and the
//! control API use the rest.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::{
    exec::{Behaviour, Outcome, run_line},
    model::Kind,
    nvmet::{Export, Nvmet, parse_hosts},
    store::{InitOptions, Store},
};

/// When a dropped connection loses the command (spec: both happen in real life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropWhen {
    /// The connection drops before the command runs: nothing changed.
    Before,
    /// The command runs (and may mutate), then the connection drops before the answer.
    After,
}

/// Fail the `nth` command (1-based, counted from when the rule is installed) whose line
/// matches `pattern`, answering `error` instead of running it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailRule {
    pub pattern: String,
    #[serde(default = "one")]
    pub nth: u32,
    pub error: String,
}

/// Drop the connection on the `nth` command matching `pattern`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropRule {
    pub pattern: String,
    #[serde(default = "one")]
    pub nth: u32,
    pub when: DropWhen,
}

fn one() -> u32 {
    1
}

/// Every fault and timing knob, as set by flags (`--faults-json`), the control API or tests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every command.
    pub latency_ms: u64,
    /// Uniform random extra latency in [0, jitter_ms].
    pub jitter_ms: u64,
    /// Delay before the SSH handshake starts.
    pub handshake_latency_ms: u64,
    pub fail: Vec<FailRule>,
    pub drop: Vec<DropRule>,
    /// Every allocation fails as if the pool were full.
    pub disk_full: bool,
    /// New SSH connections are closed at once.
    pub refuse_sessions: bool,
}

/// One executed (or faulted) command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u128,
    /// Connection id (SSH connection, or one per REST request).
    pub conn: u64,
    /// `ssh` or `rest`.
    pub transport: String,
    pub command: String,
    /// `ok`, `error`, `injected-error`, `dropped-before`, `dropped-after`.
    pub result: String,
}

/// What the transport must do with a command's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Answer(Outcome),
    /// Close the connection abruptly without answering.
    Drop,
}

#[derive(Debug)]
struct Counted<T> {
    rule: T,
    pattern: Regex,
    seen: u32,
}

#[derive(Debug, Default)]
struct FaultState {
    faults: Faults,
    fail: Vec<Counted<FailRule>>,
    drop: Vec<Counted<DropRule>>,
}

/// Closes one connection abruptly (e.g. shuts its TCP socket down).
pub struct Kill(Box<dyn FnOnce() + Send>);

impl Kill {
    pub fn new(f: impl FnOnce() + Send + 'static) -> Kill {
        Kill(Box::new(f))
    }
}

impl std::fmt::Debug for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kill")
    }
}

#[derive(Debug)]
struct Inner {
    store: Mutex<Store>,
    behaviour: Behaviour,
    started: Instant,
    log: Mutex<Vec<LogEntry>>,
    faults: Mutex<FaultState>,
    connections: Mutex<HashMap<u64, Kill>>,
    next_conn: Mutex<u64>,
    down_until: Mutex<Option<Instant>>,
    data_dir: PathBuf,
    /// Real NVMe/TCP export (`--nvmet`); `None` = bookkeeping only.
    nvmet: Option<Nvmet>,
    /// Commands executing right now, and the most ever seen at once.
    in_flight: std::sync::atomic::AtomicUsize,
    peak_in_flight: std::sync::atomic::AtomicUsize,
}

/// A cheaply cloned handle to the running emulator.
#[derive(Debug, Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl Emulator {
    /// Opens (or initialises) the data directory; with `nvmet`, exports every exported disk
    /// (as an RDS does after a reboot).
    pub fn open(
        data_dir: PathBuf,
        init: &InitOptions,
        behaviour: Behaviour,
        nvmet: Option<Nvmet>,
    ) -> std::io::Result<Self> {
        let store = Store::open(&data_dir, init)?;
        let emu = Emulator {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                behaviour,
                started: Instant::now(),
                log: Mutex::new(Vec::new()),
                faults: Mutex::new(FaultState::default()),
                connections: Mutex::new(HashMap::new()),
                next_conn: Mutex::new(1),
                down_until: Mutex::new(None),
                data_dir,
                nvmet,
                in_flight: Default::default(),
                peak_in_flight: Default::default(),
            }),
        };
        if let Some(nvmet) = &emu.inner.nvmet {
            let store = emu.inner.store.lock().expect("store lock");
            nvmet.reconcile(&emu.exports(&store))?;
        }
        Ok(emu)
    }

    /// The subsystems the disk table wants exported.
    fn exports(&self, store: &Store) -> Vec<Export> {
        let version = self.inner.behaviour.version;
        store
            .disks()
            .iter()
            .filter(|d| d.nvme.export && !d.disabled)
            .filter_map(|d| match &d.kind {
                Kind::File(f) => Some(Export {
                    nqn: d.nqn(version),
                    file: store.host_path(&f.path),
                    hosts: parse_hosts(&d.nvme.allow_host_name),
                }),
                Kind::Raid(_) => None,
            })
            .collect()
    }

    pub fn behaviour(&self) -> &Behaviour {
        &self.inner.behaviour
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.data_dir
    }

    /// Replaces the fault set (invalid regexes are an error naming the pattern).
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        let compile = |p: &str| Regex::new(p).map_err(|e| format!("invalid pattern {p:?}: {e}"));
        let fail = faults
            .fail
            .iter()
            .map(|r| Ok(Counted { rule: r.clone(), pattern: compile(&r.pattern)?, seen: 0 }))
            .collect::<Result<_, String>>()?;
        let drop = faults
            .drop
            .iter()
            .map(|r| Ok(Counted { rule: r.clone(), pattern: compile(&r.pattern)?, seen: 0 }))
            .collect::<Result<_, String>>()?;
        *self.inner.faults.lock().expect("faults lock") = FaultState { faults, fail, drop };
        Ok(())
    }

    pub fn faults(&self) -> Faults {
        self.inner.faults.lock().expect("faults lock").faults.clone()
    }

    /// The command log so far.
    pub fn command_log(&self) -> Vec<LogEntry> {
        self.inner.log.lock().expect("log lock").clone()
    }

    pub fn clear_log(&self) {
        self.inner.log.lock().expect("log lock").clear();
    }

    /// Registers a new connection; `kill` closes it abruptly (used by drops and reboots).
    pub fn connection_opened(&self, kill: Kill) -> u64 {
        let mut next = self.inner.next_conn.lock().expect("conn lock");
        let id = *next;
        *next += 1;
        self.inner.connections.lock().expect("connections lock").insert(id, kill);
        id
    }

    /// A connection id for a transport without connections (one per REST request).
    pub fn next_request_id(&self) -> u64 {
        let mut next = self.inner.next_conn.lock().expect("conn lock");
        *next += 1;
        *next - 1
    }

    pub fn connection_closed(&self, id: u64) {
        self.inner.connections.lock().expect("connections lock").remove(&id);
    }

    pub fn open_connections(&self) -> usize {
        self.inner.connections.lock().expect("connections lock").len()
    }

    /// Closes a connection abruptly (TCP close without an SSH goodbye).
    pub fn drop_connection(&self, id: u64) {
        let kill = self.inner.connections.lock().expect("connections lock").remove(&id);
        if let Some(Kill(kill)) = kill {
            kill();
        }
    }

    /// Emulates an RDS reboot: every connection drops, new ones are refused for `downtime`,
    /// all state (disks, exports, files) is kept.
    pub fn reboot(&self, downtime: Duration) {
        *self.inner.down_until.lock().expect("down lock") = Some(Instant::now() + downtime);
        let all: Vec<_> =
            self.inner.connections.lock().expect("connections lock").drain().collect();
        for (_, Kill(kill)) in all {
            kill();
        }
        tracing::info!(
            downtime_ms = downtime.as_millis() as u64,
            "reboot: all connections dropped"
        );
    }

    /// Whether new connections are accepted right now.
    pub fn accepting(&self) -> bool {
        let down = self.inner.down_until.lock().expect("down lock");
        let rebooting = down.is_some_and(|until| Instant::now() < until);
        !rebooting && !self.faults().refuse_sessions
    }

    pub fn handshake_latency(&self) -> Duration {
        Duration::from_millis(self.faults().handshake_latency_ms)
    }

    fn record(&self, conn: u64, transport: &str, command: &str, result: &str) {
        let at_ms =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        self.inner.log.lock().expect("log lock").push(LogEntry {
            at_ms,
            conn,
            transport: transport.to_string(),
            command: command.to_string(),
            result: result.to_string(),
        });
    }

    /// The most commands ever executing at the same time (latency included).
    pub fn peak_in_flight(&self) -> usize {
        self.inner.peak_in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs one command line for connection `conn`, applying latency and faults.
    pub async fn execute(&self, conn: u64, transport: &str, line: &str) -> Delivery {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.inner.in_flight.fetch_add(1, SeqCst) + 1;
        self.inner.peak_in_flight.fetch_max(now, SeqCst);
        let delivery = self.execute_counted(conn, transport, line).await;
        self.inner.in_flight.fetch_sub(1, SeqCst);
        delivery
    }

    async fn execute_counted(&self, conn: u64, transport: &str, line: &str) -> Delivery {
        let (delay, injected) = self.plan(line);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let drop_after = match injected {
            Some(Injected::Fail(error)) => {
                self.record(conn, transport, line, "injected-error");
                return Delivery::Answer(Outcome {
                    output: format!("{error}\n"),
                    failed: true,
                    mutated: false,
                });
            }
            Some(Injected::Drop(DropWhen::Before)) => {
                self.record(conn, transport, line, "dropped-before");
                return Delivery::Drop;
            }
            Some(Injected::Drop(DropWhen::After)) => true,
            None => false,
        };
        let this = self.clone();
        let owned = line.to_string();
        let outcome =
            tokio::task::spawn_blocking(move || this.run_now(&owned)).await.unwrap_or_else(|e| {
                Outcome { output: format!("failure: {e}\n"), failed: true, mutated: false }
            });
        if drop_after {
            self.record(conn, transport, line, "dropped-after");
            return Delivery::Drop;
        }
        self.record(conn, transport, line, if outcome.failed { "error" } else { "ok" });
        Delivery::Answer(outcome)
    }

    /// Runs a line with no faults and no log entry (setup in tests).
    pub fn run_now(&self, line: &str) -> Outcome {
        let mut store = self.inner.store.lock().expect("store lock");
        let mut behaviour = self.inner.behaviour.clone();
        if self.faults().disk_full {
            behaviour.force_disk_full = true;
        }
        let outcome = run_line(line, &mut store, &behaviour, self.inner.started);
        if outcome.mutated
            && let Some(nvmet) = &self.inner.nvmet
            && let Err(e) = nvmet.reconcile(&self.exports(&store))
        {
            tracing::warn!(error = %e, "nvmet: export does not match the disk table");
        }
        outcome
    }

    /// Runs `f` with the store (REST handlers, nvmet reconciliation).
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.inner.store.lock().expect("store lock"))
    }

    pub fn started(&self) -> Instant {
        self.inner.started
    }

    fn plan(&self, line: &str) -> (Duration, Option<Injected>) {
        let mut state = self.inner.faults.lock().expect("faults lock");
        let f = &state.faults;
        let jitter = if f.jitter_ms > 0 { rand::random_range(0..=f.jitter_ms) } else { 0 };
        let delay = Duration::from_millis(f.latency_ms + jitter);
        for rule in &mut state.fail {
            if rule.pattern.is_match(line) {
                rule.seen += 1;
                if rule.seen == rule.rule.nth {
                    return (delay, Some(Injected::Fail(rule.rule.error.clone())));
                }
            }
        }
        for rule in &mut state.drop {
            if rule.pattern.is_match(line) {
                rule.seen += 1;
                if rule.seen == rule.rule.nth {
                    return (delay, Some(Injected::Drop(rule.rule.when)));
                }
            }
        }
        (delay, None)
    }
}

enum Injected {
    Fail(String),
    Drop(DropWhen),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emulator(dir: &std::path::Path) -> Emulator {
        let init = InitOptions { pool_slot: "storage-pool".into(), pool_size: 10 << 30 };
        Emulator::open(dir.to_path_buf(), &init, Behaviour::default(), None).unwrap()
    }

    #[tokio::test]
    async fn rust_api_injects_faults_and_counts_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let emu = emulator(dir.path());
        emu.set_faults(Faults {
            fail: vec![FailRule { pattern: "add".into(), nth: 1, error: "failure: boom".into() }],
            drop: vec![DropRule { pattern: "slot=late".into(), nth: 1, when: DropWhen::After }],
            ..Faults::default()
        })
        .unwrap();
        let add = |slot: &str| {
            format!(
                "/disk add type=file slot={slot} file-path=storage-pool/{slot}.img file-size=1M"
            )
        };
        let Delivery::Answer(o) = emu.execute(7, "test", &add("a")).await else { panic!() };
        assert_eq!(o.output, "failure: boom\n");
        assert_eq!(emu.execute(7, "test", &add("late")).await, Delivery::Drop);
        assert!(!emu.run_now("/disk print count-only where slot=late").failed);
        assert_eq!(
            emu.run_now("/disk print count-only where slot=late").output,
            "1\n",
            "applied, then dropped"
        );
        let log = emu.command_log();
        assert_eq!(
            log.iter().map(|e| e.result.as_str()).collect::<Vec<_>>(),
            ["injected-error", "dropped-after"]
        );
        assert!(log.iter().all(|e| e.conn == 7 && e.transport == "test"));
        assert!(
            emu.set_faults(Faults {
                fail: vec![FailRule { pattern: "(".into(), nth: 1, error: String::new() }],
                ..Faults::default()
            })
            .is_err()
        );
    }

    #[tokio::test]
    async fn reboot_refuses_then_accepts_and_keeps_state() {
        let dir = tempfile::tempdir().unwrap();
        let emu = emulator(dir.path());
        let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = killed.clone();
        emu.connection_opened(Kill::new(move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst)
        }));
        emu.reboot(Duration::from_millis(200));
        assert!(killed.load(std::sync::atomic::Ordering::SeqCst), "every connection was cut");
        assert!(!emu.accepting());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(emu.accepting());
        assert_eq!(emu.open_connections(), 0);
    }
}
