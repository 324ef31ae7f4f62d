//! Closing channels (SPEC §5.5, §5.9): ByeSignal, rejection, graceful close from
//! the server side, peer shutdown and disconnect, group destroy, and the
//! nothing-is-lost accounting.

#[macro_use]
mod util;

use std::time::Duration;

use tofu::{Allocation, Engine, Error, OpCode, Options, Status};
use util::*;

// ----- ByeSignal -------------------------------------------------------------------

fn bye_signal_from_client(t: Transport) {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let hello = client.post(opening(&engine, &caddr)).unwrap();
    let cch = hello.channel_number;
    let req = recv(&server);
    let sch = req.header.channel_number;
    let mut accept = req;
    accept.header.proto.opcode = OpCode::HelloResponse;
    server.post(accept).unwrap();
    assert_eq!(recv(&client).opcode(), OpCode::HelloResponse);
    round_trip(&engine, &client, &server, cch, sch, b"before");

    let bye = client
        .post(msg(&engine, cch, OpCode::ByeSignal, b"abort"))
        .unwrap();
    let back = recv(&client);
    assert_returned(&back, OpCode::ByeSignal, cch, Status::ChannelClosed);
    assert_eq!(back.header.message_id, bye.message_id);
    assert_eq!(back.body, b"abort");
    let rep = recv(&client);
    assert_report(&rep, cch, Status::ChannelClosed);
    assert_eq!(
        rep.header.message_id, hello.message_id,
        "channel_closed carries the id of the first message on the channel"
    );
    // The peer sees a disconnect.
    let rep = recv(&server);
    assert_report(&rep, sch, Status::ChannelClosed);
    assert_eq!(rep.header.message_id, hello.message_id);
    recv_nothing(&client, Duration::from_millis(50));
    recv_nothing(&server, Duration::from_millis(50));
    for (g, ch) in [(&client, cch), (&server, sch)] {
        let e = g.post(msg(&engine, ch, OpCode::Signal, b"")).unwrap_err();
        assert_eq!(e.error, Error::InvalidChannelNumber);
    }
}

tcp_and_uds!(bye_signal_from_client);

/// ByeSignal overtakes queued messages: it comes back first, then whatever was
/// still queued (a suffix, in order), then the report.
fn bye_signal_returns_queued_messages(t: Transport) {
    let Connected {
        engine,
        server: _server, // kept open: dropping it would close the server side
        client,
        cch,
        ..
    } = connected(t);
    const N: u64 = 200;
    for i in 0..N {
        client
            .post(msg(&engine, cch, OpCode::Request, &seq_body(i, 4000)))
            .unwrap();
    }
    let bye = client
        .post(msg(&engine, cch, OpCode::ByeSignal, b""))
        .unwrap();
    let back = recv(&client);
    assert_returned(&back, OpCode::ByeSignal, cch, Status::ChannelClosed);
    assert_eq!(back.header.message_id, bye.message_id);
    let mut returned = Vec::new();
    loop {
        let m = recv(&client);
        if m.opcode() == OpCode::Signal {
            assert_report(&m, cch, Status::ChannelClosed);
            break;
        }
        assert_returned(&m, OpCode::Request, cch, Status::ChannelClosed);
        returned.push(check_seq_body(&m.body, 4000));
    }
    if let Some(&first) = returned.first() {
        assert_eq!(
            returned,
            (first..N).collect::<Vec<_>>(),
            "queued messages come back as an ordered suffix"
        );
    }
    recv_nothing(&client, Duration::from_millis(50));
}

tcp_and_uds!(bye_signal_returns_queued_messages);

fn hello_rejected_with_bye_signal(t: Transport) {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let hello = client.post(opening(&engine, &caddr)).unwrap();
    let cch = hello.channel_number;
    let req = recv(&server);
    assert_eq!(req.opcode(), OpCode::HelloRequest);
    let sch = req.header.channel_number;
    let mut reject = req;
    reject.header.proto.opcode = OpCode::ByeSignal;
    server.post(reject).unwrap();
    let back = recv(&server);
    assert_returned(&back, OpCode::ByeSignal, sch, Status::ChannelClosed);
    assert_eq!(back.header.message_id, hello.message_id);
    assert_report(&recv(&server), sch, Status::ChannelClosed);
    // The client never gets a HelloResponse, only its channel closed.
    let rep = recv(&client);
    assert_report(&rep, cch, Status::ChannelClosed);
    recv_nothing(&client, Duration::from_millis(50));
    recv_nothing(&server, Duration::from_millis(50));
}

tcp_and_uds!(hello_rejected_with_bye_signal);

// ----- graceful close --------------------------------------------------------------

