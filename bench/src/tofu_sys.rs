//! tofu: two engines (server and client, as two programs would have), an echo
//! thread on the server side, the measuring thread on the client side.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tofu::{Address, Allocation, ChannelGroup, Engine, Error, Message, OpCode, Options, Status};

use crate::common::*;

const W: Option<Duration> = Some(WAIT);

struct Setup {
    server_engine: Engine,
    client_engine: Engine,
    client: ChannelGroup,
    client_addr: Address,
    received: Arc<AtomicU64>,
    echo: Option<thread::JoinHandle<Res<()>>>,
    _ep: Endpoint,
}

impl Setup {
    fn new(t: Transport) -> Res<Setup> {
        let ep = Endpoint::new(t)?;
        let (server_addr, client_addr) = match &ep {
            Endpoint::Tcp(port) => (
                Address::tcp_server("127.0.0.1", *port),
                Address::tcp_client("127.0.0.1", *port),
            ),
            Endpoint::Uds(p) => (
                Address::uds_server(p.clone()),
                Address::uds_client(p.clone()),
            ),
        };
        let opts = Options {
            initial_pool_msgs: 1024,
            max_pool_msgs: 16384,
            ..Options::default()
        };
        let server_engine = Engine::new(opts.clone())?;
        let client_engine = Engine::new(opts)?;
        let server = server_engine.create_group()?;
        let client = client_engine.create_group()?;
        let mut welcome = get(&server_engine)?;
        server_addr.format(&mut welcome)?;
        server.post(welcome)?;
        let ready = server.wait_receive(W)?.ok_or("no WelcomeResponse")?;
        if ready.status() != Status::Success {
            return Err(format!("listen failed: {}", ready.status()).into());
        }
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let echo = thread::spawn(move || echo_server(server, counter));
        Ok(Setup {
            server_engine,
            client_engine,
            client,
            client_addr,
            received,
            echo: Some(echo),
            _ep: ep,
        })
    }

    /// Opens one channel; `Err` if the connect failed.
    fn connect(&self) -> Res<u16> {
        let ch = self.post_hello()?;
        let r = self.client.wait_receive(W)?.ok_or("no HelloResponse")?;
        if r.opcode() != OpCode::HelloResponse || r.is_from_engine() {
            return Err(format!("connect failed: {}", r.status()).into());
        }
        Ok(ch)
    }

    fn post_hello(&self) -> Res<u16> {
        let mut hello = get(&self.client_engine)?;
        self.client_addr.format(&mut hello)?;
        Ok(self.client.post(hello)?.channel_number)
    }

    fn finish(mut self) -> Res<()> {
        self.client_engine.shutdown();
        self.server_engine.shutdown();
        if let Some(h) = self.echo.take() {
            h.join().map_err(|_| "echo thread panicked")??;
        }
        Ok(())
    }
}

fn get(engine: &Engine) -> Res<Message> {
    Ok(engine.get(Allocation::Always)?.ok_or("no message")?)
}

/// Accepts, echoes Requests, counts Signals, answers Bye; returns at shutdown.
fn echo_server(group: ChannelGroup, received: Arc<AtomicU64>) -> Res<()> {
    loop {
        let mut m = match group.wait_receive(None) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(Error::ShutdownStarted) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if m.is_from_engine() {
            continue;
        }
        let reply = match m.opcode() {
            OpCode::Signal => {
                received.fetch_add(1, Ordering::Release);
                continue;
            }
            OpCode::HelloRequest => OpCode::HelloResponse,
            OpCode::Request => OpCode::Response,
            OpCode::ByeRequest => OpCode::ByeResponse,
            _ => continue,
        };
        m.header.proto.opcode = reply;
        if let Err(e) = group.post(m) {
            if e.error == Error::ShutdownStarted {
                return Ok(());
            }
            return Err(e.error.into());
        }
    }
}

pub(crate) fn run(t: Transport, w: Workload, size: usize, plan: &Plan) -> Res<Measure> {
    let s = Setup::new(t)?;
    let m = match w {
        Workload::Rtt => rtt(&s, size, plan.rtt),
        Workload::Pipelined => pipelined(&s, size, plan.pipelined),
        Workload::Stream => stream(&s, size, plan.stream_count(size)),
        Workload::Connections => connections(&s, size, plan.conn_rounds),
    };
    let done = s.finish();
    let m = m?;
    done?;
    Ok(m)
}

fn request(engine: &Engine, ch: u16, size: usize) -> Res<Message> {
    let mut m = get(engine)?;
    m.header.channel_number = ch;
    m.header.proto.opcode = OpCode::Request;
    m.body.resize(size, 0xab);
    Ok(m)
}

