//! The wire format over real sockets, byte by byte (SPEC §3): hand-built frames
//! from std sockets to an engine and back, and invalid or truncated frames that
//! must close only their own connection.

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::time::Duration;

use tofu::{Address, ChannelGroup, Engine, More, OpCode, Status};
use util::*;

const HELLO_ID: u64 = 0x1122_3344_5566_7788;

/// A raw client's HelloRequest: its own channel 0x0102, two text headers, a body.
fn raw_hello(caddr: &Address) -> (Vec<u8>, Vec<u8>) {
    let headers = format!("~connect_to:{caddr}\r\nx-client:raw\r\n").into_bytes();
    (raw_frame(0x0102, 3, 0, HELLO_ID, &headers, b"hi"), headers)
}

/// Connects a raw client, says hello and gets accepted; returns the raw stream
/// and the server-side channel number.
fn raw_accepted(server: &ChannelGroup, caddr: &Address) -> (RawStream, u16) {
    let mut raw = RawStream::connect(caddr);
    raw.write_all(&raw_hello(caddr).0).unwrap();
    let hello = recv(server);
    assert_eq!(hello.opcode(), OpCode::HelloRequest, "{hello:?}");
    let sch = hello.header.channel_number;
    let mut accept = hello;
    accept.header.proto.opcode = OpCode::HelloResponse;
    server.post(accept).unwrap();
    let f = raw.read_frame();
    assert_eq!(f.header[2], 4, "HelloResponse");
    (raw, sch)
}

fn server_setup(t: Transport) -> (Engine, ChannelGroup, Address) {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    (engine, server, caddr)
}

// ----- a conversation in raw bytes -------------------------------------------------

fn raw_client_conversation(t: Transport) {
    let (engine, server, caddr) = server_setup(t);
    let mut raw = RawStream::connect(&caddr);
    let (hello, headers) = raw_hello(&caddr);
    raw.write_all(&hello).unwrap();

    let req = recv(&server);
    assert_eq!(req.opcode(), OpCode::HelloRequest, "{req:?}");
    assert!(req.is_from_application());
    assert_eq!(req.header.message_id, HELLO_ID);
    assert_eq!(req.status(), Status::Success);
    assert_eq!(req.text_headers.get("x-client"), Some("raw"));
    assert_eq!(
        req.text_headers.get("~connect_to"),
        Some(caddr.to_string().as_str())
    );
    assert_eq!(req.body, b"hi");
    let sch = req.header.channel_number;
    assert!(sch != 0 && sch != u16::MAX);

    // HelloResponse: every header byte checked.
    let mut accept = req;
    accept.header.proto.opcode = OpCode::HelloResponse;
    server.post(accept).unwrap();
    let f = raw.read_frame();
    let mut expected = vec![(sch >> 8) as u8, sch as u8, 0x04, 0x00];
    expected.extend_from_slice(&HELLO_ID.to_be_bytes());
    expected.extend_from_slice(&(headers.len() as u16).to_be_bytes());
    expected.extend_from_slice(&[0x00, 0x02]);
    assert_eq!(f.header.to_vec(), expected);
    assert_eq!(f.headers, headers);
    assert_eq!(f.body, b"hi");

    // The request from SPEC §3, byte for byte, and its echo.
    raw.write_all(&[
        0x12, 0x34, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00,
        0x04, 0x70, 0x69, 0x6e, 0x67,
    ])
    .unwrap();
    let ping = recv(&server);
    assert_eq!(ping.opcode(), OpCode::Request);
    assert_eq!(ping.header.channel_number, sch, "the receiver's own number");
    assert_eq!(ping.header.message_id, 7);
    assert!(ping.text_headers.is_empty());
    assert_eq!(ping.body, b"ping");
    let mut pong = ping;
    pong.header.proto.opcode = OpCode::Response;
    server.post(pong).unwrap();
    let mut echo = [0u8; 20];
    raw.read_exact(&mut echo).unwrap();
    assert_eq!(
        echo,
        [
            (sch >> 8) as u8,
            sch as u8,
            0x01,
            0x00,
            0x00,
            0x00,
            0x00,
            0x00,
            0x00,
            0x00,
            0x00,
            0x07,
            0x00,
            0x00,
            0x00,
            0x04,
            b'p',
            b'i',
            b'n',
            b'g'
        ]
    );

    // A streamed Signal from the server: the more bit (0x20) is set, origin 0.
    let mut sig = msg(&engine, sch, OpCode::Signal, b"");
    sig.header.message_id = 0x0102_0304;
    sig.header.proto.more = More::More;
    sig.text_headers.append("a", "b").unwrap();
    server.post(sig).unwrap();
    let f = raw.read_frame();
    assert_eq!(
        f.header,
        [
            (sch >> 8) as u8,
            sch as u8,
            0x22,
            0,
            0,
            0,
            0,
            0,
            1,
            2,
            3,
            4,
            0,
            5,
            0,
            0
        ]
    );
    assert_eq!(f.headers, b"a:b\r\n");

    // Bye handshake initiated by the raw client.
    raw.write_all(&raw_frame(0x0102, 5, 0, 99, b"", b""))
        .unwrap();
    let bye = recv(&server);
    assert_eq!(bye.opcode(), OpCode::ByeRequest);
    assert_eq!(bye.header.message_id, 99);
    let mut resp = bye;
    resp.header.proto.opcode = OpCode::ByeResponse;
    server.post(resp).unwrap();
    let f = raw.read_frame();
    assert_eq!(f.header[2], 6, "ByeResponse");
    assert_eq!(f.message_id(), 99);
    assert_eq!(f.channel(), sch);
    drop(raw); // the initiator closes
    let rep = recv(&server);
    assert_report(&rep, sch, Status::ChannelClosed);
    assert_eq!(rep.header.message_id, HELLO_ID);
}

