//! cargo-fuzz target `address`: see `src/fuzz_checks/address.rs` for what it checks.
#![no_main]

#[path = "../../src/fuzz_checks/address.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
