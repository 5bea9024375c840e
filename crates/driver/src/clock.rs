//! The process's one wall clock: seconds since the epoch (an adapter: `core/` never reads it,
//! its callers pass the time in).

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
