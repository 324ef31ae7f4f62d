//! cargo-fuzz target `text_headers`: see `fuzz/checks/text_headers.rs` for what it checks.
#![no_main]

#[path = "../checks/text_headers.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
