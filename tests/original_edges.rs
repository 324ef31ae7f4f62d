//! The original Zig tofu at the edges, replayed (SPEC §2.3, §3, §5.5).
//!
//! `tests/data/original-edges/*.json` are verbatim copies of
//! `shared/wire-vectors/original-edges/` (see the README beside them there):
//! loopback captures of the original, unmodified, at the edges of the
//! protocol. Each test here takes the frames *the original wrote* in one of
//! them, writes those bytes at this project's engine over a raw TCP socket
//! (the raw side plays the original), and checks what the engine's
//! application sees and what the engine writes back — compared with what the
//! capture shows the original's peer wrote (only channel numbers, which are
//! local, and the port inside `~connect_to`, which is per run, may differ).
//! Where this project deliberately differs from the original, the test says
//! so and checks our behaviour.
//!
//! Every case file is replayed by a test below (`every_case_is_replayed`
//! checks that none is forgotten).

#[macro_use]
mod util;

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Status};
use util::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/original-edges");
const SHARED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/wire-vectors/original-edges"
);

/// The cases replayed below, by file name.
const CASES: [&str; 19] = [
    "case1-extra-zigclient-vs-reject-bit6",
    "case1-extra-zigclient-vs-reject-idiom",
    "case1-server-reject-bit6",
    "case1-server-reject-idiom",
    "case2-client-byesignal-bit6",
    "case2-client-byesignal-idiom",
    "case3-server-odd-text-headers",
    "case4-first-frame-a-request-first",
    "case4-first-frame-b-opcode12-first",
    "case4-first-frame-c-hello-more-bit",
    "case5-raw-client-vs-zig-server-bye",
    "case5-rust-client-vs-zig-server-tofubench",
    "case5-rust-client-vs-zig-server-zigedge",
    "case5-zig-client-graceful-nowait-vs-rust-server",
    "case5-zig-client-graceful-nowait-vs-zig-server",
    "case5-zig-client-graceful-vs-zig-server",
    "case5-zig-client-vs-raw-server-bye",
    "case5-zig-client-vs-rust-server",
    "case6-status-and-opcode-tables",
];

// ----- the captures ----------------------------------------------------------------

/// Which end of the captured connection wrote a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