fn expect_response(m: &Message) -> Res<()> {
    if m.is_from_engine() || m.opcode() != OpCode::Response {
        return Err(format!("unexpected {:?} status {}", m.opcode(), m.status()).into());
    }
    Ok(())
}

fn rtt(s: &Setup, size: usize, count: usize) -> Res<Measure> {
    let ch = s.connect()?;
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        let m = request(&s.client_engine, ch, size)?;
        let t0 = Instant::now();
        s.client.post(m)?;
        let resp = s.client.wait_receive(W)?.ok_or("no response")?;
        rtts.push(t0.elapsed());
        expect_response(&resp)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

fn pipelined(s: &Setup, size: usize, count: usize) -> Res<Measure> {
    let ch = s.connect()?;
    let mut sent_at = VecDeque::with_capacity(WINDOW);
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    let mut sent = 0;
    while sent < WINDOW.min(count) {
        let m = request(&s.client_engine, ch, size)?;
        sent_at.push_back(Instant::now());
        s.client.post(m)?;
        sent += 1;
    }
    while rtts.len() < count {
        let mut resp = s.client.wait_receive(W)?.ok_or("no response")?;
        rtts.push(sent_at.pop_front().ok_or("unexpected response")?.elapsed());
        expect_response(&resp)?;
        if sent < count {
            // The response becomes the next request: no allocation, no copy.
            resp.header.proto.opcode = OpCode::Request;
            resp.header.message_id = 0;
            sent_at.push_back(Instant::now());
            s.client.post(resp)?;
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// Signals of `size` bytes, at most `window` in flight. `post` would refuse
/// beyond the channel's outgoing limit (8 MiB by default); the window keeps
/// the sender below it, as the other libraries' senders are kept.
fn stream(s: &Setup, size: usize, count: usize) -> Res<Measure> {
    let ch = s.connect()?;
    let window: u64 = if size <= 1024 { 8192 } else { 64 };
    let base = s.received.load(Ordering::Acquire);
    let start = Instant::now();
    for i in 0..count as u64 {
        while i - (s.received.load(Ordering::Acquire) - base) >= window {
            std::hint::spin_loop();
            thread::yield_now();
        }
        let mut m = get(&s.client_engine)?;
        m.header.channel_number = ch;
        m.header.proto.opcode = OpCode::Signal;
        m.body.resize(size, 0xab);
        s.client.post(m)?;
    }
    let deadline = Instant::now() + WAIT;
    while s.received.load(Ordering::Acquire) - base < count as u64 {
        if Instant::now() > deadline {
            return Err("stream did not complete".into());
        }
        thread::sleep(Duration::from_micros(20));
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rate(count, size, secs))
}

/// 1,000 channels on one client engine, each with one request outstanding:
/// each response is answered with the next request on its channel.
fn connections(s: &Setup, size: usize, rounds: usize) -> Res<Measure> {
    let mut failures = 0u64;
    let mut pending = 0usize;
    for _ in 0..CONNECTIONS {
        match s.post_hello() {
            Ok(_) => pending += 1,
            Err(_) => failures += 1,
        }
    }
    let mut chans = Vec::with_capacity(CONNECTIONS);
    while pending > 0 {
        let r = s.client.wait_receive(W)?.ok_or("no HelloResponse")?;
        if r.is_from_engine() && r.status() == Status::ChannelClosed {
            continue; // report after a failed connect, already counted
        }
        pending -= 1;
        if r.opcode() == OpCode::HelloResponse && !r.is_from_engine() {
            chans.push(r.header.channel_number);
        } else {
            failures += 1;
        }
    }
    let mut sent_at = vec![Instant::now(); 65536];
    let mut done = vec![0usize; 65536];
    let mut rtts = Vec::with_capacity(chans.len() * rounds);
    let start = Instant::now();
    for &ch in &chans {
        let m = request(&s.client_engine, ch, size)?;
        sent_at[ch as usize] = Instant::now();
        s.client.post(m)?;
    }
    let mut outstanding = chans.len();
    while outstanding > 0 {
        let Some(mut resp) = s.client.wait_receive(W)? else {
            failures += outstanding as u64;
            break;
        };
        let ch = resp.header.channel_number as usize;
        if resp.is_from_engine() || resp.opcode() != OpCode::Response {
            failures += 1;
            outstanding -= 1;
            continue;
        }
        rtts.push(sent_at[ch].elapsed());
        done[ch] += 1;
        if done[ch] < rounds {
            resp.header.proto.opcode = OpCode::Request;
            resp.header.message_id = 0;
            sent_at[ch] = Instant::now();
            s.client.post(resp)?;
        } else {
            outstanding -= 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut m = Measure::from_rtts(&mut rtts, secs, size);
    m.failures = Some(failures);
    Ok(m)
}
