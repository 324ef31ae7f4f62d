//! Soak test: mixed traffic for a given time, then the books must balance.
//!
//! Ignored by default (it runs for a minute); run it with
//!
//! ```text
//! TOFU_SOAK_SECS=1800 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! or `scripts/soak.sh [SECONDS]`. `TOFU_SOAK_SECS` (default 60) is how long
//! traffic runs; `TOFU_SOAK_CONNS` (default 100) how many connections are kept
//! open at once.
//!
//! Two engines: a server engine with a small pool (16 messages, so that reading
//! stops regularly: backpressure and `pool_empty`) listening on TCP and on a
//! Unix-domain socket, one group and one thread per listener; and a client
//! engine with four worker threads, each with its own group and its share of
//! the connections. A client connection alternates TCP and UDS, sometimes
//! pipelines requests behind its HelloRequest, keeps a random window of
//! requests (random sizes, up to 60000 bytes, some with text headers) in
//! flight, checks every echo (same message_id, same bytes, in order), and ends
//! with a ByeRequest (graceful) or a ByeSignal (abort, often mid-stream); then
//! it reconnects. The server rejects some HelloRequests with ByeSignal and
//! aborts some channels mid-stream.
//!
//! Accounting checked at the end:
//! * every request posted was answered, came back from the engine with a
//!   non-zero status, or was lost in an abort (written, then the connection
//!   was aborted before the answer came back); a gracefully closed connection
//!   lost nothing; no answer was duplicated or out of order;
//! * every connection ended with exactly one `channel_closed` report on each
//!   side that saw it;
//! * both engines: `open_channels` back to 0 (listeners closed too) and
//!   `pool_outstanding` back to 0;
//! * on Linux, the process's open file descriptors are back to the count
//!   before the engines were created, and the UDS socket file is gone.

#[macro_use]
mod util;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tofu::testing::{free_tcp_port, temp_uds_path};
use tofu::{Address, Allocation, ChannelGroup, Engine, Error, Message, OpCode, Options, Status};
use util::listen;

