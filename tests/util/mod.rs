//! Shared helpers for the integration tests: loopback addresses, bounded waits.
#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::time::{Duration, Instant};

use tofu::testing::{free_tcp_port, temp_uds_path};
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Status};

/// Upper bound for any single wait in the tests.
pub fn timeout() -> Duration {
    static SECS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // Slow runners (valgrind, sanitizers) may raise it: TOFU_TEST_TIMEOUT_SECS=120.
    Duration::from_secs(*SECS.get_or_init(|| {
        std::env::var("TOFU_TEST_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10)
    }))
}

/// Turns `fn case(t: Transport)` into two tests, `case::tcp` and `case::uds`.
#[allow(unused_macros)]
macro_rules! tcp_and_uds {
    ($case:ident) => {
        mod $case {
            #[test]
            fn tcp() {
                super::$case(super::Transport::Tcp);
            }

            #[test]
            fn uds() {
                // Prints why, where the platform has no AF_UNIX (Wine).
                if tofu::testing::uds_not_applicable() {
                    return;
                }
                super::$case(super::Transport::Uds);
            }
        }
    };
}

/// The two transports every behaviour is tested over.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Tcp,
    Uds,
}

pub const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Uds];

/// For tests whose behaviour does not depend on the transport: UDS (no port
/// needed), or TCP where the platform has no AF_UNIX (Wine).
pub fn any_transport() -> Transport {
    match tofu::testing::uds_unavailable() {
        None => Transport::Uds,
        Some(_) => Transport::Tcp,
    }
}

/// A fresh (server, client) address pair on loopback.
pub fn addresses(t: Transport) -> (Address, Address) {
    match t {
        Transport::Tcp => {
            let port = free_tcp_port().expect("free port");
            (
                Address::tcp_server("127.0.0.1", port),
                Address::tcp_client("127.0.0.1", port),
            )
        }
        Transport::Uds => {
            let path = temp_uds_path();
            (Address::uds_server(path.clone()), Address::uds_client(path))
        }
    }
}

pub fn engine() -> Engine {
    Engine::new(Options::default()).expect("engine")
}

/// One engine, a server group listening, a client group connected to it.
pub struct Connected {
    pub engine: Engine,
    pub server: ChannelGroup,
    pub client: ChannelGroup,
    /// Client-side channel.
    pub cch: u16,
    /// Server-side channel.
    pub sch: u16,
}

pub fn connected(t: Transport) -> Connected {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    Connected {
        engine,
        server,
        client,
        cch,
        sch,
    }
}

/// An engine whose pool holds 4 messages at most: it runs dry quickly.
pub fn tiny_pool_engine() -> Engine {
    Engine::new(Options {
        initial_pool_msgs: 4,
        max_pool_msgs: 4,
        ..Options::default()
    })
    .expect("engine")
}

/// A connected pair across two engines; the server's pool is tiny, so a server
/// that does not receive soon stops reading.
pub struct SlowServer {
    pub server: ChannelGroup,
    pub client: ChannelGroup,
    pub server_engine: Engine,
    pub client_engine: Engine,
    /// Client-side channel.
    pub cch: u16,
    /// Server-side channel.
    pub sch: u16,
}

pub fn slow_server(t: Transport) -> SlowServer {
    two_engines(t, tiny_pool_engine())
}

/// A connected pair across two engines: `server_engine` (listening) and a
/// client engine with default options.
pub fn two_engines(t: Transport, server_engine: Engine) -> SlowServer {
    let client_engine = engine();
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&server_engine, &server, &saddr);
    let (cch, sch) = connect_pair(&client_engine, &client, &server, &caddr);
    SlowServer {
        server,
        client,
        server_engine,
        client_engine,
        cch,
        sch,
    }
}

/// Receives the next message or panics after [`timeout()`].
#[track_caller]
pub fn recv(group: &ChannelGroup) -> Message {
    match group.wait_receive(Some(timeout())) {
        Ok(Some(m)) => m,
        Ok(None) => panic!(
            "timed out waiting for a message ({group:?}; {:?})",
            group.engine().stats()
        ),
        Err(e) => panic!("wait_receive failed: {e}"),
    }
}

