//! Backpressure (SPEC §5.7): the engine reads only into pool messages; when the
//! pool runs dry it stops reading, reports `pool_empty`, and resumes — losing
//! nothing and stalling nothing — once messages come back.

#[macro_use]
mod util;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tofu::{Allocation, OpCode, Status};

use util::*;

/// 3000 x 1 KiB posted in one burst to a server whose pool holds 4 messages.
fn burst_into_tiny_pool(t: Transport) {
    let server_engine = tiny_pool_engine();
    let client_engine = engine();
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&server_engine, &server, &saddr);
    let (cch, sch) = connect_pair(&client_engine, &client, &server, &caddr);

    const N: u64 = 3000;
    const LEN: usize = 1024;
    for i in 0..N {
        let mut m = msg(&client_engine, cch, OpCode::Request, &seq_body(i, LEN));
        m.text_headers.append("seq", &i.to_string()).unwrap();
        client.post(m).unwrap();
    }
    let mut pool_empty = 0;
    for i in 0..N {
        let m = recv_counting_pool_empty(&server, &mut pool_empty);
        assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
        assert!(m.is_from_application());
        assert_eq!(m.header.channel_number, sch);
        assert_eq!(check_seq_body(&m.body, LEN), i, "in order, intact");
        assert_eq!(m.text_headers.get("seq"), Some(i.to_string().as_str()));
        drop(m); // back to the pool: this is what lets the engine read on
        if i % 250 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(pool_empty >= 1, "at least one pool_empty report");
    let stats = server_engine.stats();
    assert!(stats.pool_empty_events >= 1, "{stats:?}");
    // Every message the engine used came from its 4-message pool: it never
    // allocated more (free + taken = all it has).
    assert!(
        stats.pool_free + stats.pool_outstanding <= 4,
        "the pool stays bounded: {stats:?}"
    );
    // Still fully working afterwards.
    round_trip(&client_engine, &client, &server, cch, sch, b"after");
}

tcp_and_uds!(burst_into_tiny_pool);

/// Several channels share one tiny pool; each still delivers everything in order.
fn channels_share_a_tiny_pool(t: Transport) {
    let server_engine = tiny_pool_engine();
    let client_engine = engine();
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&server_engine, &server, &saddr);
    const CHANNELS: usize = 4;
    const N: u64 = 500;
    const LEN: usize = 2000;
    let pairs: Vec<(u16, u16)> = (0..CHANNELS)
        .map(|_| connect_pair(&client_engine, &client, &server, &caddr))
        .collect();
    for i in 0..N {
        for &(cch, _) in &pairs {
            client
                .post(msg(&client_engine, cch, OpCode::Signal, &seq_body(i, LEN)))
                .unwrap();
        }
    }
    let mut next = [0u64; CHANNELS];
    let mut pool_empty = 0;
    for n in 0..N as usize * CHANNELS {
        let m = recv_counting_pool_empty(&server, &mut pool_empty);
        let idx = pairs
            .iter()
            .position(|&(_, sch)| sch == m.header.channel_number)
            .unwrap_or_else(|| panic!("unknown channel: {m:?}"));
        assert_eq!(check_seq_body(&m.body, LEN), next[idx], "channel #{idx}");
        next[idx] += 1;
        if n % 300 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(next.iter().all(|&n| n == N));
    assert!(server_engine.stats().pool_empty_events >= 1);
}

tcp_and_uds!(channels_share_a_tiny_pool);

