//! Deterministic tests of the channel core: two cores back to back over
//! in-memory byte pipes ([`Pair`]). No sockets, no threads, no clock.

use super::channel::{Bye, ChannelCore, Phase, Posted, listener_post};
use super::pair::{CLIENT, Pair, SERVER, Side};
use std::time::{Duration, Instant};

use super::send::Released;
use super::{Cause, Close, End, Flow, Timeouts};
use crate::error::Status;
use crate::message::{Message, More, OpCode, Origin};
use crate::wire::{self, HEADER_LEN};

// ----- helpers ---------------------------------------------------------------

/// A raw frame as a (possibly hostile) peer would write it.
fn raw_frame(proto: u8, channel: u16, id: u64, text: &[u8], body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&channel.to_be_bytes());
    f.push(proto);
    f.push(0);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&(text.len() as u16).to_be_bytes());
    f.extend_from_slice(&(body.len() as u16).to_be_bytes());
    f.extend_from_slice(text);
    f.extend_from_slice(body);
    f
}

fn encoded(m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    wire::encode_to_vec(m, &mut v).unwrap();
    v
}

fn ids(msgs: &[Message]) -> Vec<u64> {
    msgs.iter().map(|m| m.header.message_id).collect()
}

fn ops(msgs: &[Message]) -> Vec<OpCode> {
    msgs.iter().map(|m| m.opcode()).collect()
}

/// Posts `n` Signals with ids `first..first + n` from `side`.
fn post_signals(p: &mut Pair, side: Side, first: u64, n: u64) {
    for id in first..first + n {
        let m = p.peer(side).message(OpCode::Signal, id, &id.to_be_bytes());
        assert_eq!(p.peer(side).post(m), Posted::Queued);
    }
}

fn closed(p: &mut Pair, side: Side) -> Close {
    p.peer(side).closed.expect("channel closed")
}

/// Takes `n` messages out of `peer`'s pool (as a busy application would).
fn hold(peer: &super::pair::Peer, n: usize) -> Vec<Message> {
    (0..n)
        .map(|_| peer.pool.get(crate::message::Allocation::PoolOnly).unwrap())
        .collect()
}

/// The server's channel right after the HelloRequest arrived (not answered).
fn greeted() -> Pair {
    let mut p = Pair::new(16);
    p.settle();
    assert_eq!(ops(&p.server.delivered), [OpCode::HelloRequest]);
    p
}

// ----- hello, accept, reject -------------------------------------------------

#[test]
fn hello_is_delivered_and_answered() {
    let mut p = Pair::new(16);
    p.settle();
    let hello = p.server.take_delivered();
    assert_eq!(hello.len(), 1);
    assert_eq!(hello[0].opcode(), OpCode::HelloRequest);
    assert_eq!(
        hello[0].channel_number(),
        SERVER,
        "the receiver's own number"
    );
    assert!(hello[0].is_from_application());
    assert_eq!(p.server.core.phase(), Phase::Open);
    assert!(p.server.core.seen());
    let answer = p.server.message(OpCode::HelloResponse, Pair::HELLO_ID, b"");
    p.server.post(answer);
    p.settle();
    let reply = p.client.take_delivered();
    assert_eq!(ops(&reply), [OpCode::HelloResponse]);
    assert_eq!(reply[0].channel_number(), CLIENT);
    assert_eq!(reply[0].header.message_id, Pair::HELLO_ID);
    assert_eq!(p.client.core.first_id(), Pair::HELLO_ID);
    assert_eq!(p.server.core.first_id(), Pair::HELLO_ID);
}

#[test]
fn nothing_is_written_before_the_connect_completes() {
    let mut hello = Message::new();
    hello.header.proto.opcode = OpCode::HelloRequest;
    let mut core = ChannelCore::client(3, hello, Timeouts::default());
    assert_eq!(core.phase(), Phase::Resolving);
    assert!(
        core.seen(),
        "a client channel is the application's from the start"
    );
    assert!(!core.wants_write());
    core.handle_connecting(Instant::now());
    assert!(!core.wants_write());
    // Posts made while connecting wait behind the HelloRequest.
    let m = Message::new();
    assert_eq!(core.handle_post(m, Instant::now()), Posted::Queued);
    core.handle_connected();
    assert!(core.wants_write());
    assert_eq!(core.queued(), 2);
}

#[test]
fn first_frame_other_than_hello_closes_silently() {
    let mut p = Pair::new(16);
    let flow = p.server.read(&raw_frame(0, 9, 1, b"", b"hi"));
    let close = Close::new(Status::InvalidMessage, false, Cause::NotHello);
    assert_eq!(flow, Flow::Close(close));
    assert!(close.is_invalid_frame() && close.is_silent());
    assert!(
        p.server.delivered.is_empty(),
        "the application never hears of it"
    );
}

#[test]
fn peer_gone_before_hello_is_a_silent_close() {
    let mut p = Pair::new(16);
    let close = p.server.end(End::Eof);
    assert_eq!(close.cause, Cause::LeftBeforeHello);
    assert!(close.is_silent());
    assert_eq!(close.status, Status::PeerDisconnected);
    assert!(p.server.delivered.is_empty());
}

#[test]
fn half_a_hello_then_gone_is_a_silent_close() {
    let mut p = Pair::new(16);
    p.client.write_all();
    p.transfer(Side::Client, 10, 10);
    assert!(p.server.delivered.is_empty());
    assert!(p.server.end(End::Disconnect).is_silent());
}

#[test]
fn reject_with_bye_signal_gives_it_back_and_closes() {
    let mut p = greeted();
    let reject = p.server.message(OpCode::ByeSignal, 5, b"");
    let posted = p.server.post(reject);
    assert_eq!(
        posted,
        Posted::Close(Close::new(Status::ChannelClosed, true, Cause::Abort))
    );
    let back = p.server.take_delivered();
    assert_eq!(ops(&back), [OpCode::HelloRequest, OpCode::ByeSignal]);
    assert!(back[1].is_from_engine());
    assert_eq!(back[1].status(), Status::ChannelClosed);
    // The client sees the transport end without a handshake.
    assert_eq!(p.client.end(End::Eof).status, Status::PeerDisconnected);
    let unsent = p.client.take_delivered();
    assert!(unsent.is_empty(), "the HelloRequest was written");
}

#[test]
fn hello_split_at_every_offset_arrives_once() {
    let mut hello = Message::new();
    hello.header.proto.opcode = OpCode::HelloRequest;
    hello.header.message_id = 77;
    hello
        .text_headers
        .append("~connect_to", "tcp|127.0.0.1|9")
        .unwrap();
    hello.body.extend_from_slice(b"greetings");
    let bytes = encoded(&hello);
    for cut in 0..=bytes.len() {
        let mut p = Pair::new(16);
        p.server.read(&bytes[..cut]);
        p.server.read(&bytes[cut..]);
        assert_eq!(p.server.delivered.len(), 1, "cut at {cut}");
        let got = &p.server.delivered[0];
        assert_eq!(got.header.message_id, 77);
        assert_eq!(got.text_headers.get("~connect_to"), Some("tcp|127.0.0.1|9"));
        assert_eq!(got.body, b"greetings");
    }
}

