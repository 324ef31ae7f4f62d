//! Scale (issue 5): thousands of concurrent connections, each completing a
//! request/response, between two processes (the server is this test binary
//! re-executed as a child) and inside one process; the engine's memory per idle
//! connection is measured from VmRSS. The 10,000 / 5,000 connection runs are
//! `#[ignore]`d (scripts/heavy-tests.sh runs them in release mode); lighter
//! versions run in the normal suite.
#![cfg(target_os = "linux")]

mod util;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tofu::testing::free_tcp_port;
use tofu::{Address, ChannelGroup, Engine, OpCode, Status};
use util::*;

/// Connections opened per batch: a burst of HelloRequests, then their answers.
const BATCH: usize = 500;

/// What the echo server counted.
#[derive(Default)]
struct EchoCounts {
    hellos: AtomicU64,
    requests: AtomicU64,
    closed: AtomicU64,
}

/// Accepts every HelloRequest and answers every Request with its body, until
/// the engine shuts down.
fn echo_loop(group: &ChannelGroup, counts: &EchoCounts) {
    loop {
        let m = match group.wait_receive(None) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(_) => return,
        };
        if m.is_from_engine() {
            match m.status() {
                Status::ChannelClosed if m.opcode() == OpCode::Signal => {
                    counts.closed.fetch_add(1, Ordering::Relaxed);
                }
                Status::PoolEmpty => {}
                _ => panic!("echo server: unexpected report {m:?}"),
            }
            continue;
        }
        let mut reply = m;
        match reply.opcode() {
            OpCode::HelloRequest => {
                counts.hellos.fetch_add(1, Ordering::Relaxed);
                reply.header.proto.opcode = OpCode::HelloResponse;
            }
            OpCode::Request => {
                counts.requests.fetch_add(1, Ordering::Relaxed);
                reply.header.proto.opcode = OpCode::Response;
            }
            _ => continue,
        }
        if group.post(reply).is_err() {
            return;
        }
    }
}

/// The child process: an echo server on a free port. Prints
/// `TOFU_READY <port> <rss_kib>`; on `stats` prints
/// `TOFU_STATS <hellos> <requests> <closed> <rss_kib> <open_channels>`.
fn run_echo_server() {
    raise_nofile(u64::MAX);
    let engine = engine();
    let group = engine.create_group().unwrap();
    let port = free_tcp_port().unwrap();
    listen(&engine, &group, &Address::tcp_server("127.0.0.1", port));
    let counts = Arc::new(EchoCounts::default());
    {
        let (counts, engine) = (counts.clone(), engine.clone());
        serve_parent_commands(move |line| {
            if line == "stats" {
                tell_parent(&format!(
                    "TOFU_STATS {} {} {} {} {}",
                    counts.hellos.load(Ordering::Relaxed),
                    counts.requests.load(Ordering::Relaxed),
                    counts.closed.load(Ordering::Relaxed),
                    rss_kib(),
                    engine.stats().open_channels
                ));
            }
        });
    }
    tell_parent(&format!("TOFU_READY {port} {}", rss_kib()));
    echo_loop(&group, &counts);
}

#[test]
#[ignore = "entry point of the child processes (runs only with TOFU_CHILD_ROLE set)"]
fn child_entry() {
    match child_role().as_deref() {
        None => println!(
            "not applicable: the entry point of this file's child processes, run by its tests"
        ),
        Some("echo_server") => run_echo_server(),
        Some(other) => panic!("unknown child role {other}"),
    }
}

/// Opens `n` connections from `group` in batches; every one must be accepted.
/// Returns the client channel numbers.
fn open_connections(engine: &Engine, group: &ChannelGroup, caddr: &Address, n: usize) -> Vec<u16> {
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let batch = BATCH.min(n - all.len());
        let mut pending: HashMap<u16, u64> = HashMap::with_capacity(batch);
        for _ in 0..batch {
            let h = group.post(opening(engine, caddr)).expect("post hello");
            pending.insert(h.channel_number, h.message_id);
        }
        while !pending.is_empty() {
            let m = recv_skip_pool_empty(group);
            assert!(
                m.is_from_application() && m.opcode() == OpCode::HelloResponse,
                "connection #{} failed: {m:?}",
                all.len()
            );
            let id = pending
                .remove(&m.header.channel_number)
                .unwrap_or_else(|| panic!("answer for an unknown channel: {m:?}"));
            assert_eq!(m.header.message_id, id);
            all.push(m.header.channel_number);
        }
    }
    all
}

/// One Request on every channel, then every Response, checked channel by channel.
fn request_on_every_channel(engine: &Engine, group: &ChannelGroup, channels: &[u16]) {
    let mut expect: HashMap<u16, (u64, Vec<u8>)> = HashMap::with_capacity(channels.len());
    for &ch in channels {
        let body = format!("request on channel {ch}").into_bytes();
        let h = group
            .post(msg(engine, ch, OpCode::Request, &body))
            .expect("post request");
        expect.insert(ch, (h.message_id, body));
    }
    while !expect.is_empty() {
        let m = recv_skip_pool_empty(group);
        assert!(
            m.is_from_application() && m.opcode() == OpCode::Response,
            "{m:?}"
        );
        let (id, body) = expect
            .remove(&m.header.channel_number)
            .unwrap_or_else(|| panic!("unexpected or second response: {m:?}"));
        assert_eq!(m.header.message_id, id);
        assert_eq!(m.body, body);
    }
}

