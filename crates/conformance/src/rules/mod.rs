//! The rules, one async function each, grouped by RPC. Each cites the CSI spec rule it checks
//! (the list with the rule texts is `crate::for_each_rule`).

pub mod create;
pub mod delete;
pub mod groups;
pub mod identity;
pub mod lifecycle;
pub mod modify;
pub mod node_publish;
pub mod node_stats;
pub mod publish;
pub mod snapshots;
pub mod stage;
pub mod volumes;
