//! Backpressure across processes (issue 5): a receiver whose pool holds 4
//! messages takes a large stream from a fast sender in another process (this
//! test binary re-executed). Every byte arrives in order, the receiver's memory
//! stays bounded, and the sender is held back by TCP flow control — its engine
//! cannot write faster than the receiver reads — not by buffering anywhere.
//! At least 10 MB (more than the kernel may buffer for the connection) run
//! in the normal suite; 100 MB are `#[ignore]`d
//! (scripts/heavy-tests.sh).
#![cfg(target_os = "linux")]

mod util;

use std::time::{Duration, Instant};

use tofu::testing::free_tcp_port;
use tofu::{Address, OpCode, Status};
use util::*;

/// Body bytes per message (a little under the 65535 limit).
const LEN: usize = 64_000;
/// Messages the sender lets its engine hold at most (posted, not yet written).
const WINDOW: u64 = 16;

/// The child: streams `TOFU_MSGS` messages of [`LEN`] bytes, never more than
/// [`WINDOW`] unwritten, then closes gracefully. Prints
/// `TOFU_SENT <msgs> <window_waits> <rss_kib>`.
fn run_sender() {
    let port: u16 = std::env::var("TOFU_PORT").unwrap().parse().unwrap();
    let msgs: u64 = std::env::var("TOFU_MSGS").unwrap().parse().unwrap();
    let engine = engine();
    let group = engine.create_group().unwrap();
    let h = group
        .post(opening(&engine, &Address::tcp_client("127.0.0.1", port)))
        .unwrap();
    let ch = h.channel_number;
    let r = recv(&group);
    assert_eq!(r.opcode(), OpCode::HelloResponse, "{r:?}");
    drop(r);
    let mut waits = 0u64;
    for seq in 0..msgs {
        // messages_sent counts the HelloRequest too.
        if seq + 1 - engine.stats().messages_sent.min(seq + 1) >= WINDOW {
            waits += 1;
            let deadline = Instant::now() + timeout();
            while seq + 1 - engine.stats().messages_sent.min(seq + 1) >= WINDOW {
                assert!(Instant::now() < deadline, "sender: no progress");
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        group
            .post(msg(&engine, ch, OpCode::Signal, &fast_seq_body(seq, LEN)))
            .unwrap();
    }
    group
        .post(msg(&engine, ch, OpCode::ByeRequest, b""))
        .unwrap();
    let r = recv_skip_pool_empty(&group);
    assert_eq!(r.opcode(), OpCode::ByeResponse, "{r:?}");
    assert_report(&recv_skip_pool_empty(&group), ch, Status::ChannelClosed);
    tell_parent(&format!("TOFU_SENT {msgs} {waits} {}", rss_kib()));
}

#[test]
#[ignore = "entry point of the child processes (runs only with TOFU_CHILD_ROLE set)"]
fn child_entry() {
    match child_role().as_deref() {
        None => println!(
            "not applicable: the entry point of this file's child processes, run by its tests"
        ),
        Some("sender") => run_sender(),
        Some(other) => panic!("unknown child role {other}"),
    }
}

/// Receives `mb` megabytes (in [`LEN`]-byte messages) into a 4-message pool;
/// the receiver's RSS may grow by less than `rss_ceiling_kib` (well below the
/// data size: buffering the stream in user space anywhere would exceed it).
fn stream_into_tiny_pool(mb: u64, rss_ceiling_kib: u64) {
    let _serial = serial();
    // At least `mb` megabytes, and more than the kernel could hold for the
    // connection (its largest receive plus send buffer, with a margin): the
    // sender must be held by flow control, whatever the machine's limits.
    let kernel = kernel_buffer_limit();
    let bytes_wanted = (mb * 1_000_000).max(kernel + kernel / 4);
    let msgs = bytes_wanted / LEN as u64;
    let engine = tiny_pool_engine();
    let server = engine.create_group().unwrap();
    let port = free_tcp_port().unwrap();
    listen(&engine, &server, &Address::tcp_server("127.0.0.1", port));
    let rss0 = rss_kib();
    let child = ChildProc::spawn(
        "child_entry",
        "sender",
        &[
            ("TOFU_PORT", port.to_string()),
            ("TOFU_MSGS", msgs.to_string()),
        ],
    );
    let hello = recv(&server);
    assert_eq!(hello.opcode(), OpCode::HelloRequest, "{hello:?}");
    let sch = hello.header.channel_number;
    let mut accept = hello;
    accept.header.proto.opcode = OpCode::HelloResponse;
    server.post(accept).unwrap();
    // Read nothing for a while first: the kernel grows a socket's receive
    // buffer only as the application reads (autotuning), so a receiver that
    // starts slow keeps the kernel's buffering well below the stream's size
    // and the sender must be held. Without the pause a machine with large
    // `tcp_rmem` limits could buffer most of the 10 MB in the kernel and the
    // sender never waited (CI, once).
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    let mut rss_max = rss0;
    let mut pool_empty = 0;
    let mut bytes = 0u64;
    for seq in 0..msgs {
        let m = recv_counting_pool_empty(&server, &mut pool_empty);
        assert!(
            m.is_from_application() && m.opcode() == OpCode::Signal,
            "{m:?}"
        );
        assert_eq!(m.header.channel_number, sch);
        assert_eq!(
            check_fast_seq_body(&m.body, LEN),
            seq,
            "every byte, in order"
        );
        bytes += m.body.len() as u64;
        drop(m);
        if seq % 4 == 0 {
            rss_max = rss_max.max(rss_kib());
            // A receiver slower than the sender.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let bye = recv_counting_pool_empty(&server, &mut pool_empty);
    assert_eq!(bye.opcode(), OpCode::ByeRequest, "{bye:?}");
    let mut resp = bye;
    resp.header.proto.opcode = OpCode::ByeResponse;
    server.post(resp).unwrap();
    assert_report(&recv_skip_pool_empty(&server), sch, Status::ChannelClosed);
    let elapsed = started.elapsed();
    let sent = child.expect_line("TOFU_SENT", timeout());
    let f: Vec<u64> = sent
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(f[0], msgs);
    let (waits, sender_rss) = (f[1], f[2]);
    let status = child.finish(timeout());
    assert!(status.success(), "sender: {status:?}");

    let stats = engine.stats();
    let growth = rss_max.saturating_sub(rss0);
    println!(
        "PRESSURE: {bytes} bytes in {msgs} messages through a 4-message pool in {elapsed:?}; \
         receiver RSS +{growth} KiB at most; {pool_empty} pool_empty reports; \
         sender waited for its engine {waits} times (window {WINDOW}), sender RSS {sender_rss} KiB"
    );
    assert!(pool_empty >= 1 && stats.pool_empty_events >= 1, "{stats:?}");
    // Every message the engine used came from its 4-message pool: it never
    // allocated more (free + taken = all it has).
    assert!(
        stats.pool_free + stats.pool_outstanding <= 4,
        "the pool stays bounded: {stats:?}"
    );
    assert!(
        growth < rss_ceiling_kib,
        "receiver RSS grew by {growth} KiB receiving {bytes} bytes"
    );
    assert!(
        waits > 0,
        "the sender's engine never fell {WINDOW} messages behind: flow control never held it"
    );
}

/// The most the kernel may buffer for one loopback TCP connection: the
/// largest receive buffer plus the largest send buffer autotuning may grow to
/// (the third field of `tcp_rmem` and `tcp_wmem`).
fn kernel_buffer_limit() -> u64 {
    let max_of = |path: &str| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(8 << 20)
    };
    max_of("/proc/sys/net/ipv4/tcp_rmem") + max_of("/proc/sys/net/ipv4/tcp_wmem")
}

#[test]
fn ten_megabytes_into_a_four_message_pool() {
    stream_into_tiny_pool(10, 6 * 1024);
}

#[test]
#[ignore = "heavy: 100 MB; run by scripts/heavy-tests.sh"]
fn hundred_megabytes_into_a_four_message_pool() {
    stream_into_tiny_pool(100, 32 * 1024);
}
