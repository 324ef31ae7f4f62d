//! The engine and group handles across threads (SPEC §5.1, §5.8, §6):
//! update_receiver waking a blocked receiver, shutdown waking it, every call
//! failing after shutdown, and the handles' auto traits.

mod util;

use std::sync::Arc;
use std::time::Duration;

use tofu::{
    Address, Allocation, ChannelGroup, Engine, Error, Message, OpCode, Options, Origin, Status,
};
use util::*;

#[test]
fn handles_are_send_sync_clone_debug() {
    assert_send_sync::<Engine>();
    assert_send_sync::<ChannelGroup>();
    fn clone_debug<T: Clone + std::fmt::Debug>() {}
    clone_debug::<Engine>();
    fn debug<T: std::fmt::Debug>() {}
    debug::<ChannelGroup>();
    let engine = engine();
    let copy = engine.clone();
    assert!(!format!("{copy:?}").is_empty());
    let group = engine.create_group().unwrap();
    assert!(!format!("{group:?}").is_empty());
}

/// Starts a thread blocked in `wait_receive(None)`; returns its join handle.
fn blocked_receiver(
    group: &Arc<ChannelGroup>,
) -> std::thread::JoinHandle<Result<Option<Message>, Error>> {
    let g = group.clone();
    let h = std::thread::spawn(move || g.wait_receive(None));
    // Give it time to block.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!h.is_finished(), "wait_receive(None) returned early");
    h
}

#[test]
fn update_receiver_none_wakes_a_blocked_receiver() {
    let engine = engine();
    let group = Arc::new(engine.create_group().unwrap());
    let h = blocked_receiver(&group);
    group.update_receiver(None).unwrap();
    let m = join_within(h).unwrap().expect("a message, not a timeout");
    assert_eq!(m.opcode(), OpCode::Signal);
    assert_eq!(m.header.proto.origin, Origin::Engine);
    assert_eq!(m.status(), Status::ReceiverUpdate);
}

#[test]
fn update_receiver_some_passes_work_to_a_blocked_receiver() {
    let engine = engine();
    let group = Arc::new(engine.create_group().unwrap());
    let h = blocked_receiver(&group);
    let mut work = engine.get(Allocation::Always).unwrap().unwrap();
    work.header.proto.opcode = OpCode::Request;
    work.header.proto.origin = Origin::Engine; // forced back to Application
    work.header.message_id = 77;
    work.text_headers.append("job", "compress").unwrap();
    work.body.extend_from_slice(b"payload");
    group.update_receiver(Some(work)).unwrap();
    let m = join_within(h).unwrap().expect("a message, not a timeout");
    assert_eq!(m.header.proto.origin, Origin::Application);
    assert_eq!(m.status(), Status::ReceiverUpdate);
    assert_eq!(m.opcode(), OpCode::Request);
    assert_eq!(m.header.message_id, 77);
    assert_eq!(m.text_headers.get("job"), Some("compress"));
    assert_eq!(m.body, b"payload");
}

#[test]
fn update_receiver_is_fifo_with_other_messages() {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(any_transport());
    listen(&engine, &server, &saddr);
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    let before = engine.stats().messages_received;
    for i in 0..3u8 {
        server
            .post(msg(&engine, sch, OpCode::Signal, &[i]))
            .unwrap();
    }
    // `messages_received` counts a frame once it is in the group's queue,
    // so this proves the three are queued before what follows.
    eventually("3 signals to reach the client", || {
        engine.stats().messages_received >= before + 3
    });
    let mut a = Message::new();
    a.body.push(b'a');
    client.update_receiver(Some(a)).unwrap();
    client.update_receiver(None).unwrap();
    server
        .post(msg(&engine, sch, OpCode::Signal, &[3]))
        .unwrap();
    for i in 0..3u8 {
        let m = recv(&client);
        assert_eq!((m.opcode(), m.body.as_slice()), (OpCode::Signal, &[i][..]));
        assert!(m.is_from_application() && m.status() == Status::Success);
        assert_eq!(m.header.channel_number, cch);
    }
    let m = recv(&client);
    assert_eq!(
        (m.status(), m.body.as_slice()),
        (Status::ReceiverUpdate, &b"a"[..])
    );
    let m = recv(&client);
    assert!(
        m.is_from_engine() && m.status() == Status::ReceiverUpdate,
        "{m:?}"
    );
    let m = recv(&client);
    assert_eq!(
        (m.status(), m.body.as_slice()),
        (Status::Success, &[3u8][..])
    );
}