/// One captured frame: its exact bytes and the fields they hold.
#[derive(Clone, Debug)]
struct Frame {
    dir: Dir,
    bytes: Vec<u8>,
    opcode: u8,
    message_id: u64,
    text: Vec<u8>,
    body: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd-length hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn json(case: &str) -> Value {
    let path = format!("{DATA}/{case}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // When the shared originals are beside the repository, the copies must
    // not have drifted from them.
    if let Ok(shared) = std::fs::read_to_string(format!("{SHARED}/{case}.json")) {
        assert_eq!(text, shared, "{case}.json differs from the shared capture");
    }
    serde_json::from_str(&text).expect("valid JSON")
}

/// The frames of a capture, in the order they were written.
fn frames(case: &str) -> Vec<Frame> {
    let v = json(case);
    let frames = v["frames"].as_array().expect("a `frames` array");
    frames
        .iter()
        .map(|f| {
            let dir = match f["direction"].as_str().expect("direction") {
                "client->server" => Dir::ClientToServer,
                "server->client" => Dir::ServerToClient,
                other => panic!("direction {other:?}"),
            };
            let bytes = hex(f["hex"].as_str().expect("hex"));
            let frame = Frame {
                dir,
                opcode: f["opcode_value"].as_u64().expect("opcode_value") as u8,
                message_id: f["message_id"].as_u64().expect("message_id"),
                text: hex(f["text_headers_hex"].as_str().expect("text_headers_hex")),
                body: hex(f["body_hex"].as_str().expect("body_hex")),
                bytes,
            };
            // The decoded fields agree with the bytes.
            assert_eq!(frame.bytes[2] & 0x0f, frame.opcode, "{case}");
            assert_eq!(
                frame.bytes.len(),
                16 + frame.text.len() + frame.body.len(),
                "{case}"
            );
            assert_eq!(&frame.bytes[16..16 + frame.text.len()], &frame.text[..]);
            frame
        })
        .collect()
}

/// A frame with its channel number zeroed and any `~connect_to` value
/// replaced by `*`: the parts of a frame that do not depend on the run.
fn normalized(bytes: &[u8]) -> Vec<u8> {
    let thl = u16::from_be_bytes([bytes[12], bytes[13]]) as usize;
    let text = &bytes[16..16 + thl];
    let mut new_text = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        match line.strip_prefix(b"~connect_to:") {
            Some(_) => new_text.extend_from_slice(b"~connect_to:*\r\n"),
            None => new_text.extend_from_slice(line),
        }
    }
    let mut out = bytes[..16].to_vec();
    out[0] = 0;
    out[1] = 0;
    out[12..14].copy_from_slice(&(new_text.len() as u16).to_be_bytes());
    out.extend_from_slice(&new_text);
    out.extend_from_slice(&bytes[16 + thl..]);
    out
}

/// The raw bytes of a frame read from the engine.
fn raw_bytes(f: &RawFrame) -> Vec<u8> {
    let mut v = f.header.to_vec();
    v.extend_from_slice(&f.headers);
    v.extend_from_slice(&f.body);
    v
}

/// What the engine wrote is what the capture shows the original's peer wrote.
#[track_caller]
fn assert_wrote(got: &RawFrame, want: &Frame, what: &str) {
    assert_eq!(
        normalized(&raw_bytes(got)).escape_ascii().to_string(),
        normalized(&want.bytes).escape_ascii().to_string(),
        "{what}: the engine wrote a different frame"
    );
}

/// What the application received is the captured frame, untouched: opcode,
/// origin Application, message id, text headers byte for byte, body; on our
/// channel number.
#[track_caller]
fn assert_delivered(m: &Message, want: &Frame, channel: u16, what: &str) {
    assert!(m.is_from_application(), "{what}: {m:?}");
    assert_eq!(m.opcode() as u8, want.opcode, "{what}: {m:?}");
    assert_eq!(m.header.message_id, want.message_id, "{what}");
    assert_eq!(m.header.channel_number, channel, "{what}");
    assert_eq!(m.status(), Status::Success, "{what}");
    assert_eq!(
        m.text_headers.as_bytes(),
        &want.text[..],
        "{what}: text headers"
    );
    assert_eq!(m.body, want.body, "{what}: body");
}

/// The `channel_closed` report for `channel`, with its cause.
#[track_caller]
fn assert_closed(m: &Message, channel: u16, cause: Option<Status>) {
    assert_report(m, channel, Status::ChannelClosed);
    assert_eq!(m.close_cause(), cause, "{m:?}");
}

/// Resets the connection, as the original closes every socket (SO_LINGER 0).
fn reset(raw: RawStream) {
    let RawStream::Tcp(s) = &raw else {
        unreachable!("the captures are TCP")
    };
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(raw);
}

/// The engine reset the connection (SO_LINGER 0): not a FIN, nothing more
/// written. Under Wine (the Windows lane) a zero-linger close sometimes
/// reaches a reader in the same Wine as an end of stream (Wine 8 always,
/// Wine 10 once in 16 runs here), so there only "closed, with nothing more
/// written" can be checked.
#[track_caller]
fn expect_reset(raw: &mut RawStream, what: &str) {
    let mut buf = [0u8; 64];
    let r = std::io::Read::read(raw, &mut buf);
    let reset = matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    if cfg!(windows) && matches!(r, Ok(0)) {
        println!("{what}: reset read as end of stream here (Wine): only the close is checked");
        return;
    }
    assert!(reset, "{what}: expected a reset, got {r:?}");
}

/// The answer the echo applications of the captures give: the same message
/// with the opcode changed (`None`: no answer).
fn echo(op: OpCode) -> Option<OpCode> {
    match op {
        OpCode::HelloRequest => Some(OpCode::HelloResponse),
        OpCode::Request => Some(OpCode::Response),
        OpCode::ByeRequest => Some(OpCode::ByeResponse),
        _ => None,
    }
}

// ----- the engine as the server, a raw client playing the original ---------------------

/// An engine listening on loopback TCP, and the raw client connected to it.
struct Server {
    engine: Engine,
    group: ChannelGroup,
    raw: RawStream,
}

fn server() -> Server {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let port = tofu::testing::free_tcp_port().unwrap();
    listen(&engine, &group, &Address::tcp_server("127.0.0.1", port));
    let raw = RawStream::connect(&Address::tcp_client("127.0.0.1", port));
    Server { engine, group, raw }
}

impl Server {
    /// Replays `frames` from the client's side: writes each client frame,
    /// lets the echo application answer it, and reads each server frame,
    /// comparing it with the capture. Returns the server's channel number.
    #[track_caller]
    fn replay(&mut self, case: &str, frames: &[Frame]) -> u16 {
        let mut sch = None;
        for (i, f) in frames.iter().enumerate() {
            let what = format!("{case} frame {i} ({:?})", OpCode::from_raw(f.opcode));
            match f.dir {
                Dir::ClientToServer => {
                    self.raw.write_all(&f.bytes).unwrap();
                    let mut m = recv(&self.group);
                    let ch = *sch.get_or_insert(m.header.channel_number);
                    assert_delivered(&m, f, ch, &what);
                    if let Some(answer) = echo(m.opcode()) {
                        m.header.proto.opcode = answer;
                        self.group.post(m).expect("post the answer");
                    }
                }
                Dir::ServerToClient => {
                    let got = self.raw.read_frame();
                    assert_wrote(&got, f, &what);
                }
            }
        }
        sch.expect("the capture has a client frame")
    }
}

/// `case3`: text headers that are not UTF-8, lines without `:`, empty lines
/// and names, no final CRLF, empty sections — all delivered and echoed byte
/// for byte, as by the original's echo server; then a Bye handshake, ended by
/// the client's reset (the original's way), is an orderly end.
#[test]
fn case3_odd_text_headers_are_delivered_and_echoed_byte_for_byte() {
    let case = "case3-server-odd-text-headers";
    let frames = frames(case);
    assert!(frames.iter().any(|f| std::str::from_utf8(&f.text).is_err()));
    let mut s = server();
    let sch = s.replay(case, &frames);
    reset(s.raw);
    assert_closed(&recv(&s.group), sch, None);
    assert_eq!(s.engine.stats().invalid_frames, 0);
}

/// `case2-client-byesignal-idiom`: the original client aborts by writing its
/// application's ByeSignal (16 bytes, opcode 7) and then nothing more, keeping
/// the connection open. We deliver it, then close as after the peer's abort:
/// `channel_closed` with `~cause:peer_disconnected`, and a reset.
#[test]
fn case2_a_bye_signal_from_the_original_client_is_its_abort() {
    let case = "case2-client-byesignal-idiom";
    let frames = frames(case);
    let (last, before) = frames.split_last().unwrap();
    assert_eq!(last.opcode, OpCode::ByeSignal as u8);
    let mut s = server();
    let sch = s.replay(case, before);
    s.raw.write_all(&last.bytes).unwrap();
    let abort = recv(&s.group);
    assert_delivered(&abort, last, sch, "the ByeSignal");
    assert_closed(&recv(&s.group), sch, Some(Status::PeerDisconnected));
    expect_reset(&mut s.raw, case);
    let e = s
        .group
        .post(msg(&s.engine, sch, OpCode::Signal, b"late"))
        .unwrap_err();
    assert_eq!(e.error, tofu::Error::InvalidChannelNumber);
    assert_eq!(s.engine.stats().invalid_frames, 0);
}

/// `case2-client-byesignal-idiom` while we have messages queued for the
/// original client (it does not read: its receive buffer is small and full).
/// The ByeSignal comes first, then what was not written comes back with
/// `peer_disconnected` — the last ones posted, in order — then the report.
#[test]
fn case2_the_original_clients_abort_gives_back_what_we_had_queued() {
    // 24 MB, so that some is still queued when the abort comes: more than
    // loopback's socket buffers take, even where the 4 KiB receive buffer
    // asked for below does not hold them back (under Wine 10 all of the
    // 6 MB that this test used to post went out in about half of the runs).
    const N: u64 = 400;
    let case = "case2-client-byesignal-idiom";
    let frames = frames(case);
    let (last, before) = frames.split_last().unwrap();
    let engine = Engine::new(Options {
        channel_send_limit: 32 << 20,
        ..Options::default()
    })
    .unwrap();
    let group = engine.create_group().unwrap();
    let port = tofu::testing::free_tcp_port().unwrap();
    listen(&engine, &group, &Address::tcp_server("127.0.0.1", port));
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let to: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    sock.connect(&to.into()).unwrap();
    let mut s = Server {
        engine,
        group,
        raw: RawStream::Tcp(sock.into()).with_timeouts(),
    };
    let sch = s.replay(case, before);
    let mut first = None;
    for i in 0..N {
        // Not from the pool, which the engine needs to read the abort.
        let mut m = Message::new();
        m.header.channel_number = sch;
        m.header.proto.opcode = OpCode::Signal;
        m.header.message_id = 1000 + i;
        m.body = vec![0x5a; 60_000];
        let h = s.group.post(m).expect("under the send limit");
        first.get_or_insert(h.message_id);
    }
    s.raw.write_all(&last.bytes).unwrap();
    let abort = recv(&s.group);
    assert_delivered(&abort, last, sch, "the ByeSignal");
    let mut back = Vec::new();
    let report = loop {
        let m = recv(&s.group);
        if m.status() == Status::ChannelClosed {
            break m;
        }
        assert_returned(&m, OpCode::Signal, sch, Status::PeerDisconnected);
        back.push(m.header.message_id);
    };
    assert_closed(&report, sch, Some(Status::PeerDisconnected));
    assert!(
        !back.is_empty(),
        "a non-reading peer left messages queued; the engine wrote {} of the {} bytes posted",
        s.engine.stats().bytes_sent,
        N * 60_016
    );
    let suffix: Vec<u64> = (1000 + N - back.len() as u64..1000 + N).collect();
    assert_eq!(back, suffix, "the last ones posted come back, in order");
}

/// `case2-client-byesignal-bit6`: the original client aborts with bit 6 set:
/// nothing on the wire, a reset right after the Response arrived. A peer's
/// disconnect.
#[test]
fn case2_the_original_clients_bit6_abort_is_a_disconnect() {
    let case = "case2-client-byesignal-bit6";
    let frames = frames(case);
    assert!(frames.iter().all(|f| f.opcode != OpCode::ByeSignal as u8));
    let mut s = server();
    let sch = s.replay(case, &frames);
    reset(s.raw);
    assert_closed(&recv(&s.group), sch, Some(Status::PeerDisconnected));
}

/// The reverse of `case1-extra-*`: the original client's HelloRequest, which
/// our server application rejects with a ByeSignal. We write nothing and
/// reset — what the original client sees from the original's `bit6` rejection
/// (its `channel_closed` report), not the `idiom` one (an opcode-7 message on
/// a channel left open).
#[test]
fn case1_extra_our_rejection_resets_the_original_client() {
    for case in [
        "case1-extra-zigclient-vs-reject-idiom",
        "case1-extra-zigclient-vs-reject-bit6",
    ] {
        let frames = frames(case);
        let hello = &frames[0];
        assert_eq!(hello.dir, Dir::ClientToServer);
        let mut s = server();
        s.raw.write_all(&hello.bytes).unwrap();
        let mut m = recv(&s.group);
        let sch = m.header.channel_number;
        assert_delivered(&m, hello, sch, case);
        m.header.proto.opcode = OpCode::ByeSignal;
        s.group.post(m).unwrap();
        let back = recv(&s.group);
        assert_returned(&back, OpCode::ByeSignal, sch, Status::ChannelClosed);
        assert_closed(&recv(&s.group), sch, None);
        expect_reset(&mut s.raw, case);
    }
}

/// `case4-*`: first frames the original accepts (a Request before any hello,
/// `more` on the HelloRequest) or crashes on (opcode 12). We are stricter on
/// purpose (SPEC §3): the connection is closed silently — the application
/// never sees it — and counted; the engine serves the next one as usual.
#[test]
fn case4_first_frames_that_are_not_a_plain_hello_are_refused() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let port = tofu::testing::free_tcp_port().unwrap();
    listen(&engine, &group, &Address::tcp_server("127.0.0.1", port));
    let addr = Address::tcp_client("127.0.0.1", port);
    for case in [
        "case4-first-frame-a-request-first",
        "case4-first-frame-b-opcode12-first",
        "case4-first-frame-c-hello-more-bit",
    ] {
        let frames = frames(case);
        let first = &frames[0];
        assert_eq!(first.dir, Dir::ClientToServer);
        let before = engine.stats();
        let mut raw = RawStream::connect(&addr);
        // All the client frames at once, as a peer that does not wait would.
        let all: Vec<u8> = frames
            .iter()
            .filter(|f| f.dir == Dir::ClientToServer)
            .flat_map(|f| f.bytes.clone())
            .collect();
        raw.write_all(&all).unwrap();
        raw.expect_closed();
        eventually(case, || {
            let now = engine.stats();
            now.invalid_frames == before.invalid_frames + 1
                && now.silent_closes == before.silent_closes + 1
        });
        recv_nothing(&group, Duration::from_millis(20));
    }
    // Still serving: a proper client gets through.
    let client = engine.create_group().unwrap();
    let (cch, sch) = connect_pair(&engine, &client, &group, &addr);
    round_trip(&engine, &client, &group, cch, sch, b"after case4");
}