/// Asserts nothing arrives within `d`.
#[track_caller]
pub fn recv_nothing(group: &ChannelGroup, d: Duration) {
    if let Some(m) = group.wait_receive(Some(d)).expect("wait_receive") {
        panic!("unexpected message: {m:?}");
    }
}

/// Skips engine reports with status `pool_empty`; returns the next other message.
#[track_caller]
pub fn recv_skip_pool_empty(group: &ChannelGroup) -> Message {
    loop {
        let m = recv(group);
        if !(m.is_from_engine() && m.status() == Status::PoolEmpty) {
            return m;
        }
    }
}

#[track_caller]
pub fn assert_report(m: &Message, channel: u16, status: Status) {
    assert!(m.is_from_engine(), "expected an engine report, got {m:?}");
    assert_eq!(m.opcode(), OpCode::Signal, "report is a Signal: {m:?}");
    assert_eq!(m.header.channel_number, channel, "report channel: {m:?}");
    assert_eq!(m.status(), status, "report status: {m:?}");
}

/// Starts listening; returns the listener's channel number.
#[track_caller]
pub fn listen(engine: &Engine, group: &ChannelGroup, addr: &Address) -> u16 {
    let mut m = engine.get(Allocation::Always).unwrap().unwrap();
    addr.format(&mut m).unwrap();
    let ch = group.post(m).expect("post welcome").channel_number;
    let r = recv(group);
    assert_eq!(r.opcode(), OpCode::WelcomeResponse, "{r:?}");
    assert_eq!(r.status(), Status::Success, "{r:?}");
    assert_eq!(r.header.channel_number, ch);
    ch
}

/// Client connects, server accepts; returns (client channel, server channel).
#[track_caller]
pub fn connect_pair(
    engine: &Engine,
    client: &ChannelGroup,
    server: &ChannelGroup,
    addr: &Address,
) -> (u16, u16) {
    let mut hello = engine.get(Allocation::Always).unwrap().unwrap();
    addr.format(&mut hello).unwrap();
    let hdr = client.post(hello).expect("post hello");
    let req = recv(server);
    assert_eq!(req.opcode(), OpCode::HelloRequest, "{req:?}");
    assert!(req.is_from_application());
    assert_eq!(req.header.message_id, hdr.message_id);
    let server_ch = req.header.channel_number;
    let mut resp = req;
    resp.header.proto.opcode = OpCode::HelloResponse;
    server.post(resp).expect("post hello response");
    let r = recv(client);
    assert_eq!(r.opcode(), OpCode::HelloResponse, "{r:?}");
    assert!(r.is_from_application());
    assert_eq!(r.header.channel_number, hdr.channel_number);
    (hdr.channel_number, server_ch)
}

/// A message on `channel` with opcode, body and one text header.
pub fn msg(engine: &Engine, channel: u16, op: OpCode, body: &[u8]) -> Message {
    let mut m = engine.get(Allocation::Always).unwrap().unwrap();
    m.header.channel_number = channel;
    m.header.proto.opcode = op;
    m.body.extend_from_slice(body);
    m
}

/// Runs `f` on another thread and fails if it takes longer than `limit`.
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("operation took too long")
}

/// Polls `cond` until it holds or [`timeout()`] passes.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout();
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ----- more helpers ------------------------------------------------------------

/// A HelloRequest / WelcomeRequest for `addr` (depending on its kind).
pub fn opening(engine: &Engine, addr: &Address) -> Message {
    let mut m = engine.get(Allocation::Always).unwrap().unwrap();
    addr.format(&mut m).unwrap();
    m
}

/// The next message that is not a `pool_empty` report, counting the skipped ones.
#[track_caller]
pub fn recv_counting_pool_empty(group: &ChannelGroup, pool_empty: &mut u64) -> Message {
    loop {
        let m = recv(group);
        if m.is_from_engine() && m.status() == Status::PoolEmpty {
            assert_eq!(m.opcode(), OpCode::Signal, "{m:?}");
            *pool_empty += 1;
            continue;
        }
        return m;
    }
}

