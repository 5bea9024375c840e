//! rds-emulator: a faithful stand-in for the management plane of a MikroTik ROSE Data Server.
//! See docs/emulator.md for every command, flag, fault, and each choice made where the
//! RouterOS facts are UNKNOWN.

mod btrfs_cmd;
pub mod control;
mod disk_cmd;
pub mod emulator;
pub mod exec;
pub mod grammar;
pub mod model;
pub mod nvmet;
pub mod render;
pub mod rest;
mod script_cmd;
pub mod ssh;
pub mod store;
pub mod tls;
pub mod version;
