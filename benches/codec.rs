//! Codec micro-benchmarks: encoding and decoding throughput (frame bytes per
//! second) for bodies of 16 B, 1 KiB and the 65535-byte maximum.
//!
//! * `encode/frame_slices` — what the engine does per message: build the
//!   [`FrameHeader`], encode its 16 bytes and collect the borrowed slices for a
//!   vectored write (no body copy).
//! * `encode/encode_to_vec` — the copying convenience, into a reused buffer.
//! * `decode/one_read` — a buffer holding ~64 KiB of frames (at least four)
//!   decoded in one call sequence, messages taken from a [`Pool`] and dropped back
//!   into it so their buffers keep their capacity, as in the engine.
//! * `decode/4KiB_reads` — the same buffer fed in 4 KiB pieces, like short socket
//!   reads, so frames straddle reads.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::IoSlice;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tofu::wire::{Decoded, Decoder, FrameHeader, encode_to_vec, frame_slices};
use tofu::{Allocation, Message, OpCode, Pool};

const SIZES: [(&str, usize); 3] = [("16B", 16), ("1KiB", 1024), ("64KiB", 65535)];

fn message(body_len: usize) -> Message {
    let mut msg = Message::new();
    msg.header.channel_number = 42;
    msg.header.proto.opcode = OpCode::Request;
    msg.header.message_id = 7;
    msg.body = (0..body_len).map(|i| i as u8).collect();
    msg
}

/// Empties `v` and hands its allocation back typed for another borrow, so every
/// iteration reuses one slice buffer as a long-lived writer would.
fn reuse<'b>(mut v: Vec<IoSlice<'_>>) -> Vec<IoSlice<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!()).collect()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, size) in SIZES {
        let msg = message(size);
        let frame_len = FrameHeader::for_message(&msg).unwrap().frame_len();
        group.throughput(Throughput::Bytes(frame_len as u64));

        group.bench_with_input(BenchmarkId::new("frame_slices", name), &msg, |b, msg| {
            let mut store: Vec<IoSlice<'static>> = reuse(Vec::with_capacity(3));
            assert!(store.capacity() >= 3, "reuse keeps the allocation");
            b.iter(|| {
                let msg = black_box(msg);
                let header = FrameHeader::for_message(msg).unwrap().encode();
                let mut slices = reuse(std::mem::take(&mut store));
                frame_slices(&header, msg, 0, &mut slices);
                let len: usize = black_box(&slices).iter().map(|s| s.len()).sum();
                store = reuse(slices);
                len
            });
        });

        group.bench_with_input(BenchmarkId::new("encode_to_vec", name), &msg, |b, msg| {
            let mut out = Vec::with_capacity(frame_len);
            b.iter(|| {
                out.clear();
                encode_to_vec(black_box(msg), &mut out).unwrap();
                out.len()
            });
        });
    }
    group.finish();
}

/// Decodes every frame in `buf`, `read` bytes at a time; returns the body bytes seen.
fn decode_all(
    dec: &mut Decoder,
    buf: &[u8],
    read: usize,
    alloc: &mut dyn FnMut() -> Option<Message>,
) -> usize {
    let mut body_bytes = 0;
    for chunk in buf.chunks(read) {
        let mut input = chunk;
        loop {
            match dec.decode(&mut input, alloc) {
                // Dropping the message returns it to the pool.
                Ok(Decoded::Frame(msg)) => body_bytes += black_box(msg).body.len(),
                Ok(Decoded::NeedBytes) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    body_bytes
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, size) in SIZES {
        let msg = message(size);
        let frame_len = FrameHeader::for_message(&msg).unwrap().frame_len();
        let frames = (64 * 1024 / frame_len).max(4);
        let mut buf = Vec::with_capacity(frames * frame_len);
        for _ in 0..frames {
            encode_to_vec(&msg, &mut buf).unwrap();
        }
        group.throughput(Throughput::Bytes(buf.len() as u64));

        for (variant, read) in [("one_read", buf.len()), ("4KiB_reads", 4096)] {
            let pool = Pool::new(4, 4);
            let mut alloc = || pool.get(Allocation::PoolOnly);
            let mut dec = Decoder::new();
            // Warm the pool's buffers up to the body size.
            assert_eq!(decode_all(&mut dec, &buf, read, &mut alloc), frames * size);
            group.bench_with_input(BenchmarkId::new(variant, name), &buf, |b, buf| {
                b.iter(|| decode_all(&mut dec, black_box(buf), read, &mut alloc));
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = encode, decode
}
criterion_main!(benches);
