//! `tofu::Reconnect` over real sockets: a server restarted on the same port
//! mid-conversation, a server down for a while, 200 clients coming back at
//! once (spread by the jitter), shutdown and stop while backing off, a server
//! that accepts and never answers, the server's own graceful close, and
//! messages posted while disconnected. Timings are printed (`RECONNECT`
//! lines; run with `--nocapture`), never asserted.

#[macro_use]
mod util;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tofu::testing::free_tcp_port;
use tofu::{
    Address, ChannelGroup, Engine, Error, Handled, Message, OpCode, Options, Reconnect,
    ReconnectEvent, ReconnectOptions, Status, TextHeaders,
};
use util::*;

const MS: Duration = Duration::from_millis(1);

/// An echo server on 127.0.0.1:`port`, in an engine of its own (shutting it
/// down resets every connection, as a crashed server process would).
struct Server {
    engine: Engine,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Server {
    /// Listens (retrying briefly while the port is still held) and echoes
    /// Requests; records the `client` header of every HelloRequest.
    fn start(port: u16) -> Server {
        let engine = Engine::new(Options::default()).unwrap();
        let group = engine.create_group().unwrap();
        let deadline = Instant::now() + timeout();
        loop {
            let mut welcome = engine.get(tofu::Allocation::Always).unwrap().unwrap();
            Address::tcp_server("127.0.0.1", port)
                .format(&mut welcome)
                .unwrap();
            group.post(welcome).unwrap();
            let answer = recv(&group);
            if answer.status() == Status::Success {
                break;
            }
            assert!(Instant::now() < deadline, "cannot listen: {answer:?}");
            std::thread::sleep(10 * MS);
        }
        let thread = std::thread::spawn(move || serve(&group));
        Server { engine, thread }
    }

    /// Shuts the server down (its connections reset); the HelloRequests'
    /// `client` headers it saw.
    fn stop(self) -> Vec<String> {
        self.engine.shutdown();
        self.thread.join().unwrap()
    }
}

fn serve(group: &ChannelGroup) -> Vec<String> {
    let mut clients = Vec::new();
    while let Ok(got) = group.wait_receive(Some(timeout())) {
        let Some(mut m) = got else { continue };
        if m.is_from_engine() {
            continue;
        }
        m.header.proto.opcode = match m.opcode() {
            OpCode::HelloRequest => {
                clients.push(m.text_headers.get("client").unwrap_or("?").to_owned());
                OpCode::HelloResponse
            }
            OpCode::Request => OpCode::Response,
            OpCode::ByeRequest => OpCode::ByeResponse,
            _ => continue,
        };
        let _ = group.post(m);
    }
    clients
}

fn headers(client: &str) -> TextHeaders {
    let mut h = TextHeaders::new();
    h.append("client", client).unwrap();
    h
}

fn quick(initial_ms: u32, max_ms: u32) -> ReconnectOptions {
    ReconnectOptions {
        initial_delay: initial_ms * MS,
        max_delay: max_ms * MS,
        ..ReconnectOptions::default()
    }
}

fn request(engine: &Engine, seq: u64) -> Message {
    let mut m = engine.get(tofu::Allocation::Always).unwrap().unwrap();
    m.header.proto.opcode = OpCode::Request;
    m.body.extend_from_slice(&seq.to_be_bytes());
    m
}

fn seq_of(m: &Message) -> u64 {
    u64::from_be_bytes(m.body[..8].try_into().unwrap())
}

/// Events with the time they came out of the loop.
type Log = Vec<(Instant, ReconnectEvent)>;

/// Runs `link`'s loop until `until` returns true for an event (returned),
/// or the test's timeout; application messages go to `app`.
#[track_caller]
fn until_event(
    link: &mut Reconnect<'_>,
    log: &mut Log,
    mut app: impl FnMut(&mut Reconnect<'_>, Message),
    mut until: impl FnMut(&ReconnectEvent) -> bool,
) -> ReconnectEvent {
    let deadline = Instant::now() + timeout();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out; events so far: {log:#?}");
        let Some(m) = link.wait_receive(Some(left)).unwrap() else {
            continue;
        };
        match link.event(&m) {
            Some(e) => {
                log.push((Instant::now(), e.clone()));
                if until(&e) {
                    return e;
                }
            }
            None => app(link, m),
        }
    }
}

fn kinds(log: &Log) -> Vec<&'static str> {
    log.iter()
        .map(|(_, e)| match e {
            ReconnectEvent::Attempt { .. } => "attempt",
            ReconnectEvent::Connected { .. } => "connected",
            ReconnectEvent::Disconnected {
                was_connected: true,
                ..
            } => "lost",
            ReconnectEvent::Disconnected { .. } => "failed",
            ReconnectEvent::GaveUp { .. } => "gave_up",
            ReconnectEvent::Stopped => "stopped",
            _ => "other",
        })
        .collect()
}

fn connected(e: &ReconnectEvent) -> bool {
    matches!(e, ReconnectEvent::Connected { .. })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A conversation of 10 requests, one at a time; after the 5th answer the
/// server dies and a new one starts on the same port at once. The client
/// comes back on a new channel with the same HelloRequest headers; every
/// request is answered exactly once, in order (the one in flight when the
/// server died comes back from the engine and is sent again).
#[test]
fn a_server_restarted_mid_conversation_on_the_same_port() {
    let port = free_tcp_port().unwrap();
    let mut server = Some(Server::start(port));
    let engine = engine();
    let group = engine.create_group().unwrap();
    let addr = Address::tcp_client("127.0.0.1", port);
    let mut link = Reconnect::new(&group, addr, headers("restart"), quick(50, 500)).unwrap();
    let mut log = Log::new();
    let mut answered = Vec::new();
    let mut returned = 0;
    // The request to send once connected, and the one sent and not answered.
    let mut pending = Some(0u64);
    let mut outstanding = None;
    let mut resent = 0;
    let mut killed_at = None;
    let mut first_servers_clients = Vec::new();
    until_event(
        &mut link,
        &mut log,
        |_, m| panic!("before connecting: {m:?}"),
        connected,
    );
    let send = |link: &mut Reconnect<'_>, pending: &mut Option<u64>, out: &mut Option<u64>| {
        if let Some(seq) = *pending {
            match link.post(request(&engine, seq)) {
                Ok(_) => (*pending, *out) = (None, Some(seq)),
                Err(e) => assert_eq!(e.error, Error::ChannelClosed, "{e}"),
            }
        }
    };
    send(&mut link, &mut pending, &mut outstanding);
    let deadline = Instant::now() + timeout();
    while answered.len() < 10 {
        assert!(Instant::now() < deadline, "stuck: {log:#?}");
        let Some(m) = link.wait_receive(Some(100 * MS)).unwrap() else {
            continue;
        };
        if let Some(e) = link.event(&m) {
            match e {
                ReconnectEvent::Connected { .. } => {
                    send(&mut link, &mut pending, &mut outstanding);
                }
                // Sent, never answered: the server may never have seen it.
                ReconnectEvent::Disconnected { .. } if outstanding.is_some() => {
                    pending = outstanding.take();
                    resent += 1;
                }
                _ => {}
            }
            log.push((Instant::now(), e));
            continue;
        }
        let seq = seq_of(&m);
        if m.is_from_engine() {
            // Not written when the connection broke: given back by the
            // engine (then the Disconnected event marks it for sending again).
            assert_eq!(
                (m.opcode(), Some(seq)),
                (OpCode::Request, outstanding),
                "{m:?}"
            );
            returned += 1;
            continue;
        }
        assert_eq!(m.opcode(), OpCode::Response);
        assert_eq!(outstanding.take(), Some(seq));
        answered.push(seq);
        if answered.len() < 10 {
            pending = Some(seq + 1);
            send(&mut link, &mut pending, &mut outstanding);
        }
        if answered.len() == 5 {
            // Mid-conversation: the 6th request is on its way.
            first_servers_clients = server.take().unwrap().stop();
            killed_at = Some(Instant::now());
            server = Some(Server::start(port));
        }
    }
    assert_eq!(answered, (0..10).collect::<Vec<_>>(), "each once, in order");
    let second_servers_clients = server.take().unwrap().stop();
    assert_eq!(first_servers_clients, ["restart"]);
    assert_eq!(
        second_servers_clients,
        ["restart"],
        "the same HelloRequest headers"
    );
    assert_eq!(
        kinds(&log),
        ["attempt", "connected", "lost", "attempt", "connected"],
        "{log:#?}"
    );
    let channels: Vec<u16> = log
        .iter()
        .filter_map(|(_, e)| match e {
            ReconnectEvent::Connected { channel, .. } => Some(*channel),
            _ => None,
        })
        .collect();
    assert_ne!(channels[0], channels[1], "a new channel");
    let (lost_at, cause, planned) = match &log[2] {
        (
            t,
            ReconnectEvent::Disconnected {
                cause, retry_in, ..
            },
        ) => (*t, *cause, *retry_in),
        _ => unreachable!(),
    };
    assert!(cause.is_some(), "a crash has a cause");
    let killed_at = killed_at.unwrap();
    println!(
        "RECONNECT restart: server killed -> client saw it {}, -> attempt {} (planned wait {}), \
         -> connected {}; killed -> connected {} in all; cause {:?}; {returned} request(s) given back by the engine, {resent} sent again",
        ms(lost_at - killed_at),
        ms(log[3].0 - lost_at),
        ms(planned.unwrap()),
        ms(log[4].0 - log[3].0),
        ms(log[4].0 - killed_at),
        cause.unwrap(),
    );
}

/// The server is down for 1.5 s: attempts fail (`connect_failed`), the
/// waits between them grow up to the maximum, and the client is back soon
/// after the server is.
#[test]
fn a_server_down_for_a_while_then_back() {
    let port = free_tcp_port().unwrap();
    let server = Server::start(port);
    let engine = engine();
    let group = engine.create_group().unwrap();
    let opts = quick(50, 400);
    let addr = Address::tcp_client("127.0.0.1", port);
    let mut link = Reconnect::new(&group, addr, headers("outage"), opts.clone()).unwrap();
    let mut log = Log::new();
    let app = |_: &mut Reconnect<'_>, m: Message| panic!("unexpected {m:?}");
    until_event(&mut link, &mut log, app, connected);
    server.stop();
    let down_at = Instant::now();
    // Keep the loop running for the outage.
    let outage = Duration::from_millis(1500);
    while Instant::now() < down_at + outage {
        if let Some(m) = link
            .wait_receive(Some(down_at + outage - Instant::now()))
            .unwrap()
        {
            let e = link.event(&m).expect("only events");
            log.push((Instant::now(), e));
        }
    }
    let server = Server::start(port);
    let up_at = Instant::now();
    until_event(&mut link, &mut log, app, connected);
    let back_at = log.last().unwrap().0;
    server.stop();

    let waits: Vec<Duration> = log
        .iter()
        .filter_map(|(_, e)| match e {
            ReconnectEvent::Disconnected { retry_in, .. } => *retry_in,
            _ => None,
        })
        .collect();
    let failures: Vec<Option<Status>> = log
        .iter()
        .filter_map(|(_, e)| match e {
            ReconnectEvent::Disconnected {
                was_connected: false,
                cause,
                ..
            } => Some(*cause),
            _ => None,
        })
        .collect();
    assert!(failures.len() >= 3, "{log:#?}");
    assert!(
        failures.iter().all(|c| *c == Some(Status::ConnectFailed)),
        "{failures:?}"
    );
    // Wait n (after the lost connection: n = 1) is in [d/2, d] of its
    // nominal d, and while d doubles the waits do not shrink.
    for (i, w) in waits.iter().enumerate() {
        let d = opts.nominal_delay(i as u32 + 1);
        assert!(
            *w >= d / 2 && *w <= d,
            "wait {} = {w:?}, nominal {d:?}",
            i + 1
        );
        if i > 0 && d == 2 * opts.nominal_delay(i as u32) {
            assert!(*w >= waits[i - 1], "backoff grows: {waits:?}");
        }
    }
    let attempts = log
        .iter()
        .filter(|(_, e)| matches!(e, ReconnectEvent::Attempt { .. }))
        .count();
    println!(
        "RECONNECT outage 1.5 s: {attempts} attempts, planned waits {:?} ms; \
         server up -> connected {}",
        waits.iter().map(|w| w.as_millis()).collect::<Vec<_>>(),
        ms(back_at - up_at),
    );
}

/// 200 clients lose their server at the same moment; it is back at once.
/// Their waits before the first attempt are drawn from [500, 1000] ms: the
/// jitter spreads them (at least 100 distinct milliseconds of 500
/// possible; with 200 draws about 165 are expected), and all 200 come back.
#[test]
fn two_hundred_clients_reconnecting_at_once_are_spread_by_the_jitter() {
    const N: usize = 200;
    let port = free_tcp_port().unwrap();
    let server = Server::start(port);
    let engine = Engine::new(Options {
        max_pool_msgs: 1024,
        ..Options::default()
    })
    .unwrap();
    let group = engine.create_group().unwrap();
    let addr = Address::tcp_client("127.0.0.1", port);
    let mut links: Vec<Reconnect<'_>> = (0..N)
        .map(|i| {
            let h = headers(&format!("c{i}"));
            Reconnect::new(&group, addr.clone(), h, quick(1000, 4000)).unwrap()
        })
        .collect();
    let mut connected_at = vec![None; N];
    let mut planned = vec![None; N];
    let mut attempt_at = vec![None; N];
    let mut lost = 0;
    let mut run = |links: &mut Vec<Reconnect<'_>>,
                   until: &mut dyn FnMut(&[Option<Instant>], usize) -> bool,
                   connected_at: &mut Vec<Option<Instant>>| {
        let deadline = Instant::now() + 3 * timeout();
        while !until(connected_at, lost) {
            assert!(Instant::now() < deadline, "timed out");
            for l in links.iter_mut() {
                l.poll().unwrap();
            }
            let wait = links
                .iter()
                .filter_map(|l| l.timeout())
                .min()
                .unwrap_or(100 * MS)
                .min(100 * MS);
            let Some(mut m) = group.wait_receive(Some(wait)).unwrap() else {
                continue;
            };
            for (i, l) in links.iter_mut().enumerate() {
                if let Some(e) = l.event(&m) {
                    match e {
                        ReconnectEvent::Connected { .. } => connected_at[i] = Some(Instant::now()),
                        ReconnectEvent::Disconnected { retry_in, .. } => {
                            connected_at[i] = None;
                            planned[i] = retry_in;
                            lost += 1;
                        }
                        ReconnectEvent::Attempt { attempt, .. } if lost > 0 => {
                            assert_eq!(attempt, 1, "the server is back: one attempt each");
                            attempt_at[i] = Some(Instant::now());
                        }
                        _ => {}
                    }
                    break;
                }
                match l.handle(m) {
                    Handled::Mine => break,
                    Handled::NotMine(back) => m = back,
                }
            }
        }
    };
    let all_connected = |c: &[Option<Instant>], _: usize| c.iter().all(|c| c.is_some());
    run(&mut links, &mut { all_connected }, &mut connected_at);
    server.stop();
    let down_at = Instant::now();
    let server = Server::start(port);
    run(&mut links, &mut |_, lost| lost == N, &mut connected_at);
    run(&mut links, &mut { all_connected }, &mut connected_at);
    let clients = server.stop();
    assert_eq!(clients.len(), N, "each client came back once");

    let planned_ms: BTreeSet<u128> = planned.iter().map(|p| p.unwrap().as_millis()).collect();
    assert!(
        planned
            .iter()
            .all(|p| (500..=1000).contains(&p.unwrap().as_millis())),
        "{planned:?}"
    );
    assert!(
        planned_ms.len() >= 100,
        "only {} distinct waits among {N}",
        planned_ms.len()
    );
    let at: Vec<Duration> = attempt_at.iter().map(|t| t.unwrap() - down_at).collect();
    let distinct_attempt_ms: BTreeSet<u128> = at.iter().map(|d| d.as_millis()).collect();
    let mut buckets = [0usize; 12];
    for d in &at {
        buckets[(d.as_millis() / 100).min(11) as usize] += 1;
    }
    let last = connected_at.iter().map(|t| t.unwrap()).max().unwrap() - down_at;
    println!(
        "RECONNECT 200 clients: planned waits {} distinct ms in [{}, {}]; first attempts at \
         {} distinct ms from {} to {} after the server died; per 100 ms from 0: {buckets:?}; \
         all 200 back {} after it died",
        planned_ms.len(),
        planned_ms.first().unwrap(),
        planned_ms.last().unwrap(),
        distinct_attempt_ms.len(),
        ms(*at.iter().min().unwrap()),
        ms(*at.iter().max().unwrap()),
        ms(last),
    );
}

/// Shutting the engine down while the helper waits to retry ends its wait
/// at once (not at the end of the 60 s backoff): `ShutdownStarted`, done.
#[test]
fn shutdown_while_backing_off() {
    within(timeout(), || {
        let engine = engine();
        let group = engine.create_group().unwrap();
        let port = free_tcp_port().unwrap(); // nobody listens
        let addr = Address::tcp_client("127.0.0.1", port);
        let mut link =
            Reconnect::new(&group, addr, TextHeaders::new(), quick(60_000, 60_000)).unwrap();
        let mut log = Log::new();
        let app = |_: &mut Reconnect<'_>, m: Message| panic!("unexpected {m:?}");
        let e = until_event(&mut link, &mut log, app, |e| {
            matches!(e, ReconnectEvent::Disconnected { .. })
        });
        assert!(
            matches!(e, ReconnectEvent::Disconnected { retry_in: Some(w), .. } if w >= 30 * 1000 * MS)
        );
        let stopper = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                std::thread::sleep(100 * MS);
                engine.shutdown();
            })
        };
        let start = Instant::now();
        assert_eq!(link.wait_receive(None).unwrap_err(), Error::ShutdownStarted);
        assert!(link.is_done());
        stopper.join().unwrap();
        println!(
            "RECONNECT shutdown while backing off: wait ended {} after it began (backoff 60 s)",
            ms(start.elapsed())
        );
    });
}

