//! Any /proc/self/mountinfo text: parsed line by line, never a panic, and the whole-text
//! parse agrees with the line parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The driver's parser, compiled here without the driver's dependencies (it uses std only).
#[allow(dead_code)]
#[path = "../../crates/driver/src/core/mountinfo.rs"]
mod mountinfo;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let all = mountinfo::parse(&text);
    let one_by_one: Vec<_> = text.lines().filter_map(mountinfo::parse_line).collect();
    assert_eq!(all.len(), one_by_one.len());
});
