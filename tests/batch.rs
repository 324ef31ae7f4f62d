//! `post_batch` / `post_batch_timeout` and `receive_many`: order, nothing
//! lost or doubled, rejections in the middle of a batch, the limits.

#[macro_use]
mod util;

use std::time::Duration;

use tofu::{Engine, Error, Message, OpCode, Options};
use util::*;

fn numbered(engine: &Engine, ch: u16, seq: u32) -> Message {
    msg(engine, ch, OpCode::Signal, &seq.to_le_bytes())
}

fn seq_of(m: &Message) -> u32 {
    u32::from_le_bytes(m.body[..4].try_into().expect("4-byte body"))
}

/// Batches of every size from 1 to 97 (across two engines, so the bytes
/// cross a socket): every message arrives once, in order; `receive_many`
/// never returns more than asked.
fn batches_arrive_in_order(t: Transport) {
    let p = two_engines(t, engine());
    const TOTAL: u32 = 20_000;
    let client = p.client;
    let cengine = p.client_engine.clone();
    let cch = p.cch;
    let sender = std::thread::spawn(move || {
        let mut seq = 0;
        let mut size = 1;
        let mut batch = Vec::new();
        while seq < TOTAL {
            for _ in 0..size.min(TOTAL - seq) {
                batch.push(numbered(&cengine, cch, seq));
                seq += 1;
            }
            client
                .post_batch_timeout(&mut batch, timeout())
                .expect("post_batch");
            assert!(batch.is_empty());
            size = size % 97 + 1;
        }
        client
    });
    let mut got = Vec::new();
    let mut next = 0u32;
    let mut max = 1;
    while next < TOTAL {
        got.clear();
        let n = p
            .server
            .receive_many(&mut got, max, Some(timeout()))
            .expect("receive_many");
        assert!(n >= 1 && n <= max, "{n} of at most {max}");
        assert_eq!(n, got.len());
        for m in &got {
            if m.is_from_engine() {
                continue; // pool_empty reports
            }
            assert_eq!(seq_of(m), next, "out of order or doubled");
            next += 1;
        }
        max = max % 70 + 1;
    }
    let _client = sender.join().expect("sender");
    recv_nothing(&p.server, Duration::from_millis(50));
}
tcp_and_uds!(batches_arrive_in_order);

/// Single posts in a burst go through the command queue (the cork); a batch
/// posted right after them must not overtake them: the posting thread
/// writes the queued posts first, or queues the batch behind them.
fn single_posts_and_batches_keep_their_order(t: Transport) {
    let p = two_engines(t, engine());
    const ROUNDS: u32 = 300;
    let mut seq = 0u32;
    let mut batch = Vec::new();
    for _ in 0..ROUNDS {
        for _ in 0..3 {
            p.client
                .post_timeout(numbered(&p.client_engine, p.cch, seq), timeout())
                .expect("post");
            seq += 1;
        }
        for _ in 0..4 {
            batch.push(numbered(&p.client_engine, p.cch, seq));
            seq += 1;
        }
        p.client
            .post_batch_timeout(&mut batch, timeout())
            .expect("post_batch");
    }
    let s = p.client_engine.stats();
    println!(
        "{seq} posted: {} written by the posting thread, the rest through the queue",
        s.inline_posts
    );
    let mut got = Vec::new();
    let mut next = 0;
    while next < seq {
        got.clear();
        p.server
            .receive_many(&mut got, 64, Some(timeout()))
            .expect("receive_many");
        for m in got.iter().filter(|m| m.is_from_application()) {
            assert_eq!(seq_of(m), next, "a batch overtook a single post");
            next += 1;
        }
    }
}
tcp_and_uds!(single_posts_and_batches_keep_their_order);

