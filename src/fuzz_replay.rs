//! Replays the fuzz inputs kept in the repository on stable, with the same
//! checks the fuzz targets run (`src/fuzz_checks/*.rs`, inside the package so
//! these tests compile from the published crate too):
//!
//! * `fuzz/regressions/<target>/`: inputs that once made a target fail
//!   (each also has a named test below that states the bug in plain code);
//! * `fuzz/seeds/<target>/`: the hand-written seeds the fuzzer starts from.
//!
//! Run the fuzzers themselves with `scripts/fuzz.sh`. The published package
//! leaves `fuzz/` out: there each replay says `not applicable` and passes.
//!
//! Unit tests rather than an integration test because the checks use
//! `tofu::wire`, which is private unless the `unstable` feature is on; inside
//! the crate their `tofu::` paths resolve through `extern crate self as tofu`.

use std::path::Path;

#[path = "fuzz_checks/address.rs"]
mod address;
#[path = "fuzz_checks/channel.rs"]
mod channel;
#[path = "fuzz_checks/decode.rs"]
mod decode;
#[path = "fuzz_checks/decoder_stream.rs"]
mod decoder_stream;
#[path = "fuzz_checks/text_headers.rs"]
mod text_headers;

/// Runs `check` on every file in the target's regression and seed folders;
/// returns how many inputs ran, or `None` (after saying why) when `fuzz/`
/// is not there (the published package leaves it out).
fn replay(target: &str, check: fn(&[u8])) -> Option<usize> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    if !root.is_dir() {
        println!(
            "not applicable: {} is absent (fuzz inputs are not packaged)",
            root.display()
        );
        return None;
    }
    let mut ran = 0;
    for kind in ["regressions", "seeds"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            eprintln!("replaying {}", file.display());
            check(&data);
            ran += 1;
        }
    }
    Some(ran)
}

#[test]
fn replay_decode() {
    assert_ne!(
        replay("decode", decode::run),
        Some(0),
        "no inputs for decode"
    );
}

#[test]
fn replay_address() {
    assert_ne!(
        replay("address", address::run),
        Some(0),
        "no inputs for address"
    );
}

#[test]
fn replay_text_headers() {
    assert_ne!(
        replay("text_headers", text_headers::run),
        Some(0),
        "no inputs for text_headers"
    );
}

#[test]
fn replay_decoder_stream() {
    assert_ne!(
        replay("decoder_stream", decoder_stream::run),
        Some(0),
        "no inputs for decoder_stream"
    );
}

#[test]
fn replay_channel() {
    assert_ne!(
        replay("channel", channel::run),
        Some(0),
        "no inputs for channel"
    );
}
