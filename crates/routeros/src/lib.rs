//! RouterOS for rds-csi: the command-line syntax RouterOS accepts ([`syntax`]), and (later)
//! typed operations and the SSH/REST client of the RDS. Everything here except the
//! transports is pure: no I/O.

pub mod client;
pub mod detail;
pub mod error;
pub mod grammar;
pub mod ops;
pub mod rest;
pub mod ssh;
pub mod ssh_answer;
pub mod syntax;
pub mod transport;
pub mod types;
pub mod values;