/// An invalid message in the middle: the ones before it are posted, it and
/// the rest come back untouched, in order; posting the rest after fixing it
/// goes on where it stopped.
#[test]
fn a_rejection_in_the_middle_keeps_the_rest() {
    let c = connected(any_transport());
    let mut batch: Vec<Message> = (0..10).map(|i| numbered(&c.engine, c.cch, i)).collect();
    batch[4].header.channel_number = 4242; // not open
    assert_eq!(
        c.client.post_batch(&mut batch),
        Err(Error::InvalidChannelNumber)
    );
    assert_eq!(batch.len(), 6);
    assert_eq!(batch[0].header.channel_number, 4242);
    assert_eq!(
        batch.iter().map(seq_of).collect::<Vec<_>>(),
        (4..10).collect::<Vec<_>>()
    );
    batch[0].header.channel_number = c.cch;
    c.client.post_batch(&mut batch).expect("the rest");
    for i in 0..10 {
        assert_eq!(seq_of(&recv(&c.server)), i);
    }
}

/// Messages on several channels and a channel-0 open in one batch: each
/// channel's messages arrive in order, the open gets its answer.
#[test]
fn mixed_channels_and_an_open() {
    let t = any_transport();
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let (a, _) = connect_pair(&engine, &client, &server, &caddr);
    let (b, _) = connect_pair(&engine, &client, &server, &caddr);
    let mut batch = Vec::new();
    for i in 0..30u32 {
        batch.push(numbered(&engine, if i % 3 == 0 { a } else { b }, i));
        if i == 15 {
            batch.push(opening(&engine, &caddr));
        }
    }
    client.post_batch(&mut batch).expect("batch");
    let mut last = [None::<u32>; 2];
    let mut seen = 0;
    let mut hello = false;
    while seen < 30 || !hello {
        let mut m = recv(&server);
        if m.opcode() == OpCode::HelloRequest {
            hello = true;
            m.header.proto.opcode = OpCode::HelloResponse;
            server.post(m).expect("answer hello");
            continue;
        }
        let s = seq_of(&m);
        let which = usize::from(s % 3 != 0);
        assert!(last[which].is_none_or(|l| l < s), "channel order broken");
        last[which] = Some(s);
        seen += 1;
    }
    let r = recv(&client);
    assert_eq!(r.opcode(), OpCode::HelloResponse, "{r:?}");
}

/// Over the channel's outgoing limit: `post_batch` posts the prefix that
/// fits and hands back the rest with `PoolEmpty`; `post_batch_timeout`
/// waits for room and posts everything, in order.
#[test]
fn the_outgoing_limit_splits_a_batch() {
    let t = any_transport();
    let server_engine = Engine::new(Options {
        initial_pool_msgs: 4,
        max_pool_msgs: 4,
        ..Options::default()
    })
    .unwrap();
    let client_engine = Engine::new(Options {
        channel_send_limit: 1, // raised to one frame (131,086 B)
        ..Options::default()
    })
    .unwrap();
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&server_engine, &server, &saddr);
    let (cch, _) = connect_pair(&client_engine, &client, &server, &caddr);
    // The server does not receive yet: its 4-message pool fills, the
    // kernel's buffers fill, then the client's queue.
    let big = |seq: u32| {
        let mut m = numbered(&client_engine, cch, seq);
        m.body.resize(60_000, 7);
        m
    };
    let mut sent = 0u32;
    let refused = loop {
        let mut batch: Vec<Message> = (sent..sent + 8).map(big).collect();
        match client.post_batch(&mut batch) {
            Ok(()) => sent += 8,
            Err(e) => {
                assert_eq!(e, Error::PoolEmpty);
                assert!(!batch.is_empty());
                sent += 8 - batch.len() as u32;
                assert_eq!(
                    seq_of(&batch[0]),
                    sent,
                    "the first refused comes back first"
                );
                break batch;
            }
        }
        assert!(sent < 100_000, "the limit never refused");
    };
    let total = sent + refused.len() as u32;
    let mut rest = refused;
    let poster = std::thread::spawn(move || {
        client
            .post_batch_timeout(&mut rest, timeout())
            .expect("room comes");
        client
    });
    for i in 0..total {
        let m = recv_skip_pool_empty(&server);
        assert_eq!(seq_of(&m), i);
    }
    let _client = poster.join().unwrap();
}

