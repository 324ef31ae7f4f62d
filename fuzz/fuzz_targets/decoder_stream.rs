//! cargo-fuzz target `decoder_stream`: see `src/fuzz_checks/decoder_stream.rs` for what it checks.
#![no_main]

#[path = "../../src/fuzz_checks/decoder_stream.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
