//! Leader/follower (SPEC §7): a thread blocked in `wait_receive` runs the
//! event loop itself when no other thread does. These tests check what that
//! must not change — every waiter gets its messages, wake-ups and deadlines
//! work for a thread that sleeps in `poll` — and that it happens at all.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tofu::{Error, OpCode, Status};
use util::*;

/// A client and an echo server on two engines, at least 300 round trips: the waiting
/// threads poll for themselves (`waiter_polls`), and every answer arrives.
#[test]
fn round_trips_are_polled_by_the_threads_that_wait() {
    let (server_engine, server, client_engine, client, caddr) = listening_pair();
    let echo = std::thread::spawn(move || {
        let mut echoed = 0;
        loop {
            let m = match server.wait_receive(Some(timeout())) {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => return echoed,
            };
            let answer = match m.opcode() {
                _ if m.is_from_engine() => continue,
                OpCode::HelloRequest => OpCode::HelloResponse,
                OpCode::Request => OpCode::Response,
                _ => continue,
            };
            let mut r = m;
            r.header.proto.opcode = answer;
            if server.post(r).is_ok() && answer == OpCode::Response {
                echoed += 1;
            }
        }
    });
    let ch = client
        .post(opening(&client_engine, &caddr))
        .unwrap()
        .channel_number;
    let hello = recv(&client);
    assert_eq!(hello.opcode(), OpCode::HelloResponse, "{hello:?}");
    let before = (client_engine.stats(), server_engine.stats());
    let led = |after: &tofu::Stats, before: &tofu::Stats| {
        (
            after.waiter_polls - before.waiter_polls,
            after.polls - before.polls,
        )
    };
    // At least 300; more while a waiting thread has not led yet: on a
    // loaded machine a woken thread can come back after the I/O thread's
    // lease ran out (it then polls itself, correctly), so the first
    // hundreds may all be the I/O thread's. Bounded by the test timeout.
    let deadline = Instant::now() + timeout();
    let mut rounds = 0u32;
    let (c, s) = loop {
        let body = rounds.to_le_bytes();
        checked_round_trip(&client_engine, &client, ch, &body);
        rounds += 1;
        let (c, s) = (client_engine.stats(), server_engine.stats());
        let both_led = led(&c, &before.0).0 > 0 && led(&s, &before.1).0 > 0;
        if rounds >= 300 && (both_led || Instant::now() >= deadline) {
            break (c, s);
        }
    };
    let (cw, cp) = led(&c, &before.0);
    let (sw, sp) = led(&s, &before.1);
    println!(
        "{rounds} round trips: client polls {cp} ({cw} by the waiting thread), server polls {sp} ({sw})"
    );
    assert!(cw > 0, "the client's waiting thread never polled: {c:?}");
    assert!(sw > 0, "the server's waiting thread never polled: {s:?}");
    server_engine.shutdown();
    assert_eq!(join_within(echo), rounds);
}

/// Two threads wait on two groups of one engine: one of them leads, the
/// other follows; both get every message meant for them, in order.
#[test]
fn two_waiting_threads_both_get_their_messages() {
    let c = connected(any_transport());
    let engine = c.engine.clone();
    let (client, server) = (Arc::new(c.client), Arc::new(c.server));
    const N: u32 = 200;
    let waiter = |group: Arc<tofu::ChannelGroup>, op: OpCode| {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < N as usize {
                let m = recv_skip_pool_empty(&group);
                assert!(m.is_from_application(), "{m:?}");
                assert_eq!(m.opcode(), op, "{m:?}");
                seen.push(u32::from_le_bytes(m.body[..4].try_into().unwrap()));
            }
            seen
        })
    };
    let on_server = waiter(server.clone(), OpCode::Signal);
    std::thread::sleep(Duration::from_millis(20));
    let on_client = waiter(client.clone(), OpCode::Signal);
    std::thread::sleep(Duration::from_millis(20));
    for i in 0..N {
        let body = i.to_le_bytes();
        client
            .post_timeout(msg(&engine, c.cch, OpCode::Signal, &body), timeout())
            .unwrap();
        server
            .post_timeout(msg(&engine, c.sch, OpCode::Signal, &body), timeout())
            .unwrap();
    }
    let want: Vec<u32> = (0..N).collect();
    assert_eq!(join_within(on_server), want);
    assert_eq!(join_within(on_client), want);
}

/// A server engine listening (on either transport) and a client engine,
/// each with a group, and the address the client connects to.
fn listening_pair() -> (
    tofu::Engine,
    tofu::ChannelGroup,
    tofu::Engine,
    tofu::ChannelGroup,
    tofu::Address,
) {
    let server_engine = engine();
    let client_engine = engine();
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(any_transport());
    listen(&server_engine, &server, &saddr);
    (server_engine, server, client_engine, client, caddr)
}

