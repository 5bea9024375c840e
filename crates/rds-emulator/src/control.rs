//! The control API (loopback HTTP, JSON) that tests and the quickstart use to read the command
//! log and to inject faults while the emulator runs.
//!
//! | method | path | effect |
//! |---|---|---|
//! | GET | `/log` | the command log (JSON array of entries) |
//! | DELETE | `/log` | clears the log |
//! | GET | `/faults` | the fault set |
//! | PUT | `/faults` | replaces the fault set (JSON body, see `Faults`) |
//! | DELETE | `/faults` | removes every fault |
//! | POST | `/reboot?downtime_ms=N` | drops every connection, refuses new ones for N ms |
//! | GET | `/connections` | `{"open": N}` |

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::Deserialize;

use crate::emulator::{Emulator, Faults, LogEntry};

#[derive(Deserialize)]
struct RebootQuery {
    #[serde(default)]
    downtime_ms: u64,
}

pub fn router(emu: Emulator) -> Router {
    Router::new()
        .route(
            "/log",
            get(|State(e): State<Emulator>| async move { Json::<Vec<LogEntry>>(e.command_log()) })
                .delete(|State(e): State<Emulator>| async move {
                    e.clear_log();
                    StatusCode::NO_CONTENT
                }),
        )
        .route(
            "/faults",
            get(|State(e): State<Emulator>| async move { Json(e.faults()) })
                .put(|State(e): State<Emulator>, Json(f): Json<Faults>| async move {
                    match e.set_faults(f) {
                        Ok(()) => (StatusCode::NO_CONTENT, String::new()),
                        Err(msg) => (StatusCode::BAD_REQUEST, msg),
                    }
                })
                .delete(|State(e): State<Emulator>| async move {
                    let _ = e.set_faults(Faults::default());
                    StatusCode::NO_CONTENT
                }),
        )
        .route(
            "/reboot",
            post(|State(e): State<Emulator>, Query(q): Query<RebootQuery>| async move {
                e.reboot(Duration::from_millis(q.downtime_ms));
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/connections",
            get(|State(e): State<Emulator>| async move {
                Json(serde_json::json!({ "open": e.open_connections() }))
            }),
        )
        .with_state(emu)
}
