//! RouterOS for rds-csi: the command-line syntax RouterOS accepts ([`syntax`]), typed
//! operations ([`ops`]) and their output parsers, and the SSH/REST client of the RDS (feature
//! `transports`, on by default). Everything here except the transports is pure: no I/O.

#[cfg(feature = "transports")]
pub mod client;
pub mod detail;
pub mod error;
pub mod grammar;
pub mod ops;
#[cfg(feature = "transports")]
pub mod rest;
#[cfg(feature = "transports")]
pub mod ssh;
pub mod ssh_answer;
pub mod syntax;
#[cfg(feature = "transports")]
pub mod transport;
pub mod types;
pub mod values;