/// Asserts `m` is a message of ours given back by the engine with `status`.
#[track_caller]
pub fn assert_returned(m: &Message, op: OpCode, channel: u16, status: Status) {
    assert!(m.is_from_engine(), "expected a returned message, got {m:?}");
    assert_eq!(m.opcode(), op, "{m:?}");
    assert_eq!(m.header.channel_number, channel, "{m:?}");
    assert_eq!(m.status(), status, "{m:?}");
}

/// Compile-time check that a type is `Send + Sync`.
pub fn assert_send_sync<T: Send + Sync>() {}

/// A sequence number in the first 8 bytes of a body, then `len - 8` filler bytes
/// derived from it, so that a corrupted or misplaced body is detected.
pub fn seq_body(seq: u64, len: usize) -> Vec<u8> {
    assert!(len >= 8);
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend((8..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
    b
}

/// Reads back the sequence number of a [`seq_body`], checking the filler.
#[track_caller]
pub fn check_seq_body(body: &[u8], len: usize) -> u64 {
    assert_eq!(body.len(), len, "body length");
    let seq = u64::from_be_bytes(body[..8].try_into().unwrap());
    assert!(
        body == seq_body(seq, len).as_slice(),
        "body of #{seq} corrupted"
    );
    seq
}

// ----- raw sockets: the wire format by hand (SPEC §3) --------------------------------

/// One frame built byte by byte: big-endian channel number, proto byte, status,
/// message_id, text header length, body length, then the two sections.
pub fn raw_frame(
    channel: u16,
    proto: u8,
    status: u8,
    message_id: u64,
    headers: &[u8],
    body: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + headers.len() + body.len());
    f.push((channel >> 8) as u8);
    f.push(channel as u8);
    f.push(proto);
    f.push(status);
    for i in (0..8).rev() {
        f.push((message_id >> (8 * i)) as u8);
    }
    f.push((headers.len() >> 8) as u8);
    f.push(headers.len() as u8);
    f.push((body.len() >> 8) as u8);
    f.push(body.len() as u8);
    f.extend_from_slice(headers);
    f.extend_from_slice(body);
    f
}

/// A frame read from a raw socket: the 16 header bytes, text headers, body.
#[derive(Debug)]
pub struct RawFrame {
    pub header: [u8; 16],
    pub headers: Vec<u8>,
    pub body: Vec<u8>,
}

impl RawFrame {
    pub fn channel(&self) -> u16 {
        u16::from_be_bytes([self.header[0], self.header[1]])
    }
    pub fn message_id(&self) -> u64 {
        u64::from_be_bytes(self.header[4..12].try_into().unwrap())
    }
}

/// A blocking Unix-domain stream: std's on Unix, socket2's on Windows (std has
/// no AF_UNIX there).
#[cfg(unix)]
pub type RawUds = std::os::unix::net::UnixStream;
#[cfg(windows)]
pub type RawUds = socket2::Socket;

/// A blocking Unix-domain connect.
pub fn raw_uds_connect(path: &std::path::Path) -> std::io::Result<RawUds> {
    #[cfg(unix)]
    return RawUds::connect(path);
    #[cfg(windows)]
    {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        s.connect(&socket2::SockAddr::unix(path)?)?;
        Ok(s)
    }
}

/// A blocking Unix-domain listener: (bound listener, accept function).
pub fn raw_uds_listener(path: &std::path::Path) -> impl FnOnce() -> RawUds + Send + 'static {
    #[cfg(unix)]
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    #[cfg(windows)]
    let l = {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.bind(&socket2::SockAddr::unix(path).unwrap()).unwrap();
        s.listen(16).unwrap();
        s
    };
    move || l.accept().unwrap().0
}

