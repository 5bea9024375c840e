//! rds-csi: a Kubernetes CSI driver for MikroTik ROSE Data Server (RDS), NVMe/TCP.
//!
//! Layers (see docs/architecture.md): the CSI gRPC surface ([`identity`], [`controller`],
//! [`node`], all through [`rpc`]) → core logic with no I/O ([`endpoint`], [`names`], [`cli`]
//! validation) → adapters at the edge ([`listener`], [`http`], later RouterOS, NVMe/sysfs,
//! mount and Kubernetes). [`error`] holds the one mapping from errors to gRPC statuses.

pub mod backends;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod core;
pub mod crashpoint;
pub mod demo;
pub mod demo_backends;
pub mod emulated;
pub mod endpoint;
pub mod error;
pub mod exec;
pub mod http;
pub mod identity;
pub mod listener;
pub mod locks;
pub mod metrics;
pub mod names;
pub mod node;
pub mod nvme_sysfs;
pub mod rds;
pub mod readiness;
pub mod rpc;
pub mod server;
pub mod telemetry;
pub mod tools;
pub mod version;
