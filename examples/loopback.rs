//! The loopback demo and benchmark: a tofu server and client in one process (two
//! engines, as two programs would have), over TCP and over a Unix-domain socket,
//! measured next to a plain blocking `std::net` peer pair doing the same work
//! with the same frames.
//!
//! ```text
//! cargo run --release --example loopback            # full run
//! cargo run --release --example loopback -- --quick # a few seconds
//! ```
//!
//! Prints round-trip latency (p50/p99, 16-byte body) and one-way throughput
//! (64 B and 64 KiB bodies).

use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tofu::testing::{free_tcp_port, temp_uds_path};
use tofu::wire::{FrameHeader, HEADER_LEN};
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
const WAIT: Option<Duration> = Some(Duration::from_secs(10));
const BIG: usize = 65535; // the largest body a frame can carry ("64 KiB")

struct Plan {
    rtt_count: usize,
    small_count: u64,
    big_count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tcp,
    Uds,
}

struct Figures {
    p50: Duration,
    p99: Duration,
    small: (f64, f64), // (messages/s, MiB/s)
    big: (f64, f64),
}

fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            rtt_count: 2_000,
            small_count: 100_000,
            big_count: 2_000,
        }
    } else {
        Plan {
            rtt_count: 20_000,
            small_count: 1_000_000,
            big_count: 20_000,
        }
    };
    println!(
        "tofu loopback demo: {} round trips (16 B), {} x 64 B and {} x 64 KiB one-way\n",
        plan.rtt_count, plan.small_count, plan.big_count
    );
    let transports: &[Transport] = if cfg!(unix) {
        &[Transport::Tcp, Transport::Uds]
    } else {
        &[Transport::Tcp]
    };
    let mut rows = Vec::new();
    for &t in transports {
        let std_figs = std_run(t, &plan)?;
        let tofu_figs = tofu_run(t, &plan)?;
        rows.push((t, tofu_figs, std_figs));
    }
    println!(
        "{:<10} {:<9} {:>10} {:>10} {:>14} {:>12} {:>14} {:>12}",
        "transport",
        "peer",
        "rtt p50",
        "rtt p99",
        "64 B msg/s",
        "64 B MiB/s",
        "64 KiB msg/s",
        "64KiB MiB/s"
    );
    for (t, tofu, base) in &rows {
        for (name, f) in [("tofu", tofu), ("std::net", base)] {
            println!(
                "{:<10} {:<9} {:>8.1}us {:>8.1}us {:>14.0} {:>12.1} {:>14.0} {:>12.1}",
                format!("{t:?}"),
                name,
                f.p50.as_secs_f64() * 1e6,
                f.p99.as_secs_f64() * 1e6,
                f.small.0,
                f.small.1,
                f.big.0,
                f.big.1
            );
        }
        println!(
            "{:<10} {:<9} {:>9.2}x {:>9.2}x {:>13.2}x {:>11.2}x {:>13.2}x {:>11.2}x",
            format!("{t:?}"),
            "tofu/std",
            tofu.p50.as_secs_f64() / base.p50.as_secs_f64(),
            tofu.p99.as_secs_f64() / base.p99.as_secs_f64(),
            tofu.small.0 / base.small.0,
            tofu.small.1 / base.small.1,
            tofu.big.0 / base.big.0,
            tofu.big.1 / base.big.1,
        );
    }
    println!("\n(latency: lower is better; throughput: higher is better)");
    Ok(())
}

// ----- tofu ------------------------------------------------------------------

