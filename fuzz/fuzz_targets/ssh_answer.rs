//! Any text RouterOS (or a broken link) prints over SSH, for every op and both read formats:
//! the parser answers or errs, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routeros::{detail, ops::ReadFormat, ssh_answer::parse_ssh};

mod ops;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for op in ops::ops() {
        for format in [ReadFormat::Json, ReadFormat::Detail] {
            let _ = parse_ssh(&op, &text, format);
        }
    }
    for entry in detail::parse(&text) {
        let _ = detail::to_object(&entry);
    }
});
