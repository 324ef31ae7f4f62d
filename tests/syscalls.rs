//! System-call economy over real sockets: what the engine's statistics say
//! about its reads.

#[macro_use]
mod util;

use tofu::{Message, OpCode};
use util::*;

/// 200 round trips, one message at a time: each message arrives alone and is
/// read with one system call, not two (the data, then `WouldBlock`). A few
/// empty reads remain possible (readiness reported for data that another
/// read took first), so the bound is a quarter of the reads, where reading
/// until `WouldBlock` makes it one per read.
fn a_message_that_arrives_alone_costs_one_read(t: Transport) {
    if !tofu::testing::short_reads_end_reading() {
        println!("not applicable: a level-triggered selector reads until WouldBlock");
        return;
    }
    const N: u64 = 200;
    let c = connected(t);
    let before = c.engine.stats();
    for i in 0..N {
        round_trip(
            &c.engine,
            &c.client,
            &c.server,
            c.cch,
            c.sch,
            &seq_body(i, 16),
        );
    }
    let after = c.engine.stats();
    let received = after.messages_received - before.messages_received;
    let reads = after.read_calls - before.read_calls;
    let empty = after.empty_reads - before.empty_reads;
    eprintln!("{received} messages: {reads} reads with data, {empty} empty");
    // (The counters are updated just after a delivery: the set-up's last
    // message can land on either side of `before`.)
    assert!((2 * N..=2 * N + 1).contains(&received), "{received}");
    assert!(reads <= received, "{reads} reads for {received} messages");
    assert!(
        empty * 4 <= reads,
        "{empty} empty reads next to {reads} with data"
    );
}

tcp_and_uds!(a_message_that_arrives_alone_costs_one_read);

/// A batch of small frames posted on an idle channel is written through in
/// writes of at most `testing::unix_write_through_max()` bytes on a
/// Unix-domain socket (on Linux; elsewhere and over TCP one write may take
/// the whole run), and arrives whole, once and in order.
fn a_batch_of_small_frames_goes_out_in_bounded_writes(t: Transport) {
    const N: u64 = 300;
    const FRAME: u64 = 16 + 64;
    let c = connected(t);
    // Settled: the channel is open and its socket known writable.
    round_trip(&c.engine, &c.client, &c.server, c.cch, c.sch, b"settle");
    let before = c.engine.stats();
    let mut batch: Vec<Message> = (0..N)
        .map(|i| msg(&c.engine, c.cch, OpCode::Signal, &seq_body(i, 64)))
        .collect();
    c.client.post_batch(&mut batch).unwrap();
    for i in 0..N {
        // (The engine's 64-message pool runs dry on the way: reported.)
        let m = recv_skip_pool_empty(&c.server);
        assert_eq!(m.opcode(), OpCode::Signal, "#{i}: {m:?}");
        assert_eq!(check_seq_body(&m.body, 64), i);
    }
    let after = c.engine.stats();
    let writes = after.write_calls - before.write_calls;
    let bytes = after.bytes_sent - before.bytes_sent;
    eprintln!("{bytes} bytes in {writes} writes");
    assert_eq!(bytes, N * FRAME);
    match (t, tofu::testing::unix_write_through_max()) {
        (Transport::Uds, Some(max)) => {
            // 204 frames a write (16 KiB): at least two writes.
            let least = bytes.div_ceil(max as u64);
            assert!(writes >= least, "{writes} writes, at least {least}");
        }
        _ => assert!(writes >= 1),
    }
}

tcp_and_uds!(a_batch_of_small_frames_goes_out_in_bounded_writes);

