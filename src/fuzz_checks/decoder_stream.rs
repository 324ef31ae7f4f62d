//! Arbitrary bytes, cut into arbitrary chunks, through the incremental decoder
//! with messages from a small `Pool`, as the engine uses it: the frames (and the
//! error, if any) must be exactly those of decoding the whole input at once
//! with fresh messages; reused pool messages carry nothing over from earlier
//! frames; running out of pool messages (`NeedMessage`) only delays decoding;
//! every message goes back to the pool.
//!
//! Shared by the fuzz target `decoder_stream` and by `src/fuzz_replay.rs`,
//! which replays the saved inputs on stable.

use tofu::wire::{Decoded, Decoder, FrameError};
use tofu::{Allocation, Message, Pool};

/// Checks one input; panics on a violation.
///
/// Input layout: `pool_size` then chunk lengths, one byte each, up to a `0`
/// byte; the rest is the stream.
pub(crate) fn run(data: &[u8]) {
    let Some((&pool_size, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (chunk_lens, stream) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());

    let expected = reference(stream);

    let pool_size = usize::from(pool_size % 4) + 1;
    let pool = Pool::new(pool_size, pool_size);
    let mut held: Vec<Message> = Vec::new(); // delivered, not yet given back
    let mut got: Vec<Message> = Vec::new();
    let mut error = None;
    let mut dec = Decoder::new();
    let mut lens = chunk_lens.iter().cycle();
    let mut input = stream;
    'outer: while !input.is_empty() {
        let n = lens
            .next()
            .map_or(input.len(), |&l| usize::from(l))
            .min(input.len());
        let mut chunk = &input[..n];
        input = &input[n..];
        loop {
            match dec.decode(&mut chunk, &mut || pool.get(Allocation::PoolOnly)) {
                Ok(Decoded::Frame(msg)) => {
                    assert!(msg.is_pooled());
                    got.push(msg.clone());
                    held.push(msg);
                }
                Ok(Decoded::NeedBytes) => {
                    assert!(chunk.is_empty());
                    break;
                }
                Ok(Decoded::NeedMessage) => {
                    assert!(dec.needs_message());
                    assert!(!held.is_empty(), "pool empty with nothing held");
                    // The application hands messages back: the oldest first.
                    held.remove(0);
                }
                Err(e) => {
                    error = Some(e);
                    break 'outer;
                }
            }
            // Hand back frames from time to time, as a consumer would.
            if held.len() >= pool_size {
                held.clear();
            }
            // Every live pooled message is counted: the held ones, their clones
            // (a clone returns to the pool too) and the one being filled.
            let filling = usize::from(dec.has_message());
            assert_eq!(pool.outstanding(), held.len() + got.len() + filling);
        }
    }
    let got = (got, error);
    assert_eq!(got.0.len(), expected.0.len());
    for (a, b) in got.0.iter().zip(&expected.0) {
        assert_eq!(a, b);
    }
    assert_eq!(got.1, expected.1);
    drop(got);
    held.clear();
    // A frame cut short by the end of the input keeps its message in the
    // decoder until the decoder goes.
    assert_eq!(pool.outstanding(), usize::from(dec.has_message()));
    drop(dec);
    assert_eq!(pool.outstanding(), 0);
    let again = pool.get(Allocation::PoolOnly).expect("the pool refilled");
    assert_eq!(pool.outstanding(), 1);
    drop(again);
}

/// Every frame of `stream` decoded in one call sequence with fresh messages,
/// and the error that stopped decoding, if any.
fn reference(stream: &[u8]) -> (Vec<Message>, Option<FrameError>) {
    let mut dec = Decoder::new();
    let mut input = stream;
    let mut frames = Vec::new();
    loop {
        match dec.decode(&mut input, &mut || Some(Message::new())) {
            Ok(Decoded::Frame(m)) => frames.push(m),
            Ok(Decoded::NeedBytes) => return (frames, None),
            Ok(Decoded::NeedMessage) => unreachable!("always a message"),
            Err(e) => return (frames, Some(e)),
        }
    }
}