/// `stop` while backing off: the `Stopped` event at once, no more attempts;
/// a post is handed back.
#[test]
fn stop_while_backing_off() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let port = free_tcp_port().unwrap();
    let addr = Address::tcp_client("127.0.0.1", port);
    let mut link = Reconnect::new(&group, addr, TextHeaders::new(), quick(60_000, 60_000)).unwrap();
    let mut log = Log::new();
    let app = |_: &mut Reconnect<'_>, m: Message| panic!("unexpected {m:?}");
    until_event(&mut link, &mut log, app, |e| {
        matches!(e, ReconnectEvent::Disconnected { .. })
    });
    link.stop().unwrap();
    until_event(&mut link, &mut log, app, |e| *e == ReconnectEvent::Stopped);
    assert!(link.is_done());
    assert_eq!(link.timeout(), None, "nothing left to do");
    assert_eq!(kinds(&log), ["attempt", "failed", "stopped"]);
    let e = link.post(request(&engine, 7)).unwrap_err();
    assert_eq!((e.error, seq_of(&e.message)), (Error::ChannelClosed, 7));
}

/// A server that accepts connections and never answers: each attempt is
/// aborted after the handshake timeout (`communication_failed`), and after
/// `max_attempts` the helper gives up.
#[test]
fn a_server_that_accepts_and_never_answers_is_given_up() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let silent = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let end = Instant::now() + timeout();
            while !done.load(Ordering::Relaxed) && Instant::now() < end {
                if let Ok((s, _)) = listener.accept() {
                    held.push(s); // accepted, never answered
                }
                std::thread::sleep(5 * MS);
            }
            // Whatever waits in the backlog was accepted too.
            while let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            held.len()
        })
    };
    let engine = engine();
    let group = engine.create_group().unwrap();
    let opts = ReconnectOptions {
        handshake_timeout: Some(300 * MS),
        max_attempts: Some(2),
        ..quick(50, 50)
    };
    let addr = Address::tcp_client("127.0.0.1", port);
    let mut link = Reconnect::new(&group, addr, TextHeaders::new(), opts).unwrap();
    let mut log = Log::new();
    let app = |_: &mut Reconnect<'_>, m: Message| panic!("unexpected {m:?}");
    let start = Instant::now();
    until_event(&mut link, &mut log, app, |e| {
        matches!(e, ReconnectEvent::GaveUp { .. })
    });
    done.store(true, Ordering::Relaxed);
    assert_eq!(silent.join().unwrap(), 2, "two connections accepted");
    assert_eq!(
        kinds(&log),
        ["attempt", "failed", "attempt", "failed", "gave_up"]
    );
    for (_, e) in &log {
        if let ReconnectEvent::Disconnected { cause, .. } = e {
            assert_eq!(*cause, Some(Status::CommunicationFailed));
        }
    }
    assert_eq!(log[4].1, ReconnectEvent::GaveUp { attempts: 2 });
    assert!(link.is_done());
    println!(
        "RECONNECT silent server: gave up after 2 attempts of 300 ms in {}",
        ms(start.elapsed())
    );
}