fn parse_fields(line: &str) -> Vec<u64> {
    line.split_whitespace()
        .map(|f| f.parse().expect("number"))
        .collect()
}

/// `n` connections from this process to a child process, each doing one
/// request/response while all are open.
fn connections_across_processes(n: usize) {
    let _serial = serial();
    let limit = raise_nofile(u64::MAX);
    assert!(
        limit as usize > n + 200,
        "open-files limit {limit} too low for {n}"
    );
    let mut child = ChildProc::spawn("child_entry", "echo_server", &[]);
    let ready = parse_fields(&child.expect_line("TOFU_READY", timeout()));
    let (port, child_rss0) = (ready[0] as u16, ready[1]);
    let fds_start = open_fds();
    let engine = engine();
    let group = engine.create_group().unwrap();
    let caddr = Address::tcp_client("127.0.0.1", port);
    let (fds0, rss0) = (open_fds(), rss_kib());

    let channels = open_connections(&engine, &group, &caddr, n);
    let (fds1, rss1) = (open_fds(), rss_kib());
    assert_eq!(fds1 - fds0, n, "one descriptor per connection");
    assert_eq!(engine.stats().open_channels, n as u64);
    child.send_line("stats");
    let s = parse_fields(&child.expect_line("TOFU_STATS", timeout()));
    assert_eq!(s[0], n as u64, "the child accepted every connection");
    let child_rss1 = s[3];

    request_on_every_channel(&engine, &group, &channels);
    child.send_line("stats");
    let s = parse_fields(&child.expect_line("TOFU_STATS", timeout()));
    assert_eq!(s[1], n as u64, "the child answered every request");

    let per_conn = |delta_kib: u64| delta_kib as f64 * 1024.0 / n as f64;
    println!(
        "SCALE two processes: {n} connections held, {n} request/response; \
         idle memory per connection: client {:.0} B, server {:.0} B (RSS delta / connections)",
        per_conn(rss1.saturating_sub(rss0)),
        per_conn(child_rss1.saturating_sub(child_rss0)),
    );

    // Closing this side: the child sees every channel close, and keeps only
    // its listener.
    within(timeout() * 3, move || engine.shutdown());
    drop(group);
    let deadline = std::time::Instant::now() + timeout() * 3;
    loop {
        child.send_line("stats");
        let s = parse_fields(&child.expect_line("TOFU_STATS", timeout()));
        if s[2] == n as u64 && s[4] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "child still has {} closed of {n}, {} channels open",
            s[2],
            s[4]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open_fds(), fds_start, "every descriptor closed");
    let status = child.finish(timeout());
    assert!(status.success(), "child exit: {status:?}");
}

#[test]
fn connections_across_processes_200() {
    connections_across_processes(200);
}

#[test]
#[ignore = "heavy: 10,000 connections; run by scripts/heavy-tests.sh"]
fn connections_across_processes_10000() {
    connections_across_processes(10_000);
}

/// `n` connections between two engines of this process.
fn connections_in_process(n: usize) {
    let _serial = serial();
    let limit = raise_nofile(u64::MAX);
    assert!(
        limit as usize > 2 * n + 200,
        "open-files limit {limit} too low for {n}"
    );
    let (fds0, rss0) = (open_fds(), rss_kib());
    let server_engine = engine();
    let server = server_engine.create_group().unwrap();
    let port = free_tcp_port().unwrap();
    listen(
        &server_engine,
        &server,
        &Address::tcp_server("127.0.0.1", port),
    );
    let counts = Arc::new(EchoCounts::default());
    let echo = {
        let counts = counts.clone();
        std::thread::spawn(move || echo_loop(&server, &counts))
    };
    let client_engine = engine();
    let client = client_engine.create_group().unwrap();
    let caddr = Address::tcp_client("127.0.0.1", port);
    let rss_engines = rss_kib();

    let channels = open_connections(&client_engine, &client, &caddr, n);
    eventually("the server to count every hello", || {
        counts.hellos.load(Ordering::Relaxed) == n as u64
    });
    let rss1 = rss_kib();
    assert_eq!(server_engine.stats().open_channels, n as u64 + 1);
    assert_eq!(client_engine.stats().open_channels, n as u64);
    request_on_every_channel(&client_engine, &client, &channels);
    assert_eq!(counts.requests.load(Ordering::Relaxed), n as u64);
    println!(
        "SCALE one process: {n} connections ({} channels) held, {n} request/response; \
         idle memory per connection (both ends): {:.0} B",
        2 * n,
        rss1.saturating_sub(rss_engines) as f64 * 1024.0 / n as f64,
    );

    drop(client);
    eventually("the server to see every channel close", || {
        counts.closed.load(Ordering::Relaxed) == n as u64
    });
    assert_eq!(server_engine.stats().open_channels, 1);
    within(timeout(), move || {
        client_engine.shutdown();
        server_engine.shutdown();
    });
    join_within(echo);
    assert_eq!(open_fds(), fds0, "every descriptor closed");
    let _ = rss0;
}

#[test]
fn connections_in_process_500() {
    connections_in_process(500);
}

#[test]
#[ignore = "heavy: 5,000 connections; run by scripts/heavy-tests.sh"]
fn connections_in_process_5000() {
    connections_in_process(5_000);
}
