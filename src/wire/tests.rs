//! Unit and property tests for the sans-IO codec (SPEC §3).

use proptest::prelude::*;

use super::*;
use crate::message::{Allocation, MAX_SECTION_LEN, Pool, TextHeaders};

/// SPEC §3: a Request on channel 0x1234, message_id 7, no text headers, body `ping`.
const SPEC_EXAMPLE: [u8; 20] = [
    0x12, 0x34, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x04,
    0x70, 0x69, 0x6e, 0x67,
];

const TRAVELLING: [OpCode; 7] = [
    OpCode::Request,
    OpCode::Response,
    OpCode::Signal,
    OpCode::HelloRequest,
    OpCode::HelloResponse,
    OpCode::ByeRequest,
    OpCode::ByeResponse,
];

/// Opcodes that never arrive (a ByeSignal does: the original's abort, SPEC §3).
const LOCAL_ONLY: [OpCode; 2] = [OpCode::WelcomeRequest, OpCode::WelcomeResponse];

// ---------------------------------------------------------------------------
// helpers

fn message(
    opcode: OpCode,
    channel: u16,
    id: u64,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Message {
    let mut msg = Message::new();
    msg.header.channel_number = channel;
    msg.header.proto.opcode = opcode;
    msg.header.message_id = id;
    for (name, value) in headers {
        msg.text_headers.append(name, value).unwrap();
    }
    msg.body.extend_from_slice(body);
    msg
}

#[track_caller]
fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_to_vec(msg, &mut out).unwrap();
    out
}

/// A 16-byte header with the given proto byte and lengths, everything else zero.
fn raw_header(proto: u8, text_len: u16, body_len: u16) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[2] = proto;
    h[12..14].copy_from_slice(&text_len.to_be_bytes());
    h[14..16].copy_from_slice(&body_len.to_be_bytes());
    h
}

fn fresh() -> Option<Message> {
    Some(Message::new())
}

fn no_alloc() -> Option<Message> {
    panic!("the allocator must not be called here")
}