#[test]
fn shutdown_wakes_blocked_receivers() {
    let engine = engine();
    let group = Arc::new(engine.create_group().unwrap());
    let other = Arc::new(engine.create_group().unwrap());
    let waiters = [
        blocked_receiver(&group),
        blocked_receiver(&group),
        blocked_receiver(&other),
    ];
    let timed = {
        let g = other.clone();
        std::thread::spawn(move || g.wait_receive(Some(Duration::from_secs(60))))
    };
    std::thread::sleep(Duration::from_millis(20));
    let e2 = engine.clone();
    within(timeout(), move || e2.shutdown());
    for h in waiters {
        assert_eq!(join_within(h).unwrap_err(), Error::ShutdownStarted);
    }
    assert_eq!(join_within(timed).unwrap_err(), Error::ShutdownStarted);
}

#[test]
fn every_call_fails_after_shutdown() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let (saddr, _) = addresses(Transport::Tcp);
    listen(&engine, &group, &saddr);
    let spare = engine.get(Allocation::Always).unwrap().unwrap();
    engine.shutdown();
    assert!(engine.is_shut_down());
    engine.shutdown(); // idempotent
    engine.clone().shutdown();

    let mut m = Message::new();
    Address::tcp_client("127.0.0.1", 1).format(&mut m).unwrap();
    let before = m.clone();
    let e = group.post(m).unwrap_err();
    assert_eq!(e.error, Error::ShutdownStarted);
    assert_eq!(e.message, before, "the message is given back");
    assert_eq!(
        engine.get(Allocation::Always).unwrap_err(),
        Error::ShutdownStarted
    );
    assert_eq!(
        engine.get(Allocation::PoolOnly).unwrap_err(),
        Error::ShutdownStarted
    );
    assert_eq!(engine.create_group().unwrap_err(), Error::ShutdownStarted);
    assert_eq!(
        group.update_receiver(None).unwrap_err(),
        Error::ShutdownStarted
    );
    assert_eq!(
        group.update_receiver(Some(Message::new())).unwrap_err(),
        Error::ShutdownStarted
    );
    assert_eq!(
        group.wait_receive(None).unwrap_err(),
        Error::ShutdownStarted
    );
    assert_eq!(
        group.wait_receive(Some(Duration::ZERO)).unwrap_err(),
        Error::ShutdownStarted
    );
    engine.put(spare); // freed, not a panic
    assert_eq!(group.destroy(), Err(Error::ShutdownStarted));
}

#[test]
fn dropping_the_last_handle_shuts_down() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let path = tofu::testing::temp_uds_path();
    let port;
    {
        let engine = engine();
        let group = engine.create_group().unwrap();
        listen(&engine, &group, &Address::uds_server(&path));
        let (saddr, _) = addresses(Transport::Tcp);
        listen(&engine, &group, &saddr);
        let Address::TcpServer { port: p, .. } = saddr else {
            unreachable!()
        };
        port = p;
        assert!(path.exists());
        within(timeout(), move || {
            drop(group); // the engine lives on: the group held a handle
            drop(engine);
        });
    }
    assert!(!path.exists(), "the listener's socket file is gone");
    // The port is free again at once.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port released");
}

#[test]
fn wait_receive_timeouts() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    assert!(group.wait_receive(Some(Duration::ZERO)).unwrap().is_none());
    let t = std::time::Instant::now();
    assert!(
        group
            .wait_receive(Some(Duration::from_millis(100)))
            .unwrap()
            .is_none()
    );
    assert!(t.elapsed() >= Duration::from_millis(90));
}

#[test]
fn engines_share_nothing() {
    let a = engine();
    let b = engine();
    let ga = a.create_group().unwrap();
    let gb = b.create_group().unwrap();
    let (saddr, _) = addresses(Transport::Tcp);
    let lch = listen(&a, &ga, &saddr);
    // Channel numbers are per engine: b has no such channel.
    let e = gb.post(msg(&b, lch, OpCode::Signal, b"")).unwrap_err();
    assert_eq!(e.error, Error::InvalidChannelNumber);
    a.shutdown();
    assert!(!b.is_shut_down());
    gb.update_receiver(None).unwrap();
    assert!(recv(&gb).is_from_engine());
}

#[test]
fn options_zero_means_default_and_max_is_raised() {
    let engine = Engine::new(Options {
        initial_pool_msgs: 0,
        max_pool_msgs: 0,
        ..Options::default()
    })
    .unwrap();
    assert_eq!(engine.stats().pool_free, 16);
    let engine = Engine::new(Options {
        initial_pool_msgs: 10,
        max_pool_msgs: 2,
        ..Options::default()
    })
    .unwrap();
    assert_eq!(engine.stats().pool_free, 10);
    let msgs: Vec<_> = (0..10)
        .map(|_| engine.get(Allocation::PoolOnly).unwrap().unwrap())
        .collect();
    assert!(engine.get(Allocation::PoolOnly).unwrap().is_none());
    let extra = engine.get(Allocation::Always).unwrap().unwrap();
    drop(msgs);
    drop(extra);
    assert_eq!(
        engine.stats().pool_free,
        10,
        "max raised to the initial count"
    );
}

