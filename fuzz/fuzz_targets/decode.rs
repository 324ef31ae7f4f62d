//! cargo-fuzz target `decode`: see `fuzz/checks/decode.rs` for what it checks.
#![no_main]

#[path = "../checks/decode.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
