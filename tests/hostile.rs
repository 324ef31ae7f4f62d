//! Hostile input over raw sockets (issue 5): random bytes, every proto byte,
//! oversized length fields followed by a stall, HelloRequest floods and
//! byte-at-a-time (slowloris) senders. Only the offending connection is
//! closed; a well-behaved client on the same listener keeps working
//! throughout. (tests/wire_level.rs has the basic invalid and truncated frames.)

#[macro_use]
mod util;

use std::io::Write;
use std::time::{Duration, Instant};

use tofu::{Address, ChannelGroup, Engine, OpCode, Status};
use util::*;

/// A message the server group got that was not the well-behaved client's.
#[derive(Debug)]
struct Noise {
    ch: u16,
    op: OpCode,
    from_engine: bool,
    status: Status,
    id: u64,
    more: bool,
    body: Vec<u8>,
}

/// The victim: a server engine with a listener, and a well-behaved client (its
/// own engine) connected to it.
struct Bed {
    engine: Engine,
    server: ChannelGroup,
    caddr: Address,
    client_engine: Engine,
    client: ChannelGroup,
    cch: u16,
    sch: u16,
    noise: Vec<Noise>,
    /// HelloRequests from raw clients are rejected with ByeSignal.
    reject_hellos: bool,
    next_hello_id: u64,
}

fn bed(t: Transport) -> Bed {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let client_engine = util::engine();
    let client = client_engine.create_group().unwrap();
    let (cch, sch) = connect_pair(&client_engine, &client, &server, &caddr);
    Bed {
        engine,
        server,
        caddr,
        client_engine,
        client,
        cch,
        sch,
        noise: Vec::new(),
        reject_hellos: true,
        next_hello_id: 1000,
    }
}

impl Bed {
    /// Next message for the server group other than pool_empty reports.
    #[track_caller]
    fn next(&mut self) -> tofu::Message {
        recv_skip_pool_empty(&self.server)
    }

    fn note(&mut self, m: tofu::Message) {
        assert_ne!(m.header.channel_number, self.sch, "good channel: {m:?}");
        let n = Noise {
            ch: m.header.channel_number,
            op: m.opcode(),
            from_engine: m.is_from_engine(),
            status: m.status(),
            id: m.header.message_id,
            more: m.has_more(),
            body: m.body.clone(),
        };
        drop(m);
        if self.reject_hellos && !n.from_engine && n.op == OpCode::HelloRequest {
            // A hostile client that managed a valid hello: turn it away.
            let _ = self
                .server
                .post(msg(&self.engine, n.ch, OpCode::ByeSignal, b""));
        }
        self.noise.push(n);
    }

    /// One request/response on the well-behaved channel, noise set aside.
    #[track_caller]
    fn alive(&mut self, tag: &str) {
        let body = format!("alive: {tag}").into_bytes();
        let h = self
            .client
            .post(msg(&self.client_engine, self.cch, OpCode::Request, &body))
            .expect("post request");
        loop {
            let m = self.next();
            if m.header.channel_number == self.sch && m.is_from_application() {
                assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
                assert_eq!(m.header.message_id, h.message_id, "{tag}");
                assert_eq!(m.body, body);
                let mut r = m;
                r.header.proto.opcode = OpCode::Response;
                self.server.post(r).expect("post response");
                break;
            }
            self.note(m);
        }
        let r = recv_skip_pool_empty(&self.client);
        assert_eq!(r.opcode(), OpCode::Response, "{tag}: {r:?}");
        assert_eq!(r.header.message_id, h.message_id, "{tag}");
        assert_eq!(r.body, body, "{tag}");
    }

    /// A raw client whose HelloRequest the server accepted; returns it and the
    /// server-side channel.
    #[track_caller]
    fn accept_raw(&mut self) -> (RawStream, u16) {
        self.next_hello_id += 1;
        let id = self.next_hello_id;
        let mut raw = RawStream::connect(&self.caddr);
        raw.write_all(&raw_frame(0x0102, 3, 0, id, b"", b"hello"))
            .unwrap();
        let sch = loop {
            let m = self.next();
            if m.is_from_application()
                && m.opcode() == OpCode::HelloRequest
                && m.header.message_id == id
            {
                let ch = m.header.channel_number;
                let mut a = m;
                a.header.proto.opcode = OpCode::HelloResponse;
                self.server.post(a).expect("accept");
                break ch;
            }
            self.note(m);
        };
        assert_eq!(raw.read_frame().header[2], 4, "HelloResponse");
        (raw, sch)
    }

