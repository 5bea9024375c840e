//! The driver's version as reported in `GetPluginInfo.vendor_version` and `--version`.

/// Git revision the binary was built from (`unknown` outside a git checkout).
pub const GIT_REVISION: &str = env!("RDS_CSI_GIT_REV");

/// Crate version plus git revision, e.g. `0.1.0+1a2b3c4d5e6f`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("RDS_CSI_GIT_REV"));
