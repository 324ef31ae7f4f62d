//! Promises under hostile peers, over real sockets (SPEC §5.5–§5.7a): how a
//! channel ended is in its report, a crash after our ByeRequest is not a
//! goodbye, a completed handshake closes with a FIN, and silent peers time
//! out. Each behaviour has its deterministic test in the core harness
//! (`src/engine/core/tests.rs`) first.

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::time::Duration;

use tofu::{Address, ChannelGroup, Engine, Message, OpCode, Options, Status};
use util::*;

fn engine_with(f: impl FnOnce(&mut Options)) -> Engine {
    let mut o = Options::default();
    f(&mut o);
    Engine::new(o).expect("engine")
}

/// An engine client connected to a raw server that answered its hello;
/// returns the client's channel and the raw side.
fn client_of_raw_server(engine: &Engine, group: &ChannelGroup, t: Transport) -> (u16, RawStream) {
    let (accept, caddr) = raw_server(t);
    let mut hello = engine.get(tofu::Allocation::Always).unwrap().unwrap();
    caddr.format(&mut hello).unwrap();
    let ch = group.post(hello).unwrap().channel_number;
    let mut raw = accept();
    let f = raw.read_frame();
    assert_eq!(f.header[2] & 0x0f, 3, "HelloRequest");
    raw.write_all(&raw_frame(9, 4, 0, f.message_id(), b"", b""))
        .unwrap();
    let answer = recv(group);
    assert_eq!(answer.opcode(), OpCode::HelloResponse);
    (ch, raw)
}

/// The next report about `ch`, skipping anything else.
fn closed_report(group: &ChannelGroup, ch: u16) -> Message {
    loop {
        let m = recv(group);
        if m.is_from_engine() && m.status() == Status::ChannelClosed && m.opcode() == OpCode::Signal
        {
            assert_eq!(m.channel_number(), ch);
            return m;
        }
    }
}

fn a_crash_after_our_bye_request_is_reported_as_a_disconnect(t: Transport) {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let (ch, mut raw) = client_of_raw_server(&engine, &group, t);
    group
        .post(msg(&engine, ch, OpCode::ByeRequest, b""))
        .unwrap();
    let bye = raw.read_frame();
    assert_eq!(bye.header[2] & 0x0f, 5, "ByeRequest");
    drop(raw); // crashes instead of answering
    let report = closed_report(&group, ch);
    assert_eq!(
        report.close_cause(),
        Some(Status::PeerDisconnected),
        "{report:?}"
    );
}
tcp_and_uds!(a_crash_after_our_bye_request_is_reported_as_a_disconnect);

fn a_completed_handshake_reports_no_cause(t: Transport) {
    let c = connected(t);
    c.client
        .post(msg(&c.engine, c.cch, OpCode::ByeRequest, b""))
        .unwrap();
    let mut bye = recv(&c.server);
    assert_eq!(bye.opcode(), OpCode::ByeRequest);
    bye.header.proto.opcode = OpCode::ByeResponse;
    c.server.post(bye).unwrap();
    assert_eq!(recv(&c.client).opcode(), OpCode::ByeResponse);
    for (group, ch) in [(&c.client, c.cch), (&c.server, c.sch)] {
        let report = closed_report(group, ch);
        assert_eq!(report.close_cause(), None, "an orderly end: {report:?}");
    }
}
tcp_and_uds!(a_completed_handshake_reports_no_cause);

fn a_peer_that_vanishes_is_reported_with_its_cause(t: Transport) {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let (ch, raw) = client_of_raw_server(&engine, &group, t);
    drop(raw);
    let report = closed_report(&group, ch);
    assert_eq!(report.close_cause(), Some(Status::PeerDisconnected));
}
tcp_and_uds!(a_peer_that_vanishes_is_reported_with_its_cause);

