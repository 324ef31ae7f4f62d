//! Replays the fuzz inputs kept in the repository on stable, with the same
//! checks the fuzz targets run (`fuzz/checks/*.rs`):
//!
//! * `fuzz/regressions/<target>/`: inputs that once made a target fail
//!   (each also has a named test below that states the bug in plain code);
//! * `fuzz/seeds/<target>/`: the hand-written seeds the fuzzer starts from.
//!
//! Run the fuzzers themselves with `scripts/fuzz.sh`.
//!
//! Unit tests rather than an integration test because the checks use
//! `tofu::wire`, which is private unless the `unstable` feature is on; inside
//! the crate their `tofu::` paths resolve through `extern crate self as tofu`.

use std::path::Path;

#[path = "../fuzz/checks/address.rs"]
mod address;
#[path = "../fuzz/checks/channel.rs"]
mod channel;
#[path = "../fuzz/checks/decode.rs"]
mod decode;
#[path = "../fuzz/checks/decoder_stream.rs"]
mod decoder_stream;
#[path = "../fuzz/checks/text_headers.rs"]
mod text_headers;

/// Runs `check` on every file in the target's regression and seed folders;
/// returns how many inputs ran.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
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
    ran
}

#[test]
fn replay_decode() {
    assert!(replay("decode", decode::run) > 0);
}

#[test]
fn replay_address() {
    assert!(replay("address", address::run) > 0);
}

#[test]
fn replay_text_headers() {
    assert!(replay("text_headers", text_headers::run) > 0);
}

#[test]
fn replay_decoder_stream() {
    assert!(replay("decoder_stream", decoder_stream::run) > 0);
}

#[test]
fn replay_channel() {
    assert!(replay("channel", channel::run) > 0);
}