/// A thread sleeping in `poll` (it leads) is woken by `update_receiver`
/// from another thread, and by shutdown. Whether a waiter leads depends on
/// timing, so this tries until one did (seen as a poll counted for a
/// waiting thread when a command wakes the poller), and checks the wake-up
/// every time.
#[test]
fn a_leading_thread_wakes_for_update_receiver_and_shutdown() {
    let engine = engine();
    let group = Arc::new(engine.create_group().unwrap());
    let other = engine.create_group().unwrap();
    let mut led = 0;
    for _ in 0..20 {
        prime(&engine, &other);
        let waiter = {
            let group = group.clone();
            std::thread::spawn(move || group.wait_receive(Some(timeout())))
        };
        std::thread::sleep(Duration::from_millis(30));
        let before = engine.stats().waiter_polls;
        drop(engine.create_group().unwrap()); // a command: wakes the poller
        std::thread::sleep(Duration::from_millis(30));
        let leading = engine.stats().waiter_polls > before;
        group.update_receiver(None).unwrap();
        let m = join_within(waiter).unwrap().expect("woken by the update");
        assert!(m.is_from_engine(), "{m:?}");
        assert_eq!(m.status(), Status::ReceiverUpdate);
        led += usize::from(leading);
        if led >= 3 {
            break;
        }
    }
    println!("the waiter led in {led} of the attempts");
    assert!(led > 0, "no waiter ever led");
    prime(&engine, &other);
    let waiter = {
        let group = group.clone();
        std::thread::spawn(move || group.wait_receive(None))
    };
    std::thread::sleep(Duration::from_millis(30));
    engine.shutdown();
    assert_eq!(join_within(waiter).unwrap_err(), Error::ShutdownStarted);
}

/// Deadlines hold whether the waiting thread leads (sleeps in `poll`) or
/// follows.
#[test]
fn a_waiting_thread_keeps_its_deadline() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let other = engine.create_group().unwrap();
    let before = engine.stats().waiter_polls;
    for wait in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_millis(60),
    ] {
        prime(&engine, &other);
        let t0 = Instant::now();
        assert!(group.wait_receive(Some(wait)).unwrap().is_none());
        let took = t0.elapsed();
        assert!(took >= wait, "returned after {took:?}, before {wait:?}");
        assert!(took < timeout(), "{took:?}");
    }
    println!(
        "waiter polls during the three waits: {}",
        engine.stats().waiter_polls - before
    );
}

/// Shutdown while one waiter leads (asleep in `poll`) and others follow:
/// every one wakes with `ShutdownStarted` and `shutdown` returns — many
/// times over, since the order in which they notice is a race.
#[test]
fn shutdown_wakes_leaders_and_followers_every_time() {
    for _ in 0..30 {
        let engine = engine();
        let group = Arc::new(engine.create_group().unwrap());
        let other = engine.create_group().unwrap();
        prime(&engine, &other);
        let waiters: Vec<_> = (0..3)
            .map(|i| {
                let group = group.clone();
                std::thread::spawn(move || {
                    let wait = (i == 2).then(|| Duration::from_secs(60));
                    group.wait_receive(wait)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        let e = engine.clone();
        within(timeout(), move || e.shutdown());
        for w in waiters {
            assert_eq!(join_within(w).unwrap_err(), Error::ShutdownStarted);
        }
    }
}

/// Three threads wait on one group (one may lead, the others follow): each
/// of 600 messages is received exactly once.
#[test]
fn threads_sharing_a_group_receive_each_message_once() {
    let c = connected(any_transport());
    three_receivers_get_each_once(c.server, &c.engine, &c.client, c.cch, 600);
}

/// When the application threads stop calling the engine right after one of
/// them led, the I/O thread takes the poller back by itself (after at most
/// two leases): what arrives then is read and queued with no application
/// thread in the engine.
#[test]
fn the_io_thread_polls_again_when_the_application_stops_leading() {
    let (server_engine, server, client_engine, client, caddr) = listening_pair();
    client.post(opening(&client_engine, &caddr)).unwrap();
    let mut hello = recv(&server);
    assert_eq!(hello.opcode(), OpCode::HelloRequest, "{hello:?}");
    let server_ch = hello.header.channel_number;
    hello.header.proto.opcode = OpCode::HelloResponse;
    server.post(hello).unwrap();
    // The client's thread waits for the answer (it leads if the poller is
    // free), then leaves the engine alone.
    let answer = recv(&client);
    assert_eq!(answer.opcode(), OpCode::HelloResponse, "{answer:?}");
    let before = client_engine.stats().messages_received;
    for i in 0..5u8 {
        server
            .post(msg(&server_engine, server_ch, OpCode::Signal, &[i]))
            .unwrap();
    }
    let deadline = Instant::now() + timeout();
    while client_engine.stats().messages_received < before + 5 {
        assert!(
            Instant::now() < deadline,
            "nobody read the client's socket while no application thread was in the engine"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut got = Vec::new();
    assert_eq!(
        client
            .receive_many(&mut got, 16, Some(Duration::ZERO))
            .unwrap(),
        5
    );
    let bodies: Vec<u8> = got.iter().map(|m| m.body[0]).collect();
    assert_eq!(bodies, [0, 1, 2, 3, 4]);
}