#[test]
fn a_failed_connect_is_reported_with_its_cause() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    // A port nobody listens on.
    let port = tofu::testing::free_tcp_port().unwrap();
    let mut hello = engine.get(tofu::Allocation::Always).unwrap().unwrap();
    Address::tcp_client("127.0.0.1", port)
        .format(&mut hello)
        .unwrap();
    let ch = group.post(hello).unwrap().channel_number;
    let back = recv(&group);
    assert_eq!(
        (back.opcode(), back.status()),
        (OpCode::HelloRequest, Status::ConnectFailed)
    );
    let report = closed_report(&group, ch);
    assert_eq!(report.close_cause(), Some(Status::ConnectFailed));
}

#[test]
fn our_own_abort_reports_no_cause() {
    let c = connected(Transport::Tcp);
    c.client
        .post(msg(&c.engine, c.cch, OpCode::ByeSignal, b""))
        .unwrap();
    let back = recv(&c.client);
    assert_eq!(back.opcode(), OpCode::ByeSignal);
    assert_eq!(closed_report(&c.client, c.cch).close_cause(), None);
    // The peer saw an abort: a cause.
    let theirs = closed_report(&c.server, c.sch);
    assert_eq!(theirs.close_cause(), Some(Status::PeerDisconnected));
}

/// After our ByeResponse the initiator (here raw) closes; after reading it,
/// an engine initiator closes with a FIN: the raw responder reads the end of
/// the stream, not a reset that could have destroyed unread data.
#[test]
fn a_completed_handshake_closes_with_a_fin_not_a_reset() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let (ch, mut raw) = client_of_raw_server(&engine, &group, Transport::Tcp);
    group
        .post(msg(&engine, ch, OpCode::ByeRequest, b""))
        .unwrap();
    let bye = raw.read_frame();
    raw.write_all(&raw_frame(9, 6, 0, bye.message_id(), b"", b""))
        .unwrap();
    assert_eq!(recv(&group).opcode(), OpCode::ByeResponse);
    assert_eq!(closed_report(&group, ch).close_cause(), None);
    let mut buf = [0u8; 16];
    match raw.read(&mut buf) {
        Ok(0) => {}
        other => panic!("expected a FIN (end of stream), got {other:?}"),
    }
}

/// An accepted connection that never says hello is closed after the hello
/// timeout, silently, and counted.
fn a_silent_connection_times_out(t: Transport) {
    let engine = engine_with(|o| o.hello_timeout = Some(Duration::from_millis(200)));
    let server = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let mut raw = RawStream::connect(&caddr);
    raw.expect_closed();
    let s = engine.stats();
    assert_eq!(s.hello_timeouts, 1, "{s:?}");
    assert_eq!(s.silent_closes, 1, "{s:?}");
    recv_nothing(&server, Duration::from_millis(50));
    // A client that does say hello in time is unaffected.
    let client = engine.create_group().unwrap();
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    std::thread::sleep(Duration::from_millis(300));
    round_trip(&engine, &client, &server, cch, sch, b"still here");
}
tcp_and_uds!(a_silent_connection_times_out);

/// A peer that reads our ByeRequest and never answers: the channel is
/// aborted after the bye timeout, the report says so.
fn an_unanswered_bye_request_times_out(t: Transport) {
    let engine = engine_with(|o| o.bye_timeout = Some(Duration::from_millis(300)));
    let group = engine.create_group().unwrap();
    let (ch, mut raw) = client_of_raw_server(&engine, &group, t);
    group
        .post(msg(&engine, ch, OpCode::ByeRequest, b""))
        .unwrap();
    let _bye = raw.read_frame();
    let report = closed_report(&group, ch);
    assert_eq!(report.close_cause(), Some(Status::CommunicationFailed));
    assert_eq!(engine.stats().bye_timeouts, 1);
    raw.expect_closed();
}
tcp_and_uds!(an_unanswered_bye_request_times_out);

