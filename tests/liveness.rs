//! Liveness over real sockets: the idle timeout (`Options::idle_timeout`),
//! heartbeats (`tofu::Heartbeat`) that keep a channel under it open, and TCP
//! keepalive (`Options::tcp_keepalive`). The idle timeout's decisions have
//! their deterministic tests in the core harness
//! (`src/engine/core/idle_tests.rs`) first.

#[macro_use]
mod util;

use std::time::{Duration, Instant};

use tofu::{Engine, Handled, Heartbeat, Message, OpCode, Options, Status};
use util::*;

fn engine_with(f: impl FnOnce(&mut Options)) -> Engine {
    let mut o = Options::default();
    f(&mut o);
    Engine::new(o).expect("engine")
}

/// The `channel_closed` report about `ch`, skipping anything else.
#[track_caller]
fn closed_report(group: &tofu::ChannelGroup, ch: u16) -> Message {
    loop {
        let m = recv(group);
        if m.is_from_engine() && m.status() == Status::ChannelClosed && m.opcode() == OpCode::Signal
        {
            assert_eq!(m.channel_number(), ch);
            return m;
        }
    }
}

/// A server that accepts the connection, reads the HelloRequest and never
/// answers: the client's idle timeout ends the channel, with its cause.
fn a_server_that_accepts_and_never_answers_times_out(t: Transport) {
    let idle = Duration::from_millis(300);
    let engine = engine_with(|o| o.idle_timeout = Some(idle));
    let group = engine.create_group().unwrap();
    let (accept, caddr) = raw_server(t);
    let start = Instant::now();
    let ch = group.post(opening(&engine, &caddr)).unwrap().channel_number;
    let mut raw = accept();
    let hello = raw.read_frame();
    assert_eq!(hello.header[2] & 0x0f, 3, "HelloRequest");
    let report = closed_report(&group, ch);
    let after = start.elapsed();
    assert_eq!(report.close_cause(), Some(Status::CommunicationFailed));
    assert_eq!(engine.stats().idle_timeouts, 1);
    raw.expect_closed();
    println!("IDLE {t:?}: silent server given up after {after:.0?} (idle timeout {idle:?})");
}
tcp_and_uds!(a_server_that_accepts_and_never_answers_times_out);

/// An accepted connection that never says hello, with the hello timeout off:
/// the idle timeout closes it silently and counts it.
#[test]
fn an_accepted_connection_that_stays_silent_is_closed_silently() {
    let engine = engine_with(|o| {
        o.hello_timeout = None;
        o.idle_timeout = Some(Duration::from_millis(200));
    });
    let server = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    listen(&engine, &server, &saddr);
    let mut raw = RawStream::connect(&caddr);
    raw.expect_closed();
    let s = engine.stats();
    assert_eq!((s.idle_timeouts, s.silent_closes), (1, 1), "{s:?}");
    recv_nothing(&server, Duration::from_millis(50));
}

/// Heartbeats every 100 ms keep a channel open under a 2 s idle timeout on
/// the other side, however long it is quiet otherwise; when they stop, the
/// channel closes with `communication_failed` and the beating side sees it
/// end too.
#[test]
fn heartbeats_keep_a_channel_open_under_an_idle_timeout() {
    // 20 beats per timeout: a busy machine does not make the test flaky.
    let server_engine = engine_with(|o| o.idle_timeout = Some(Duration::from_secs(2)));
    let server = server_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    listen(&server_engine, &server, &saddr);
    let client_engine = engine();
    let client = client_engine.create_group().unwrap();
    let (cch, sch) = connect_pair(&client_engine, &client, &server, &caddr);

    let mut beats = Heartbeat::new(&client, "hb", Duration::from_millis(100)).unwrap();
    beats.add(cch);
    let mut server_beats = Heartbeat::new(&server, "hb", Duration::from_secs(3600)).unwrap();
    let quiet = Duration::from_millis(3000);
    let end = Instant::now() + quiet;
    let mut heard = 0;
    while Instant::now() < end {
        let wait = beats.timeout().map(|t| t.min(end - Instant::now()));
        if let Some(m) = client.wait_receive(wait).unwrap() {
            panic!("the client got {m:?}");
        }
        beats.poll().unwrap();
        // The server swallows the beats.
        while let Some(m) = server.wait_receive(Some(Duration::ZERO)).unwrap() {
            match server_beats.handle(m) {
                Handled::Mine => heard += 1,
                Handled::NotMine(m) => panic!("the server got {m:?}"),
            }
        }
    }
    assert!(heard >= 5, "the server heard {heard} beats");
    assert_eq!(server_engine.stats().idle_timeouts, 0, "kept open");
    round_trip(&client_engine, &client, &server, cch, sch, b"still open");
    println!(
        "HEARTBEAT: {} beats over {quiet:?} kept the channel open; the server took {heard}",
        beats.beats()
    );

    // The client stops beating (a hung process): the server gives up.
    drop(beats);
    let stopped = Instant::now();
    let report = closed_report(&server, sch);
    assert_eq!(report.close_cause(), Some(Status::CommunicationFailed));
    assert_eq!(server_engine.stats().idle_timeouts, 1);
    let theirs = closed_report(&client, cch);
    assert!(theirs.close_cause().is_some(), "an abort for the client");
    println!(
        "HEARTBEAT: beats stopped, the server closed after {:.0?}",
        stopped.elapsed()
    );
}

#[test]
fn a_bad_heartbeat_name_is_refused() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    for bad in ["", "a:b", "x\r\ny", "~hb"] {
        let e = Heartbeat::new(&group, bad, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e, tofu::Error::InvalidMessage, "{bad:?}");
    }
}

/// `Options::tcp_keepalive` is off by default and, when set, reaches the
/// engine's TCP sockets: the kernel runs a keepalive timer on them
/// (`/proc/net/tcp` shows timer 2 on an idle connection).
#[cfg(target_os = "linux")]
#[test]
fn tcp_keepalive_is_off_by_default_and_reaches_the_socket() {
    assert_eq!(Options::default().tcp_keepalive, None);
    for keepalive in [None, Some(Duration::from_secs(60))] {
        let engine = engine_with(|o| o.tcp_keepalive = keepalive);
        let group = engine.create_group().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let addr = tofu::Address::tcp_client("127.0.0.1", port);
        group.post(opening(&engine, &addr)).unwrap();
        let (_peer, _) = listener.accept().unwrap();
        // The engine's end (remote port = the listener's), once the
        // HelloRequest is acknowledged (no retransmission timer left).
        let want = if keepalive.is_some() { 2 } else { 0 };
        let mut timer = None;
        eventually("the keepalive timer as expected", || {
            timer = engine_socket_timer(port);
            timer == Some(want)
        });
        println!("KEEPALIVE {keepalive:?}: /proc/net/tcp timer {timer:?}");
    }
}

/// The `tr` (timer) field of the established IPv4 socket whose remote port
/// is `port`, from `/proc/net/tcp`.
#[cfg(target_os = "linux")]
fn engine_socket_timer(port: u16) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let remote = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when ...; 01 = ESTABLISHED
        if f.len() > 5 && f[2].ends_with(&remote) && f[3] == "01" {
            f[5].split(':').next()?.parse().ok()
        } else {
            None
        }
    })
}