// ----- data ------------------------------------------------------------------

#[test]
fn data_both_ways_in_order() {
    let mut p = Pair::connected(64);
    for round in 0..10u64 {
        post_signals(&mut p, Side::Client, 1000 + round * 10, 10);
        post_signals(&mut p, Side::Server, 5000 + round * 10, 10);
        p.settle();
    }
    let want_s: Vec<u64> = (1000..1100).collect();
    let want_c: Vec<u64> = (5000..5100).collect();
    assert_eq!(ids(&p.server.take_delivered()), want_s);
    assert_eq!(ids(&p.client.take_delivered()), want_c);
    assert_eq!(p.client.core.take_received(), 101, "the HelloResponse too");
}

#[test]
fn request_and_response_keep_their_id_headers_and_body() {
    let mut p = Pair::connected(16);
    let mut req = p.client.message(OpCode::Request, 42, b"ping");
    req.text_headers.append("op", "echo").unwrap();
    p.client.post(req);
    p.settle();
    let mut got = p.server.take_delivered();
    assert_eq!(got.len(), 1);
    let mut r = got.pop().unwrap();
    assert_eq!((r.opcode(), r.header.message_id), (OpCode::Request, 42));
    assert_eq!(r.text_headers.get("op"), Some("echo"));
    assert_eq!(r.body, b"ping");
    r.header.proto.opcode = OpCode::Response;
    r.body.extend_from_slice(b"-pong");
    p.server.post(r);
    p.settle();
    let back = p.client.take_delivered();
    assert_eq!(back[0].opcode(), OpCode::Response);
    assert_eq!(back[0].header.message_id, 42);
    assert_eq!(back[0].body, b"ping-pong");
    assert_eq!(back[0].channel_number(), CLIENT);
}

#[test]
fn more_streams_arrive_in_order_with_their_flags() {
    let mut p = Pair::connected(64);
    for i in 0..20u8 {
        let mut m = p.server.message(OpCode::Response, 9, &[i]);
        m.header.proto.more = if i < 19 { More::More } else { More::Last };
        p.server.post(m);
    }
    p.settle();
    let got = p.client.take_delivered();
    assert_eq!(got.len(), 20);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.header.message_id, 9);
        assert_eq!(m.body, [i as u8]);
        assert_eq!(m.has_more(), i < 19);
    }
}

#[test]
fn frames_split_at_every_offset_decode_the_same() {
    let mut p0 = Pair::connected(64);
    post_signals(&mut p0, Side::Client, 1, 3);
    p0.client.write_all();
    let bytes: Vec<u8> = p0.client.pipe.drain(..).collect();
    for cut in 0..=bytes.len() {
        let mut p = Pair::connected(64);
        p.server.read(&bytes[..cut]);
        p.server.read(&bytes[cut..]);
        assert_eq!(ids(&p.server.delivered), [1, 2, 3], "cut at {cut}");
    }
}

#[test]
fn one_byte_reads_decode_everything() {
    let mut p = Pair::connected(64);
    post_signals(&mut p, Side::Client, 1, 5);
    p.client.write_all();
    p.transfer(Side::Client, usize::MAX, 1);
    assert_eq!(ids(&p.server.delivered), [1, 2, 3, 4, 5]);
}

#[test]
fn partial_writes_at_every_offset_deliver_every_frame_once() {
    let mut p0 = Pair::connected(64);
    post_signals(&mut p0, Side::Client, 1, 3);
    p0.client.write_all();
    let total = p0.client.pipe.len();
    for limit in 1..=total {
        let mut p = Pair::connected(64);
        post_signals(&mut p, Side::Client, 1, 3);
        let mut writes = 0;
        let before = p.client.frames_written;
        while p.client.core.wants_write() {
            assert!(p.client.write(limit) > 0);
            writes += 1;
            p.transfer(Side::Client, usize::MAX, 7);
        }
        assert_eq!(writes, total.div_ceil(limit), "limit {limit} total {total}");
        assert_eq!(p.client.frames_written - before, 3);
        assert_eq!(
            ids(&p.server.delivered),
            [1, 2, 3],
            "writes of {limit} bytes"
        );
    }
}

#[test]
fn many_frames_in_one_read() {
    let mut p = Pair::connected(64);
    post_signals(&mut p, Side::Client, 1, 50);
    p.client.write_all();
    assert_eq!(
        p.transfer(Side::Client, usize::MAX, 1 << 20),
        50 * (HEADER_LEN + 8)
    );
    assert_eq!(p.server.delivered.len(), 50);
}

#[test]
fn largest_sections_pass_intact() {
    let mut p = Pair::connected(16);
    let mut m = p.client.message(OpCode::Request, 3, &vec![0xa5; 65535]);
    let value = "v".repeat(65535 - 4); // "k:" + value + "\r\n"
    m.text_headers.append("k", &value).unwrap();
    assert_eq!(m.text_headers.byte_len(), 65535);
    p.client.post(m);
    p.settle();
    let got = p.server.take_delivered();
    assert_eq!(got[0].body.len(), 65535);
    assert_eq!(got[0].text_headers.get("k").map(str::len), Some(65531));
}

#[test]
fn received_frames_carry_the_local_number_and_application_origin() {
    let mut p = Pair::connected(16);
    // The peer claims channel 999 and sets the engine-origin bit.
    p.server.read(&raw_frame(0x12, 999, 5, b"", b"x"));
    let got = p.server.take_delivered();
    assert_eq!(got[0].channel_number(), SERVER);
    assert_eq!(got[0].header.proto.origin, Origin::Application);
    assert_eq!(got[0].opcode(), OpCode::Signal);
}

#[test]
fn a_status_from_the_peer_is_kept() {
    let mut p = Pair::connected(16);
    let mut f = raw_frame(1, 1, 5, b"", b"");
    f[3] = 17;
    p.server.read(&f);
    assert_eq!(p.server.delivered[0].header.status, 17);
}

// ----- graceful Bye ----------------------------------------------------------

/// `side` sends a ByeRequest; the other answers; the initiator closes on the
/// answer and the responder on the end of stream that follows.
fn graceful_bye_from(side: Side) {
    let mut p = Pair::connected(16);
    let other = side.other();
    post_signals(&mut p, side, 10, 1);
    let bye = p.peer(side).message(OpCode::ByeRequest, 11, b"");
    assert_eq!(p.peer(side).post(bye), Posted::Queued);
    assert_eq!(p.peer(side).core.bye(), Bye::RequestQueued);
    p.settle();
    assert_eq!(p.peer(side).core.bye(), Bye::RequestWritten);
    let got = p.peer(other).take_delivered();
    assert_eq!(ops(&got), [OpCode::Signal, OpCode::ByeRequest]);
    let mut answer = got.into_iter().nth(1).unwrap();
    answer.header.proto.opcode = OpCode::ByeResponse;
    assert_eq!(p.peer(other).post(answer), Posted::Queued);
    p.settle();
    assert_eq!(p.peer(other).core.bye(), Bye::ResponseWritten);
    let done = Close::new(Status::ChannelClosed, true, Cause::Handshake);
    assert_eq!(closed(&mut p, side), done);
    assert_eq!(ops(&p.peer(side).take_delivered()), [OpCode::ByeResponse]);
    // The initiator's close ends the stream: the handshake is complete.
    let end = p.peer(other).end(End::Eof);
    assert_eq!(end.status, Status::ChannelClosed);
}