/// The server closes gracefully right after posting 50 large messages: the client
/// gets all 50, in order, before the ByeRequest, answers ByeResponse, and both
/// sides get a `channel_closed` report.
fn graceful_close_by_server(t: Transport) {
    let Connected {
        engine,
        server,
        client,
        cch,
        sch,
    } = connected(t);
    const N: u64 = 50;
    const LEN: usize = 32 * 1024;
    for i in 0..N {
        server
            .post(msg(&engine, sch, OpCode::Signal, &seq_body(i, LEN)))
            .unwrap();
    }
    let bye = server
        .post(msg(&engine, sch, OpCode::ByeRequest, b""))
        .unwrap();
    // Nothing may be sent after a ByeRequest: a late message comes back.
    let late = server
        .post(msg(&engine, sch, OpCode::Signal, b"late"))
        .unwrap();

    for i in 0..N {
        let m = recv_skip_pool_empty(&client);
        assert_eq!(m.opcode(), OpCode::Signal, "{m:?}");
        assert!(m.is_from_application());
        assert_eq!(check_seq_body(&m.body, LEN), i);
    }
    let req = recv_skip_pool_empty(&client);
    assert_eq!(req.opcode(), OpCode::ByeRequest, "{req:?}");
    assert!(req.is_from_application());
    assert_eq!(req.header.message_id, bye.message_id);
    let mut resp = req;
    resp.header.proto.opcode = OpCode::ByeResponse;
    client.post(resp).unwrap();

    let back = recv(&server);
    assert!(back.is_from_engine(), "{back:?}");
    assert_eq!(back.header.message_id, late.message_id);
    assert_eq!(back.body, b"late");
    assert_ne!(back.status(), Status::Success);
    let r = recv(&server);
    assert_eq!(r.opcode(), OpCode::ByeResponse, "{r:?}");
    assert!(r.is_from_application());
    assert_eq!(r.header.message_id, bye.message_id);
    assert_report(&recv(&server), sch, Status::ChannelClosed);
    assert_report(&recv_skip_pool_empty(&client), cch, Status::ChannelClosed);
    recv_nothing(&client, Duration::from_millis(50));
    recv_nothing(&server, Duration::from_millis(50));
}

tcp_and_uds!(graceful_close_by_server);

/// The client posts 300 messages then a ByeRequest at once; the server reads
/// slowly (small pool): it still gets every message before the ByeRequest.
fn graceful_close_delivers_everything(t: Transport) {
    let SlowServer {
        server,
        client,
        server_engine: _server_engine,
        client_engine,
        cch,
        sch,
    } = slow_server(t);
    const N: u64 = 300;
    const LEN: usize = 8 * 1024;
    for i in 0..N {
        client
            .post(msg(&client_engine, cch, OpCode::Request, &seq_body(i, LEN)))
            .unwrap();
    }
    client
        .post(msg(&client_engine, cch, OpCode::ByeRequest, b""))
        .unwrap();
    let mut pool_empty = 0;
    for i in 0..N {
        let m = recv_counting_pool_empty(&server, &mut pool_empty);
        assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
        assert_eq!(check_seq_body(&m.body, LEN), i);
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let req = recv_counting_pool_empty(&server, &mut pool_empty);
    assert_eq!(req.opcode(), OpCode::ByeRequest, "{req:?}");
    let mut resp = req;
    resp.header.proto.opcode = OpCode::ByeResponse;
    server.post(resp).unwrap();
    let r = recv(&client);
    assert_eq!(r.opcode(), OpCode::ByeResponse, "{r:?}");
    assert_report(&recv(&client), cch, Status::ChannelClosed);
    let rep = recv_counting_pool_empty(&server, &mut pool_empty);
    assert_report(&rep, sch, Status::ChannelClosed);
}

tcp_and_uds!(graceful_close_delivers_everything);

// ----- peer gone -------------------------------------------------------------------

fn peer_engine_shutdown(t: Transport) {
    let server_engine = engine();
    let client_engine = engine();
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&server_engine, &server, &saddr);
    let (cch, sch) = connect_pair(&client_engine, &client, &server, &caddr);
    round_trip(&client_engine, &client, &server, cch, sch, b"hi");
    within(timeout(), move || server_engine.shutdown());
    assert_report(&recv(&client), cch, Status::ChannelClosed);
    recv_nothing(&client, Duration::from_millis(50));
    let e = client
        .post(msg(&client_engine, cch, OpCode::Signal, b""))
        .unwrap_err();
    assert_eq!(e.error, Error::InvalidChannelNumber);
}

tcp_and_uds!(peer_engine_shutdown);