/// Out-of-range options are brought into range, never a panic: a zero-sized or
/// absurd read chunk, pool sizes of 0 (the defaults), a max below the initial.
#[test]
fn odd_options_are_clamped() {
    for read_chunk in [0, 1, usize::MAX] {
        let engine = tofu::Engine::new(tofu::Options {
            initial_pool_msgs: 0,
            max_pool_msgs: 0,
            read_chunk,
            ..tofu::Options::default()
        })
        .expect("engine");
        let server = engine.create_group().unwrap();
        let client = engine.create_group().unwrap();
        let (saddr, caddr) = addresses(Transport::Tcp);
        listen(&engine, &server, &saddr);
        let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
        round_trip(&engine, &client, &server, cch, sch, &[7u8; 20_000]);
        let stats = engine.stats();
        assert!(
            stats.pool_free <= tofu::DEFAULT_MAX_POOL_MSGS as u64,
            "{stats:?}"
        );
    }
    let engine = tofu::Engine::new(tofu::Options {
        initial_pool_msgs: 10,
        max_pool_msgs: 2,
        ..tofu::Options::default()
    })
    .unwrap();
    assert_eq!(
        engine.stats().pool_free,
        10,
        "max raised to the initial count"
    );
}

/// SPEC §7: on an idle engine a lone post is written by the posting thread
/// itself (no hand-off to the I/O thread); a burst, mostly left to the I/O
/// thread, arrives in order too.
#[test]
fn a_lone_post_is_written_inline_and_a_burst_arrives_in_order() {
    let c = connected(Transport::Tcp);
    let mut inline = 0;
    for i in 0..3u8 {
        std::thread::sleep(Duration::from_millis(50)); // the engine goes idle
        let before = c.engine.stats().inline_posts;
        c.client
            .post(msg(&c.engine, c.cch, OpCode::Signal, &[i]))
            .unwrap();
        inline += c.engine.stats().inline_posts - before;
        assert_eq!(recv(&c.server).body, [i]);
    }
    assert!(inline >= 1, "no lone post was written inline");
    // A burst (messages made first, posted back to back): most of it goes
    // through the I/O thread.
    let burst: Vec<_> = (0..200u8)
        .map(|i| msg(&c.engine, c.cch, OpCode::Signal, &[i]))
        .collect();
    let before = c.engine.stats();
    for m in burst {
        c.client.post(m).unwrap();
    }
    for i in 0..200u8 {
        assert_eq!(recv_skip_pool_empty(&c.server).body, [i], "in order");
    }
    // How many went inline depends on the machine's timing (the 5 µs cork
    // against a debug build's post): shown, not asserted.
    let after = c.engine.stats();
    println!(
        "burst: {} of 200 posts inline",
        after.inline_posts - before.inline_posts
    );
}

#[test]
fn try_receive_returns_at_once_with_or_without_a_message() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    assert!(group.try_receive().unwrap().is_none());
    group.update_receiver(None).unwrap();
    let m = group.try_receive().unwrap().expect("the queued update");
    assert_report(&m, tofu::ENGINE_CHANNEL, Status::ReceiverUpdate);
    assert!(group.try_receive().unwrap().is_none());
    engine.shutdown();
    assert_eq!(group.try_receive().unwrap_err(), Error::ShutdownStarted);
}

/// One thread, both ends, only `try_receive` (nobody waits anywhere): 50
/// request/response round trips complete in order. Each call runs a turn
/// of the loop when the poller is free, or finds what the I/O thread
/// delivered, so polling with `try_receive` makes progress by itself.
#[test]
fn try_receive_in_a_loop_makes_progress() {
    #[track_caller]
    fn spin(group: &ChannelGroup, empty_calls: &mut u64) -> Message {
        let deadline = std::time::Instant::now() + timeout();
        loop {
            match group.try_receive().unwrap() {
                // The pool ran dry for a moment: the data follows.
                Some(m) if m.is_from_engine() && m.status() == Status::PoolEmpty => {}
                Some(m) => return m,
                None => {
                    assert!(std::time::Instant::now() < deadline, "nothing arrived");
                    *empty_calls += 1;
                }
            }
        }
    }
    for t in TRANSPORTS {
        if let (Transport::Uds, Some(why)) = (t, tofu::testing::uds_unavailable()) {
            println!("not applicable: {why}");
            continue;
        }
        let c = connected(t);
        let mut empty_calls = 0;
        for seq in 0..50 {
            let body = seq_body(seq, 32);
            let id = c
                .client
                .post(msg(&c.engine, c.cch, OpCode::Request, &body))
                .unwrap()
                .message_id;
            let mut req = spin(&c.server, &mut empty_calls);
            assert_eq!(req.opcode(), OpCode::Request, "{req:?}");
            assert_eq!(req.header.channel_number, c.sch);
            assert_eq!(check_seq_body(&req.body, 32), seq);
            req.header.proto.opcode = OpCode::Response;
            c.server.post(req).unwrap();
            let resp = spin(&c.client, &mut empty_calls);
            assert_eq!(resp.opcode(), OpCode::Response, "{resp:?}");
            assert_eq!(resp.header.message_id, id);
            assert_eq!(check_seq_body(&resp.body, 32), seq);
        }
        println!("{t:?}: 50 round trips, {empty_calls} empty try_receive calls");
        assert!(c.server.try_receive().unwrap().is_none());
        assert!(c.client.try_receive().unwrap().is_none());
    }
}