/// Decodes one frame that must be complete in `input`.
#[track_caller]
fn decode_one(input: &mut &[u8]) -> Message {
    match Decoder::new().decode(input, &mut fresh) {
        Ok(Decoded::Frame(msg)) => msg,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Feeds `bytes` to a fresh decoder in chunks whose sizes cycle through `chunks`,
/// returning every frame decoded and the first error (after which nothing more is
/// fed). The allocator hands out dirty messages, and fails when `fail` says so
/// (never twice in a row, so decoding always progresses).
fn decode_chunked(
    bytes: &[u8],
    chunks: &[usize],
    fail: &[bool],
) -> (Vec<Message>, Option<FrameError>) {
    let mut calls = 0usize;
    let mut last_failed = false;
    let mut alloc = || {
        let f = !fail.is_empty() && fail[calls % fail.len()] && !last_failed;
        calls += 1;
        last_failed = f;
        (!f).then(dirty_message)
    };
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let size = chunks[i % chunks.len()].max(1);
        i += 1;
        let end = (pos + size).min(bytes.len());
        let mut input = &bytes[pos..end];
        pos = end;
        loop {
            match dec.decode(&mut input, &mut alloc) {
                Ok(Decoded::Frame(msg)) => out.push(msg),
                Ok(Decoded::NeedBytes) => {
                    assert!(input.is_empty(), "NeedBytes with input left");
                    break;
                }
                Ok(Decoded::NeedMessage) => {}
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// A message full of leftovers, as an allocator that does not clear might return.
fn dirty_message() -> Message {
    let mut msg = Message::new();
    msg.header.channel_number = 0xdead;
    msg.header.proto.opcode = OpCode::WelcomeResponse;
    msg.header.proto.origin = Origin::Engine;
    msg.header.status = 0x1f;
    msg.header.message_id = u64::MAX;
    msg.text_headers.append("stale", "header").unwrap();
    msg.body.extend_from_slice(b"stale body");
    msg
}

/// A straightforward, whole-buffer parser written from SPEC §3, independent of
/// [`Decoder`], to check the incremental one against.
fn reference_decode(mut bytes: &[u8]) -> (Vec<Message>, Option<FrameError>) {
    let mut out = Vec::new();
    while bytes.len() >= HEADER_LEN {
        let proto = bytes[2];
        let raw = proto & 0x0f;
        let Some(opcode) = OpCode::from_raw(raw) else {
            return (out, Some(FrameError::InvalidOpCode(raw)));
        };
        if matches!(opcode.raw(), 8..=9) {
            return (out, Some(FrameError::LocalOnly(opcode)));
        }
        let more = proto & 0x20 != 0;
        if more && opcode.raw() > 2 {
            return (out, Some(FrameError::InvalidMore(opcode)));
        }
        let text_len = usize::from(u16::from_be_bytes([bytes[12], bytes[13]]));
        let body_len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
        let total = HEADER_LEN + text_len + body_len;
        if bytes.len() < total {
            break;
        }
        let text = &bytes[HEADER_LEN..HEADER_LEN + text_len];
        let mut msg = Message::new();
        msg.header.channel_number = u16::from_be_bytes([bytes[0], bytes[1]]);
        msg.header.proto.opcode = opcode;
        msg.header.proto.origin = if proto & 0x10 != 0 {
            Origin::Engine
        } else {
            Origin::Application
        };
        msg.header.proto.more = if more { More::More } else { More::Last };
        msg.header.status = bytes[3];
        msg.header.message_id = u64::from_be_bytes(bytes[4..12].try_into().unwrap());
        msg.text_headers.set_raw(text).unwrap();
        msg.body
            .extend_from_slice(&bytes[HEADER_LEN + text_len..total]);
        out.push(msg);
        bytes = &bytes[total..];
    }
    (out, None)
}

#[track_caller]
fn assert_same(got: &Message, want: &Message) {
    assert_eq!(got.header, want.header);
    assert_eq!(got.text_headers.as_bytes(), want.text_headers.as_bytes());
    assert_eq!(got.body, want.body);
}

// ---------------------------------------------------------------------------
// the SPEC example and field layout

#[test]
fn spec_example_decodes_and_reencodes() {
    let mut input = &SPEC_EXAMPLE[..];
    let msg = decode_one(&mut input);
    assert!(input.is_empty());
    assert_eq!(msg.header.channel_number, 0x1234);
    assert_eq!(msg.opcode(), OpCode::Request);
    assert_eq!(msg.header.proto.origin, Origin::Application);
    assert_eq!(msg.header.proto.more, More::Last);
    assert_eq!(msg.header.status, 0);
    assert_eq!(msg.header.message_id, 7);
    assert!(msg.text_headers.is_empty());
    assert_eq!(msg.body, b"ping");
    assert_eq!(encode(&msg), SPEC_EXAMPLE);
}

#[test]
fn spec_example_encodes_from_fields() {
    let msg = message(OpCode::Request, 0x1234, 7, &[], b"ping");
    let fh = FrameHeader::for_message(&msg).unwrap();
    assert_eq!((fh.text_len, fh.body_len, fh.frame_len()), (0, 4, 20));
    assert_eq!(fh.encode(), SPEC_EXAMPLE[..HEADER_LEN]);
    assert_eq!(encode(&msg), SPEC_EXAMPLE);
}

#[test]
fn decoder_debug_shows_progress_not_bytes() {
    let mut dec = Decoder::new();
    let mut input = &SPEC_EXAMPLE[..HEADER_LEN + 2]; // header and "pi"
    assert!(matches!(
        dec.decode(&mut input, &mut || Some(Message::new())),
        Ok(Decoded::NeedBytes)
    ));
    let shown = format!("{dec:?}");
    assert!(shown.contains("body: 2/4"), "{shown}");
    assert!(
        !shown.contains("112"),
        "no body bytes (b'p' = 112): {shown}"
    );
}

#[test]
fn header_fields_are_big_endian() {
    let mut msg = message(
        OpCode::Signal,
        0xabcd,
        0x0102_0304_0506_0708,
        &[("k", "v")],
        b"xyz",
    );
    msg.header.status = 0xfe;
    let bytes = encode(&msg);
    assert_eq!(
        bytes[..HEADER_LEN],
        [
            0xab, 0xcd, 0x02, 0xfe, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x00, 0x05,
            0x00, 0x03
        ]
    );
    assert_eq!(&bytes[HEADER_LEN..], b"k:v\r\nxyz");
    let back = decode_one(&mut &bytes[..]);
    assert_same(&back, &msg);
    assert_eq!(
        back.header.status, 0xfe,
        "raw status bytes survive, even unknown ones"
    );
}

#[test]
fn origin_and_more_bits_preserved() {
    for opcode in TRAVELLING {
        for origin in [Origin::Application, Origin::Engine] {
            let mores: &[More] = if opcode.is_regular() {
                &[More::Last, More::More]
            } else {
                &[More::Last]
            };
            for &more in mores {
                let mut msg = message(opcode, 3, 4, &[], b"");
                msg.header.proto.origin = origin;
                msg.header.proto.more = more;
                let bytes = encode(&msg);
                let want_proto = opcode.raw()
                    | if origin == Origin::Engine { 0x10 } else { 0 }
                    | if more == More::More { 0x20 } else { 0 };
                assert_eq!(bytes[2], want_proto, "{opcode:?} {origin:?} {more:?}");
                let back = decode_one(&mut &bytes[..]);
                assert_eq!(back.header.proto, msg.header.proto);
                assert_eq!(encode(&back), bytes);
            }
        }
    }
}

#[test]
fn bits_6_and_7_ignored_on_decode() {
    for opcode in TRAVELLING {
        for high in [0x40u8, 0x80, 0xc0] {
            let mut frame = raw_header(opcode.raw() | high, 0, 1).to_vec();
            frame.push(b'!');
            let msg = decode_one(&mut &frame[..]);
            assert_eq!(msg.opcode(), opcode);
            assert_eq!(msg.header.proto.origin, Origin::Application);
            assert_eq!(msg.header.proto.more, More::Last);
            // Re-encoding sends them as 0.
            assert_eq!(encode(&msg)[2], opcode.raw());
        }
    }
    // Combined with origin and more.
    let msg = decode_one(&mut &raw_header(0xc0 | 0x20 | 0x10 | 2, 0, 0)[..]);
    assert_eq!(
        msg.header.proto,
        ProtoFields {
            opcode: OpCode::Signal,
            origin: Origin::Engine,
            more: More::More,
        }
    );
}

// ---------------------------------------------------------------------------
// incremental decoding

#[test]
fn empty_input_needs_bytes_without_allocating() {
    let mut dec = Decoder::new();
    assert!(dec.is_idle());
    let mut input: &[u8] = &[];
    assert!(matches!(
        dec.decode(&mut input, &mut no_alloc),
        Ok(Decoded::NeedBytes)
    ));
    assert!(dec.is_idle());
}

#[test]
fn header_only_frame_decodes() {
    let msg = message(OpCode::ByeRequest, 9, 2, &[], b"");
    let bytes = encode(&msg);
    assert_eq!(bytes.len(), HEADER_LEN);
    let mut dec = Decoder::new();
    let mut input = &bytes[..];
    let Ok(Decoded::Frame(back)) = dec.decode(&mut input, &mut fresh) else {
        panic!("expected a frame");
    };
    assert_same(&back, &msg);
    assert!(input.is_empty() && dec.is_idle());
}

#[test]
fn split_at_every_byte_boundary() {
    let msg = message(
        OpCode::Response,
        0x0102,
        0x0a0b_0c0d,
        &[("a", "1"), ("name", "välue")],
        b"some body bytes",
    );
    let bytes = encode(&msg);
    for i in 0..=bytes.len() {
        for j in i..=bytes.len() {
            let mut dec = Decoder::new();
            let mut got = Vec::new();
            let mut fed = 0;
            for part in [&bytes[..i], &bytes[i..j], &bytes[j..]] {
                fed += part.len();
                let mut input = part;
                loop {
                    match dec.decode(&mut input, &mut fresh) {
                        Ok(Decoded::Frame(m)) => got.push(m),
                        Ok(Decoded::NeedBytes) => {
                            assert!(input.is_empty());
                            break;
                        }
                        other => panic!("split {i}/{j}: {other:?}"),
                    }
                }
                // Mid-frame the decoder is never idle; before and after it is.
                assert_eq!(dec.is_idle(), fed == 0 || got.len() == 1, "split {i}/{j}");
            }
            assert_eq!(got.len(), 1, "split {i}/{j}");
            assert_same(&got[0], &msg);
        }
    }
}

#[test]
fn byte_by_byte() {
    let msg = message(
        OpCode::HelloRequest,
        1,
        1,
        &[("~connect_to", "tcp|127.0.0.1|7411")],
        b"",
    );
    let bytes = encode(&msg);
    let mut dec = Decoder::new();
    for (n, byte) in bytes.iter().enumerate() {
        let mut input = std::slice::from_ref(byte);
        let res = dec.decode(&mut input, &mut fresh).unwrap();
        assert!(input.is_empty());
        if n + 1 < bytes.len() {
            assert!(matches!(res, Decoded::NeedBytes), "byte {n}: {res:?}");
            assert!(!dec.is_idle());
        } else {
            let Decoded::Frame(back) = res else {
                panic!("last byte: {res:?}")
            };
            assert_same(&back, &msg);
            assert!(dec.is_idle());
        }
    }
}

#[test]
fn fifty_frames_in_one_buffer() {
    let msgs: Vec<Message> = (0..50u16)
        .map(|i| {
            let opcode = TRAVELLING[usize::from(i) % TRAVELLING.len()];
            let value = i.to_string();
            let headers: &[(&str, &str)] = if i % 3 == 0 { &[("n", &value)] } else { &[] };
            let body = vec![i as u8; usize::from(i) * 7];
            let mut m = message(opcode, i + 1, u64::from(i) << 32, headers, &body);
            m.header.status = i as u8;
            m
        })
        .collect();
    let mut bytes = Vec::new();
    for m in &msgs {
        encode_to_vec(m, &mut bytes).unwrap();
    }
    let mut dec = Decoder::new();
    let mut input = &bytes[..];
    for (k, want) in msgs.iter().enumerate() {
        let before = input.len();
        let Ok(Decoded::Frame(got)) = dec.decode(&mut input, &mut fresh) else {
            panic!("frame {k} missing");
        };
        assert_same(&got, want);
        // Exactly one frame is consumed per call.
        assert_eq!(
            before - input.len(),
            FrameHeader::for_message(want).unwrap().frame_len()
        );
        assert!(dec.is_idle());
    }
    assert!(input.is_empty());
    assert!(matches!(
        dec.decode(&mut input, &mut no_alloc),
        Ok(Decoded::NeedBytes)
    ));
}

#[test]
fn body_remaining_tracks_the_body_part() {
    let msg = message(OpCode::Request, 1, 1, &[("a", "b")], &[7; 10]);
    let bytes = encode(&msg);
    let mut dec = Decoder::new();
    let mut input = &bytes[..HEADER_LEN + 2]; // header + part of the text headers
    assert!(matches!(
        dec.decode(&mut input, &mut fresh),
        Ok(Decoded::NeedBytes)
    ));
    assert_eq!(dec.body_remaining(), 0);
    let mut input = &bytes[HEADER_LEN + 2..HEADER_LEN + 5 + 3]; // rest of the text + 3 body bytes
    assert!(matches!(
        dec.decode(&mut input, &mut fresh),
        Ok(Decoded::NeedBytes)
    ));
    assert_eq!(dec.body_remaining(), 7);
    let mut input = &bytes[HEADER_LEN + 8..];
    assert!(matches!(
        dec.decode(&mut input, &mut fresh),
        Ok(Decoded::Frame(_))
    ));
    assert_eq!(dec.body_remaining(), 0);
}

/// A body filled through `body_space` in pieces, after part of it came
/// through `decode`: the frame completes exactly when the last byte is in,
/// holds the right bytes, and the decoder is back at a boundary; outside a
/// body the space is empty and filling it does nothing.
#[test]
fn body_space_fills_the_body_in_place() {
    let want: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let msg = message(OpCode::Request, 1, 9, &[("a", "b")], &want);
    let bytes = encode(&msg);
    let mut dec = Decoder::new();
    assert!(dec.body_space().is_empty());
    assert!(dec.body_filled(5).is_none());
    let text_end = HEADER_LEN + 5;
    let mut input = &bytes[..text_end - 1];
    assert!(matches!(
        dec.decode(&mut input, &mut fresh),
        Ok(Decoded::NeedBytes)
    ));
    assert!(dec.body_space().is_empty(), "still in the text headers");
    assert_eq!(dec.body_len(), Some(1000));
    let mut input = &bytes[text_end - 1..text_end + 100];
    assert!(matches!(
        dec.decode(&mut input, &mut fresh),
        Ok(Decoded::NeedBytes)
    ));
    let mut at = text_end + 100;
    for piece in [1, 299, 500] {
        let space = dec.body_space();
        assert_eq!(space.len(), bytes.len() - at);
        space[..piece].copy_from_slice(&bytes[at..at + piece]);
        at += piece;
        assert!(dec.body_filled(piece).is_none());
    }
    let space = dec.body_space();
    let rest = space.len();
    space.copy_from_slice(&bytes[at..]);
    let got = dec.body_filled(rest).expect("complete");
    assert_same(&got, &msg);
    assert!(dec.is_idle());
    assert!(dec.body_space().is_empty());
}

// ---------------------------------------------------------------------------
// the allocator

#[test]
fn need_message_then_resume_with_the_same_input() {
    let msg = message(OpCode::Signal, 5, 6, &[("k", "v")], b"body");
    let bytes = encode(&msg);
    let mut dec = Decoder::new();
    let mut calls = 0;
    let mut input = &bytes[..HEADER_LEN - 1];
    let mut none = || {
        calls += 1;
        None
    };
    // No allocation before the header is complete.
    assert!(matches!(
        dec.decode(&mut input, &mut none),
        Ok(Decoded::NeedBytes)
    ));
    let mut input = &bytes[HEADER_LEN - 1..];
    assert!(matches!(
        dec.decode(&mut input, &mut none),
        Ok(Decoded::NeedMessage)
    ));
    // Only the header was consumed.
    assert_eq!(input.len(), bytes.len() - HEADER_LEN);
    assert!(!dec.is_idle());
    assert!(matches!(
        dec.decode(&mut input, &mut none),
        Ok(Decoded::NeedMessage)
    ));
    assert_eq!(input.len(), bytes.len() - HEADER_LEN);
    assert_eq!(calls, 2);
    let Ok(Decoded::Frame(back)) = dec.decode(&mut input, &mut fresh) else {
        panic!("expected a frame");
    };
    assert!(input.is_empty());
    assert_same(&back, &msg);
    assert!(dec.is_idle());
}

#[test]
fn need_message_resumes_with_empty_input() {
    // The header ends exactly where the input does, and the frame has nothing else.
    let msg = message(OpCode::ByeResponse, 5, 6, &[], b"");
    let bytes = encode(&msg);
    let mut dec = Decoder::new();
    let mut input = &bytes[..];
    assert!(matches!(
        dec.decode(&mut input, &mut || None),
        Ok(Decoded::NeedMessage)
    ));
    assert!(input.is_empty());
    let Ok(Decoded::Frame(back)) = dec.decode(&mut input, &mut fresh) else {
        panic!("expected a frame");
    };
    assert_same(&back, &msg);
    // With text and body still to come, resuming on empty input asks for bytes.
    let msg = message(OpCode::Request, 5, 6, &[], b"later");
    let bytes = encode(&msg);
    let mut input = &bytes[..HEADER_LEN];
    assert!(matches!(
        dec.decode(&mut input, &mut || None),
        Ok(Decoded::NeedMessage)
    ));
    assert!(matches!(
        dec.decode(&mut input, &mut fresh),
        Ok(Decoded::NeedBytes)
    ));
    assert_eq!(dec.body_remaining(), 5);
    let mut input = &bytes[HEADER_LEN..];
    let Ok(Decoded::Frame(back)) = dec.decode(&mut input, &mut no_alloc) else {
        panic!("expected a frame");
    };
    assert_same(&back, &msg);
}

#[test]
fn allocated_message_is_overwritten_and_its_capacity_reused() {
    let mut old = dirty_message();
    old.body.reserve(4096);
    let body_cap = old.body.capacity();
    let mut slot = Some(old);
    let mut input = &SPEC_EXAMPLE[..];
    let Ok(Decoded::Frame(msg)) = Decoder::new().decode(&mut input, &mut || slot.take()) else {
        panic!("expected a frame");
    };
    assert_same(&msg, &message(OpCode::Request, 0x1234, 7, &[], b"ping"));
    assert_eq!(msg.body.capacity(), body_cap);
}

#[test]
fn decodes_into_pooled_messages() {
    let pool = Pool::new(1, 1);
    let mut dec = Decoder::new();
    let mut alloc = || pool.get(Allocation::PoolOnly);
    for _ in 0..3 {
        let mut input = &SPEC_EXAMPLE[..];
        let Ok(Decoded::Frame(msg)) = dec.decode(&mut input, &mut alloc) else {
            panic!("expected a frame");
        };
        assert!(msg.is_pooled());
        assert_eq!(msg.body, b"ping");
        // The pool is empty while the message is out.
        let mut again = &SPEC_EXAMPLE[..];
        assert!(matches!(
            dec.decode(&mut again, &mut || pool.get(Allocation::PoolOnly)),
            Ok(Decoded::NeedMessage)
        ));
        drop(msg);
        let Ok(Decoded::Frame(msg)) =
            dec.decode(&mut again, &mut || pool.get(Allocation::PoolOnly))
        else {
            panic!("expected a frame");
        };
        drop(msg);
    }
    assert_eq!((pool.len(), pool.outstanding()), (1, 0));
}

// ---------------------------------------------------------------------------
// invalid frames

#[test]
fn opcodes_10_to_15_are_invalid() {
    for raw in 10u8..=15 {
        for extra in [0x00, 0x10, 0x20, 0x30, 0xc0] {
            let header = raw_header(raw | extra, 0, 0);
            assert_eq!(
                FrameHeader::decode(&header),
                Err(FrameError::InvalidOpCode(raw))
            );
            let mut input = &header[..];
            let err = Decoder::new()
                .decode(&mut input, &mut no_alloc)
                .unwrap_err();
            assert_eq!(err, FrameError::InvalidOpCode(raw));
            assert_eq!(err.status(), Status::InvalidMessage);
        }
    }
}

#[test]
fn local_only_opcodes_are_invalid() {
    for opcode in LOCAL_ONLY {
        for extra in [0x00, 0x10, 0x20, 0xc0] {
            let header = raw_header(opcode.raw() | extra, 0, 0);
            let mut input = &header[..];
            let err = Decoder::new()
                .decode(&mut input, &mut no_alloc)
                .unwrap_err();
            assert_eq!(err, FrameError::LocalOnly(opcode));
            assert_eq!(err.status(), Status::InvalidMessage);
        }
    }
}

#[test]
fn more_only_on_regular_messages() {
    for opcode in TRAVELLING {
        let header = raw_header(opcode.raw() | 0x20, 0, 0);
        let res = FrameHeader::decode(&header);
        if opcode.is_regular() {
            assert_eq!(res.unwrap().header.proto.more, More::More);
        } else {
            assert_eq!(res, Err(FrameError::InvalidMore(opcode)));
            let mut input = &header[..];
            let err = Decoder::new()
                .decode(&mut input, &mut no_alloc)
                .unwrap_err();
            assert_eq!(err, FrameError::InvalidMore(opcode));
            assert_eq!(err.status(), Status::InvalidMessage);
        }
    }
}

/// Text headers are kept byte for byte, whatever they hold (SPEC §2.3; the
/// sections of `original-edges/case3-server-odd-text-headers`).
#[test]
fn text_headers_are_kept_byte_for_byte() {
    for text in [
        &b"\xff"[..],
        b"a:\xc3\x28\r\n",
        b"a:b\r\n\xe2\x82",
        b"\x80k:v\r\n",
        b"x-bin:\xff\xfe\r\n",
        b"nocolon\r\n",
        b"a:1\r\n\r\nb:2\r\n",
        b"\r\n",
        b":v\r\n",
        b"k:no-final-crlf",
    ] {
        let mut frame = raw_header(OpCode::Request.raw(), text.len() as u16, 2).to_vec();
        frame.extend_from_slice(text);
        frame.extend_from_slice(b"ok");
        // Also when split anywhere.
        for split in 1..frame.len() {
            let (got, err) = decode_chunked(&frame, &[split, frame.len()], &[]);
            assert_eq!(err, None, "{text:?} split {split}");
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].text_headers.as_bytes(), text, "split {split}");
            assert_eq!(got[0].body, b"ok");
            // And it re-encodes to the same bytes (an echo sends them as they came).
            let mut again = Vec::new();
            encode_to_vec(&got[0], &mut again).unwrap();
            assert_eq!(again, frame);
        }
    }
}

#[test]
fn multibyte_utf8_split_across_chunks_is_valid() {
    let msg = message(OpCode::Signal, 1, 1, &[("名前", "値→€")], b"");
    let bytes = encode(&msg);
    for split in 1..bytes.len() {
        let (got, err) = decode_chunked(&bytes, &[split, bytes.len()], &[]);
        assert_eq!(err, None);
        assert_same(&got[0], &msg);
    }
}

#[test]
fn invalid_frame_after_valid_ones() {
    let mut bytes = encode(&message(OpCode::Request, 1, 1, &[], b"fine"));
    bytes.extend_from_slice(&raw_header(OpCode::HelloRequest.raw() | 0x20, 0, 0));
    bytes.extend_from_slice(&SPEC_EXAMPLE);
    let (got, err) = decode_chunked(&bytes, &[3], &[]);
    assert_eq!(got.len(), 1);
    assert_eq!(err, Some(FrameError::InvalidMore(OpCode::HelloRequest)));
}

// ---------------------------------------------------------------------------
// encoding limits and vectored slices

#[test]
fn encode_rejects_oversized_sections() {
    let mut msg = message(OpCode::Request, 1, 1, &[], &[]);
    msg.body = vec![0; MAX_SECTION_LEN + 1];
    assert_eq!(FrameHeader::for_message(&msg), Err(Error::InvalidBodyLen));
    let mut out = b"kept".to_vec();
    assert_eq!(encode_to_vec(&msg, &mut out), Err(Error::InvalidBodyLen));
    assert_eq!(out, b"kept", "nothing written on error");

    let mut msg = message(OpCode::Request, 1, 1, &[], &[]);
    msg.text_headers = TextHeaders::from_buf(vec![b'x'; MAX_SECTION_LEN + 1]);
    assert_eq!(
        FrameHeader::for_message(&msg),
        Err(Error::InvalidHeadersLen)
    );
    assert_eq!(encode_to_vec(&msg, &mut out), Err(Error::InvalidHeadersLen));
    assert_eq!(out, b"kept");
}

#[test]
fn max_size_sections_round_trip() {
    let mut msg = message(OpCode::Response, 0xfffe, u64::MAX, &[], &[]);
    // "n:" + value + "\r\n" = 65535 bytes.
    msg.text_headers
        .append("n", &"v".repeat(MAX_SECTION_LEN - 4))
        .unwrap();
    assert_eq!(msg.text_headers.byte_len(), MAX_SECTION_LEN);
    msg.body = (0..MAX_SECTION_LEN).map(|i| (i % 251) as u8).collect();
    let bytes = encode(&msg);
    assert_eq!(bytes.len(), HEADER_LEN + 2 * MAX_SECTION_LEN);
    assert_eq!(bytes[12..16], [0xff; 4]);
    let back = decode_one(&mut &bytes[..]);
    assert_same(&back, &msg);
    assert_eq!(encode(&back), bytes);
    let (got, err) = decode_chunked(&bytes, &[1, 4093, 16, 65536], &[true]);
    assert_eq!(err, None);
    assert_eq!(got.len(), 1);
    assert_same(&got[0], &msg);
}

#[test]
fn frame_slices_reproduce_the_frame_tail_at_every_offset() {
    let cases = [
        message(OpCode::Request, 1, 2, &[("a", "1"), ("bb", "22")], b"body!"),
        message(OpCode::Request, 1, 2, &[], b"body only"),
        message(OpCode::Request, 1, 2, &[("text", "only")], b""),
        message(OpCode::Request, 1, 2, &[], b""),
    ];
    for msg in &cases {
        let bytes = encode(msg);
        let header = FrameHeader::for_message(msg).unwrap().encode();
        for offset in 0..=bytes.len() {
            let mut slices = Vec::new();
            frame_slices(&header, msg, offset, &mut slices);
            assert!(slices.len() <= 3);
            assert!(
                slices.iter().all(|s| !s.is_empty()),
                "empty slice at {offset}"
            );
            let joined: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(joined, bytes[offset..], "offset {offset}");
        }
    }
}

// ---------------------------------------------------------------------------
// property tests

fn arb_header_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9~_.-]{1,16}"
}

fn arb_header_value() -> impl Strategy<Value = String> {
    // Starts with a visible character so it is never blank; may hold ':', spaces
    // and multi-byte characters.
    "[!-~éß€日本][ -~éß€日本]{0,30}"
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        prop::sample::select(TRAVELLING.to_vec()),
        any::<bool>(),
        any::<bool>(),
        any::<u8>(),
        any::<u64>(),
        any::<u16>(),
        prop::collection::vec((arb_header_name(), arb_header_value()), 0..6),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 0..4096),
        ],
    )
        .prop_map(
            |(opcode, engine, more, status, id, channel, headers, body)| {
                let mut msg = Message::new();
                msg.header = BinaryHeader {
                    channel_number: channel,
                    proto: ProtoFields {
                        opcode,
                        origin: if engine {
                            Origin::Engine
                        } else {
                            Origin::Application
                        },
                        more: if more && opcode.is_regular() {
                            More::More
                        } else {
                            More::Last
                        },
                    },
                    status,
                    message_id: id,
                };
                for (name, value) in &headers {
                    msg.text_headers.append(name, value).unwrap();
                }
                msg.body = body;
                msg
            },
        )
}