/// `case5-raw-client-vs-zig-server-bye`: a client that sends ByeRequest and
/// then keeps reading. Like the original, we write the ByeResponse and do not
/// close: the initiator closes. Its FIN is then the orderly end.
#[test]
fn case5_after_our_bye_response_the_initiator_closes() {
    let case = "case5-raw-client-vs-zig-server-bye";
    let frames = frames(case);
    let mut s = server();
    let sch = s.replay(case, &frames);
    // Not closed by us: a read waits (bounded) and finds nothing.
    let RawStream::Tcp(t) = &s.raw else {
        unreachable!()
    };
    t.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0u8; 1];
    let r = std::io::Read::read(&mut s.raw, &mut byte);
    assert!(
        matches!(&r, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the server keeps the connection open after its ByeResponse: {r:?}"
    );
    drop(s.raw); // a FIN
    assert_closed(&recv(&s.group), sch, None);
}

/// `case5-zig-client-*-vs-*-server`: the original client's graceful Bye —
/// also with its three Requests and the ByeRequest written back to back — and
/// its reset right after it read our ByeResponse. Every answer is written
/// before the ByeResponse, byte for byte as the original server (and this
/// project's CLI server, in the captures) wrote them; the reset is the
/// orderly end.
#[test]
fn case5_the_original_clients_graceful_bye() {
    for case in [
        "case5-zig-client-vs-rust-server",
        "case5-zig-client-graceful-vs-zig-server",
        "case5-zig-client-graceful-nowait-vs-zig-server",
        "case5-zig-client-graceful-nowait-vs-rust-server",
    ] {
        let frames = frames(case);
        assert_eq!(frames.last().unwrap().opcode, OpCode::ByeResponse as u8);
        let mut s = server();
        let sch = s.replay(case, &frames);
        reset(s.raw);
        assert_closed(&recv(&s.group), sch, None);
    }
}