const WORKERS: usize = 4;
/// How long the drain after the traffic may take before the soak fails.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift generator: reproducible without dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// `true` with probability 1/n.
    fn one_in(&mut self, n: u64) -> bool {
        self.next() % n == 0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Counters shared by all threads, printed in the summary.
#[derive(Default)]
struct Totals {
    connects: AtomicU64,
    connects_tcp: AtomicU64,
    connects_uds: AtomicU64,
    connect_failed: AtomicU64,
    requests_posted: AtomicU64,
    answered: AtomicU64,
    returned: AtomicU64,
    lost_in_abort: AtomicU64,
    request_bytes: AtomicU64,
    graceful_closes: AtomicU64,
    client_aborts: AtomicU64,
    server_aborts: AtomicU64,
    server_rejects: AtomicU64,
    other_closes: AtomicU64,
    client_reports: AtomicU64,
    pool_empty_reports: AtomicU64,
    server_requests: AtomicU64,
    server_returned: AtomicU64,
    server_reports: AtomicU64,
    server_accepted: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// The body of request `id`: `len` bytes derived from the id, so that the echo
/// can be checked without keeping a copy.
fn body_for(id: u64, len: usize) -> Vec<u8> {
    let seed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|i| (seed >> ((i % 8) * 8)) as u8 ^ (i as u8))
        .collect()
}

fn message(engine: &Engine, channel: u16, op: OpCode) -> Message {
    let mut m = engine
        .get(Allocation::Always)
        .expect("engine running")
        .expect("Always allocates");
    m.header.channel_number = channel;
    m.header.proto.opcode = op;
    m
}

/// One client connection's bookkeeping.
struct Conn {
    /// Requests posted and neither answered nor returned yet: (id, body length).
    in_flight: VecDeque<(u64, usize)>,
    /// Requests still to post.
    remaining: u64,
    window: usize,
    accepted: bool,
    /// A ByeRequest was posted; nothing more may be.
    bye_sent: bool,
    /// We posted a ByeSignal.
    aborted: bool,
    /// The ByeResponse arrived: the close is graceful.
    graceful: bool,
    /// The channel closed before we saw its report: posts are refused.
    gone: bool,
    /// Where in `in_flight` the first returned request was: the returned
    /// ones are a suffix of what was posted, the ones before them were
    /// written and are lost if no answer comes.
    returned_at: Option<usize>,
}

struct Worker {
    engine: Engine,
    group: ChannelGroup,
    addrs: [Address; 2],
    rng: Rng,
    conns: HashMap<u16, Conn>,
    totals: Arc<Totals>,
    next_transport: usize,
}

impl Worker {
    fn connect(&mut self) {
        let t = self.next_transport;
        self.next_transport ^= 1;
        let mut hello = message(&self.engine, 0, OpCode::HelloRequest);
        self.addrs[t].format(&mut hello).unwrap();
        let ch = self.group.post(hello).expect("post hello").channel_number;
        add(&self.totals.connects, 1);
        add(
            if t == 0 {
                &self.totals.connects_tcp
            } else {
                &self.totals.connects_uds
            },
            1,
        );
        let conn = Conn {
            in_flight: VecDeque::new(),
            remaining: 1 + self.rng.below(300),
            window: 1 + self.rng.below(32) as usize,
            accepted: false,
            bye_sent: false,
            aborted: false,
            graceful: false,
            gone: false,
            returned_at: None,
        };
        assert!(self.conns.insert(ch, conn).is_none(), "channel {ch} reused");
        // Sometimes pipeline requests behind the HelloRequest.
        if self.rng.one_in(4) {
            self.fill(ch);
        }
    }

    /// Posts requests until the window is full or none remain.
    fn fill(&mut self, ch: u16) {
        loop {
            let conn = &self.conns[&ch];
            if conn.bye_sent || conn.aborted || conn.gone || conn.remaining == 0 {
                return;
            }
            if conn.in_flight.len() >= conn.window {
                return;
            }
            let len = match self.rng.below(100) {
                0 => 60_000,
                1..=10 => self.rng.below(16_384) as usize,
                _ => self.rng.below(512) as usize,
            };
            let mut req = message(&self.engine, ch, OpCode::Request);
            if self.rng.one_in(8) {
                req.text_headers.append("soak", "header value").unwrap();
            }
            let id = tofu::next_message_id();
            req.header.message_id = id;
            req.body = body_for(id, len);
            match self.group.post(req) {
                Ok(h) => assert_eq!(h.message_id, id),
                Err(e) if e.error == Error::InvalidChannelNumber => {
                    // Closed by the peer; the report is on its way.
                    self.conns.get_mut(&ch).unwrap().gone = true;
                    return;
                }
                Err(e) => panic!("post request on {ch}: {}", e.error),
            }
            add(&self.totals.requests_posted, 1);
            add(&self.totals.request_bytes, len as u64);
            let conn = self.conns.get_mut(&ch).unwrap();
            conn.in_flight.push_back((id, len));
            conn.remaining -= 1;
        }
    }

    fn post_bye(&mut self, ch: u16, op: OpCode) {
        let conn = self.conns.get_mut(&ch).unwrap();
        if op == OpCode::ByeSignal {
            conn.aborted = true;
        } else {
            conn.bye_sent = true;
        }
        let m = message(&self.engine, ch, op);
        match self.group.post(m) {
            Ok(_) => {}
            Err(e) if e.error == Error::InvalidChannelNumber => conn.gone = true,
            Err(e) => panic!("post {op:?} on {ch}: {}", e.error),
        }
    }

    /// After an answer: more requests, or the end of the connection.
    fn advance(&mut self, ch: u16, stopping: bool) {
        let conn = &self.conns[&ch];
        if conn.bye_sent || conn.aborted || conn.gone || !conn.accepted {
            return;
        }
        if !stopping && conn.remaining > 0 && self.rng.one_in(400) {
            self.post_bye(ch, OpCode::ByeSignal); // abort mid-stream
            return;
        }
        if stopping {
            self.conns.get_mut(&ch).unwrap().remaining = 0;
        }
        self.fill(ch);
        let conn = &self.conns[&ch];
        if conn.remaining == 0 && conn.in_flight.is_empty() {
            let op = if !stopping && self.rng.one_in(4) {
                OpCode::ByeSignal
            } else {
                OpCode::ByeRequest
            };
            self.post_bye(ch, op);
        }
    }

    fn on_message(&mut self, m: Message, stopping: bool) {
        let ch = m.header.channel_number;
        if m.is_from_engine() {
            if m.opcode() == OpCode::Signal {
                self.on_report(ch, m.status());
                return;
            }
            let conn = self
                .conns
                .get_mut(&ch)
                .unwrap_or_else(|| panic!("returned message for unknown channel: {m:?}"));
            assert_ne!(m.status(), Status::Success, "{m:?}");
            match m.opcode() {
                OpCode::Request => {
                    let pos = conn
                        .in_flight
                        .iter()
                        .position(|&(id, _)| id == m.header.message_id)
                        .unwrap_or_else(|| panic!("returned request not in flight: {m:?}"));
                    // Returned messages are a suffix of what was posted.
                    let first = *conn.returned_at.get_or_insert(pos);
                    assert_eq!(pos, first, "returned out of order: {m:?}");
                    conn.in_flight.remove(pos);
                    add(&self.totals.returned, 1);
                }
                OpCode::HelloRequest => add(&self.totals.connect_failed, 1),
                OpCode::ByeSignal | OpCode::ByeRequest => {}
                op => panic!("unexpected returned {op:?}: {m:?}"),
            }
            return;
        }
        let conn = self
            .conns
            .get_mut(&ch)
            .unwrap_or_else(|| panic!("message for unknown channel: {m:?}"));
        match m.opcode() {
            OpCode::HelloResponse => {
                assert!(!conn.accepted, "second HelloResponse: {m:?}");
                conn.accepted = true;
                self.advance(ch, stopping);
            }
            OpCode::Response => {
                assert!(conn.returned_at.is_none(), "answer after a return: {m:?}");
                let (id, len) = conn
                    .in_flight
                    .pop_front()
                    .unwrap_or_else(|| panic!("answer with nothing in flight: {m:?}"));
                assert_eq!(m.header.message_id, id, "answers in order, once each");
                assert_eq!(m.body.len(), len);
                assert!(m.body == body_for(id, len), "echoed body differs: {m:?}");
                add(&self.totals.answered, 1);
                self.advance(ch, stopping);
            }
            OpCode::ByeResponse => {
                assert!(conn.bye_sent, "ByeResponse without ByeRequest: {m:?}");
                assert!(conn.in_flight.is_empty(), "ByeResponse overtook answers");
                conn.graceful = true;
            }
            op => panic!("unexpected {op:?} from the server: {m:?}"),
        }
    }

    fn on_report(&mut self, ch: u16, status: Status) {
        if status == Status::PoolEmpty {
            add(&self.totals.pool_empty_reports, 1);
            return;
        }
        add(&self.totals.client_reports, 1);
        if status != Status::ChannelClosed {
            // A failure report (peer disconnected, …); channel_closed follows.
            return;
        }
        let conn = self
            .conns
            .remove(&ch)
            .unwrap_or_else(|| panic!("channel_closed for unknown channel {ch}"));
        let lost = conn.in_flight.len() as u64;
        if let Some(at) = conn.returned_at {
            assert_eq!(conn.in_flight.len(), at, "returned requests are a suffix");
        }
        if conn.graceful {
            assert_eq!(lost, 0, "graceful close lost requests");
            add(&self.totals.graceful_closes, 1);
        } else {
            add(&self.totals.lost_in_abort, lost);
            if conn.aborted {
                add(&self.totals.client_aborts, 1);
            } else {
                // Server abort or reject, or a connect failure.
                add(&self.totals.other_closes, 1);
            }
        }
    }

    fn run(mut self, per_worker: usize, stop: &AtomicBool) {
        let mut drain_deadline = None;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if stopping {
                let deadline = *drain_deadline.get_or_insert_with(|| {
                    // Wind down: no new requests; close what is idle now.
                    let idle: Vec<u16> = self.conns.keys().copied().collect();
                    for ch in idle {
                        self.advance(ch, true);
                    }
                    Instant::now() + DRAIN_LIMIT
                });
                if self.conns.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "drain timed out with {} connections open",
                    self.conns.len()
                );
            } else {
                while self.conns.len() < per_worker {
                    self.connect();
                }
            }
            match self.group.wait_receive(Some(Duration::from_millis(100))) {
                Ok(Some(m)) => self.on_message(m, stopping),
                Ok(None) => {}
                Err(e) => panic!("client wait_receive: {e}"),
            }
        }
        self.group.destroy().unwrap();
    }
}

