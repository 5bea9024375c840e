//! Any REST answer body (JSON or not) and status: parsed or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routeros::ops::{parse_rest, rest_error};

mod ops;

fuzz_target!(|data: &[u8]| {
    let status = data.first().map_or(400, |b| 300 + u16::from(*b));
    let text = String::from_utf8_lossy(data);
    let _ = rest_error(status, &text);
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let bodies = [value.clone(), value];
        for op in ops::ops() {
            let _ = parse_rest(&op, &bodies);
            let _ = parse_rest(&op, &bodies[..1]);
        }
    }
});