// ----- the engine as the client, a raw server playing the original ---------------------

/// An engine's client group, and the raw server it connected to.
struct Client {
    engine: Engine,
    group: ChannelGroup,
    listener: TcpListener,
    port: u16,
}

fn client() -> Client {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    Client {
        engine,
        group,
        listener,
        port,
    }
}

impl Client {
    /// The captured frame as the application posts it on `channel` (0: the
    /// HelloRequest, to this client's raw server).
    fn post(&self, f: &Frame, channel: u16) -> u16 {
        let op = OpCode::from_raw(f.opcode).expect("a valid opcode");
        let mut m = self.engine.get(Allocation::Always).unwrap().unwrap();
        if op == OpCode::HelloRequest {
            Address::tcp_client("127.0.0.1", self.port)
                .format(&mut m)
                .unwrap();
        } else {
            m.header.proto.opcode = op;
            m.header.channel_number = channel;
            m.text_headers.set_raw(&f.text).unwrap();
        }
        m.header.message_id = f.message_id;
        m.body.extend_from_slice(&f.body);
        self.group.post(m).expect("post").channel_number
    }

    /// Replays `frames` from the server's side: the application posts each
    /// client frame (the engine writes it: compared with the capture), the raw
    /// server writes each server frame (the application receives it: compared
    /// with the capture). Returns the client's channel and the raw server.
    #[track_caller]
    fn replay(&self, case: &str, frames: &[Frame]) -> (u16, RawStream) {
        let mut cch = 0;
        let mut raw = None;
        for (i, f) in frames.iter().enumerate() {
            let what = format!("{case} frame {i} ({:?})", OpCode::from_raw(f.opcode));
            match f.dir {
                Dir::ClientToServer => {
                    cch = self.post(f, cch);
                    let raw = raw.get_or_insert_with(|| {
                        let s = self.listener.accept().unwrap().0;
                        RawStream::Tcp(s).with_timeouts()
                    });
                    let got = raw.read_frame();
                    assert_wrote(&got, f, &what);
                }
                Dir::ServerToClient => {
                    let raw = raw.as_mut().expect("connected");
                    raw.write_all(&f.bytes).unwrap();
                    let m = recv(&self.group);
                    assert_delivered(&m, f, cch, &what);
                }
            }
        }
        (cch, raw.expect("connected"))
    }
}

