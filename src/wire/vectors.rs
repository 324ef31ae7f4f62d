//! The codec against frames captured from the original Zig tofu (SPEC §3).
//!
//! `tests/data/tcp-session.json` is a verbatim copy of
//! `shared/wire-vectors/tcp-session.json` (see the README beside it there): one
//! loopback TCP conversation — Hello, a Request "ping" and its Response, Bye. The
//! copy lives in the repository so the test runs on a clean clone; when the shared
//! original is present too, the test also checks that the two have not drifted.
//!
//! (Unit tests rather than an integration test: `wire` is private unless the
//! `unstable` feature is on.)

use serde_json::Value;

use super::{Decoded, Decoder, FrameHeader, encode_to_vec, frame_slices};
use crate::{Message, More, OpCode, Origin};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tcp-session.json");
const SHARED_VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/wire-vectors/tcp-session.json"
);

/// One captured frame: its bytes and the fields it must decode to.
#[derive(Debug)]
struct Vector {
    direction: String,
    bytes: Vec<u8>,
    channel_number: u16,
    opcode_value: u8,
    origin: u8,
    more: u8,
    status: u8,
    message_id: u64,
    text_headers: String,
    body: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd-length hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

#[track_caller]
fn uint<T: TryFrom<u64>>(frame: &Value, field: &str) -> T {
    let n = frame[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field}: not an unsigned integer"));
    T::try_from(n).unwrap_or_else(|_| panic!("{field}: {n} out of range"))
}

#[track_caller]
fn string(frame: &Value, field: &str) -> String {
    frame[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field}: not a string"))
        .to_owned()
}

fn vectors() -> Vec<Vector> {
    // Compiled in (the same file as VECTORS), so this runs under Miri's isolation too.
    let text = include_str!("../../tests/data/tcp-session.json");
    let json: Value = serde_json::from_str(text).expect("valid JSON");
    let frames = json["frames"].as_array().expect("a `frames` array");
    assert_eq!(frames.len(), 6, "the capture has six frames");
    frames
        .iter()
        .map(|f| Vector {
            direction: string(f, "direction"),
            bytes: hex(&string(f, "hex")),
            channel_number: uint(f, "channel_number"),
            opcode_value: uint(f, "opcode_value"),
            origin: uint(f, "origin"),
            more: uint(f, "more"),
            status: uint(f, "status"),
            message_id: uint(f, "message_id"),
            text_headers: string(f, "text_headers"),
            body: hex(&string(f, "body_hex")),
        })
        .collect()
}

fn fresh() -> Option<Message> {
    Some(Message::new())
}

/// Decodes every frame in `bytes`, fed in one go; all of it must be consumed.
#[track_caller]
fn decode_stream(bytes: &[u8]) -> Vec<Message> {
    let mut dec = Decoder::new();
    let mut input = bytes;
    let mut out = Vec::new();
    loop {
        match dec.decode(&mut input, &mut fresh) {
            Ok(Decoded::Frame(msg)) => out.push(msg),
            Ok(Decoded::NeedBytes) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(input.is_empty() && dec.is_idle(), "trailing bytes");
    out
}

#[track_caller]
fn assert_fields(msg: &Message, v: &Vector) {
    let h = &msg.header;
    assert_eq!(h.channel_number, v.channel_number, "channel_number");
    assert_eq!(h.proto.opcode.raw(), v.opcode_value, "opcode");
    let origin = match h.proto.origin {
        Origin::Application => 0,
        Origin::Engine => 1,
    };
    assert_eq!(origin, v.origin, "origin");
    let more = match h.proto.more {
        More::Last => 0,
        More::More => 1,
    };
    assert_eq!(more, v.more, "more");
    assert_eq!(h.status, v.status, "status");
    assert_eq!(h.message_id, v.message_id, "message_id");
    assert_eq!(
        msg.text_headers.as_bytes(),
        v.text_headers.as_bytes(),
        "text_headers"
    );
    assert_eq!(msg.body, v.body, "body");
}

#[test]
fn in_repo_copy_matches_the_shared_vectors() {
    // On a clean clone `../shared` does not exist; then there is nothing to compare.
    let Ok(shared) = std::fs::read(SHARED_VECTORS) else {
        println!("not applicable: {SHARED_VECTORS} is not beside this clone (nothing to compare)");
        return;
    };
    let copy = std::fs::read(VECTORS).expect("in-repo vectors");
    assert!(copy == shared, "{VECTORS} differs from {SHARED_VECTORS}");
}

#[test]
fn each_frame_decodes_to_its_fields_and_reencodes_identically() {
    for v in vectors() {
        let mut input = &v.bytes[..];
        let msg = match Decoder::new().decode(&mut input, &mut fresh) {
            Ok(Decoded::Frame(msg)) => msg,
            other => panic!("{} {}: {other:?}", v.direction, v.opcode_value),
        };
        assert!(input.is_empty(), "one frame per vector");
        assert_fields(&msg, &v);

        let mut out = Vec::new();
        encode_to_vec(&msg, &mut out).unwrap();
        assert_eq!(out, v.bytes, "re-encoding {:?}", msg.opcode());

        // The vectored path the engine writes with gives the same bytes.
        let header = FrameHeader::for_message(&msg).unwrap().encode();
        let mut slices = Vec::new();
        frame_slices(&header, &msg, 0, &mut slices);
        let joined: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(joined, v.bytes);
    }
}

#[test]
fn fields_encode_to_the_captured_bytes() {
    for v in vectors() {
        let mut msg = Message::new();
        msg.header.channel_number = v.channel_number;
        msg.header.proto.opcode = OpCode::from_raw(v.opcode_value).expect("valid opcode");
        msg.header.proto.origin = if v.origin == 1 {
            Origin::Engine
        } else {
            Origin::Application
        };
        msg.header.proto.more = if v.more == 1 { More::More } else { More::Last };
        msg.header.status = v.status;
        msg.header.message_id = v.message_id;
        msg.text_headers.set_raw(&v.text_headers).unwrap();
        msg.body = v.body.clone();
        let mut out = Vec::new();
        encode_to_vec(&msg, &mut out).unwrap();
        assert_eq!(out, v.bytes, "{} {:?}", v.direction, msg.opcode());
    }
}

#[test]
fn connect_to_header_reads_back() {
    let hello = &vectors()[0];
    let mut input = &hello.bytes[..];
    let Ok(Decoded::Frame(msg)) = Decoder::new().decode(&mut input, &mut fresh) else {
        panic!("HelloRequest must decode");
    };
    assert_eq!(msg.opcode(), OpCode::HelloRequest);
    assert_eq!(
        msg.text_headers.get("~connect_to"),
        Some("tcp|127.0.0.1|7411")
    );
}

#[test]
fn whole_session_decodes_as_one_stream_per_direction() {
    let vectors = vectors();
    for direction in ["client->server", "server->client"] {
        let sent: Vec<&Vector> = vectors
            .iter()
            .filter(|v| v.direction == direction)
            .collect();
        assert_eq!(sent.len(), 3, "{direction}");
        let stream: Vec<u8> = sent.iter().flat_map(|v| v.bytes.iter().copied()).collect();

        let msgs = decode_stream(&stream);
        assert_eq!(msgs.len(), sent.len(), "{direction}");
        for (msg, v) in msgs.iter().zip(&sent) {
            assert_fields(msg, v);
        }

        // The same stream a byte at a time.
        let mut dec = Decoder::new();
        let mut one_by_one = Vec::new();
        for byte in &stream {
            let mut input = std::slice::from_ref(byte);
            if let Decoded::Frame(msg) = dec.decode(&mut input, &mut fresh).unwrap() {
                one_by_one.push(msg);
            }
            assert!(input.is_empty());
        }
        assert_eq!(one_by_one, msgs, "{direction}");
    }
}