/// A raw std listener: the function accepting one connection, and the address
/// to connect to. (A UDS socket file is left in the temp dir.)
pub fn raw_server(t: Transport) -> (Box<dyn FnOnce() -> RawStream + Send>, Address) {
    match t {
        Transport::Tcp => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let accept = move || RawStream::Tcp(l.accept().unwrap().0).with_timeouts();
            (Box::new(accept), Address::tcp_client("127.0.0.1", port))
        }
        Transport::Uds => {
            let path = tofu::testing::temp_uds_path();
            let accept = raw_uds_listener(&path);
            let accept = move || RawStream::Uds(accept()).with_timeouts();
            (Box::new(accept), Address::uds_client(path))
        }
    }
}

/// A blocking std socket talking to an engine: TCP or Unix-domain.
pub enum RawStream {
    Tcp(std::net::TcpStream),
    Uds(RawUds),
}

impl RawStream {
    /// Connects to a client address, with [`timeout()`] on reads and writes.
    pub fn connect(addr: &Address) -> RawStream {
        let s = match addr {
            Address::TcpClient { host, port } => {
                RawStream::Tcp(std::net::TcpStream::connect((host.as_str(), *port)).unwrap())
            }
            Address::UdsClient { path } => RawStream::Uds(raw_uds_connect(path).unwrap()),
            other => panic!("not a client address: {other}"),
        };
        s.with_timeouts()
    }

    /// Sets [`timeout()`] on reads and writes.
    pub fn with_timeouts(self) -> RawStream {
        match &self {
            RawStream::Tcp(s) => {
                s.set_read_timeout(Some(timeout())).unwrap();
                s.set_write_timeout(Some(timeout())).unwrap();
            }
            RawStream::Uds(s) => {
                s.set_read_timeout(Some(timeout())).unwrap();
                s.set_write_timeout(Some(timeout())).unwrap();
            }
        }
        self
    }

    /// Reads one whole frame.
    #[track_caller]
    pub fn read_frame(&mut self) -> RawFrame {
        let mut header = [0u8; 16];
        self.read_exact(&mut header).expect("frame header");
        let thl = u16::from_be_bytes([header[12], header[13]]) as usize;
        let bl = u16::from_be_bytes([header[14], header[15]]) as usize;
        let mut headers = vec![0u8; thl];
        self.read_exact(&mut headers).expect("frame text headers");
        let mut body = vec![0u8; bl];
        self.read_exact(&mut body).expect("frame body");
        RawFrame {
            header,
            headers,
            body,
        }
    }

    /// Asserts the engine closed the connection: end of stream or reset, and no
    /// more frames before it.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let mut buf = [0u8; 256];
        match self.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("expected the connection closed, read {n} bytes"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ),
                "expected end of stream or reset, got {e}"
            ),
        }
    }
}

impl std::io::Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.read(buf),
            RawStream::Uds(s) => s.read(buf),
        }
    }
}