/// `receive_many` returns what was queued before a shutdown, then the
/// shutdown.
#[test]
fn receive_many_then_shutdown() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    for _ in 0..3 {
        group.update_receiver(None).unwrap();
    }
    let mut got = Vec::new();
    assert_eq!(group.receive_many(&mut got, 2, Some(timeout())), Ok(2));
    engine.shutdown();
    let r = group.receive_many(&mut got, 10, Some(timeout()));
    assert!(
        r == Ok(1) || r == Err(Error::ShutdownStarted),
        "queued message or shutdown: {r:?}"
    );
    assert_eq!(
        group.receive_many(&mut got, 10, Some(timeout())),
        Err(Error::ShutdownStarted)
    );
    assert_eq!(group.receive_many(&mut got, 0, None), Ok(0));
}

/// Batches posted into a socket the peer does not read for a while: the
/// writes fill the socket mid-batch, so part of a batch written through
/// the write buffer is queued behind the rest; once the peer reads, every
/// message arrives once, in order. Then an abort with messages still
/// queued: what the peer got and what came back together are every
/// message, the received ones a prefix, the returned ones the suffix.
fn a_batch_into_a_full_socket_arrives_whole_and_in_order(t: Transport) {
    let p = two_engines(t, engine());
    // At least 60,000 64-byte messages (about 4 MB), and on until some wait
    // in the engine: how much the kernel takes first varies (Wine's takes
    // more). Returns the next sequence number; stops early when the
    // channel's outgoing limit refuses (then plenty is queued).
    const TOTAL: u32 = 60_000;
    let fill = |from: u32| -> u32 {
        let mut seq = from;
        let mut batch = Vec::new();
        loop {
            for _ in 0..64 {
                let mut m = numbered(&p.client_engine, p.cch, seq);
                m.body.resize(64, 0xab);
                batch.push(m);
                seq += 1;
            }
            match p.client.post_batch(&mut batch) {
                Ok(()) => {}
                Err(Error::PoolEmpty) => return seq - batch.len() as u32,
                Err(e) => panic!("post_batch: {e}"),
            }
            if seq - from >= TOTAL && p.client_engine.stats().queued_messages > 0 {
                return seq;
            }
            assert!(seq - from < 40 * TOTAL, "the socket never filled");
        }
    };
    let end1 = fill(0);
    let queued = p.client_engine.stats().queued_messages;
    eprintln!("{end1} posted, {queued} queued behind a full socket");
    let mut next = 0u32;
    let mut got = Vec::new();
    while next < end1 {
        got.clear();
        p.server
            .receive_many(&mut got, 64, Some(timeout()))
            .expect("receive_many");
        for m in got.iter().filter(|m| m.is_from_application()) {
            assert_eq!(seq_of(m), next, "out of order or doubled");
            next += 1;
        }
    }

    // Stall again, then abort with messages queued.
    let end2 = fill(end1);
    assert!(p.client_engine.stats().queued_messages > 0);
    p.client
        .post(msg(&p.client_engine, p.cch, OpCode::ByeSignal, b""))
        .expect("post ByeSignal");
    let mut returned = Vec::new();
    let mut report = false;
    while let Some(m) = p
        .client
        .wait_receive(Some(Duration::from_millis(200)))
        .expect("wait_receive")
    {
        assert!(m.is_from_engine(), "{m:?}");
        match m.opcode() {
            OpCode::Signal if m.body.len() == 64 => {
                assert!(!report, "returned after the channel_closed report");
                returned.push(seq_of(&m));
            }
            OpCode::Signal => {
                assert_report(&m, p.cch, tofu::Status::ChannelClosed);
                report = true;
            }
            _ => assert_eq!(m.opcode(), OpCode::ByeSignal, "{m:?}"),
        }
    }
    assert!(report, "the channel_closed report");
    loop {
        got.clear();
        match p
            .server
            .receive_many(&mut got, 64, Some(Duration::from_millis(200)))
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        for m in got.iter().filter(|m| m.is_from_application()) {
            if m.opcode() == OpCode::Signal {
                assert_eq!(seq_of(m), next, "out of order or doubled");
                next += 1;
            }
        }
    }
    eprintln!(
        "after the abort: {} received, {} returned",
        next - end1,
        returned.len()
    );
    assert!(!returned.is_empty(), "queued messages come back");
    // The peer may lose bytes the kernel had taken (an abort resets), so
    // the returned ones start at or after the next unread one: none is
    // both received and returned, and they are in order with no gap.
    assert!(
        returned[0] >= next,
        "{} received, {} returned",
        next,
        returned[0]
    );
    for w in returned.windows(2) {
        assert_eq!(w[1], w[0] + 1, "returned in order, no gap");
    }
    assert_eq!(*returned.last().unwrap(), end2 - 1);
}
tcp_and_uds!(a_batch_into_a_full_socket_arrives_whole_and_in_order);