/// The server stops reading (tiny pool, nobody receives), the client's send
/// queue fills up, then the server goes away: the queued messages come back as
/// an ordered suffix with a failure status, then one report.
fn peer_disconnect_returns_queued_messages(t: Transport) {
    let SlowServer {
        server,
        client,
        server_engine,
        client_engine,
        cch,
        ..
    } = slow_server(t);
    const LEN: usize = 60 * 1024;
    // Until the channel's outgoing limit refuses one (8 MiB by default).
    let mut n = 0;
    while n < 1000 {
        let m = msg(&client_engine, cch, OpCode::Request, &seq_body(n, LEN));
        match client.post(m) {
            Ok(_) => n += 1,
            Err(e) => {
                assert_eq!(e.error, Error::PoolEmpty, "refused over the limit");
                check_seq_body(&e.message.body, LEN);
                break;
            }
        }
    }
    assert!(n < 1000, "the outgoing limit refused a post");
    let total = n;
    // Let the client write what the kernel takes.
    let mut last = u64::MAX;
    eventually("the client to stop making progress", || {
        std::thread::sleep(Duration::from_millis(50));
        let sent = client_engine.stats().messages_sent;
        std::mem::replace(&mut last, sent) == sent
    });
    drop(server);
    within(timeout(), move || server_engine.shutdown());

    let mut returned = Vec::new();
    loop {
        // The client's pool is empty too (its messages sit in the send queue):
        // it may report pool_empty before it notices the disconnect.
        let m = recv_skip_pool_empty(&client);
        if m.opcode() == OpCode::Signal && m.is_from_engine() {
            assert_report(&m, cch, Status::ChannelClosed);
            break;
        }
        assert!(m.is_from_engine(), "{m:?}");
        assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
        assert!(
            matches!(
                m.status(),
                Status::PeerDisconnected
                    | Status::SendFailed
                    | Status::RecvFailed
                    | Status::CommunicationFailed
            ),
            "failure status expected: {m:?}"
        );
        returned.push(check_seq_body(&m.body, LEN));
    }
    assert!(
        !returned.is_empty(),
        "{total} x {LEN} bytes cannot all fit in kernel buffers"
    );
    let first = returned[0];
    assert_eq!(
        returned,
        (first..total).collect::<Vec<_>>(),
        "an ordered suffix"
    );
    recv_nothing(&client, Duration::from_millis(50));
}

tcp_and_uds!(peer_disconnect_returns_queued_messages);

// ----- group destroy ---------------------------------------------------------------

fn group_destroy(t: Transport) {
    let server_engine = engine();
    let client_engine = engine();
    let doomed = server_engine.create_group().unwrap();
    let survivor = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr1, caddr1) = addresses(t);
    let (saddr2, caddr2) = addresses(t);
    listen(&server_engine, &doomed, &saddr1);
    listen(&server_engine, &survivor, &saddr2);
    let (c1, s1) = connect_pair(&client_engine, &client, &doomed, &caddr1);
    let (c2, s2) = connect_pair(&client_engine, &client, &survivor, &caddr2);
    // Leave something in the doomed group's receive queue.
    for _ in 0..3 {
        client
            .post(msg(&client_engine, c1, OpCode::Signal, b"unread"))
            .unwrap();
    }
    eventually("the signals to arrive", || {
        server_engine.stats().messages_received >= 2 + 3
    });

    assert_eq!(doomed.destroy(), Ok(()));
    assert_report(&recv(&client), c1, Status::ChannelClosed);
    // The other group is unaffected.
    round_trip(&client_engine, &client, &survivor, c2, s2, b"still here");
    let e = survivor
        .post(msg(&server_engine, s1, OpCode::Signal, b""))
        .unwrap_err();
    assert_eq!(
        e.error,
        Error::InvalidChannelNumber,
        "the doomed channel is gone"
    );
    // The doomed listener is closed too.
    let h = client.post(opening(&client_engine, &caddr1)).unwrap();
    let back = recv(&client);
    let refused = match t {
        Transport::Tcp => Status::ConnectFailed,
        Transport::Uds => Status::UdsPathNotFound,
    };
    assert_returned(&back, OpCode::HelloRequest, h.channel_number, refused);
    assert_report(&recv(&client), h.channel_number, Status::ChannelClosed);

    // Destroying the client group closes its channel to the survivor.
    assert_eq!(client.destroy(), Ok(()));
    assert_report(&recv(&survivor), s2, Status::ChannelClosed);
    recv_nothing(&survivor, Duration::from_millis(50));
}

tcp_and_uds!(group_destroy);

#[test]
fn group_drop_closes_its_channels() {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    listen(&engine, &server, &saddr);
    let (_, sch) = connect_pair(&engine, &client, &server, &caddr);
    drop(client);
    assert_report(&recv(&server), sch, Status::ChannelClosed);
}

#[test]
fn destroy_returns_messages_to_the_pool() {
    let engine = Engine::new(Options {
        initial_pool_msgs: 8,
        max_pool_msgs: 8,
        ..Options::default()
    })
    .unwrap();
    let group = engine.create_group().unwrap();
    for _ in 0..5 {
        let m = engine.get(Allocation::PoolOnly).unwrap().unwrap();
        group.update_receiver(Some(m)).unwrap();
    }
    assert_eq!(engine.stats().pool_free, 3);
    group.destroy().unwrap();
    assert_eq!(
        engine.stats().pool_free,
        8,
        "the receive queue drained into the pool"
    );
}