impl std::io::Write for RawStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.write(buf),
            RawStream::Uds(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One Request from the client and its echoed Response, checked end to end.
#[track_caller]
pub fn round_trip(
    engine: &Engine,
    client: &ChannelGroup,
    server: &ChannelGroup,
    cch: u16,
    sch: u16,
    body: &[u8],
) {
    let h = client
        .post(msg(engine, cch, OpCode::Request, body))
        .expect("post request");
    let req = recv(server);
    assert_eq!(req.opcode(), OpCode::Request, "{req:?}");
    assert!(req.is_from_application(), "{req:?}");
    assert_eq!(req.header.channel_number, sch);
    assert_eq!(req.header.message_id, h.message_id);
    assert_eq!(req.body, body);
    let mut resp = req;
    resp.header.proto.opcode = OpCode::Response;
    server.post(resp).expect("post response");
    let r = recv(client);
    assert_eq!(r.opcode(), OpCode::Response, "{r:?}");
    assert!(r.is_from_application(), "{r:?}");
    assert_eq!(r.header.channel_number, cch);
    assert_eq!(r.header.message_id, h.message_id);
    assert_eq!(r.body, body);
}

/// Aborts `ch` with a ByeSignal and checks the ByeSignal and the report come back.
#[track_caller]
pub fn abort(engine: &Engine, group: &ChannelGroup, ch: u16) {
    let h = group
        .post(msg(engine, ch, OpCode::ByeSignal, b""))
        .expect("post ByeSignal");
    let back = recv(group);
    assert!(back.is_from_engine(), "{back:?}");
    assert_eq!(back.opcode(), OpCode::ByeSignal, "{back:?}");
    assert_eq!(back.status(), Status::ChannelClosed, "{back:?}");
    assert_eq!(back.header.message_id, h.message_id);
    assert_report(&recv(group), ch, Status::ChannelClosed);
}

/// Makes the poller deliver something (a WelcomeResponse on `group`) and
/// receives it: right after a delivery the I/O thread steps aside, so the
/// next `wait_receive` on the engine usually leads (SPEC §7).
pub fn prime(engine: &Engine, group: &ChannelGroup) {
    let (saddr, _) = addresses(any_transport());
    listen(engine, group, &saddr);
}

/// Three threads wait on `server` (one may lead, the others follow) while
/// `n` numbered Signals are posted on the client's channel `ch`: each is
/// received exactly once.
#[track_caller]
pub fn three_receivers_get_each_once(
    server: ChannelGroup,
    engine: &Engine,
    client: &ChannelGroup,
    ch: u16,
    n: u32,
) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let server = std::sync::Arc::new(server);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = std::sync::Arc::new(AtomicU32::new(0));
    let receivers: Vec<_> = (0..3)
        .map(|_| {
            let (server, seen, done) = (server.clone(), seen.clone(), done.clone());
            std::thread::spawn(move || {
                while done.load(Ordering::SeqCst) < n {
                    let Some(m) = server
                        .wait_receive(Some(Duration::from_millis(20)))
                        .unwrap()
                    else {
                        continue;
                    };
                    if m.is_from_engine() {
                        assert_eq!(m.status(), Status::PoolEmpty, "{m:?}");
                        continue;
                    }
                    let i = u32::from_le_bytes(m.body[..4].try_into().unwrap());
                    seen.lock().unwrap().push(i);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for i in 0..n {
        client
            .post_timeout(msg(engine, ch, OpCode::Signal, &i.to_le_bytes()), timeout())
            .unwrap();
    }
    for r in receivers {
        join_within(r);
    }
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "each exactly once");
}

/// Posts a Request with `body` on `ch` and receives its Response: same
/// message id, same body (an echo server answers on the other side).
#[track_caller]
pub fn checked_round_trip(engine: &Engine, client: &ChannelGroup, ch: u16, body: &[u8]) {
    let h = client.post(msg(engine, ch, OpCode::Request, body)).unwrap();
    let r = recv(client);
    assert_eq!(r.opcode(), OpCode::Response, "{r:?}");
    assert_eq!(r.header.message_id, h.message_id);
    assert_eq!(r.body, body);
}

/// Joins a thread, failing if it takes longer than [`timeout()`].
#[track_caller]
pub fn join_within<T: Send + 'static>(h: std::thread::JoinHandle<T>) -> T {
    within(timeout(), move || h.join().expect("thread panicked"))
}

// ----- Linux: /proc accounting, open-files limit, child processes ---------------------

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
#[allow(unused_imports)]
pub use linux::*;

/// The same bytes as [`seq_body`], built by copying (fast in debug builds too).
pub fn fast_seq_body(seq: u64, len: usize) -> Vec<u8> {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    assert!((8..=65_535).contains(&len));
    // The filler byte i is (seq * 31 + i) mod 256.
    let table = TABLE.get_or_init(|| (0..65_536 + 256).map(|i| i as u8).collect());
    let base = (seq as usize).wrapping_mul(31) % 256;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&table[base + 8..base + len]);
    b
}

/// [`check_seq_body`] against [`fast_seq_body`]: the same check, faster.
#[track_caller]
pub fn check_fast_seq_body(body: &[u8], len: usize) -> u64 {
    assert_eq!(body.len(), len, "body length");
    let seq = u64::from_be_bytes(body[..8].try_into().unwrap());
    assert!(
        body == fast_seq_body(seq, len).as_slice(),
        "body of #{seq} corrupted"
    );
    seq
}