fn tofu_run(t: Transport, plan: &Plan) -> Result<Figures, BoxError> {
    let (server_addr, client_addr) = match t {
        Transport::Tcp => {
            let port = free_tcp_port()?;
            (
                Address::tcp_server("127.0.0.1", port),
                Address::tcp_client("127.0.0.1", port),
            )
        }
        Transport::Uds => {
            let p = temp_uds_path();
            (Address::uds_server(p.clone()), Address::uds_client(p))
        }
    };
    let opts = Options {
        initial_pool_msgs: 256,
        max_pool_msgs: 1024,
        ..Options::default()
    };
    let server_engine = Engine::new(opts.clone())?;
    let client_engine = Engine::new(opts)?;
    let server = server_engine.create_group()?;
    let client = client_engine.create_group()?;

    let mut welcome = server_engine.get(Allocation::Always)?.expect("message");
    server_addr.format(&mut welcome)?;
    server.post(welcome)?;
    let ready = server.wait_receive(WAIT)?.ok_or("no WelcomeResponse")?;
    if ready.status() != Status::Success {
        return Err(format!("listen failed: {}", ready.status()).into());
    }
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let echo = thread::spawn(move || echo_server(server, counter));

    let mut hello = client_engine.get(Allocation::Always)?.expect("message");
    client_addr.format(&mut hello)?;
    let ch = client.post(hello)?.channel_number;
    let r = client.wait_receive(WAIT)?.ok_or("no HelloResponse")?;
    if r.opcode() != OpCode::HelloResponse || r.is_from_engine() {
        return Err(format!("connect failed: {}", r.status()).into());
    }
    drop(r);

    // Round trips.
    let mut rtts = Vec::with_capacity(plan.rtt_count);
    for _ in 0..plan.rtt_count {
        let mut m = client_engine.get(Allocation::Always)?.expect("message");
        m.header.channel_number = ch;
        m.body.extend_from_slice(&[7u8; 16]);
        let start = Instant::now();
        client.post(m)?;
        let resp = client.wait_receive(WAIT)?.ok_or("no response")?;
        rtts.push(start.elapsed());
        debug_assert_eq!(resp.opcode(), OpCode::Response);
    }
    let (p50, p99) = percentiles(&mut rtts);

    let small = tofu_one_way(
        &client_engine,
        &client,
        ch,
        &received,
        64,
        plan.small_count,
        8192,
    )?;
    let big = tofu_one_way(
        &client_engine,
        &client,
        ch,
        &received,
        BIG,
        plan.big_count,
        64,
    )?;

    let mut bye = client_engine.get(Allocation::Always)?.expect("message");
    bye.header.channel_number = ch;
    bye.header.proto.opcode = OpCode::ByeRequest;
    client.post(bye)?;
    loop {
        let m = client.wait_receive(WAIT)?.ok_or("no close")?;
        if m.is_from_engine() && m.status() == Status::ChannelClosed {
            break;
        }
    }
    echo.join().map_err(|_| "echo thread panicked")??;
    let (cs, ss) = (client_engine.stats(), server_engine.stats());
    println!(
        "{t:?}: tofu wrote {:.1} messages per write call and read {:.1} per read call \
         ({} polls on the sending engine, {} on the receiving one)",
        cs.messages_sent as f64 / cs.write_calls.max(1) as f64,
        ss.messages_received as f64 / ss.read_calls.max(1) as f64,
        cs.polls,
        ss.polls,
    );
    if std::env::args().any(|a| a == "--stats") {
        println!("{t:?} client engine: {cs:?}");
        println!("{t:?} server engine: {ss:?}");
    }
    Ok(Figures {
        p50,
        p99,
        small,
        big,
    })
}