tcp_and_uds!(raw_client_conversation);

/// An engine client talking to a raw std server: the HelloRequest it writes and
/// a Request, byte for byte.
fn engine_client_to_raw_server(t: Transport) {
    let engine = engine();
    let client = engine.create_group().unwrap();
    let (accept, caddr) = raw_server(t);
    let mut hello = opening(&engine, &caddr);
    hello.text_headers.append("x-app", "test").unwrap();
    let sent_headers = hello.text_headers.as_bytes().to_vec();
    let h = client.post(hello).unwrap();
    let cch = h.channel_number;
    let mut raw = within(timeout(), accept);

    let f = raw.read_frame();
    let mut expected = vec![(cch >> 8) as u8, cch as u8, 0x03, 0x00];
    expected.extend_from_slice(&h.message_id.to_be_bytes());
    expected.extend_from_slice(&(sent_headers.len() as u16).to_be_bytes());
    expected.extend_from_slice(&[0, 0]);
    assert_eq!(f.header.to_vec(), expected, "HelloRequest header");
    assert_eq!(f.headers, sent_headers);
    assert!(f.body.is_empty());

    // Accept with a HelloResponse on the raw server's own channel 0x0777.
    raw.write_all(&raw_frame(0x0777, 4, 0, h.message_id, b"", b""))
        .unwrap();
    let r = recv(&client);
    assert_eq!(r.opcode(), OpCode::HelloResponse, "{r:?}");
    assert!(r.is_from_application());
    assert_eq!(r.header.channel_number, cch, "the receiver's own number");
    assert_eq!(r.header.message_id, h.message_id);

    let mut ping = msg(&engine, cch, OpCode::Request, b"ping");
    ping.header.message_id = 7;
    client.post(ping).unwrap();
    let mut bytes = [0u8; 20];
    raw.read_exact(&mut bytes).unwrap();
    assert_eq!(
        bytes,
        [
            (cch >> 8) as u8,
            cch as u8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            7,
            0,
            0,
            0,
            4,
            b'p',
            b'i',
            b'n',
            b'g'
        ]
    );
    // A response from the raw server, with the origin bit set on the wire: it
    // still reaches the application as origin Application.
    raw.write_all(&raw_frame(0x0777, 0x10 | 1, 0, 7, b"", b"pong"))
        .unwrap();
    let r = recv(&client);
    assert_eq!(r.opcode(), OpCode::Response);
    assert!(r.is_from_application(), "{r:?}");
    assert_eq!(r.body, b"pong");
    // The raw server goes away: the client's channel closes.
    drop(raw);
    assert_report(&recv(&client), cch, Status::ChannelClosed);
}

