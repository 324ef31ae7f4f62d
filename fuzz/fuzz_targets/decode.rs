//! cargo-fuzz target `decode`: see `src/fuzz_checks/decode.rs` for what it checks.
#![no_main]

#[path = "../../src/fuzz_checks/decode.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