    /// Index in `noise` of the first entry from `from` on that matches.
    #[track_caller]
    fn expect(&mut self, from: usize, what: &str, pred: impl Fn(&Noise) -> bool) -> usize {
        let deadline = Instant::now() + timeout();
        loop {
            if let Some(i) = self.noise[from..].iter().position(&pred) {
                return from + i;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            let m = self.next();
            self.note(m);
        }
    }

    /// The `channel_closed` report for `ch`.
    #[track_caller]
    fn expect_closed_report(&mut self, ch: u16) {
        self.expect(0, "channel_closed report", |n| {
            n.ch == ch
                && n.from_engine
                && n.op == OpCode::Signal
                && n.status == Status::ChannelClosed
        });
    }

    /// Waits until only the listener and the good channel are open, taking in
    /// noise meanwhile.
    #[track_caller]
    fn settle(&mut self, what: &str) {
        let deadline = Instant::now() + timeout();
        while self.engine.stats().open_channels != 2 {
            assert!(
                Instant::now() < deadline,
                "{what}: {} channels still open",
                self.engine.stats().open_channels
            );
            if let Some(m) = self
                .server
                .wait_receive(Some(Duration::from_millis(5)))
                .unwrap()
            {
                if !(m.is_from_engine() && m.status() == Status::PoolEmpty) {
                    self.note(m);
                }
            }
        }
        // Every channel the application saw got its channel_closed report.
        let seen: std::collections::BTreeSet<u16> = self
            .noise
            .iter()
            .filter(|n| !n.from_engine)
            .map(|n| n.ch)
            .collect();
        for ch in seen {
            self.expect_closed_report(ch);
        }
    }
}

/// xorshift64*: reproducible noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ----- random bytes ----------------------------------------------------------------

/// Random bytes, before and after a valid hello, then the client leaves.
fn random_bytes(t: Transport) {
    let mut bed = bed(t);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..40 {
        let len = 1 + (rng.next() % 3000) as usize;
        let junk = rng.bytes(len);
        let mut raw = if round % 2 == 0 {
            RawStream::connect(&bed.caddr)
        } else {
            bed.accept_raw().0
        };
        // The engine may close the connection before everything is written.
        let _ = raw.write_all(&junk);
        drop(raw);
        bed.alive(&format!("random round {round}"));
    }
    bed.settle("random bytes");
    let stats = bed.engine.stats();
    assert!(stats.invalid_frames > 0, "some junk was invalid: {stats:?}");
    bed.alive("after random bytes");
}

tcp_and_uds!(random_bytes);

// ----- every proto byte ------------------------------------------------------------------

/// Whether a frame with this proto byte may arrive (SPEC §3; bits 6-7 are
/// engine-internal and ignored; a ByeSignal is the peer's abort: delivered,
/// then the channel closes).
fn travels(proto: u8) -> bool {
    let op = proto & 0x0f;
    let more = proto & 0x20 != 0;
    op <= 7 && !(more && op > 2)
}

/// Every one of the 256 proto byte values, as the first frame and after the
/// hello: the invalid ones close only that connection, the valid ones are
/// delivered with origin Application and `more` preserved.
fn every_proto_byte(t: Transport) {
    let mut bed = bed(t);
    for proto in 0..=255u8 {
        let first_ok = travels(proto) && proto & 0x0f == 3 && proto & 0x20 == 0;
        // As the first frame.
        let silent_before = bed.engine.stats().silent_closes;
        let mut raw = RawStream::connect(&bed.caddr);
        raw.write_all(&raw_frame(1, proto, 0, 77, b"", b"first"))
            .unwrap();
        if first_ok {
            let i = bed.expect(0, "a hello", |n| n.op == OpCode::HelloRequest && n.id == 77);
            let ch = bed.noise[i].ch;
            raw.expect_closed(); // the application rejected it
            bed.expect_closed_report(ch);
            bed.noise.clear();
        } else {
            raw.expect_closed();
            eventually("the silent close", || {
                bed.engine.stats().silent_closes == silent_before + 1
            });
        }
        // After the hello.
        let (mut raw, sch) = bed.accept_raw();
        let invalid_before = bed.engine.stats().invalid_frames;
        raw.write_all(&raw_frame(1, proto, 0, 88, b"k:v\r\n", b"second"))
            .unwrap();
        if travels(proto) {
            let i = bed.expect(0, "the frame", |n| n.ch == sch && n.id == 88);
            let n = &bed.noise[i];
            assert!(!n.from_engine, "proto {proto:#04x}: {n:?}");
            assert_eq!(n.op as u8, proto & 0x0f, "proto {proto:#04x}");
            assert_eq!(n.more, proto & 0x20 != 0, "proto {proto:#04x}");
            assert_eq!(n.body, b"second");
            if matches!(n.op, OpCode::HelloRequest | OpCode::ByeSignal) {
                // Turned away by `note`, or the peer's abort: the connection
                // closes.
                raw.expect_closed();
            }
            drop(raw);
        } else {
            bed.expect_closed_report(sch);
            raw.expect_closed();
            assert_eq!(
                bed.engine.stats().invalid_frames,
                invalid_before + 1,
                "proto {proto:#04x} counted"
            );
        }
        bed.expect_closed_report(sch);
        bed.noise.clear();
        if proto % 16 == 15 {
            bed.alive(&format!("proto {proto:#04x}"));
        }
    }
    bed.settle("every proto byte");
}

tcp_and_uds!(every_proto_byte);

// ----- oversized lengths, stalls --------------------------------------------------------

/// Headers announcing 65535 + 65535 bytes, a little of it, then silence — on
/// more connections than the server's pool has messages, before and after the
/// hello. The engine keeps waiting on them, and serves everyone else.
fn oversized_lengths_then_stall(t: Transport) {
    const STALLED: usize = 40;
    let mut bed = bed(t);
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let (mut raw, proto) = if i % 2 == 0 {
            (RawStream::connect(&bed.caddr), 3)
        } else {
            (bed.accept_raw().0, 0)
        };
        let mut frame = raw_frame(1, proto, 0, 5, b"", b"");
        frame[12..16].copy_from_slice(&[0xff; 4]);
        frame.extend_from_slice(&[b'a'; 100]);
        raw.write_all(&frame).unwrap();
        stalled.push(raw);
        if i % 8 == 7 {
            bed.alive(&format!("{} stalled", i + 1));
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..20 {
        bed.alive(&format!("with {STALLED} stalled, #{i}"));
    }
    assert_eq!(
        bed.engine.stats().open_channels,
        2 + STALLED as u64,
        "stalled connections are left open"
    );
    drop(stalled);
    bed.settle("stalled connections gone");
    bed.alive("after the stalls");
}

tcp_and_uds!(oversized_lengths_then_stall);

// ----- HelloRequest floods -----------------------------------------------------------------

/// Many connections, each sending a HelloRequest at once; the application
/// turns every one away.
fn hello_flood_connections(t: Transport) {
    const N: usize = 300;
    let mut bed = bed(t);
    let mut raws = Vec::new();
    for i in 0..N {
        let mut raw = RawStream::connect(&bed.caddr);
        raw.write_all(&raw_frame(1, 3, 0, 5000 + i as u64, b"", b"flood"))
            .unwrap();
        raws.push(raw);
        if i % 100 == 99 {
            bed.alive(&format!("flood {i}"));
        }
    }
    for i in 0..N {
        let id = 5000 + i as u64;
        bed.expect(0, "every flood hello", |n| {
            n.op == OpCode::HelloRequest && n.id == id
        });
    }
    for raw in &mut raws {
        raw.expect_closed();
    }
    bed.settle("hello flood");
    let hellos = bed
        .noise
        .iter()
        .filter(|n| n.op == OpCode::HelloRequest)
        .count();
    assert_eq!(hellos, N, "each hello delivered once");
    bed.alive("after the flood");
}

tcp_and_uds!(hello_flood_connections);

/// One accepted connection sends thousands of HelloRequests in a row: they are
/// delivered (backpressure bounds memory); the application closes the channel
/// at the second one; everything else keeps working.
fn hello_flood_on_one_connection(t: Transport) {
    const N: u64 = 5000;
    let mut bed = bed(t);
    bed.reject_hellos = false;
    let (mut raw, sch) = bed.accept_raw();
    let mut frames = Vec::new();
    for i in 0..N {
        frames.extend(raw_frame(1, 3, 0, 10_000 + i, b"", b"again"));
    }
    let writer = std::thread::spawn(move || {
        let _ = raw.write_all(&frames); // may fail once the engine closes
        raw
    });
    let i = bed.expect(0, "the second hello", |n| {
        n.ch == sch && n.op == OpCode::HelloRequest
    });
    assert_eq!(bed.noise[i].id, 10_000);
    let b = bed
        .server
        .post(msg(&bed.engine, sch, OpCode::ByeSignal, b""));
    assert!(b.is_ok(), "{b:?}");
    bed.expect_closed_report(sch);
    let mut raw = join_within(writer);
    raw.expect_closed();
    // What arrived before the ByeSignal is an in-order prefix of the flood.
    let ids: Vec<u64> = bed
        .noise
        .iter()
        .filter(|n| n.ch == sch && !n.from_engine)
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, (10_000..10_000 + ids.len() as u64).collect::<Vec<_>>());
    bed.settle("hello flood on one connection");
    bed.alive("after the flood");
}

tcp_and_uds!(hello_flood_on_one_connection);

// ----- slowloris -------------------------------------------------------------------------

/// More connections than the pool has messages, each sending its frame one
/// byte at a time (half of them a HelloRequest, half a Request after the
/// hello): every frame arrives intact, and the good client is served all along.
fn one_byte_at_a_time(t: Transport) {
    const SLOW: usize = 24;
    const BODY: usize = 600;
    let mut bed = bed(t);
    let mut conns = Vec::new();
    for i in 0..SLOW {
        let id = 20_000 + i as u64;
        let body = seq_body(id, BODY);
        if i % 2 == 0 {
            let raw = RawStream::connect(&bed.caddr);
            conns.push((raw, raw_frame(1, 3, 0, id, b"x:y\r\n", &body)));
        } else {
            let (raw, _) = bed.accept_raw();
            conns.push((raw, raw_frame(1, 0, 0, id, b"x:y\r\n", &body)));
        }
    }
    let len = conns[0].1.len();
    for pos in 0..len {
        for (raw, frame) in &mut conns {
            raw.write_all(&frame[pos..pos + 1]).unwrap();
        }
        if pos % 100 == 0 {
            bed.alive(&format!("byte {pos}"));
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    for i in 0..SLOW {
        let id = 20_000 + i as u64;
        let k = bed.expect(0, "a slow frame", |n| n.id == id && !n.from_engine);
        let op = if i % 2 == 0 {
            OpCode::HelloRequest
        } else {
            OpCode::Request
        };
        assert_eq!(bed.noise[k].op, op);
        assert_eq!(check_seq_body(&bed.noise[k].body, BODY), id, "intact");
    }
    bed.alive("after the slow frames");
    drop(conns);
    bed.settle("slow connections gone");
}

tcp_and_uds!(one_byte_at_a_time);

/// Regression: frames stalled after their header used to take a pool message
/// each, so as many stalled peers as the pool has messages stopped every other
/// channel. With a 4-message pool and 6 stalled peers, a well-behaved peer still
/// gets 200 messages through, one at a time.
fn stalls_cannot_pin_a_tiny_pool(t: Transport) {
    let engine = tiny_pool_engine();
    let server = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let client_engine = util::engine();
    let client = client_engine.create_group().unwrap();
    let (cch, sch) = connect_pair(&client_engine, &client, &server, &caddr);
    let mut stalled = Vec::new();
    for i in 0..6u64 {
        let mut raw = RawStream::connect(&caddr);
        raw.write_all(&raw_frame(1, 3, 0, 100 + i, b"", b""))
            .unwrap();
        let hello = recv_skip_pool_empty(&server);
        assert_eq!(hello.opcode(), OpCode::HelloRequest, "{hello:?}");
        let mut a = hello;
        a.header.proto.opcode = OpCode::HelloResponse;
        server.post(a).unwrap();
        assert_eq!(raw.read_frame().header[2], 4);
        // A Request announcing 1000 body bytes, 10 of them sent.
        let frame = raw_frame(1, 0, 0, 7, b"", &[b'z'; 1000]);
        raw.write_all(&frame[..16 + 10]).unwrap();
        stalled.push(raw);
    }
    std::thread::sleep(Duration::from_millis(50));
    for seq in 0..200 {
        client
            .post(msg(
                &client_engine,
                cch,
                OpCode::Signal,
                &seq_body(seq, 100),
            ))
            .unwrap();
        let m = recv_skip_pool_empty(&server);
        assert_eq!(m.header.channel_number, sch, "{m:?}");
        assert_eq!(check_seq_body(&m.body, 100), seq);
    }
    // The stalled frames complete once their bytes come.
    for raw in &mut stalled {
        raw.write_all(&[b'z'; 990]).unwrap();
    }
    for _ in 0..6 {
        let m = recv_skip_pool_empty(&server);
        assert_eq!((m.opcode(), m.body.len()), (OpCode::Request, 1000), "{m:?}");
    }
}

tcp_and_uds!(stalls_cannot_pin_a_tiny_pool);