tcp_and_uds!(engine_client_to_raw_server);

/// Frames arriving one byte at a time, and many frames in one write, decode the same.
fn fragmented_and_coalesced_frames(t: Transport) {
    let (_engine, server, caddr) = server_setup(t);
    let (mut raw, sch) = raw_accepted(&server, &caddr);
    if let RawStream::Tcp(s) = &raw {
        s.set_nodelay(true).unwrap();
    }
    let frame = raw_frame(1, 2, 0, 42, b"h:v\r\n", b"one byte at a time");
    for b in &frame {
        raw.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    let m = recv(&server);
    assert_eq!((m.opcode(), m.header.message_id), (OpCode::Signal, 42));
    assert_eq!(m.header.channel_number, sch);
    assert_eq!(m.text_headers.get("h"), Some("v"));
    assert_eq!(m.body, b"one byte at a time");

    let mut many = Vec::new();
    for i in 0..100u64 {
        many.extend(raw_frame(1, 0, 0, 1000 + i, b"", &i.to_be_bytes()));
    }
    raw.write_all(&many).unwrap();
    for i in 0..100u64 {
        let m = recv_skip_pool_empty(&server);
        assert_eq!(m.header.message_id, 1000 + i);
        assert_eq!(m.body, i.to_be_bytes());
    }
}

tcp_and_uds!(fragmented_and_coalesced_frames);

// ----- invalid frames ----------------------------------------------------------------

/// Proto bytes that make a frame invalid (SPEC §3): opcodes 10-15, the opcodes
/// that never travel, and `more` on a non-regular message.
const BAD_PROTO: [(u8, &str); 10] = [
    (10, "opcode 10"),
    (12, "opcode 12"),
    (15, "opcode 15"),
    (8, "WelcomeRequest"),
    (9, "WelcomeResponse"),
    (0x20 | 3, "HelloRequest with more"),
    (0x20 | 4, "HelloResponse with more"),
    (0x20 | 5, "ByeRequest with more"),
    (0x20 | 6, "ByeResponse with more"),
    (0x10 | 0x20 | 7, "ByeSignal with origin and more"),
];

/// After a valid hello, an invalid frame closes that channel (report), and a
/// normal client on the same listener keeps working.
fn invalid_frame_after_hello(t: Transport) {
    let (engine, server, caddr) = server_setup(t);
    let client = engine.create_group().unwrap();
    let (cch, sch_ok) = connect_pair(&engine, &client, &server, &caddr);
    for (proto, what) in BAD_PROTO {
        let invalid_before = engine.stats().invalid_frames;
        let (mut raw, sch) = raw_accepted(&server, &caddr);
        raw.write_all(&raw_frame(0x0102, proto, 0, 5, b"", b"bad"))
            .unwrap();
        let rep = recv(&server);
        assert!(rep.is_from_engine(), "{what}: never delivered: {rep:?}");
        assert_report(&rep, sch, Status::ChannelClosed);
        raw.expect_closed();
        assert_eq!(
            engine.stats().invalid_frames,
            invalid_before + 1,
            "{what}: counted"
        );
        round_trip(&engine, &client, &server, cch, sch_ok, what.as_bytes());
    }
    recv_nothing(&server, Duration::from_millis(50));
}

tcp_and_uds!(invalid_frame_after_hello);

/// A first frame that is not a (valid) HelloRequest: closed silently — the
/// group never hears of the connection — and counted.
fn invalid_first_frame_closed_silently(t: Transport) {
    let (engine, server, caddr) = server_setup(t);
    let client = engine.create_group().unwrap();
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    let firsts: Vec<(Vec<u8>, &str)> = vec![
        (raw_frame(1, 0, 0, 1, b"", b"ping"), "Request first"),
        (raw_frame(1, 2, 0, 1, b"", b""), "Signal first"),
        (raw_frame(1, 4, 0, 1, b"", b""), "HelloResponse first"),
        (raw_frame(1, 5, 0, 1, b"", b""), "ByeRequest first"),
        (raw_frame(1, 12, 0, 1, b"", b""), "opcode 12 first"),
        (raw_frame(1, 0x23, 0, 1, b"", b""), "HelloRequest with more"),
    ];
    for (frame, what) in firsts {
        let before = engine.stats().silent_closes;
        let mut raw = RawStream::connect(&caddr);
        raw.write_all(&frame).unwrap();
        raw.expect_closed();
        eventually(what, || engine.stats().silent_closes == before + 1);
        recv_nothing(&server, Duration::from_millis(20));
        round_trip(&engine, &client, &server, cch, sch, what.as_bytes());
    }
}

tcp_and_uds!(invalid_first_frame_closed_silently);

/// Half a frame, then the peer disconnects: nothing is delivered, nothing
/// panics; before the hello the group never hears of it, after the hello it
/// gets the channel_closed report.
fn truncated_frames(t: Transport) {
    let (engine, server, caddr) = server_setup(t);
    let client = engine.create_group().unwrap();
    let (cch, sch_ok) = connect_pair(&engine, &client, &server, &caddr);
    let (hello, _) = raw_hello(&caddr);

    // Before the hello: half a header, half a hello.
    for cut in [5, 16 + 3, hello.len() - 1] {
        let mut raw = RawStream::connect(&caddr);
        raw.write_all(&hello[..cut]).unwrap();
        drop(raw);
    }
    // Silently dropped, and the engine still works.
    eventually("the truncated connections to be dropped", || {
        engine.stats().open_channels == 3 // listener + the pair
    });
    recv_nothing(&server, Duration::from_millis(50));
    round_trip(&engine, &client, &server, cch, sch_ok, b"still fine");

    // After the hello: half a header, a header whose body never comes.
    let frame = raw_frame(1, 0, 0, 77, b"x:y\r\n", &[9u8; 100]);
    for cut in [10, 16, 16 + 5 + 50] {
        let (mut raw, sch) = raw_accepted(&server, &caddr);
        raw.write_all(&frame[..cut]).unwrap();
        drop(raw);
        let rep = recv(&server);
        assert_report(&rep, sch, Status::ChannelClosed);
        round_trip(&engine, &client, &server, cch, sch_ok, b"still fine");
    }
    recv_nothing(&server, Duration::from_millis(50));
}

tcp_and_uds!(truncated_frames);

/// An invalid frame on a client channel (the server side is the raw peer)
/// closes it with the `channel_closed` report; it is not a silent close.
fn invalid_frame_on_client_channel(t: Transport) {
    let engine = engine();
    let client = engine.create_group().unwrap();
    let (accept, caddr) = raw_server(t);
    let h = client.post(opening(&engine, &caddr)).unwrap();
    let cch = h.channel_number;
    let mut raw = within(timeout(), accept);
    raw.write_all(&raw_frame(9, 4, 0, h.message_id, b"", b""))
        .unwrap();
    assert_eq!(recv(&client).opcode(), OpCode::HelloResponse);
    raw.write_all(&raw_frame(9, 13, 0, 1, b"", b"")).unwrap();
    assert_report(&recv(&client), cch, Status::ChannelClosed);
    assert_eq!(engine.stats().invalid_frames, 1);
    assert_eq!(engine.stats().silent_closes, 0, "the application knew it");
    recv_nothing(&client, Duration::from_millis(50));
}

tcp_and_uds!(invalid_frame_on_client_channel);
