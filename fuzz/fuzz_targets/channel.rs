//! cargo-fuzz target `channel`: see `src/fuzz_checks/channel.rs` for what it checks.
#![no_main]

#[path = "../../src/fuzz_checks/channel.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