#[test]
fn listen_and_connect_return_the_channel_the_answers_come_on() {
    for t in TRANSPORTS {
        if let (Transport::Uds, Some(why)) = (t, tofu::testing::uds_unavailable()) {
            println!("not applicable: {why}");
            continue;
        }
        let engine = engine();
        let server = engine.create_group().unwrap();
        let client = engine.create_group().unwrap();
        let (saddr, caddr) = addresses(t);
        // A client address is listened on as its server variant.
        let lch = server.listen(&caddr).unwrap();
        let welcome = recv(&server);
        assert_eq!(welcome.opcode(), OpCode::WelcomeResponse, "{welcome:?}");
        assert_eq!(welcome.status(), Status::Success);
        assert_eq!(welcome.header.channel_number, lch);
        assert_eq!(
            Address::parse_server(welcome.text_headers.get("~listen_on").unwrap()).unwrap(),
            saddr
        );

        let cch = client
            .connect_with(&saddr, &[("user", "ann"), ("version", "2")])
            .unwrap();
        assert_ne!(cch, lch);
        let mut req = recv(&server);
        assert_eq!(req.opcode(), OpCode::HelloRequest, "{req:?}");
        assert_eq!(req.text_headers.get("user"), Some("ann"));
        assert_eq!(req.text_headers.get("version"), Some("2"));
        req.header.proto.opcode = OpCode::HelloResponse;
        server.post(req).unwrap();
        let hello = recv(&client);
        assert_eq!(hello.opcode(), OpCode::HelloResponse, "{hello:?}");
        assert!(hello.is_from_application());
        assert_eq!(hello.header.channel_number, cch);

        // A plain connect to the same listener opens another channel.
        let second = client.connect(&caddr).unwrap();
        assert_ne!(second, cch);
        let req = recv(&server);
        assert_eq!(req.opcode(), OpCode::HelloRequest);
        assert_eq!(req.text_headers.get("user"), None);
    }
}

#[test]
fn listen_and_connect_refuse_bad_input_without_posting() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let before = engine.stats();
    assert_eq!(
        group.connect(&Address::tcp_client("127.0.0.1", 0)),
        Err(Error::InvalidAddress)
    );
    assert_eq!(
        group.connect(&Address::tcp_client("", 7099)),
        Err(Error::InvalidAddress)
    );
    assert_eq!(
        group.connect_with(&Address::tcp_client("127.0.0.1", 7099), &[("a:b", "c")]),
        Err(Error::InvalidMessage)
    );
    assert_eq!(
        group.connect_with(&Address::tcp_client("127.0.0.1", 7099), &[("a", "")]),
        Err(Error::InvalidMessage)
    );
    let big = "x".repeat(70_000);
    assert_eq!(
        group.connect_with(&Address::tcp_client("127.0.0.1", 7099), &[("big", &big)]),
        Err(Error::InvalidHeadersLen)
    );
    // Nothing was posted: no report comes back, and no channel was opened.
    recv_nothing(&group, Duration::from_millis(50));
    let after = engine.stats();
    assert_eq!(after.open_channels, before.open_channels);
    assert_eq!(
        after.pool_outstanding, before.pool_outstanding,
        "messages back in the pool"
    );

    // Nothing listening: the request comes back from the engine on the channel.
    let port = tofu::testing::free_tcp_port().unwrap();
    let ch = group
        .connect(&Address::tcp_client("127.0.0.1", port))
        .unwrap();
    let back = recv(&group);
    assert!(back.is_from_engine(), "{back:?}");
    assert_eq!(back.header.channel_number, ch);
    assert_eq!(back.status(), Status::ConnectFailed);

    engine.shutdown();
    assert_eq!(
        group.listen(&Address::tcp_server("127.0.0.1", 0)),
        Err(Error::ShutdownStarted)
    );
}
