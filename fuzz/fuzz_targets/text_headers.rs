//! cargo-fuzz target `text_headers`: see `src/fuzz_checks/text_headers.rs` for what it checks.
#![no_main]

#[path = "../../src/fuzz_checks/text_headers.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