#[test]
fn graceful_bye_from_the_client() {
    graceful_bye_from(Side::Client);
}

#[test]
fn graceful_bye_from_the_server() {
    graceful_bye_from(Side::Server);
}

#[test]
fn crossing_bye_requests_close_both_as_a_handshake() {
    let mut p = Pair::connected(16);
    post_signals(&mut p, Side::Client, 1, 2);
    post_signals(&mut p, Side::Server, 100, 2);
    for side in [Side::Client, Side::Server] {
        let bye = p.peer(side).message(OpCode::ByeRequest, 50, b"");
        p.peer(side).post(bye);
        p.peer(side).write_all();
    }
    p.settle();
    let done = Close::new(Status::ChannelClosed, true, Cause::Handshake);
    assert_eq!(closed(&mut p, Side::Client), done);
    assert_eq!(closed(&mut p, Side::Server), done);
    assert_eq!(
        ops(&p.client.delivered),
        [OpCode::Signal, OpCode::Signal, OpCode::ByeRequest]
    );
    assert_eq!(ids(&p.server.delivered), [1, 2, 50]);
}

/// The harness resets the way Windows does (the peer's unread bytes are
/// destroyed), so the crossing case above would lose the other side's
/// frames if a completed handshake closed with a reset; an abort does lose
/// them, as SPEC §5.5 allows.
#[test]
fn an_abort_destroys_what_the_peer_has_not_read_yet() {
    let mut p = Pair::connected(16);
    post_signals(&mut p, Side::Client, 1, 3);
    p.client.write_all();
    let abort = p.client.message(OpCode::ByeSignal, 9, b"");
    let Posted::Close(close) = p.client.post(abort) else {
        panic!("a ByeSignal closes");
    };
    assert!(!close.is_graceful(), "an abort resets");
    p.settle();
    assert!(p.server.delivered.is_empty(), "the reset destroyed them");
}

#[test]
fn nothing_may_follow_a_bye_request() {
    let mut p = Pair::connected(16);
    let bye = p.client.message(OpCode::ByeRequest, 1, b"");
    p.client.post(bye);
    for op in [
        OpCode::Request,
        OpCode::Signal,
        OpCode::ByeRequest,
        OpCode::ByeResponse,
    ] {
        let m = p.client.message(op, 2, b"late");
        assert_eq!(p.client.post(m), Posted::GivenBack);
    }
    let back = p.client.take_delivered();
    assert_eq!(back.len(), 4);
    assert!(
        back.iter()
            .all(|m| m.is_from_engine() && m.status() == Status::NotAllowed)
    );
    assert_eq!(p.client.core.queued(), 1, "only the ByeRequest");
}

#[test]
fn nothing_may_follow_a_bye_response() {
    let mut p = Pair::connected(16);
    let bye = p.server.message(OpCode::ByeResponse, 1, b"");
    p.server.post(bye);
    assert_eq!(p.server.core.bye(), Bye::ResponseQueued);
    let m = p.server.message(OpCode::Response, 2, b"");
    assert_eq!(p.server.post(m), Posted::GivenBack);
    assert_eq!(p.server.delivered[0].status(), Status::NotAllowed);
}

#[test]
fn a_bye_signal_is_always_allowed() {
    let mut p = Pair::connected(16);
    let bye = p.client.message(OpCode::ByeRequest, 1, b"");
    p.client.post(bye);
    let abort = p.client.message(OpCode::ByeSignal, 2, b"");
    assert!(matches!(p.client.post(abort), Posted::Close(_)));
    // The ByeSignal comes back first, then the unsent ByeRequest.
    let back = p.client.take_delivered();
    assert_eq!(ops(&back), [OpCode::ByeSignal, OpCode::ByeRequest]);
    assert!(back.iter().all(|m| m.status() == Status::ChannelClosed));
}

#[test]
fn the_handshake_state_changes_when_the_frame_is_written() {
    let mut p = Pair::connected(16);
    post_signals(&mut p, Side::Client, 1, 1);
    let bye = p.client.message(OpCode::ByeRequest, 2, b"");
    p.client.post(bye);
    // The Signal and half the ByeRequest.
    p.client.write(HEADER_LEN + 8 + HEADER_LEN / 2);
    assert_eq!(p.client.core.bye(), Bye::RequestQueued);
    p.client.write(usize::MAX);
    assert_eq!(p.client.core.bye(), Bye::RequestWritten);
}

#[test]
fn end_of_stream_before_our_bye_is_written_is_a_disconnect() {
    let mut p = Pair::connected(16);
    let bye = p.client.message(OpCode::ByeRequest, 1, b"");
    p.client.post(bye);
    let close = p.client.end(End::Eof);
    assert_eq!(
        close,
        Close::new(Status::PeerDisconnected, true, Cause::ReadEnded)
    );
    let back = p.client.take_delivered();
    assert_eq!(ops(&back), [OpCode::ByeRequest]);
    assert_eq!(back[0].status(), Status::PeerDisconnected);
}

#[test]
fn a_crash_after_our_bye_request_is_not_a_goodbye() {
    // SPEC §5.5: the stream ends after our ByeRequest was written but before
    // its ByeResponse was read — the peer crashed or aborted.
    for (end, status) in [
        (End::Eof, Status::PeerDisconnected),
        (End::Disconnect, Status::PeerDisconnected),
        (End::Failed, Status::RecvFailed),
    ] {
        let mut p = Pair::connected(16);
        let bye = p.client.message(OpCode::ByeRequest, 1, b"");
        p.client.post(bye);
        p.client.write_all();
        let close = p.client.end(end);
        assert_eq!(close.status, status, "{end:?}");
        assert_eq!(close.report_cause(), Some(status), "the report says why");
        assert!(!close.is_graceful());
    }
}

#[test]
fn the_end_after_our_bye_response_is_the_normal_end() {
    // Our ByeResponse is written: a FIN — or the reset the original tofu
    // sends when it reads a ByeResponse — ends the handshake in order.
    for end in [End::Eof, End::Disconnect, End::Failed] {
        let mut p = Pair::connected(16);
        let bye = p.client.message(OpCode::ByeRequest, 1, b"");
        p.client.post(bye);
        p.settle();
        let mut answer = p.server.take_delivered().pop().unwrap();
        answer.header.proto.opcode = OpCode::ByeResponse;
        p.server.post(answer);
        p.server.write_all();
        let close = p.server.end(end);
        assert_eq!(close.status, Status::ChannelClosed, "{end:?}");
        assert_eq!(close.report_cause(), None);
        assert!(close.is_graceful());
    }
}