/// `case1-server-reject-idiom` (and the original client's view of it,
/// `case1-extra-zigclient-vs-reject-idiom`): the original server rejects a
/// HelloRequest the documented way — our HelloRequest comes back with opcode
/// 7, its channel, our message id and headers, and the connection stays open.
/// Our client application sees the rejection itself, then the close, with
/// `~cause:peer_disconnected`; we reset the connection.
#[test]
fn case1_a_hello_rejected_by_the_original_server() {
    for case in [
        "case1-server-reject-idiom",
        "case1-extra-zigclient-vs-reject-idiom",
    ] {
        let frames = frames(case);
        // The capture goes on past the rejection (a probe Request from the
        // raw client); a client of ours has closed by then.
        let n = frames
            .iter()
            .position(|f| f.opcode == OpCode::ByeSignal as u8)
            .expect("the rejection");
        assert_eq!(frames[n].dir, Dir::ServerToClient);
        let c = client();
        let (cch, mut raw) = c.replay(case, &frames[..=n]);
        assert_closed(&recv(&c.group), cch, Some(Status::PeerDisconnected));
        expect_reset(&mut raw, case);
        recv_nothing(&c.group, Duration::from_millis(20));
    }
}

/// `case1-server-reject-bit6` (and `case1-extra-zigclient-vs-reject-bit6`):
/// the original server rejects with bit 6 set: nothing written, a reset. Our
/// client sees the close with `~cause:peer_disconnected` (the original's
/// client sees a bare `channel_closed`).
#[test]
fn case1_a_hello_rejected_by_the_original_server_with_bit6() {
    for case in [
        "case1-server-reject-bit6",
        "case1-extra-zigclient-vs-reject-bit6",
    ] {
        let frames = frames(case);
        assert_eq!(frames.len(), 1, "only the HelloRequest travels");
        let c = client();
        let (cch, raw) = c.replay(case, &frames);
        reset(raw);
        assert_closed(&recv(&c.group), cch, Some(Status::PeerDisconnected));
    }
}