/// Posts `count` signals of `size` bytes with at most `window` in flight;
/// returns (messages/s, MiB/s) measured until the server has received them all.
fn tofu_one_way(
    engine: &Engine,
    group: &ChannelGroup,
    ch: u16,
    received: &AtomicU64,
    size: usize,
    count: u64,
    window: u64,
) -> Result<(f64, f64), BoxError> {
    let base = received.load(Ordering::Acquire);
    let start = Instant::now();
    for i in 0..count {
        while i - (received.load(Ordering::Acquire) - base) >= window {
            std::hint::spin_loop();
            thread::yield_now();
        }
        let mut m = engine.get(Allocation::Always)?.expect("message");
        m.header.channel_number = ch;
        m.header.proto.opcode = OpCode::Signal;
        m.body.resize(size, 0xab);
        group.post(m)?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Acquire) - base < count {
        if Instant::now() > deadline {
            return Err("one-way run did not complete".into());
        }
        thread::sleep(Duration::from_micros(50));
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(rates(count, size, secs))
}

/// Accepts, echoes Requests, counts Signals, answers Bye; returns at close.
fn echo_server(group: ChannelGroup, received: Arc<AtomicU64>) -> Result<(), BoxError> {
    loop {
        let mut m = group.wait_receive(None)?.ok_or("no message")?;
        if m.is_from_engine() {
            if m.status() == Status::ChannelClosed {
                return Ok(());
            }
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
        group.post(m)?;
    }
}

// ----- std::net baseline -----------------------------------------------------

trait Conn: Read + Write + Send + 'static {
    fn try_clone_conn(&self) -> std::io::Result<Box<dyn Conn>>;
}

impl Conn for std::net::TcpStream {
    fn try_clone_conn(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
}

#[cfg(unix)]
impl Conn for std::os::unix::net::UnixStream {
    fn try_clone_conn(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// A connected blocking pair: (client side, server side).
type ConnPair = (Box<dyn Conn>, Box<dyn Conn>);

fn std_pair(t: Transport) -> Result<ConnPair, BoxError> {
    match t {
        Transport::Tcp => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let c = std::net::TcpStream::connect(l.local_addr()?)?;
            let (s, _) = l.accept()?;
            c.set_nodelay(true)?;
            s.set_nodelay(true)?;
            Ok((Box::new(c), Box::new(s)))
        }
        #[cfg(unix)]
        Transport::Uds => {
            let p = temp_uds_path();
            let l = std::os::unix::net::UnixListener::bind(&p)?;
            let c = std::os::unix::net::UnixStream::connect(&p)?;
            let (s, _) = l.accept()?;
            let _ = std::fs::remove_file(&p);
            Ok((Box::new(c), Box::new(s)))
        }
        #[cfg(not(unix))]
        Transport::Uds => Err("no UDS here".into()),
    }
}

fn frame(op: OpCode, body_len: usize) -> Vec<u8> {
    let mut m = Message::new();
    m.header.proto.opcode = op;
    m.header.message_id = 1;
    m.body.resize(body_len, 0xab);
    let mut out = Vec::new();
    tofu::wire::encode_to_vec(&m, &mut out).expect("valid frame");
    out
}

/// Reads one frame into `buf`; `false` at end of stream.
fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<bool, BoxError> {
    let mut hdr = [0u8; HEADER_LEN];
    if let Err(e) = r.read_exact(&mut hdr) {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Ok(false);
        }
        return Err(e.into());
    }
    let fh = FrameHeader::decode(&hdr).map_err(|e| e.to_string())?;
    buf.resize(fh.frame_len() - HEADER_LEN, 0);
    r.read_exact(buf)?;
    Ok(true)
}

fn std_run(t: Transport, plan: &Plan) -> Result<Figures, BoxError> {
    // Round trips: the server echoes each frame back.
    let (mut c, s) = std_pair(t)?;
    let echo = thread::spawn(move || -> Result<(), BoxError> {
        let mut s = s;
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut hdr = [0u8; HEADER_LEN];
        loop {
            if s.read_exact(&mut hdr).is_err() {
                return Ok(());
            }
            let fh = FrameHeader::decode(&hdr).map_err(|e| e.to_string())?;
            buf.resize(fh.frame_len() - HEADER_LEN, 0);
            s.read_exact(&mut buf)?;
            out.clear();
            out.extend_from_slice(&hdr);
            out.extend_from_slice(&buf);
            s.write_all(&out)?;
        }
    });
    let req = frame(OpCode::Request, 16);
    let mut buf = Vec::new();
    let mut rtts = Vec::with_capacity(plan.rtt_count);
    for _ in 0..plan.rtt_count {
        let start = Instant::now();
        c.write_all(&req)?;
        read_frame(&mut c, &mut buf)?;
        rtts.push(start.elapsed());
    }
    drop(c);
    echo.join().map_err(|_| "echo thread panicked")??;
    let (p50, p99) = percentiles(&mut rtts);
    let small = std_one_way(t, 64, plan.small_count)?;
    let big = std_one_way(t, BIG, plan.big_count)?;
    Ok(Figures {
        p50,
        p99,
        small,
        big,
    })
}

fn std_one_way(t: Transport, size: usize, count: u64) -> Result<(f64, f64), BoxError> {
    let (c, s) = std_pair(t)?;
    let _keep = s.try_clone_conn()?;
    let reader = thread::spawn(move || -> Result<u64, BoxError> {
        let mut r = BufReader::with_capacity(64 * 1024, s);
        let mut buf = Vec::new();
        let mut n = 0;
        while n < count && read_frame(&mut r, &mut buf)? {
            n += 1;
        }
        Ok(n)
    });
    let f = frame(OpCode::Signal, size);
    let start = Instant::now();
    let mut w = BufWriter::with_capacity(64 * 1024, c);
    for _ in 0..count {
        w.write_all(&f)?;
    }
    w.flush()?;
    let n = reader.join().map_err(|_| "reader panicked")??;
    let secs = start.elapsed().as_secs_f64();
    if n != count {
        return Err(format!("std reader got {n} of {count}").into());
    }
    Ok(rates(count, size, secs))
}

// ----- figures -----------------------------------------------------------------

fn percentiles(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99))
}

fn rates(count: u64, size: usize, secs: f64) -> (f64, f64) {
    let msgs = count as f64 / secs;
    (msgs, msgs * size as f64 / (1024.0 * 1024.0))
}