/// The server closes gracefully (its ByeRequest): the helper agrees, the
/// channel ends without a cause, and the helper connects again.
#[test]
fn the_servers_graceful_close_is_followed_by_a_new_connection() {
    let server_engine = engine();
    let server = server_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(any_transport()); // UDS, TCP under Wine
    listen(&server_engine, &server, &saddr);
    let engine = engine();
    let group = engine.create_group().unwrap();
    let mut link = Reconnect::new(&group, caddr, headers("bye"), quick(20, 20)).unwrap();
    let accept = |server: &ChannelGroup| {
        let mut hello = recv(server);
        while hello.is_from_engine() {
            hello = recv(server); // the previous channel's report
        }
        assert_eq!(hello.opcode(), OpCode::HelloRequest);
        assert_eq!(hello.text_headers.get("client"), Some("bye"));
        let ch = hello.channel_number();
        hello.header.proto.opcode = OpCode::HelloResponse;
        server.post(hello).unwrap();
        ch
    };
    let sch = accept(&server);
    let mut log = Log::new();
    let app = |_: &mut Reconnect<'_>, m: Message| panic!("unexpected {m:?}");
    until_event(&mut link, &mut log, app, connected);
    server
        .post(msg(&server_engine, sch, OpCode::ByeRequest, b""))
        .unwrap();
    let e = until_event(&mut link, &mut log, app, |e| {
        matches!(e, ReconnectEvent::Disconnected { .. })
    });
    assert!(
        matches!(
            e,
            ReconnectEvent::Disconnected {
                was_connected: true,
                cause: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        recv(&server).opcode(),
        OpCode::ByeResponse,
        "the helper agreed"
    );
    // The helper's loop must run for its next attempt to start.
    until_event(&mut link, &mut log, app, |e| {
        matches!(e, ReconnectEvent::Attempt { .. })
    });
    accept(&server);
    until_event(&mut link, &mut log, app, connected);
    assert_eq!(
        kinds(&log),
        ["attempt", "connected", "lost", "attempt", "connected"]
    );
}

/// While not connected, `post` hands the message straight back; bad input
/// to `new` is a clear error.
#[test]
fn posts_while_disconnected_come_back_and_bad_input_is_refused() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let port = free_tcp_port().unwrap();
    let addr = Address::tcp_client("127.0.0.1", port);
    let link = Reconnect::new(&group, addr, TextHeaders::new(), quick(50, 50)).unwrap();
    assert_eq!(link.channel(), None);
    let e = link.post(request(&engine, 3)).unwrap_err();
    assert_eq!((e.error, seq_of(&e.message)), (Error::ChannelClosed, 3));
    let server = Address::tcp_server("127.0.0.1", port);
    let e = Reconnect::new(&group, server, TextHeaders::new(), quick(50, 50)).unwrap_err();
    assert_eq!(e, Error::InvalidAddress);
    engine.shutdown();
    let addr = Address::tcp_client("127.0.0.1", port);
    let e = Reconnect::new(&group, addr, TextHeaders::new(), quick(50, 50)).unwrap_err();
    assert_eq!(e, Error::ShutdownStarted);
}

/// `stop` while connected: a graceful close (the server answers the
/// ByeRequest), `Disconnected` without a cause and no retry, then `Stopped`.
#[test]
fn stop_closes_the_connection_gracefully() {
    let port = free_tcp_port().unwrap();
    let server = Server::start(port);
    let engine = engine();
    let group = engine.create_group().unwrap();
    let addr = Address::tcp_client("127.0.0.1", port);
    let mut link = Reconnect::new(&group, addr, headers("stop"), quick(50, 50)).unwrap();
    let mut log = Log::new();
    let app = |_: &mut Reconnect<'_>, m: Message| panic!("unexpected {m:?}");
    until_event(&mut link, &mut log, app, connected);
    assert!(link.channel().is_some());
    link.stop().unwrap();
    until_event(&mut link, &mut log, app, |e| *e == ReconnectEvent::Stopped);
    assert_eq!(kinds(&log), ["attempt", "connected", "lost", "stopped"]);
    assert!(matches!(
        log[2].1,
        ReconnectEvent::Disconnected {
            cause: None,
            retry_in: None,
            ..
        }
    ));
    assert!(link.is_done() && link.channel().is_none());
    assert_eq!(server.stop(), ["stop"], "connected once");
}