/// Many channels, each sent frames and then aborted (ByeSignal) in one
/// batch, so that the receiving engine's polls see many channels' reads at
/// once and collect their frames for the group together: every channel's
/// frames arrive in order (a prefix: an abort gives back what was not
/// written yet), its ByeSignal (when it was written) after all of them, and
/// its close report last — nothing of a channel arrives after its report,
/// so a report never overtakes frames read before it.
fn many_channels_aborting_at_once_report_after_their_frames(t: Transport) {
    const CHANNELS: usize = 16;
    const FRAMES: u32 = 20;
    let (server_engine, client_engine) = (engine(), engine());
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&server_engine, &server, &saddr);
    let pairs: Vec<(u16, u16)> = (0..CHANNELS)
        .map(|_| connect_pair(&client_engine, &client, &server, &caddr))
        .collect();
    let mut batch = Vec::new();
    for seq in 0..FRAMES {
        for &(cch, _) in &pairs {
            batch.push(numbered(&client_engine, cch, seq));
        }
    }
    for &(cch, _) in &pairs {
        batch.push(msg(&client_engine, cch, OpCode::ByeSignal, b""));
    }
    client
        .post_batch_timeout(&mut batch, timeout())
        .expect("post_batch");
    // Per server channel: frames seen, ByeSignal seen, report seen.
    let mut seen = std::collections::HashMap::new();
    for &(_, sch) in &pairs {
        seen.insert(sch, (0u32, false, false));
    }
    let mut reports = 0;
    let mut got = Vec::new();
    while reports < CHANNELS {
        got.clear();
        server
            .receive_many(&mut got, 64, Some(timeout()))
            .expect("receive_many");
        assert!(!got.is_empty(), "timed out with {reports} reports");
        for m in &got {
            let ch = m.header.channel_number;
            if m.is_from_engine() && m.status() == tofu::Status::PoolEmpty {
                continue;
            }
            let s = seen.get_mut(&ch).unwrap_or_else(|| panic!("{m:?}"));
            assert!(!s.2, "after channel {ch}'s report: {m:?}");
            if m.is_from_engine() {
                s.2 = true;
                reports += 1;
            } else if m.opcode() == OpCode::ByeSignal {
                assert_eq!(s.0, FRAMES, "ByeSignal before the frames: {m:?}");
                s.1 = true;
            } else {
                assert_eq!(seq_of(m), s.0, "channel {ch} out of order");
                s.0 += 1;
            }
        }
    }
}
tcp_and_uds!(many_channels_aborting_at_once_report_after_their_frames);