/// SPEC §5.7b: checking whether a UDS path has a live listener never blocks
/// the I/O thread — not even when that listener's backlog is full, where a
/// blocking connect would wait for as long as the listener lives.
#[cfg(unix)]
#[test]
fn listening_where_a_foreign_listener_has_a_full_backlog_does_not_block() {
    use socket2::{Domain, SockAddr, Socket, Type};
    let path = tofu::testing::temp_uds_path();
    let foreign = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    foreign.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    foreign.listen(0).unwrap();
    // Fill the backlog: non-blocking connects until the kernel says EAGAIN.
    let mut fillers = Vec::new();
    for _ in 0..1024 {
        let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        match s.connect(&SockAddr::unix(&path).unwrap()) {
            Ok(()) => fillers.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the backlog: {e}"),
        }
    }
    let engine = engine();
    let group = engine.create_group().unwrap();
    let mut welcome = engine.get(tofu::Allocation::Always).unwrap().unwrap();
    Address::uds_server(path.clone())
        .format(&mut welcome)
        .unwrap();
    group.post(welcome).unwrap();
    // Answered at once: the path is in use by a live listener.
    let answer = recv(&group);
    assert_eq!(answer.opcode(), OpCode::WelcomeResponse);
    assert_eq!(answer.status(), Status::ListenFailed, "{answer:?}");
    // And the engine keeps working meanwhile.
    let c = connected(Transport::Tcp);
    round_trip(&c.engine, &c.client, &c.server, c.cch, c.sch, b"alive");
    assert!(path.exists(), "a live listener's socket file is left alone");
    drop(fillers);
    drop(foreign);
    let _ = std::fs::remove_file(&path);
}

/// A timeout that no longer applies (the hello came) never wakes the I/O
/// thread: an idle engine stays idle.
#[test]
fn an_answered_hello_leaves_no_wake_up_behind() {
    let engine = engine_with(|o| o.hello_timeout = Some(Duration::from_millis(200)));
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    listen(&engine, &server, &saddr);
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    round_trip(&engine, &client, &server, cch, sch, b"x");
    std::thread::sleep(Duration::from_millis(50));
    let polls = engine.stats().polls;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(engine.stats().polls, polls, "woke up for a stale deadline");
    assert_eq!(engine.stats().hello_timeouts, 0);
}

// ----- outgoing limits (SPEC §5.7) ------------------------------------------

const BIG: usize = 60_000;

/// Posts Signals of `BIG` bytes (sequence numbers from `first`) until one is
/// refused or `most` are queued; returns how many were accepted. A refusal
/// must be `PoolEmpty` with the message untouched.
fn post_until_refused(
    engine: &Engine,
    group: &ChannelGroup,
    ch: u16,
    first: u64,
    most: u64,
) -> u64 {
    for seq in first..first + most {
        let m = msg(engine, ch, OpCode::Signal, &fast_seq_body(seq, BIG));
        if let Err(e) = group.post(m) {
            assert_eq!(e.error, tofu::Error::PoolEmpty, "refused over the limit");
            assert_eq!(check_fast_seq_body(&e.message.body, BIG), seq, "untouched");
            assert_eq!(e.message.header.status, 0);
            return seq - first;
        }
    }
    most
}

/// Posts until the queue is full and stays full: the kernel's buffers are
/// full too and the I/O thread writes no more. The posts are numbered from
/// `next`; returns the number after the last one posted.
fn fill_to_the_limit(engine: &Engine, group: &ChannelGroup, ch: u16, mut next: u64) -> u64 {
    for _ in 0..100 {
        next += post_until_refused(engine, group, ch, next, 10_000);
        let sent = engine.stats().messages_sent;
        std::thread::sleep(Duration::from_millis(100));
        if engine.stats().messages_sent == sent {
            return next;
        }
    }
    panic!("the peer never stopped taking bytes");
}