/// `case5-rust-client-vs-zig-server-*` and `case5-zig-client-vs-raw-server-bye`:
/// our client's graceful Bye against the original server, which writes its
/// ByeResponse and waits. We write what this project's client (and the
/// original client) wrote in the captures, read the ByeResponse, and close
/// with a FIN — where the original client resets, and where this project's
/// earlier client did in the captures (SPEC §5.5: no reset after a completed
/// handshake).
#[test]
fn case5_our_graceful_bye_against_the_original_server() {
    for case in [
        "case5-rust-client-vs-zig-server-tofubench",
        "case5-rust-client-vs-zig-server-zigedge",
        "case5-zig-client-vs-raw-server-bye",
    ] {
        let frames = frames(case);
        assert_eq!(frames.last().unwrap().opcode, OpCode::ByeResponse as u8);
        let c = client();
        let (cch, mut raw) = c.replay(case, &frames);
        assert_closed(&recv(&c.group), cch, None);
        let mut buf = [0u8; 16];
        let r = std::io::Read::read(&mut raw, &mut buf);
        assert!(
            matches!(r, Ok(0)),
            "{case}: a FIN after the handshake, got {r:?}"
        );
    }
}

// ----- the tables ------------------------------------------------------------------

/// `case6`: the original's status numbers and opcode table are ours.
#[test]
fn case6_status_and_opcode_tables_match() {
    let v = json("case6-status-and-opcode-tables");
    let statuses = v["AmpeStatus"].as_array().unwrap();
    assert_eq!(statuses.len(), 32);
    for s in statuses {
        let value = s["value"].as_u64().unwrap() as u8;
        let name = s["name"].as_str().unwrap();
        let ours = Status::from_raw(value);
        assert_eq!(ours as u8, value);
        // One name is misspelt in the original's source.
        let name = if name == "invelid_mchn_group" {
            "invalid_channel_group"
        } else {
            name
        };
        assert_eq!(ours.name(), name, "status {value}");
    }
    assert_eq!(Status::from_raw(200), Status::UnknownError);
    let opcodes = v["OpCode"].as_array().unwrap();
    assert_eq!(opcodes.len(), 10);
    for o in opcodes {
        let value = o["value"].as_u64().unwrap() as u8;
        let ours = OpCode::from_raw(value).expect("a valid opcode");
        assert_eq!(format!("{ours:?}"), o["name"].as_str().unwrap());
        let role = format!("{:?}", ours.role()).to_lowercase();
        assert_eq!(role, o["role"].as_str().unwrap(), "{ours:?}");
        let kind = format!("{:?}", ours.kind()).to_lowercase();
        assert_eq!(kind, o["type"].as_str().unwrap(), "{ours:?}");
    }
    for raw in 10..16 {
        assert_eq!(OpCode::from_raw(raw), None);
    }
}

/// Every capture in the data directory is replayed above.
#[test]
fn every_case_is_replayed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(DATA)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, CASES);
    let source = include_str!("original_edges.rs");
    for case in CASES {
        let uses = source.matches(&format!("\"{case}\"")).count();
        assert!(uses >= 2, "{case} is listed but not replayed by any test");
    }
}
