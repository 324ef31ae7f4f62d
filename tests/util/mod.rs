//! Shared helpers for the integration tests: loopback addresses, bounded waits.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use tofu::testing::{free_tcp_port, temp_uds_path};
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Status};

/// Upper bound for any single wait in the tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The two transports every behaviour is tested over.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Tcp,
    Uds,
}

pub const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Uds];

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

/// Receives the next message or panics after [`TIMEOUT`].
#[track_caller]
pub fn recv(group: &ChannelGroup) -> Message {
    match group.wait_receive(Some(TIMEOUT)) {
        Ok(Some(m)) => m,
        Ok(None) => panic!("timed out waiting for a message"),
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

/// Polls `cond` until it holds or [`TIMEOUT`] passes.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