/// 3,000 × 60 kB to a peer that never reads: the channel's queue stops at
/// its limit and `post` refuses the rest; when the peer goes away every
/// accepted message was either written or comes back, exactly once.
fn a_peer_that_never_reads_cannot_grow_the_send_queue(t: Transport) {
    const N: u64 = 3000;
    let limit = 2 << 20;
    let engine = engine_with(|o| o.channel_send_limit = limit);
    let group = engine.create_group().unwrap();
    let (ch, raw) = client_of_raw_server(&engine, &group, t);
    let sent0 = engine.stats().messages_sent;
    let mut accepted = 0;
    let mut refused = 0;
    let mut seq = 0;
    while seq < N {
        let n = post_until_refused(&engine, &group, ch, seq, N - seq);
        accepted += n;
        seq += n;
        if seq < N {
            refused += 1;
            seq += 1;
        }
    }
    let s = engine.stats();
    assert_eq!(accepted + refused, N);
    assert!(
        refused > 0,
        "{N} x {BIG} B cannot fit in {limit} B and the kernel"
    );
    assert_eq!(s.send_limit_refusals, refused);
    assert!(s.queued_bytes <= limit as u64, "{s:?}");
    // The peer goes away: what was not written comes back, then the report.
    drop(raw);
    let mut returned = Vec::new();
    loop {
        let m = recv_skip_pool_empty(&group);
        if m.opcode() == OpCode::Signal && m.is_from_engine() && m.body.is_empty() {
            assert_report(&m, ch, Status::ChannelClosed);
            break;
        }
        assert!(m.is_from_engine(), "{m:?}");
        returned.push(check_fast_seq_body(&m.body, BIG));
    }
    let s = engine.stats();
    let written = s.messages_sent - sent0;
    assert_eq!(
        written + returned.len() as u64,
        accepted,
        "written or returned, once: {s:?}"
    );
    assert_eq!((s.queued_bytes, s.queued_messages), (0, 0), "{s:?}");
    println!(
        "OUTGOING {t:?}: {N} posted, {refused} refused, {written} written, {} returned",
        returned.len()
    );
}
tcp_and_uds!(a_peer_that_never_reads_cannot_grow_the_send_queue);

/// `post_timeout` waits while the queue is full — returning `PoolEmpty`
/// with the message after its timeout — and succeeds as soon as the peer
/// reads; a reader then gets every message in order.
fn post_timeout_waits_for_room(t: Transport) {
    let engine = engine_with(|o| o.channel_send_limit = 1 << 20);
    let group = engine.create_group().unwrap();
    let (ch, mut raw) = client_of_raw_server(&engine, &group, t);
    // A kernel may still take bytes after the fill looked stable (Wine's
    // did once), making room: then the post goes through (it is part of
    // the stream) and the queue is filled again; bounded.
    let mut next = 0;
    let mut fills = 0;
    let e = loop {
        next = fill_to_the_limit(&engine, &group, ch, next);
        fills += 1;
        let m = msg(&engine, ch, OpCode::Signal, &fast_seq_body(next, BIG));
        let start = std::time::Instant::now();
        match group.post_timeout(m, Duration::from_millis(200)) {
            Err(e) => {
                assert!(start.elapsed() >= Duration::from_millis(200), "waited");
                break e;
            }
            Ok(_) => {
                next += 1;
                assert!(fills < 5, "the peer kept taking bytes without reading");
            }
        }
    };
    assert_eq!(e.error, tofu::Error::PoolEmpty);
    assert_eq!(check_fast_seq_body(&e.message.body, BIG), next);
    // A reader drains the peer's side; the posts go through.
    const MORE: u64 = 200;
    let total = next + MORE;
    let reader = std::thread::spawn(move || {
        for seq in 0..total {
            let f = raw.read_frame();
            assert_eq!(check_fast_seq_body(&f.body, BIG), seq, "in order");
        }
        raw
    });
    for seq in next..total {
        let m = msg(&engine, ch, OpCode::Signal, &fast_seq_body(seq, BIG));
        group
            .post_timeout(m, timeout())
            .expect("room within the timeout");
    }
    let _raw = join_within(reader);
    eventually("the queue to drain", || engine.stats().queued_bytes == 0);
}
tcp_and_uds!(post_timeout_waits_for_room);

