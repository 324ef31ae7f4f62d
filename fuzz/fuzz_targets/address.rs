//! cargo-fuzz target `address`: see `fuzz/checks/address.rs` for what it checks.
#![no_main]

#[path = "../checks/address.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