/// A batch that interleaves three idle channels (A, B, C, A, B, C, …: the
/// answers of a server to many peers, or a client's requests) is written
/// through one write per channel for its first message, and the rest of
/// each channel's messages go out together from its queue: at most two
/// writes per channel, not one per message. Everything arrives, once and
/// in order per channel.
fn an_interleaved_batch_costs_at_most_two_writes_per_channel(t: Transport) {
    const CHANNELS: usize = 3;
    const EACH: u64 = 20;
    let c = connected(t);
    let mut chans = vec![(c.cch, c.sch)];
    // A second listener for the others (`connected` keeps its address).
    let (saddr, addr) = addresses(t);
    listen(&c.engine, &c.server, &saddr);
    while chans.len() < CHANNELS {
        chans.push(connect_pair(&c.engine, &c.client, &c.server, &addr));
    }
    for &(cch, sch) in &chans {
        // Settled: each channel open, its socket known writable.
        round_trip(&c.engine, &c.client, &c.server, cch, sch, b"settle");
    }
    let before = c.engine.stats();
    let mut batch = Vec::new();
    for i in 0..EACH {
        for (k, &(cch, _)) in chans.iter().enumerate() {
            let mut body = seq_body(i, 16);
            body.push(k as u8);
            batch.push(msg(&c.engine, cch, OpCode::Signal, &body));
        }
    }
    c.client.post_batch(&mut batch).unwrap();
    let mut next = [0u64; CHANNELS];
    for _ in 0..EACH * CHANNELS as u64 {
        let m = recv_skip_pool_empty(&c.server);
        assert_eq!(m.opcode(), OpCode::Signal, "{m:?}");
        let k = usize::from(m.body[16]);
        let seq = check_seq_body(&m.body[..16], 16);
        assert_eq!(seq, next[k], "channel #{k} out of order");
        next[k] += 1;
    }
    let after = c.engine.stats();
    let writes = after.write_calls - before.write_calls;
    eprintln!(
        "{} messages on {CHANNELS} channels in {writes} writes",
        EACH * CHANNELS as u64
    );
    assert!(
        writes <= 2 * CHANNELS as u64,
        "{writes} writes for an interleaved batch on {CHANNELS} channels"
    );
}

tcp_and_uds!(an_interleaved_batch_costs_at_most_two_writes_per_channel);

/// `Options::unix_send_buffer` reaches the engine's Unix-domain sockets: to
/// a peer that never reads, the engine gets more than a megabyte into the
/// socket with the default (1 MiB, which Linux doubles), and no more than
/// the kernel's default buffer allows (plus one message) with 0. Linux
/// only, where the kernel's limits are known (`/proc/sys/net/core`).
#[test]
fn the_unix_send_buffer_bounds_what_a_peer_that_never_reads_is_sent() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (Some(wmem_default), Some(wmem_max)) = (read("wmem_default"), read("wmem_max")) else {
        println!("not applicable: no /proc/sys/net/core (not Linux)");
        return;
    };
    const LEN: usize = 60_000;
    let asked = tofu::DEFAULT_UNIX_SEND_BUFFER as u64;
    if wmem_max < asked {
        println!(
            "not applicable: net.core.wmem_max is {wmem_max}, under the {asked} bytes asked: \
             the kernel grants no more than its default allows"
        );
        return;
    }
    let sent_to_a_stalled_peer = |unix_send_buffer: usize| -> u64 {
        let engine = tofu::Engine::new(tofu::Options {
            unix_send_buffer,
            ..tofu::Options::default()
        })
        .unwrap();
        let group = engine.create_group().unwrap();
        let (accept, caddr) = raw_server(Transport::Uds);
        let ch = group.post(opening(&engine, &caddr)).unwrap().channel_number;
        let raw = accept(); // never read
        for seq in 0..80 {
            let m = msg(&engine, ch, OpCode::Signal, &fast_seq_body(seq, LEN));
            group.post(m).unwrap();
        }
        // Until the socket is full: nothing more written for 200 ms.
        let mut last = u64::MAX;
        eventually("the socket to fill", || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let now = engine.stats().bytes_sent;
            std::mem::replace(&mut last, now) == now
        });
        drop(raw);
        last
    };
    let tuned = sent_to_a_stalled_peer(tofu::DEFAULT_UNIX_SEND_BUFFER);
    let untuned = sent_to_a_stalled_peer(0);
    println!(
        "SNDBUF to a stalled peer: {tuned} B sent with {asked}, {untuned} B with the default \
         ({wmem_default})"
    );
    assert!(tuned >= asked, "{tuned} bytes sent with {asked} asked");
    assert!(
        untuned <= 2 * wmem_default + LEN as u64 + 64,
        "{untuned} bytes sent with the kernel's {wmem_default}"
    );
}