/// A raw client writes two frames in one write while the server's pool has a
/// single free message: the first frame takes it, the second frame's header is
/// complete but has no message. Once the application gives messages back, the
/// second frame must be delivered — even when the frame is empty (nothing after
/// the header is left over to trigger the decoding again).
fn second_frame_waits_for_memory(t: Transport, second_body: &'static [u8]) {
    let engine = tiny_pool_engine();
    let server = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let mut raw = RawStream::connect(&caddr);
    raw.write_all(&raw_frame(7, 3, 0, 100, b"", b"")).unwrap();
    let hello = recv(&server);
    assert_eq!(hello.opcode(), OpCode::HelloRequest, "{hello:?}");
    let mut accept = hello;
    accept.header.proto.opcode = OpCode::HelloResponse;
    server.post(accept).unwrap();
    assert_eq!(raw.read_frame().header[2], 4);
    eventually("all messages back in the pool", || {
        engine.stats().pool_free == 4
    });
    let held: Vec<_> = (0..3)
        .map(|_| engine.get(Allocation::PoolOnly).unwrap().unwrap())
        .collect();
    assert_eq!(engine.stats().pool_free, 1);

    let mut two = raw_frame(7, 2, 0, 1, b"", b"first");
    two.extend(raw_frame(7, 2, 0, 2, b"", second_body));
    raw.write_all(&two).unwrap();
    let first = recv(&server);
    assert_eq!(
        (first.opcode(), first.header.message_id),
        (OpCode::Signal, 1)
    );
    assert_eq!(first.body, b"first");
    std::thread::sleep(Duration::from_millis(50));
    drop(first);
    drop(held);
    let second = recv_skip_pool_empty(&server);
    assert_eq!(
        (second.opcode(), second.header.message_id),
        (OpCode::Signal, 2),
        "{second:?}"
    );
    assert_eq!(second.body, second_body);
    assert!(second.is_from_application());
}

#[test]
fn empty_frame_waits_for_memory_tcp() {
    second_frame_waits_for_memory(Transport::Tcp, b"");
}

#[test]
fn empty_frame_waits_for_memory_uds() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    second_frame_waits_for_memory(Transport::Uds, b"");
}

#[test]
fn frame_with_body_waits_for_memory_tcp() {
    second_frame_waits_for_memory(Transport::Tcp, b"second");
}

#[test]
fn frame_with_body_waits_for_memory_uds() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    second_frame_waits_for_memory(Transport::Uds, b"second");
}

/// The pool_empty report is a Signal from the engine about the starved channel.
#[test]
fn pool_empty_report_shape() {
    let engine = tiny_pool_engine();
    let server = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    listen(&engine, &server, &saddr);
    let mut raw = RawStream::connect(&caddr);
    raw.write_all(&raw_frame(7, 3, 0, 100, b"", b"")).unwrap();
    let hello = recv(&server);
    let sch = hello.header.channel_number;
    let mut frames = Vec::new();
    for i in 1..=10 {
        frames.extend(raw_frame(7, 2, 0, i, b"", b"x"));
    }
    raw.write_all(&frames).unwrap();
    let mut got = vec![hello];
    let report = loop {
        let m = recv(&server);
        if m.is_from_engine() {
            break m;
        }
        got.push(m); // hold on to them: the pool stays empty
    };
    assert_report(&report, sch, Status::PoolEmpty);
    assert_eq!(got.len(), 4, "exactly the pool's 4 messages were used");
    drop(got);
    for i in 4..=10 {
        let m = recv_skip_pool_empty(&server);
        assert_eq!(m.header.message_id, i);
    }
}

/// A message given back to a starved pool and taken out again at once (another
/// thread calling `get`) must not cost the engine its wake-up: once messages
/// really come back, the starved channel resumes.
fn starved_channel_resumes_after_a_stolen_return(t: Transport) {
    const FRAMES: u64 = 50;
    let engine = tiny_pool_engine();
    let server = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let mut raw = RawStream::connect(&caddr);
    raw.write_all(&raw_frame(7, 3, 0, 100, b"", b"")).unwrap();
    let hello = recv(&server);
    let mut frames = Vec::new();
    for i in 1..=FRAMES {
        frames.extend(raw_frame(7, 2, 0, i, b"", b"x"));
    }
    raw.write_all(&frames).unwrap();
    // Hold every pool message: the channel starves.
    let mut held = vec![hello];
    loop {
        let m = recv(&server);
        if m.is_from_engine() {
            assert_eq!(m.status(), Status::PoolEmpty, "{m:?}");
            break;
        }
        held.push(m);
    }
    assert_eq!(held.len(), 4);
    // Rounds of: another thread spins on `get` while one message is given
    // back. Whoever wins — the spinning thread (the I/O thread, woken by the
    // return, then finds the pool empty again) or the I/O thread (it reads the
    // next frame into the message) — the channel must never stall.
    let mut last_id = held.iter().map(|m| m.header.message_id).max().unwrap();
    let mut steals = 0;
    for _ in 0..30 {
        let stop = Arc::new(AtomicBool::new(false));
        let stealer = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(m) = engine.get(Allocation::PoolOnly).unwrap() {
                        return Some(m);
                    }
                    std::hint::spin_loop();
                }
                None
            })
        };
        std::thread::sleep(Duration::from_millis(2));
        drop(held.pop());
        std::thread::sleep(Duration::from_millis(2));
        stop.store(true, Ordering::Relaxed);
        match join_within(stealer) {
            Some(m) => {
                steals += 1;
                held.push(m);
            }
            None => {
                let m = recv_skip_pool_empty(&server);
                last_id = last_id.max(m.header.message_id);
                held.push(m);
            }
        }
    }
    eprintln!("stolen returns: {steals} of 30");
    let next_id = last_id + 1;
    // Now give everything back for good.
    drop(held);
    for i in next_id..=FRAMES {
        let m = recv_skip_pool_empty(&server);
        assert_eq!(m.header.message_id, i, "{m:?}");
    }
}