/// One listener's server loop: accept (or sometimes reject), echo requests
/// (or sometimes abort), answer ByeRequests.
fn serve(
    engine: Engine,
    group: ChannelGroup,
    listener: u16,
    seed: u64,
    totals: Arc<Totals>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(seed);
    // Open server channels and the id of the last request seen on each.
    let mut open: HashMap<u16, u64> = HashMap::new();
    loop {
        if stop.load(Ordering::Relaxed) && open.is_empty() {
            break;
        }
        let mut m = match group.wait_receive(Some(Duration::from_millis(100))) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => panic!("server wait_receive: {e}"),
        };
        let ch = m.header.channel_number;
        if m.is_from_engine() {
            if m.opcode() == OpCode::Signal {
                match m.status() {
                    Status::PoolEmpty => add(&totals.pool_empty_reports, 1),
                    Status::ChannelClosed => {
                        assert_ne!(ch, listener, "listener closed: {m:?}");
                        assert!(open.remove(&ch).is_some(), "unknown channel: {m:?}");
                        add(&totals.server_reports, 1);
                    }
                    _ => add(&totals.server_reports, 1),
                }
            } else {
                assert_ne!(m.status(), Status::Success, "{m:?}");
                add(&totals.server_returned, 1);
            }
            continue;
        }
        match m.opcode() {
            OpCode::HelloRequest => {
                assert!(open.insert(ch, 0).is_none(), "channel {ch} reused");
                add(&totals.server_accepted, 1);
                if !stop.load(Ordering::Relaxed) && rng.one_in(50) {
                    add(&totals.server_rejects, 1);
                    m.header.proto.opcode = OpCode::ByeSignal;
                } else {
                    m.header.proto.opcode = OpCode::HelloResponse;
                }
                group.post(m).expect("post hello answer");
            }
            OpCode::Request => {
                add(&totals.server_requests, 1);
                let last = open.get_mut(&ch).expect("request on an open channel");
                assert!(m.header.message_id > *last, "requests in order");
                *last = m.header.message_id;
                if !stop.load(Ordering::Relaxed) && rng.one_in(1000) {
                    add(&totals.server_aborts, 1);
                    m.header.proto.opcode = OpCode::ByeSignal;
                    m.body.clear();
                    m.text_headers.clear();
                } else {
                    m.header.proto.opcode = OpCode::Response;
                }
                // The channel may be closing under us (the client aborted):
                // the message then comes back from the engine.
                if let Err(e) = group.post(m) {
                    assert_eq!(e.error, Error::InvalidChannelNumber, "{e}");
                }
            }
            OpCode::ByeRequest => {
                m.header.proto.opcode = OpCode::ByeResponse;
                if let Err(e) = group.post(m) {
                    assert_eq!(e.error, Error::InvalidChannelNumber, "{e}");
                }
            }
            op => panic!("server got {op:?}: {m:?}"),
        }
    }
    // Close the listener: the group goes, and its listening socket with it.
    drop(engine);
    group.destroy().unwrap();
}