/// The engine-wide limit holds across channels: with one channel's queue
/// full at the engine limit, another channel's post is refused too.
#[test]
fn the_engine_limit_holds_across_channels() {
    let engine = engine_with(|o| o.engine_send_limit = 1 << 20);
    let group = engine.create_group().unwrap();
    let (a, _raw_a) = client_of_raw_server(&engine, &group, Transport::Tcp);
    let (b, _raw_b) = client_of_raw_server(&engine, &group, Transport::Tcp);
    // With a holding the engine's limit (1 MiB; b's own is 8 MiB), a post
    // on b is refused. A kernel may still take some of a's bytes after the
    // fill looked stable (Wine's did once), freeing room: then b's post goes
    // out and a is filled again; bounded.
    let mut fills = 0;
    let e = loop {
        fill_to_the_limit(&engine, &group, a, 0);
        fills += 1;
        match group.post(msg(&engine, b, OpCode::Signal, &fast_seq_body(0, BIG))) {
            Err(e) => break e,
            Ok(_) => assert!(
                fills < 5,
                "b was never refused while a held the engine's limit"
            ),
        }
    };
    assert_eq!(e.error, tofu::Error::PoolEmpty, "the engine is full");
    let s = engine.stats();
    assert!(s.queued_bytes <= 1 << 20, "{s:?}");
    assert!(s.send_limit_refusals >= 2, "{s:?}");
}

/// SPEC §5.7a: at the open-channel cap, `post` of a HelloRequest fails at
/// once, listeners stop accepting (the connection waits in the backlog) and
/// resume when a channel closes.
#[test]
fn at_the_open_channel_cap_accepting_pauses_and_opening_fails_fast() {
    // The listener and one accepted channel.
    let engine = engine_with(|o| o.max_channels = 2);
    let server = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    listen(&engine, &server, &saddr);
    let client_engine = util::engine();
    let client = client_engine.create_group().unwrap();
    let (c1, s1) = connect_pair(&client_engine, &client, &server, &caddr);
    // The cap is reached: opening fails at once.
    let start = std::time::Instant::now();
    let e = server.post(opening(&engine, &caddr)).unwrap_err();
    assert_eq!(e.error, tofu::Error::AllocationFailed);
    assert!(start.elapsed() < Duration::from_secs(1), "no wait");
    // A second client connects (the kernel completes the handshake) but is
    // not accepted: its HelloRequest does not arrive.
    let h2 = client.post(opening(&client_engine, &caddr)).unwrap();
    recv_nothing(&server, Duration::from_millis(300));
    let s = engine.stats();
    assert_eq!(s.open_channels, 2, "{s:?}");
    assert!(s.accept_pauses >= 1, "{s:?}");
    // The first channel closes: the second is accepted.
    abort(&client_engine, &client, c1);
    let report = recv(&server);
    assert_report(&report, s1, Status::ChannelClosed);
    let hello = recv(&server);
    assert_eq!(hello.opcode(), OpCode::HelloRequest, "{hello:?}");
    assert_eq!(hello.header.message_id, h2.message_id);
    assert_eq!(engine.stats().accepted, 2);
}

/// Every way an open can fail gives its slot back: with a cap of one
/// channel, failed connects and listens one after another never hit it.
#[test]
fn failed_opens_give_their_slot_back() {
    let engine = engine_with(|o| o.max_channels = 1);
    let group = engine.create_group().unwrap();
    let dead_port = tofu::testing::free_tcp_port().unwrap();
    for _ in 0..20 {
        let hello = opening(&engine, &Address::tcp_client("127.0.0.1", dead_port));
        let ch = group.post(hello).expect("a slot").channel_number;
        let back = recv(&group);
        assert_eq!(back.opcode(), OpCode::HelloRequest, "{back:?}");
        assert_eq!(back.status(), Status::ConnectFailed, "{back:?}");
        assert_report(&recv(&group), ch, Status::ChannelClosed);
        let bad = opening(&engine, &Address::uds_server("/nonexistent-dir/x.sock"));
        group.post(bad).expect("a slot");
        let answer = recv(&group);
        assert_eq!(answer.opcode(), OpCode::WelcomeResponse, "{answer:?}");
        assert_ne!(answer.status(), Status::Success, "{answer:?}");
    }
    let (saddr, _) = addresses(Transport::Tcp);
    listen(&engine, &group, &saddr);
    let e = group.post(opening(&engine, &saddr)).unwrap_err();
    assert_eq!(e.error, tofu::Error::AllocationFailed, "the cap is one");
}