#[test]
fn close_causes_say_how_a_channel_ended() {
    let orderly = [
        Close::new(Status::ChannelClosed, true, Cause::Handshake),
        Close::new(Status::ChannelClosed, true, Cause::Abort),
        Close::new(Status::ChannelClosed, false, Cause::Local),
        Close::new(Status::ChannelClosed, true, Cause::ReadEnded),
    ];
    for c in orderly {
        assert_eq!(c.report_cause(), None, "{c:?}");
    }
    let failed = [
        (
            Close::new(Status::PeerDisconnected, true, Cause::ReadEnded),
            Status::PeerDisconnected,
        ),
        (
            Close::new(Status::SendFailed, true, Cause::WriteFailed),
            Status::SendFailed,
        ),
        (
            Close::new(Status::InvalidMessage, true, Cause::InvalidFrame),
            Status::InvalidMessage,
        ),
        (
            Close::new(Status::ConnectFailed, true, Cause::ConnectFailed),
            Status::ConnectFailed,
        ),
        (
            Close::new(Status::CommunicationFailed, true, Cause::ByeTimeout),
            Status::CommunicationFailed,
        ),
    ];
    for (c, cause) in failed {
        assert_eq!(c.report_cause(), Some(cause), "{c:?}");
        assert!(!c.is_graceful());
    }
    // Only a completed handshake closes with a FIN; an abort resets.
    assert!(orderly[0].is_graceful());
    assert!(!orderly[1].is_graceful());
}

// ----- timeouts --------------------------------------------------------------

fn timeouts(hello: u64, bye: u64) -> Timeouts {
    Timeouts {
        hello: Some(Duration::from_secs(hello)),
        bye: Some(Duration::from_secs(bye)),
        lookup: Some(Duration::from_secs(3)),
        idle: None,
    }
}

#[test]
fn a_silent_accepted_connection_times_out_silently() {
    let mut p = Pair::with_timeouts(16, 16, timeouts(10, 10));
    let start = p.server.now;
    assert_eq!(
        p.server.core.poll_timeout(),
        Some(start + Duration::from_secs(10))
    );
    p.advance(Duration::from_secs(9));
    assert!(p.server.closed.is_none());
    p.advance(Duration::from_secs(1));
    let close = p.server.closed.expect("timed out");
    assert_eq!(close.cause, Cause::HelloTimeout);
    assert!(close.is_silent(), "the application never saw the channel");
    assert!(p.server.delivered.is_empty());
}

#[test]
fn half_a_hello_does_not_stop_the_hello_timeout() {
    let mut p = Pair::with_timeouts(16, 16, timeouts(5, 10));
    p.client.write_all();
    p.transfer(Side::Client, HEADER_LEN / 2, 1 << 16);
    p.advance(Duration::from_secs(5));
    assert_eq!(p.server.closed.map(|c| c.cause), Some(Cause::HelloTimeout));
}

#[test]
fn a_hello_in_time_clears_the_hello_timeout() {
    let mut p = Pair::with_timeouts(16, 16, timeouts(5, 10));
    p.settle();
    assert_eq!(p.server.core.poll_timeout(), None);
    p.advance(Duration::from_secs(3600));
    assert!(p.server.closed.is_none() && p.client.closed.is_none());
}