#[cfg(target_os = "linux")]
fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

#[cfg(not(target_os = "linux"))]
fn open_fds() -> Option<usize> {
    None
}

/// Waits (bounded) until `cond` holds; panics with `what` otherwise.
fn settle(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "long-running; scripts/soak.sh or --ignored"]
fn soak() {
    let secs = env_u64("TOFU_SOAK_SECS", 60);
    let conns = env_u64("TOFU_SOAK_CONNS", 100) as usize;
    let seed = env_u64("TOFU_SOAK_SEED", 0x5eed_f00d) | 1;
    let fds_before = open_fds();
    let started = Instant::now();

    let server_engine = Engine::new(Options {
        initial_pool_msgs: 16,
        max_pool_msgs: 16,
        ..Options::default()
    })
    .unwrap();
    let client_engine = Engine::new(Options::default()).unwrap();
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));

    let port = free_tcp_port().unwrap();
    let path = temp_uds_path();
    let servers: Vec<_> = [
        Address::tcp_server("127.0.0.1", port),
        Address::uds_server(path.clone()),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, addr)| {
        let group = server_engine.create_group().unwrap();
        let listener = listen(&server_engine, &group, &addr);
        let (engine, totals, stop) = (server_engine.clone(), totals.clone(), stop.clone());
        thread::Builder::new()
            .name(format!("soak-server-{i}"))
            .spawn(move || serve(engine, group, listener, seed + i as u64, totals, stop))
            .unwrap()
    })
    .collect();

    let clients: Vec<_> = (0..WORKERS)
        .map(|i| {
            let worker = Worker {
                engine: client_engine.clone(),
                group: client_engine.create_group().unwrap(),
                addrs: [
                    Address::tcp_client("127.0.0.1", port),
                    Address::uds_client(path.clone()),
                ],
                rng: Rng(seed.wrapping_mul(31) + 7 * i as u64),
                conns: HashMap::new(),
                totals: totals.clone(),
                next_transport: i % 2,
            };
            let per_worker = conns.div_ceil(WORKERS);
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("soak-client-{i}"))
                .spawn(move || worker.run(per_worker, &stop))
                .unwrap()
        })
        .collect();

    let traffic_until = started + Duration::from_secs(secs);
    let mut next_progress = Instant::now() + Duration::from_secs(60);
    while Instant::now() < traffic_until {
        thread::sleep(Duration::from_millis(200));
        if clients.iter().chain(&servers).any(|h| h.is_finished()) {
            break; // a thread panicked: fail below
        }
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(60);
            let c = client_engine.stats();
            eprintln!(
                "soak: {:>5}s connects={} answered={} returned={} lost_in_abort={} \
                 open_channels(client)={} server pool_empty_events={}",
                started.elapsed().as_secs(),
                get(&totals.connects),
                get(&totals.answered),
                get(&totals.returned),
                get(&totals.lost_in_abort),
                c.open_channels,
                server_engine.stats().pool_empty_events,
            );
        }
    }
    let traffic_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in clients {
        h.join().expect("client worker panicked");
    }
    for h in servers {
        h.join().expect("server thread panicked");
    }

    // The books.
    let t = &*totals;
    let posted = get(&t.requests_posted);
    let (answered, returned, lost) = (get(&t.answered), get(&t.returned), get(&t.lost_in_abort));
    assert_eq!(
        posted,
        answered + returned + lost,
        "every request answered, returned or lost in an abort"
    );
    assert!(get(&t.server_requests) >= answered);
    assert_eq!(
        get(&t.connects),
        get(&t.graceful_closes) + get(&t.client_aborts) + get(&t.other_closes),
        "every connection closed exactly once"
    );
    assert_eq!(get(&t.connect_failed), 0, "loopback connects do not fail");
    assert!(answered > 0 && get(&t.graceful_closes) > 0);

    let cs = client_engine.stats();
    let ss = server_engine.stats();
    settle("client channels all closed", || {
        client_engine.stats().open_channels == 0
    });
    settle("server channels all closed (listeners too)", || {
        server_engine.stats().open_channels == 0
    });
    settle("client pool: every message back", || {
        client_engine.stats().pool_outstanding == 0
    });
    settle("server pool: every message back", || {
        server_engine.stats().pool_outstanding == 0
    });
    assert_eq!(ss.accepted, get(&t.server_accepted));
    assert!(!path.exists(), "listener's socket file removed");

    drop(client_engine);
    drop(server_engine);
    if let Some(before) = fds_before {
        settle("file descriptors back to the start", || {
            open_fds() == Some(before)
        });
    }

    eprintln!(
        "soak summary: {traffic_secs:.0}s of traffic ({:.0}s total), {} connections at once\n\
         connections opened: {} (tcp {}, uds {}); graceful closes {}, client aborts {}, \
         server rejects {}, server aborts {}, other closes {}\n\
         requests: posted {posted}, answered {answered}, returned {returned}, \
         lost in aborts {lost}; request body bytes {}\n\
         client engine: sent {} msgs / {} bytes, received {} msgs / {} bytes\n\
         server engine: sent {} msgs / {} bytes, received {} msgs / {} bytes, accepted {}, \
         pool_empty_events {}\n\
         pool_empty reports delivered: {}; fds before/after: {:?}/{:?}\n\
         end state: open_channels 0/0, pool_outstanding 0/0",
        started.elapsed().as_secs_f64(),
        conns,
        get(&t.connects),
        get(&t.connects_tcp),
        get(&t.connects_uds),
        get(&t.graceful_closes),
        get(&t.client_aborts),
        get(&t.server_rejects),
        get(&t.server_aborts),
        get(&t.other_closes),
        get(&t.request_bytes),
        cs.messages_sent,
        cs.bytes_sent,
        cs.messages_received,
        cs.bytes_received,
        ss.messages_sent,
        ss.bytes_sent,
        ss.messages_received,
        ss.bytes_received,
        ss.accepted,
        ss.pool_empty_events,
        get(&t.pool_empty_reports),
        fds_before,
        open_fds(),
    );
}
