//! Data transfer (SPEC §5.4): order per channel, concurrency, many connections,
//! section size limits, `more` and `message_id` carried untouched.

#[macro_use]
mod util;

use std::collections::HashMap;
use std::sync::Arc;

use tofu::{More, OpCode, Origin, Status};
use util::*;

/// 4 threads post 500 requests each on the same channel: all 2000 arrive and
/// each thread's requests are in its posting order.
fn four_threads_one_channel(t: Transport) {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = Arc::new(engine.create_group().unwrap());
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    const THREADS: u8 = 4;
    const PER_THREAD: u32 = 500;
    let posters: Vec<_> = (0..THREADS)
        .map(|tid| {
            let client = client.clone();
            let engine = engine.clone();
            std::thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    let mut body = vec![tid];
                    body.extend_from_slice(&seq.to_be_bytes());
                    client
                        .post(msg(&engine, cch, OpCode::Request, &body))
                        .expect("post");
                }
            })
        })
        .collect();
    let mut next = [0u32; THREADS as usize];
    for _ in 0..THREADS as u32 * PER_THREAD {
        let m = recv_skip_pool_empty(&server);
        assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
        assert_eq!(m.header.channel_number, sch);
        assert_eq!(m.body.len(), 5);
        let tid = m.body[0] as usize;
        let seq = u32::from_be_bytes(m.body[1..5].try_into().unwrap());
        assert_eq!(seq, next[tid], "thread {tid} out of order");
        next[tid] += 1;
    }
    for p in posters {
        p.join().unwrap();
    }
    assert!(next.iter().all(|&n| n == PER_THREAD));
    recv_nothing(&server, std::time::Duration::from_millis(50));
}

tcp_and_uds!(four_threads_one_channel);

/// 200 clients connect to one listener at once; every hello is accepted, every
/// client gets its echo, then all close gracefully. The server runs on its own
/// thread, as a server would: with a bounded pool, a peer that stops receiving
/// legitimately stops the engine reading (SPEC §5.7).
fn two_hundred_connections(t: Transport) {
    const N: usize = 200;
    let server_engine = engine();
    let client_engine = engine();
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&server_engine, &server, &saddr);

    // Echo server: accepts every hello, echoes requests, answers byes; returns
    // (hello id -> server channel, server channel -> request body) once all N
    // channels have closed.
    let server_thread = std::thread::spawn(move || {
        let mut hellos = HashMap::new();
        let mut bodies = HashMap::new();
        let mut closed = 0;
        while closed < N {
            let m = recv_skip_pool_empty(&server);
            let sch = m.header.channel_number;
            if m.is_from_engine() {
                assert_report(&m, sch, Status::ChannelClosed);
                closed += 1;
                continue;
            }
            let reply = match m.opcode() {
                OpCode::HelloRequest => {
                    assert!(hellos.insert(m.header.message_id, sch).is_none());
                    OpCode::HelloResponse
                }
                OpCode::Request => {
                    assert!(bodies.insert(sch, m.body.clone()).is_none());
                    OpCode::Response
                }
                OpCode::ByeRequest => OpCode::ByeResponse,
                other => panic!("unexpected {other:?}: {m:?}"),
            };
            let mut r = m;
            r.header.proto.opcode = reply;
            server.post(r).unwrap();
        }
        (hellos, bodies, server)
    });

    let mut hellos = HashMap::new(); // client channel -> hello id
    for _ in 0..N {
        let h = client.post(opening(&client_engine, &caddr)).unwrap();
        assert!(hellos.insert(h.channel_number, h.message_id).is_none());
    }
    for _ in 0..N {
        let r = recv_skip_pool_empty(&client);
        assert_eq!(r.opcode(), OpCode::HelloResponse, "{r:?}");
        assert!(r.is_from_application());
        assert_eq!(
            hellos.get(&r.header.channel_number),
            Some(&r.header.message_id)
        );
    }
    // One request per client, echoed.
    for &cch in hellos.keys() {
        client
            .post(msg(
                &client_engine,
                cch,
                OpCode::Request,
                &cch.to_be_bytes(),
            ))
            .unwrap();
    }
    for _ in 0..N {
        let r = recv_skip_pool_empty(&client);
        assert_eq!(r.opcode(), OpCode::Response, "{r:?}");
        assert_eq!(r.body, r.header.channel_number.to_be_bytes());
    }
    // All close gracefully.
    for &cch in hellos.keys() {
        client
            .post(msg(&client_engine, cch, OpCode::ByeRequest, b""))
            .unwrap();
    }
    let (mut responses, mut closed) = (0, 0);
    while responses < N || closed < N {
        let m = recv_skip_pool_empty(&client);
        assert!(hellos.contains_key(&m.header.channel_number), "{m:?}");
        if m.is_from_engine() {
            assert_report(&m, m.header.channel_number, Status::ChannelClosed);
            closed += 1;
        } else {
            assert_eq!(m.opcode(), OpCode::ByeResponse, "{m:?}");
            responses += 1;
        }
    }
    let (server_hellos, bodies, _server) = join_within(server_thread);
    // Each request came in on the connection of the client that sent it.
    for (cch, id) in &hellos {
        let sch = server_hellos[id];
        assert_eq!(bodies[&sch], cch.to_be_bytes());
    }
    eventually("all client channels closed", || {
        client_engine.stats().open_channels == 0
    });
    let stats = server_engine.stats();
    assert_eq!(stats.open_channels, 1, "only the listener: {stats:?}");
    assert_eq!(stats.accepted, N as u64);
}

