//! Feeds arbitrary bytes, in arbitrary chunks, to the frame decoder: it must
//! never panic, and every frame it yields must re-encode to a frame of the same
//! length (bits 6-7 of the proto byte are engine-internal, so bytes may differ
//! there).
//!
//! Shared by the fuzz target `decode` and by `src/fuzz_replay.rs`,
//! which replays the saved inputs on stable.

use tofu::Message;
use tofu::wire::{Decoded, Decoder, HEADER_LEN, encode_to_vec};

/// Checks one input; panics on a violation.
pub(crate) fn run(data: &[u8]) {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let mut dec = Decoder::new();
    for piece in bytes.chunks((chunk as usize).max(1)) {
        let mut input = piece;
        loop {
            match dec.decode(&mut input, &mut || Some(Message::new())) {
                Ok(Decoded::Frame(msg)) => {
                    let mut out = Vec::new();
                    encode_to_vec(&msg, &mut out).expect("decoded frames re-encode");
                    let expected = HEADER_LEN + msg.text_headers.byte_len() + msg.body.len();
                    assert_eq!(out.len(), expected);
                }
                Ok(Decoded::NeedBytes) => break,
                Ok(Decoded::NeedMessage) => unreachable!("the allocator always has one"),
                Err(_) => return,
            }
        }
    }
}