#[test]
fn an_unanswered_bye_request_aborts_after_the_bye_timeout() {
    let mut p = Pair::connected_with(16, timeouts(5, 7));
    post_signals(&mut p, Side::Client, 1, 2);
    let bye = p.client.message(OpCode::ByeRequest, 3, b"");
    p.client.post(bye);
    assert_eq!(
        p.client.core.poll_timeout(),
        Some(p.client.now + Duration::from_secs(7))
    );
    // The peer never reads: nothing is written beyond the socket buffer.
    // (Bytes that did move count the timeout again from when it fired.)
    p.client.write(HEADER_LEN + 8);
    p.advance(Duration::from_secs(6));
    assert!(p.client.closed.is_none());
    p.advance(Duration::from_secs(1));
    assert!(p.client.closed.is_none(), "bytes moved: re-armed");
    p.advance(Duration::from_secs(6));
    assert!(p.client.closed.is_none());
    p.advance(Duration::from_secs(1));
    let close = p.client.closed.expect("aborted");
    assert_eq!(close.cause, Cause::ByeTimeout);
    assert_eq!(close.report_cause(), Some(Status::CommunicationFailed));
    // What was not written comes back with the timeout's status.
    let back: Vec<&Message> = p
        .client
        .delivered
        .iter()
        .filter(|m| m.is_from_engine())
        .collect();
    assert_eq!(
        back.iter().map(|m| m.header.message_id).collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(
        back.iter()
            .all(|m| m.status() == Status::CommunicationFailed)
    );
}

#[test]
fn a_bye_request_behind_a_draining_backlog_waits_as_long_as_bytes_move() {
    // A slow link: the backlog before the ByeRequest takes longer than the
    // bye timeout to write, but it keeps moving, so the close stays graceful.
    let mut p = Pair::connected_with(16, timeouts(5, 7));
    for id in 1..=30u64 {
        let m = p.client.message(OpCode::Signal, id, &[9; 1000]);
        assert_eq!(p.client.post(m), Posted::Queued);
    }
    let bye = p.client.message(OpCode::ByeRequest, 31, b"");
    p.client.post(bye);
    // 1 kB every 4 s: 30 frames take about 120 s, far past the 7 s timeout.
    let mut steps = 0;
    while p.client.core.bye() == Bye::RequestQueued {
        p.client.write(1000);
        p.advance(Duration::from_secs(4));
        assert!(p.client.closed.is_none(), "aborted while bytes were moving");
        steps += 1;
    }
    assert!(steps >= 30, "{steps} steps");
    // Written 4 s ago: the peer has at least 7 s from then to answer (at
    // most twice that), and does not.
    p.advance(Duration::from_secs(2));
    assert!(p.client.closed.is_none(), "at least the bye timeout");
    let mut waited = 6;
    while p.client.closed.is_none() && waited < 20 {
        p.advance(Duration::from_secs(1));
        waited += 1;
    }
    assert!(waited <= 14, "at most twice the bye timeout ({waited} s)");
    assert_eq!(p.client.closed.map(|c| c.cause), Some(Cause::ByeTimeout));
}

#[test]
fn an_answered_bye_request_never_times_out() {
    let mut p = Pair::with_timeouts(16, 16, timeouts(5, 7));
    p.settle();
    let bye = p.client.message(OpCode::ByeRequest, 3, b"");
    p.client.post(bye);
    p.settle();
    let mut answer = p.server.take_delivered().pop().unwrap();
    assert_eq!(answer.opcode(), OpCode::ByeRequest);
    answer.header.proto.opcode = OpCode::ByeResponse;
    p.server.post(answer);
    p.settle();
    assert_eq!(p.client.closed.map(|c| c.cause), Some(Cause::Handshake));
    p.advance(Duration::from_secs(60));
    assert_eq!(p.client.closed.map(|c| c.cause), Some(Cause::Handshake));
}

#[test]
fn no_timeouts_means_waiting_forever() {
    let none = Timeouts {
        hello: None,
        bye: None,
        lookup: None,
        idle: None,
    };
    let mut p = Pair::with_timeouts(16, 16, none);
    assert_eq!(p.server.core.poll_timeout(), None);
    p.advance(Duration::from_secs(1 << 30));
    assert!(p.server.closed.is_none());
    assert_eq!(p.server.core.take_new_deadline(), None);
}

#[test]
fn a_new_deadline_is_reported_once() {
    let mut core = ChannelCore::accepted(4, timeouts(5, 5), Instant::now());
    assert!(core.take_new_deadline().is_some());
    assert_eq!(core.take_new_deadline(), None);
    assert_eq!(
        core.handle_timeout(Instant::now(), false),
        None,
        "not due yet"
    );
}

#[test]
fn read_errors_map_to_statuses() {
    for (end, status) in [
        (End::Eof, Status::PeerDisconnected),
        (End::Disconnect, Status::PeerDisconnected),
        (End::Failed, Status::RecvFailed),
    ] {
        let mut p = Pair::connected(16);
        assert_eq!(p.client.end(end).status, status, "{end:?}");
    }
}

#[test]
fn write_failures_give_back_what_was_not_written() {
    for (end, status) in [
        (End::Disconnect, Status::PeerDisconnected),
        (End::Failed, Status::SendFailed),
    ] {
        let mut p = Pair::connected(16);
        post_signals(&mut p, Side::Client, 1, 3);
        p.client.write(HEADER_LEN + 8 + 1);
        let close = p.client.core.handle_write_failed(end);
        assert_eq!(close.status, status);
        p.client.core.give_back_unsent(&close);
        let mut back = Vec::new();
        while let Some(m) = p.client.core.poll_delivery() {
            back.push(m);
        }
        assert_eq!(
            ids(&back),
            [2, 3],
            "the partly written frame comes back too"
        );
        assert!(
            back.iter()
                .all(|m| m.status() == status && m.is_from_engine())
        );
    }
}

// ----- ByeSignal and abort accounting ----------------------------------------

#[test]
fn bye_signal_gives_back_itself_then_everything_unsent() {
    let mut p = Pair::connected(16);
    post_signals(&mut p, Side::Client, 1, 3);
    let abort = p.client.message(OpCode::ByeSignal, 99, b"");
    p.client.post(abort);
    let back = p.client.take_delivered();
    assert_eq!(ids(&back), [99, 1, 2, 3]);
    assert!(back.iter().all(|m| m.status() == Status::ChannelClosed));
    assert!(p.client.pipe.is_empty(), "nothing was written");
}

#[test]
fn abort_accounting_prefix_delivered_suffix_given_back() {
    const N: u64 = 6;
    let mut p0 = Pair::connected(64);
    post_signals(&mut p0, Side::Client, 1, N);
    p0.client.write_all();
    let total = p0.client.pipe.len();
    for cut in 0..=total {
        let mut p = Pair::connected(64);
        post_signals(&mut p, Side::Client, 1, N);
        if cut > 0 {
            p.client.write(cut);
        }
        p.transfer(Side::Client, usize::MAX, 64 * 1024);
        let abort = p.client.message(OpCode::ByeSignal, 1000, b"");
        p.client.post(abort);
        let got = ids(&p.server.delivered);
        let back: Vec<u64> = ids(&p.client.delivered)
            .into_iter()
            .filter(|&id| id != 1000)
            .collect();
        let mut all = got.clone();
        all.extend(&back);
        assert_eq!(
            all,
            (1..=N).collect::<Vec<_>>(),
            "cut at {cut}: nothing lost or twice"
        );
        assert_eq!(got.len(), cut / (HEADER_LEN + 8), "the peer got a prefix");
    }
}

#[test]
fn silent_close_frees_queued_messages_without_giving_back() {
    let mut core = ChannelCore::accepted(4, Timeouts::default(), Instant::now());
    let close = Close::new(Status::ShutdownStarted, false, Cause::Local);
    core.give_back_unsent(&close);
    assert!(core.poll_delivery().is_none());
    assert!(!close.is_silent(), "a local close is not counted as silent");
}

// ----- a ByeSignal from the peer (the original's abort) ----------------------

/// Checks the close after a peer's ByeSignal: as after a disconnect (SPEC §3).
#[track_caller]
fn assert_peer_abort(close: Close) {
    assert_eq!(close.status, Status::PeerDisconnected);
    assert_eq!(close.cause, Cause::PeerAbort);
    assert!(close.report, "the application is told");
    assert_eq!(close.report_cause(), Some(Status::PeerDisconnected));
    assert!(!close.is_graceful(), "the connection is reset");
    assert!(!close.is_invalid_frame() && !close.is_silent());
}

/// The original aborts a channel by writing its application's ByeSignal:
/// opcode 7, its channel, the message id and text headers, and then nothing
/// more (`original-edges/case2-client-byesignal-idiom`). We deliver it, then
/// close as after the peer's disconnect: what we had queued comes back with
/// `peer_disconnected`.
#[test]
fn a_bye_signal_from_the_peer_is_delivered_then_closes_as_a_disconnect() {
    let mut p = Pair::connected(16);
    post_signals(&mut p, Side::Server, 1, 3);
    let flow = p
        .server
        .read(&raw_frame(0x07, 0x6a40, 42, b"why:gone\r\n", b"bye"));
    let Flow::Close(close) = flow else {
        panic!("the channel closes, got {flow:?}")
    };
    assert_peer_abort(close);
    let got = p.server.take_delivered();
    assert_eq!(ops(&got)[0], OpCode::ByeSignal);
    let abort = &got[0];
    assert!(abort.is_from_application());
    assert_eq!(abort.status(), Status::Success);
    assert_eq!(abort.header.channel_number, SERVER, "our channel number");
    assert_eq!(abort.header.message_id, 42);
    assert_eq!(abort.text_headers.get("why"), Some("gone"));
    assert_eq!(abort.body, b"bye");
    // Then the three queued Signals, given back.
    assert_eq!(ids(&got[1..]), [1, 2, 3]);
    assert!(
        got[1..]
            .iter()
            .all(|m| m.is_from_engine() && m.status() == Status::PeerDisconnected)
    );
}

/// The original's documented rejection (`case1-server-reject-idiom`): the
/// server turns the HelloRequest into a ByeSignal and posts it back, so the
/// client reads its own HelloRequest with opcode 7. The client sees the
/// rejection itself, then the close; what it queued behind the hello comes
/// back.
#[test]
fn a_hello_rejected_by_the_original_arrives_as_a_bye_signal() {
    let mut p = Pair::new(16);
    p.client.write_all();
    let mut hello = std::mem::take(&mut p.client.pipe);
    let queued = p.client.message(OpCode::Request, 9, b"early");
    assert_eq!(p.client.post(queued), Posted::Queued);
    // The original's server writes the same frame back with its own channel
    // number and opcode 7 (proto byte 0x07: origin and more clear).
    let mut reject: Vec<u8> = hello.drain(..).collect();
    reject[0..2].copy_from_slice(&0x98cau16.to_be_bytes());
    reject[2] = 0x07;
    let Flow::Close(close) = p.client.read(&reject) else {
        panic!("the client's channel closes")
    };
    assert_peer_abort(close);
    let got = p.client.take_delivered();
    assert_eq!(ops(&got), [OpCode::ByeSignal, OpCode::Request]);
    assert!(got[0].is_from_application());
    assert_eq!(got[0].header.message_id, Pair::HELLO_ID);
    assert_eq!(got[0].header.channel_number, CLIENT);
    assert!(got[1].is_from_engine());
    assert_eq!(got[1].status(), Status::PeerDisconnected);
}

/// Nothing after the ByeSignal is decoded, even in the same read.
#[test]
fn frames_after_a_peer_bye_signal_are_not_delivered() {
    let mut bytes = raw_frame(2, 1, 1, b"", b"a");
    bytes.extend(raw_frame(7, 1, 2, b"", b""));
    bytes.extend(raw_frame(2, 1, 3, b"", b"never"));
    let mut p = Pair::connected(16);
    assert!(matches!(p.server.read(&bytes), Flow::Close(c) if c.cause == Cause::PeerAbort));
    assert_eq!(ids(&p.server.delivered), [1, 2]);
}

/// Every split of the ByeSignal frame gives the same result.
#[test]
fn a_peer_bye_signal_split_at_every_offset() {
    let frame = raw_frame(7, 1, 5, b"a:b\r\n", b"xyz");
    for cut in 0..=frame.len() {
        let mut p = Pair::connected(16);
        let first = p.server.read(&frame[..cut]);
        let flow = if cut == frame.len() {
            first
        } else {
            assert_eq!(first, Flow::Continue, "cut {cut}");
            p.server.read(&frame[cut..])
        };
        let Flow::Close(close) = flow else {
            panic!("cut {cut}: {flow:?}")
        };
        assert_peer_abort(close);
        assert_eq!(ids(&p.server.delivered), [5], "cut {cut}");
    }
}

/// After our ByeRequest (or our ByeResponse) a ByeSignal is still the peer's
/// abort: the handshake did not complete.
#[test]
fn a_peer_bye_signal_during_the_bye_handshake_is_an_abort() {
    for our in [OpCode::ByeRequest, OpCode::ByeResponse] {
        let mut p = Pair::connected(16);
        let bye = p.server.message(our, 50, b"");
        assert_eq!(p.server.post(bye), Posted::Queued);
        p.server.write_all();
        let Flow::Close(close) = p.server.read(&raw_frame(7, 1, 51, b"", b"")) else {
            panic!("{our:?}: closes")
        };
        assert_peer_abort(close);
    }
}

/// Stricter than the original on purpose: a ByeSignal as the first frame of
/// an accepted connection, or one with the `more` bit, is invalid.
#[test]
fn a_bye_signal_first_or_with_more_is_invalid() {
    let mut p = Pair::new(16);
    let Flow::Close(first) = p.server.read(&raw_frame(7, 1, 1, b"", b"")) else {
        panic!("closed")
    };
    assert!(first.is_silent() && first.cause == Cause::NotHello);
    let later = invalid_after_hello(&raw_frame(0x27, 1, 1, b"", b""));
    assert_eq!(later.cause, Cause::InvalidFrame);
    assert_eq!(later.status, Status::InvalidMessage);
}

/// Our own ByeSignal still never travels.
#[test]
fn our_bye_signal_writes_nothing() {
    let mut p = Pair::connected(16);
    let abort = p.client.message(OpCode::ByeSignal, 3, b"");
    assert!(matches!(p.client.post(abort), Posted::Close(_)));
    p.client.write_all();
    assert!(p.client.pipe.is_empty());
}

// ----- invalid frames --------------------------------------------------------

fn invalid_after_hello(frame: &[u8]) -> Close {
    let mut p = Pair::connected(16);
    match p.server.read(frame) {
        Flow::Close(close) => close,
        other => panic!("expected a close, got {other:?}"),
    }
}

#[test]
fn invalid_opcodes_close_the_channel() {
    for op in 10..16u8 {
        let close = invalid_after_hello(&raw_frame(op, 1, 1, b"", b""));
        assert_eq!(close.status, Status::InvalidMessage, "opcode {op}");
        assert_eq!(close.cause, Cause::InvalidFrame);
        assert!(close.report, "the application knows the channel");
    }
}

#[test]
fn local_only_opcodes_on_the_wire_close_the_channel() {
    for op in [OpCode::WelcomeRequest, OpCode::WelcomeResponse] {
        let close = invalid_after_hello(&raw_frame(op as u8, 1, 1, b"", b""));
        assert_eq!(close.cause, Cause::InvalidFrame, "{op:?}");
    }
}

#[test]
fn more_on_a_non_regular_message_closes_the_channel() {
    for op in [
        OpCode::HelloRequest,
        OpCode::ByeRequest,
        OpCode::ByeResponse,
    ] {
        let close = invalid_after_hello(&raw_frame(op as u8 | 0x20, 1, 1, b"", b""));
        assert!(close.is_invalid_frame(), "{op:?}");
    }
}

/// The original keeps and echoes text headers byte for byte, whatever they
/// hold (`original-edges/case3`): so do we. The frame is delivered, the
/// channel stays open, and posting the message back sends the same bytes.
#[test]
fn odd_text_headers_are_delivered_and_echoed_byte_for_byte() {
    let odd: [&[u8]; 6] = [
        b"x-bin:\xff\xfe\r\n",
        b"\xff\xfe:\x80\r\n",
        b"nocolon\r\n",
        b"a:1\r\n\r\nb:2\r\n",
        b":v\r\n",
        b"k:no-crlf",
    ];
    let mut p = Pair::connected(16);
    for (i, text) in odd.iter().enumerate() {
        let id = 100 + i as u64;
        let frame = raw_frame(0, 0x6a40, id, text, b"a");
        assert_eq!(p.server.read(&frame), Flow::Continue, "{text:?}");
        let mut got = p.server.take_delivered();
        assert_eq!(got.len(), 1);
        let mut req = got.remove(0);
        assert_eq!(req.text_headers.as_bytes(), *text);
        // Echo it as the original's echo server does.
        req.header.proto.opcode = OpCode::Response;
        assert_eq!(p.server.post(req), Posted::Queued);
        p.server.write_all();
        let written: Vec<u8> = p.server.pipe.drain(..).collect();
        let want = raw_frame(1, SERVER, id, text, b"a");
        assert_eq!(written, want, "{text:?} echoed byte for byte");
    }
    assert!(p.server.closed.is_none());
}

#[test]
fn frames_before_an_invalid_one_are_delivered_first() {
    let mut bytes = raw_frame(2, 1, 1, b"", b"a");
    bytes.extend(raw_frame(2, 1, 2, b"", b"b"));
    bytes.extend(raw_frame(14, 1, 3, b"", b""));
    bytes.extend(raw_frame(2, 1, 4, b"", b"never"));
    let mut p = Pair::connected(16);
    assert!(matches!(p.server.read(&bytes), Flow::Close(_)));
    assert_eq!(ids(&p.server.delivered), [1, 2]);
}

#[test]
fn an_invalid_first_frame_is_silent_an_invalid_later_one_is_reported() {
    let mut p = Pair::new(16);
    let Flow::Close(first) = p.server.read(&raw_frame(15, 1, 1, b"", b"")) else {
        panic!("closed")
    };
    assert!(first.is_silent() && first.is_invalid_frame());
    let later = invalid_after_hello(&raw_frame(15, 1, 1, b"", b""));
    assert!(!later.is_silent() && later.is_invalid_frame());
}

#[test]
fn the_first_frame_is_checked_as_soon_as_its_header_is_complete() {
    let mut p = Pair::new(16);
    let frame = raw_frame(12, 1, 1, b"", &[0; 1000]);
    assert_eq!(p.server.read(&frame[..HEADER_LEN - 1]), Flow::Continue);
    assert!(matches!(
        p.server.read(&frame[HEADER_LEN - 1..HEADER_LEN]),
        Flow::Close(_)
    ));
}

// ----- backpressure ----------------------------------------------------------

#[test]
fn a_tiny_pool_starves_and_resumes_without_losing_a_frame() {
    let mut p = Pair::with_pools(16, 1);
    p.settle();
    let hello = p.server.take_delivered();
    let answer = p
        .server
        .message(OpCode::HelloResponse, hello[0].header.message_id, b"");
    drop(hello);
    p.server.post(answer);
    p.settle();
    post_signals(&mut p, Side::Client, 1, 5);
    let mut got = Vec::new();
    for _ in 0..20 {
        p.settle();
        if p.server.starved {
            assert!(p.server.core.stashed() > 0 || p.server.core.has_backlog());
        }
        // The application consumes: the messages return to the pool.
        got.extend(ids(&p.server.take_delivered()));
        if got.len() == 5 {
            break;
        }
    }
    assert_eq!(got, [1, 2, 3, 4, 5]);
}

#[test]
fn a_starved_channel_reads_nothing_more() {
    // The HelloRequest holds one of the two messages.
    let mut p = Pair::with_pools(16, 2);
    p.settle();
    post_signals(&mut p, Side::Client, 1, 3);
    p.client.write_all();
    p.transfer(Side::Client, usize::MAX, 1 << 16);
    assert!(p.server.starved);
    assert!(!p.server.may_read());
    assert!(p.server.core.has_backlog(), "two frames wait in the stash");
    // The second frame's header waits in the decoder, the rest in the stash.
    assert_eq!(p.server.core.stashed(), 2 * (HEADER_LEN + 8) - HEADER_LEN);
    assert_eq!(ids(&p.server.delivered), [Pair::HELLO_ID, 1]);
}

#[test]
fn an_empty_pool_with_data_waiting_starves_before_reading() {
    let mut p = Pair::with_pools(16, 1);
    p.settle();
    post_signals(&mut p, Side::Client, 1, 1);
    p.client.write_all();
    // The HelloRequest holds the only message: nothing is read.
    assert_eq!(p.transfer(Side::Client, usize::MAX, 1 << 16), 0);
    assert!(p.server.starved);
    assert!(!p.server.core.has_backlog());
    drop(p.server.take_delivered());
    p.server.resume();
    p.transfer(Side::Client, usize::MAX, 1 << 16);
    assert_eq!(ids(&p.server.delivered), [1]);
}

#[test]
fn an_empty_pool_leaves_data_in_the_kernel() {
    let p = Pair::with_pools(16, 1);
    let held = p.server.pool.get(crate::message::Allocation::PoolOnly);
    assert!(held.is_some());
    assert!(
        !p.server.may_read(),
        "no message to read into, no frame in progress"
    );
}

#[test]
fn a_partial_frame_does_not_take_the_reserve() {
    // Pool of 8: one message is kept for complete frames.
    let mut p = Pair::connected(8);
    let held = hold(&p.server, 7);
    assert_eq!(p.server.pool.len(), 1);
    let frame = raw_frame(2, 1, 1, b"", &[7; 100]);
    assert_eq!(p.server.read(&frame[..50]), Flow::Continue);
    assert_eq!(p.server.pool.len(), 1, "the stalled frame took no message");
    assert!(!p.server.core.has_message());
    assert_eq!(p.server.core.stashed(), 50 - HEADER_LEN);
    // Another channel's complete frame may still use it; here the rest of
    // this one arrives and completes it.
    assert_eq!(p.server.read(&frame[50..]), Flow::Continue);
    assert_eq!(ids(&p.server.delivered), [1]);
    assert_eq!(p.server.core.stashed(), 0);
    drop(held);
}

#[test]
fn a_partial_frame_takes_a_message_when_plenty_are_free() {
    let mut p = Pair::connected(64);
    let frame = raw_frame(2, 1, 1, b"", &[7; 100]);
    p.server.read(&frame[..50]);
    assert!(p.server.core.has_message(), "filled in place as it arrives");
    assert_eq!(p.server.core.stashed(), 0);
    p.server.read(&frame[50..]);
    assert_eq!(ids(&p.server.delivered), [1]);
}

#[test]
fn a_complete_header_waits_for_a_message_then_resumes() {
    let mut p = Pair::with_pools(16, 1);
    p.settle();
    // The HelloRequest holds the only message; a header-only frame arrives.
    assert_eq!(p.server.read(&raw_frame(5, 1, 8, b"", b"")), Flow::Starved);
    assert!(
        p.server.core.has_backlog(),
        "the header waits, nothing to read"
    );
    assert_eq!(
        p.server.resume(),
        Flow::Continue,
        "still empty: stays starved"
    );
    assert!(p.server.starved);
    drop(p.server.take_delivered());
    assert_eq!(p.server.resume(), Flow::Continue);
    assert_eq!(ops(&p.server.delivered), [OpCode::ByeRequest]);
    assert!(!p.server.core.has_backlog());
}

#[test]
fn the_stash_holds_at_most_one_frame_plus_one_read() {
    let mut p = Pair::with_pools(16, 2);
    p.settle();
    post_signals(&mut p, Side::Client, 1, 100);
    p.client.write_all();
    p.transfer(Side::Client, 1000, 1000);
    assert!(p.server.starved);
    assert!(p.server.core.stashed() <= 1000);
    // Nothing more is read while starved, so the stash cannot grow.
    assert_eq!(p.transfer(Side::Client, usize::MAX, 1000), 0);
}

#[test]
fn starved_frames_resume_in_order_across_refills() {
    let mut p = Pair::with_pools(16, 2);
    p.settle();
    let hello = p.server.take_delivered();
    let answer = p
        .server
        .message(OpCode::HelloResponse, hello[0].header.message_id, b"");
    drop(hello);
    p.server.post(answer);
    p.settle();
    post_signals(&mut p, Side::Client, 1, 40);
    p.client.write_all();
    let mut got = Vec::new();
    let mut rounds = 0;
    while got.len() < 40 {
        rounds += 1;
        assert!(rounds < 100, "stuck after {} frames", got.len());
        p.transfer(Side::Client, usize::MAX, 333);
        p.server.resume();
        // The application consumes each batch: its messages refill the pool.
        got.extend(ids(&p.server.take_delivered()));
    }
    assert_eq!(got, (1..=40).collect::<Vec<_>>());
    assert!(p.client.pipe.is_empty() && !p.server.core.has_backlog());
}

// ----- listeners ---------------------------------------------------------------

#[test]
fn posts_on_a_listener() {
    assert_eq!(listener_post(OpCode::Request), (Status::NotAllowed, None));
    assert_eq!(listener_post(OpCode::HelloResponse).0, Status::NotAllowed);
    for op in [OpCode::ByeSignal, OpCode::ByeRequest] {
        let (status, close) = listener_post(op);
        assert_eq!(status, Status::ChannelClosed);
        assert_eq!(close.map(|c| c.cause), Some(Cause::Abort));
    }
}

// ----- idle memory -------------------------------------------------------------

#[test]
fn a_new_channel_holds_no_heap_memory() {
    let core = ChannelCore::accepted(1, Timeouts::default(), Instant::now());
    assert_eq!(core.heap_capacity(), 0);
    let mut p = Pair::connected(16);
    post_signals(&mut p, Side::Client, 1, 200);
    p.settle();
    assert!(
        p.client.core.heap_capacity() <= 64 * 64,
        "a drained send queue shrinks back"
    );
}

// ----- the stash budget ----------------------------------------------------------

#[test]
fn the_stash_budget_counts_held_back_bytes_and_gets_them_back() {
    // Pool of 8: partial frames take no message once only the reserve is left.
    let mut p = Pair::connected(8);
    let held = hold(&p.server, 7);
    let frame = raw_frame(2, 1, 1, b"", &[7; 1000]);
    p.server.read(&frame[..400]);
    assert_eq!(p.server.budget.used(), 400 - HEADER_LEN);
    assert_eq!(
        p.server.core.rest_of_held_frame(),
        Some(1000 - (400 - HEADER_LEN))
    );
    // Exactly the rest completes the frame and empties the stash.
    p.server.read(&frame[400..]);
    assert_eq!(p.server.budget.used(), 0);
    assert_eq!(ids(&p.server.delivered), [1]);
    // A close gives a held-back stash back.
    p.server.read(&frame[..600]);
    assert!(p.server.budget.used() > 0);
    p.server.end(End::Disconnect);
    assert_eq!(p.server.budget.used(), 0);
    drop(held);
}

#[test]
fn a_lookup_that_takes_too_long_fails_the_connect() {
    let t0 = Instant::now();
    let mut hello = Message::new();
    hello.header.proto.opcode = OpCode::HelloRequest;
    hello.header.message_id = 8;
    let mut core = ChannelCore::client(3, hello, timeouts(5, 5));
    core.handle_resolving(t0);
    assert_eq!(core.take_new_deadline(), Some(t0 + Duration::from_secs(3)));
    assert_eq!(
        core.handle_timeout(t0 + Duration::from_secs(2), false),
        None
    );
    let close = core
        .handle_timeout(t0 + Duration::from_secs(3), false)
        .expect("timed out");
    assert_eq!(close.cause, Cause::LookupTimeout);
    assert_eq!(close.report_cause(), Some(Status::ConnectFailed));
    assert!(close.report);
    core.give_back_unsent(&close);
    let back = core.poll_delivery().expect("the HelloRequest comes back");
    assert_eq!(
        (back.opcode(), back.status()),
        (OpCode::HelloRequest, Status::ConnectFailed)
    );
}

#[test]
fn a_lookup_in_time_clears_its_deadline() {
    let t0 = Instant::now();
    let mut core = ChannelCore::client(3, Message::new(), timeouts(5, 5));
    core.handle_resolving(t0);
    core.handle_connecting(t0);
    assert_eq!(
        core.poll_timeout(),
        None,
        "connecting has no lookup deadline"
    );
    assert_eq!(
        core.handle_timeout(t0 + Duration::from_secs(60), false),
        None
    );
}

// ----- outgoing limits: what the core releases -------------------------------

/// Bytes a posted message is charged (and released).
fn charged(m: &Message) -> usize {
    crate::engine::limits::charge_len(m)
}

#[test]
fn a_written_post_is_released_once_when_its_last_byte_is_written() {
    let mut p = Pair::connected(16);
    let m = p.client.message(OpCode::Signal, 1, &[7; 100]);
    let len = charged(&m);
    assert_eq!(p.client.post(m), Posted::Queued);
    assert_eq!(p.client.core.take_released(), Released::default());
    // All but the last byte: still queued, nothing released.
    p.client.write(len - 1);
    assert_eq!(p.client.core.take_released(), Released::default());
    p.client.write(1);
    let r = p.client.core.take_released();
    assert_eq!(
        r,
        Released {
            bytes: len,
            messages: 1
        }
    );
    assert_eq!(p.client.core.take_released(), Released::default());
}

#[test]
fn the_hello_request_is_not_charged() {
    // The client's HelloRequest opened the channel (channel 0 posts are
    // limited by the open-channel cap, not the queue limits).
    let mut p = Pair::new(16);
    p.client.core.handle_connected();
    p.client.write_all();
    assert_eq!(p.client.frames_written, 1);
    assert_eq!(p.client.core.take_released(), Released::default());
}

#[test]
fn a_close_releases_what_was_still_queued_given_back_or_freed() {
    for report in [true, false] {
        let mut p = Pair::connected(16);
        let mut total = 0;
        for id in 1..=5u64 {
            let m = p.client.message(OpCode::Request, id, &[1; 1000]);
            total += charged(&m);
            assert_eq!(p.client.post(m), Posted::Queued);
        }
        // Two and a half frames go out.
        let first = charged(&p.client.message(OpCode::Request, 1, &[1; 1000]));
        p.client.write(first * 5 / 2);
        let written = p.client.core.take_released();
        assert_eq!(written.messages, 2);
        let close = Close::new(Status::PeerDisconnected, report, Cause::ReadEnded);
        p.client.core.give_back_unsent(&close);
        let rest = p.client.core.take_released();
        assert_eq!(rest.messages, 3, "the partly written one included");
        assert_eq!(written.bytes + rest.bytes, total, "every byte once");
        let back = std::iter::from_fn(|| p.client.core.poll_delivery()).count();
        assert_eq!(back, if report { 3 } else { 0 });
    }
}

#[test]
fn posts_the_core_does_not_queue_are_not_released_by_it() {
    // The reactor releases these itself when `handle_post` does not answer
    // `Queued`: counting them here too would release them twice.
    let mut p = Pair::connected(16);
    let bye = p.client.message(OpCode::ByeRequest, 1, b"");
    assert_eq!(p.client.post(bye), Posted::Queued);
    let late = p.client.message(OpCode::Signal, 2, b"late");
    assert_eq!(p.client.post(late), Posted::GivenBack);
    let abort = p.client.message(OpCode::ByeSignal, 3, b"");
    assert!(matches!(p.client.post(abort), Posted::Close(_)));
    let close = Close::new(Status::ChannelClosed, true, Cause::Abort);
    p.client.core.give_back_unsent(&close);
    let r = p.client.core.take_released();
    assert_eq!(r.messages, 1, "only the queued ByeRequest");
}