fn arb_chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..=20, 1usize..=5000], 1..32)
}

/// Frame-shaped bytes: correct lengths, but arbitrary proto bytes and text headers
/// that are usually, not always, UTF-8 — so invalid frames show up mid-stream.
fn arb_frame_like() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u16>(),
        prop_oneof![4 => 0u8..=6, 1 => any::<u8>()],
        any::<u8>(),
        any::<u64>(),
        prop_oneof![
            8 => "[ -~é]{0,24}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..24),
        ],
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(channel, proto, status, id, text, body)| {
            let mut out = Vec::with_capacity(HEADER_LEN + text.len() + body.len());
            out.extend_from_slice(&channel.to_be_bytes());
            out.push(proto);
            out.push(status);
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&(text.len() as u16).to_be_bytes());
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
            out.extend_from_slice(&text);
            out.extend_from_slice(&body);
            out
        })
}

proptest! {
    // Under Miri: a few cases, and no regression files (isolation forbids them).
    #![proptest_config(if cfg!(miri) {
        ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::default()
    })]

    #[test]
    fn valid_messages_round_trip_in_any_chunking(
        msgs in prop::collection::vec(arb_message(), 1..8),
        chunks in arb_chunks(),
        fail in prop::collection::vec(any::<bool>(), 0..8),
    ) {
        let mut bytes = Vec::new();
        for msg in &msgs {
            encode_to_vec(msg, &mut bytes).unwrap();
        }
        let (got, err) = decode_chunked(&bytes, &chunks, &fail);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got.len(), msgs.len());
        for (got, want) in got.iter().zip(&msgs) {
            prop_assert_eq!(got.header, want.header);
            prop_assert_eq!(got.text_headers.as_bytes(), want.text_headers.as_bytes());
            prop_assert_eq!(&got.body, &want.body);
            // Re-encoding gives the same bytes back.
            prop_assert_eq!(encode(got), encode(want));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        chunks in arb_chunks(),
        fail in prop::collection::vec(any::<bool>(), 0..4),
    ) {
        let (got, err) = decode_chunked(&bytes, &chunks, &fail);
        let (want, want_err) = reference_decode(&bytes);
        prop_assert_eq!(err, want_err);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn frame_like_bytes_match_the_reference(
        frames in prop::collection::vec(arb_frame_like(), 0..24),
        cut in any::<prop::sample::Index>(),
        chunks in arb_chunks(),
        fail in prop::collection::vec(any::<bool>(), 0..4),
    ) {
        let mut bytes = frames.concat();
        // Sometimes end mid-frame.
        let keep = cut.index(bytes.len() + 1).max(bytes.len() * 3 / 4);
        bytes.truncate(keep);
        let (got, err) = decode_chunked(&bytes, &chunks, &fail);
        let (want, want_err) = reference_decode(&bytes);
        prop_assert_eq!(err, want_err);
        prop_assert_eq!(got.len(), want.len());
        for (got, want) in got.iter().zip(&want) {
            prop_assert_eq!(got.header, want.header);
            prop_assert_eq!(got.text_headers.as_bytes(), want.text_headers.as_bytes());
            prop_assert_eq!(&got.body, &want.body);
            prop_assert!(super::may_arrive(got.opcode()));
            prop_assert!(got.opcode().is_regular() || !got.has_more());
        }
    }
}