tcp_and_uds!(two_hundred_connections);

/// Text headers and body of exactly 65535 bytes each travel intact.
fn largest_sections(t: Transport) {
    let Connected {
        engine,
        server,
        client,
        cch,
        sch,
    } = connected(t);
    let mut m = msg(&engine, cch, OpCode::Request, &seq_body(9, 65535));
    let value: String = (0..65535 - "big:".len() - 2)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    m.text_headers.append("big", &value).unwrap();
    assert_eq!(m.text_headers.byte_len(), 65535);
    client.post(m).unwrap();
    let got = recv(&server);
    assert_eq!(got.header.channel_number, sch);
    assert_eq!(check_seq_body(&got.body, 65535), 9);
    assert_eq!(got.text_headers.get("big"), Some(value.as_str()));
    assert_eq!(got.text_headers.byte_len(), 65535);
    // And back.
    let mut resp = got;
    resp.header.proto.opcode = OpCode::Response;
    server.post(resp).unwrap();
    let r = recv(&client);
    assert_eq!(check_seq_body(&r.body, 65535), 9);
    assert_eq!(r.text_headers.get("big"), Some(value.as_str()));
}

tcp_and_uds!(largest_sections);

/// `more`, `message_id` and text headers are carried untouched; `origin` and
/// `status` are forced by `post` and arrive as Application / success.
fn streaming_fields_carried(t: Transport) {
    let Connected {
        engine,
        server,
        client,
        cch,
        sch,
    } = connected(t);
    let id = u64::MAX - 5;
    for (i, more) in [More::More, More::More, More::Last].into_iter().enumerate() {
        let mut m = msg(
            &engine,
            sch,
            OpCode::Response,
            format!("part {i}").as_bytes(),
        );
        m.header.message_id = id;
        m.header.proto.more = more;
        m.header.proto.origin = Origin::Engine;
        m.header.status = Status::InvalidMessage as u8;
        m.text_headers.append("part", &i.to_string()).unwrap();
        let h = server.post(m).unwrap();
        assert_eq!(h.message_id, id);
        assert_eq!(h.proto.origin, Origin::Application);
        assert_eq!(h.status, 0);
        assert_eq!(h.proto.more, more);
    }
    for (i, more) in [More::More, More::More, More::Last].into_iter().enumerate() {
        let m = recv(&client);
        assert_eq!(m.opcode(), OpCode::Response);
        assert_eq!(m.header.channel_number, cch);
        assert_eq!(m.header.message_id, id);
        assert_eq!(m.header.proto.more, more);
        assert_eq!(m.has_more(), more == More::More);
        assert!(m.is_from_application());
        assert_eq!(m.status(), Status::Success);
        assert_eq!(m.text_headers.get("part"), Some(i.to_string().as_str()));
        assert_eq!(m.body, format!("part {i}").as_bytes());
    }
    // Signals and Requests may stream too.
    for op in [OpCode::Signal, OpCode::Request] {
        let mut m = msg(&engine, cch, op, b"s");
        m.header.proto.more = More::More;
        client.post(m).unwrap();
        let got = recv(&server);
        assert_eq!((got.opcode(), got.has_more()), (op, true));
    }
}

tcp_and_uds!(streaming_fields_carried);

/// Both peers send 2000 messages to each other at the same time, from their own
/// threads: no deadlock, everything in order on both sides.
fn both_directions_at_once(t: Transport) {
    let engine = engine();
    let server = Arc::new(engine.create_group().unwrap());
    let client = Arc::new(engine.create_group().unwrap());
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    const N: u64 = 2000;
    const LEN: usize = 3000;
    let side = |me: Arc<tofu::ChannelGroup>, ch: u16| {
        let engine = engine.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                me.post(msg(&engine, ch, OpCode::Signal, &seq_body(i, LEN)))
                    .unwrap();
            }
            for i in 0..N {
                let m = recv_skip_pool_empty(&me);
                assert_eq!(m.header.channel_number, ch);
                assert_eq!(check_seq_body(&m.body, LEN), i);
            }
        })
    };
    let a = side(client.clone(), cch);
    let b = side(server.clone(), sch);
    within(timeout() * 2, move || {
        a.join().unwrap();
        b.join().unwrap();
    });
}

tcp_and_uds!(both_directions_at_once);

/// Large bodies arrive intact, in order, when the engine reads them in
/// place (straight into their messages): a stream of bodies larger than
/// the part of one read left after a frame boundary, in sizes that grow
/// and shrink so that recycled messages are resized both ways.
fn large_bodies_read_in_place(t: Transport) {
    let Connected {
        engine,
        server,
        client,
        cch,
        sch,
    } = connected(t);
    let before = engine.stats().bytes_read_in_place;
    let sizes = [60_000, 20_000, 65_535, 17_000, 50_000];
    let n = 60u64;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for seq in 0..n {
                let len = sizes[seq as usize % sizes.len()];
                let m = msg(&engine, cch, OpCode::Signal, &fast_seq_body(seq, len));
                client.post(m).unwrap();
            }
        });
        for seq in 0..n {
            let got = recv(&server);
            assert_eq!(got.header.channel_number, sch);
            let len = sizes[seq as usize % sizes.len()];
            assert_eq!(check_fast_seq_body(&got.body, len), seq);
        }
    });
    assert!(
        engine.stats().bytes_read_in_place > before,
        "no body was read in place"
    );
}

tcp_and_uds!(large_bodies_read_in_place);