// ----- nothing is lost on abort ------------------------------------------------

/// The client posts 1000 messages then aborts at once: what the server got is a
/// prefix, what came back is the rest, in order, no duplicates.
fn abort_loses_nothing(t: Transport) {
    let Connected {
        engine,
        server,
        client,
        cch,
        sch,
    } = connected(t);
    const N: u64 = 1000;
    const LEN: usize = 64;
    for i in 0..N {
        client
            .post(msg(&engine, cch, OpCode::Request, &seq_body(i, LEN)))
            .unwrap();
    }
    client
        .post(msg(&engine, cch, OpCode::ByeSignal, b""))
        .unwrap();

    let back = recv(&client);
    assert_returned(&back, OpCode::ByeSignal, cch, Status::ChannelClosed);
    let mut returned = Vec::new();
    loop {
        let m = recv(&client);
        if m.opcode() == OpCode::Signal {
            assert_report(&m, cch, Status::ChannelClosed);
            break;
        }
        assert_returned(&m, OpCode::Request, cch, Status::ChannelClosed);
        returned.push(check_seq_body(&m.body, LEN));
    }
    let mut received = Vec::new();
    loop {
        let m = recv_skip_pool_empty(&server);
        if m.is_from_engine() {
            assert_report(&m, sch, Status::ChannelClosed);
            break;
        }
        assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
        received.push(check_seq_body(&m.body, LEN));
    }
    let k = received.len() as u64;
    eprintln!("abort: received {k}, returned {}", returned.len());
    assert_eq!(received, (0..k).collect::<Vec<_>>(), "received: a prefix");
    let j = N - returned.len() as u64;
    assert_eq!(returned, (j..N).collect::<Vec<_>>(), "returned: a suffix");
    assert!(k <= j, "no message both received and returned ({k} > {j})");
    // Between the two: messages written to the socket that the abort destroyed
    // before the peer read them. SPEC §5.5 allows that over TCP (a reset
    // discards what the kernel still held). A Unix-domain stream has no such
    // gap on Linux: written bytes are already in the peer's receive queue, and
    // closing does not purge it.
    if cfg!(target_os = "linux") && matches!(t, Transport::Uds) {
        assert_eq!(k, j, "received {k} + returned {} != {N}", returned.len());
    }
}

tcp_and_uds!(abort_loses_nothing);

#[test]
fn listener_bye_signal_leaves_accepted_channels_open() {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    let lch = listen(&engine, &server, &saddr);
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    abort(&engine, &server, lch);
    round_trip(&engine, &client, &server, cch, sch, b"alive");
    let other = engine.create_group().unwrap();
    let h = other.post(opening(&engine, &caddr)).unwrap();
    assert_returned(
        &recv(&other),
        OpCode::HelloRequest,
        h.channel_number,
        Status::ConnectFailed,
    );
}

/// Both peers send a ByeRequest at once (neither may answer after its own
/// ByeRequest): each receives everything the other sent before, then the other's
/// ByeRequest, then its channel_closed report.
fn simultaneous_bye_requests(t: Transport) {
    let Connected {
        engine,
        server,
        client,
        cch,
        sch,
    } = connected(t);
    const N: u64 = 20;
    for i in 0..N {
        client
            .post(msg(&engine, cch, OpCode::Signal, &seq_body(i, 100)))
            .unwrap();
        server
            .post(msg(&engine, sch, OpCode::Signal, &seq_body(i, 100)))
            .unwrap();
    }
    client
        .post(msg(&engine, cch, OpCode::ByeRequest, b""))
        .unwrap();
    server
        .post(msg(&engine, sch, OpCode::ByeRequest, b""))
        .unwrap();
    // Both groups at once: they share the engine's pool (16 messages), so
    // what one group holds unread can stop the engine reading for the other.
    std::thread::scope(|scope| {
        for (group, ch) in [(&client, cch), (&server, sch)] {
            scope.spawn(move || {
                for i in 0..N {
                    let m = recv_skip_pool_empty(group);
                    assert_eq!(m.opcode(), OpCode::Signal, "{m:?}");
                    assert_eq!(check_seq_body(&m.body, 100), i);
                }
                let bye = recv_skip_pool_empty(group);
                assert_eq!(bye.opcode(), OpCode::ByeRequest, "{bye:?}");
                assert!(bye.is_from_application());
                assert_report(&recv_skip_pool_empty(group), ch, Status::ChannelClosed);
                recv_nothing(group, Duration::from_millis(50));
            });
        }
    });
}

tcp_and_uds!(simultaneous_bye_requests);