tcp_and_uds!(starved_channel_resumes_after_a_stolen_return);

/// With its pool empty, the engine still notices a peer that goes away (the end
/// of the stream needs no message), and reports pool_empty only for data that
/// really waits.
fn disconnect_noticed_while_pool_is_empty(t: Transport) {
    let SlowServer {
        server,
        client,
        client_engine,
        cch,
        sch,
        ..
    } = slow_server(t);
    // Four messages fill the server's pool; the server holds them all.
    for i in 0..4 {
        client
            .post(msg(&client_engine, cch, OpCode::Signal, &seq_body(i, 10)))
            .unwrap();
    }
    let held: Vec<_> = (0..4).map(|_| recv_skip_pool_empty(&server)).collect();
    // The peer aborts: nothing more arrives, only the end of the stream.
    abort(&client_engine, &client, cch);
    let report = recv(&server);
    assert_report(&report, sch, Status::ChannelClosed);
    recv_nothing(&server, Duration::from_millis(50));
    drop(held);
}

tcp_and_uds!(disconnect_noticed_while_pool_is_empty);

/// The pool grows for reading from `initial_pool_msgs` up to
/// `max_pool_msgs`, and no further: a server that keeps every message it
/// gets receives exactly `max_pool_msgs` of a longer stream, then a
/// `pool_empty` report, then the rest once it gives them back.
fn reading_grows_the_pool_to_its_maximum(t: Transport) {
    const MAX: usize = 12;
    let server_engine = tofu::Engine::new(tofu::Options {
        initial_pool_msgs: 3,
        max_pool_msgs: MAX as u16,
        ..tofu::Options::default()
    })
    .unwrap();
    let client_engine = engine();
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&server_engine, &server, &saddr);
    let (cch, _) = connect_pair(&client_engine, &client, &server, &caddr);
    // Everything the connection set-up took is back in the pool.
    eventually("the set-up's messages back", || {
        server_engine.stats().pool_outstanding == 0
    });
    const N: u64 = 40;
    for i in 0..N {
        client
            .post(msg(&client_engine, cch, OpCode::Signal, &seq_body(i, 32)))
            .unwrap();
    }
    let mut held = Vec::new();
    let mut pool_empty = 0;
    while pool_empty == 0 {
        let m = recv(&server);
        if m.is_from_engine() {
            assert_eq!(m.status(), Status::PoolEmpty, "{m:?}");
            pool_empty += 1;
            continue;
        }
        held.push(m);
    }
    // Anything still on its way was read before the report, into the pool.
    while let Some(m) = server
        .wait_receive(Some(Duration::from_millis(100)))
        .unwrap()
    {
        assert!(m.is_from_application(), "{m:?}");
        held.push(m);
    }
    println!(
        "pool 3 -> {MAX}: {} messages held when reading stopped ({:?})",
        held.len(),
        server_engine.stats()
    );
    assert_eq!(held.len(), MAX, "read into max_pool_msgs messages, no more");
    let mut next = held.len() as u64;
    for (i, m) in held.drain(..).enumerate() {
        assert_eq!(check_seq_body(&m.body, 32), i as u64);
    }
    while next < N {
        let m = recv_skip_pool_empty(&server);
        assert_eq!(check_seq_body(&m.body, 32), next, "in order, nothing lost");
        next += 1;
    }
}

tcp_and_uds!(reading_grows_the_pool_to_its_maximum);
