//! The ceiling: blocking `std::net` sockets, one thread per side, the same
//! 16-byte tofu frame header in front of every body. Writes go through a
//! `BufWriter` flushed when no more input is buffered.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::Instant;

use tofu::wire::{FrameHeader, HEADER_LEN};
use tofu::{Message, OpCode};

use crate::common::*;

trait Conn: Read + Write + Send + 'static {
    fn try_clone_conn(&self) -> std::io::Result<Box<dyn Conn>>;
}

impl Conn for TcpStream {
    fn try_clone_conn(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
}

impl Conn for UnixStream {
    fn try_clone_conn(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
}

enum Listener {
    Tcp(TcpListener),
    Uds(UnixListener),
}

impl Listener {
    fn bind(ep: &Endpoint) -> Res<Listener> {
        Ok(match ep {
            Endpoint::Tcp(port) => Listener::Tcp(TcpListener::bind(("127.0.0.1", *port))?),
            Endpoint::Uds(p) => Listener::Uds(UnixListener::bind(p)?),
        })
    }

    /// The next connection, or `None` when none arrived within 50 ms (so
    /// the caller can look at its stop flag).
    fn accept(&self) -> Res<Option<Box<dyn Conn>>> {
        let fd = match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Uds(l) => l.as_raw_fd(),
        };
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, 50) };
        if n <= 0 {
            return Ok(None);
        }
        Ok(Some(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Listener::Uds(l) => Box::new(l.accept()?.0),
        }))
    }
}

fn connect(ep: &Endpoint) -> Res<Box<dyn Conn>> {
    Ok(match ep {
        Endpoint::Tcp(port) => {
            let s = TcpStream::connect(("127.0.0.1", *port))?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
        Endpoint::Uds(p) => Box::new(UnixStream::connect(p)?),
    })
}

/// One encoded frame: 16-byte header + `size`-byte body.
pub(crate) fn frame(op: OpCode, size: usize) -> Vec<u8> {
    let mut m = Message::new();
    m.header.proto.opcode = op;
    m.header.message_id = 1;
    m.body.resize(size, 0xab);
    let mut out = Vec::new();
    tofu::wire::encode_to_vec(&m, &mut out).expect("valid frame");
    out
}

/// Reads one frame (header into `hdr`, body into `body`); `false` at end of stream.
fn read_frame(r: &mut impl Read, hdr: &mut [u8; HEADER_LEN], body: &mut Vec<u8>) -> Res<bool> {
    if let Err(e) = r.read_exact(hdr) {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Ok(false);
        }
        return Err(e.into());
    }
    let fh = FrameHeader::decode(hdr).map_err(|e| e.to_string())?;
    body.resize(fh.frame_len() - HEADER_LEN, 0);
    r.read_exact(body)?;
    Ok(true)
}

/// Echoes every frame back (`echo_all`) or only the Requests (a one-way
/// stream's end markers: the rest is read and dropped); flushes whenever no
/// more input is buffered.
fn serve_conn(s: Box<dyn Conn>, echo_all: bool) -> Res<()> {
    let w = s.try_clone_conn()?;
    let mut r = BufReader::with_capacity(128 * 1024, s);
    let mut w = BufWriter::with_capacity(128 * 1024, w);
    let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
    while read_frame(&mut r, &mut hdr, &mut body)? {
        if echo_all
            || FrameHeader::decode(&hdr).is_ok_and(|h| h.header.proto.opcode == OpCode::Request)
        {
            w.write_all(&hdr)?;
            w.write_all(&body)?;
        }
        if r.buffer().is_empty() {
            w.flush()?;
        }
    }
    Ok(())
}

/// The server: a thread per connection (echo, or a sink for `stream`); for
/// `connections`, the 1,000 connections in lockstep on this thread.
pub(crate) fn serve(w: Workload, ep: &Endpoint, ctl: &Ctl) -> Res<()> {
    let l = Listener::bind(ep)?;
    ctl.ready();
    if w == Workload::Connections {
        let mut conns = Vec::with_capacity(CONNECTIONS);
        while conns.len() < CONNECTIONS {
            match l.accept()? {
                Some(c) => conns.push(c),
                None if ctl.stopped() => return Ok(()),
                None => {}
            }
        }
        return lockstep_echo(conns);
    }
    let mut handlers = Vec::new();
    while !ctl.stopped() {
        if let Some(c) = l.accept()? {
            let echo_all = w != Workload::Stream;
            handlers.push(thread::spawn(move || serve_conn(c, echo_all)));
        }
    }
    // Each handler ends when its client closes (the measurement is over).
    for h in handlers {
        h.join().map_err(|_| "connection thread panicked")??;
    }
    Ok(())
}

/// Echoes connection by connection, in the client's lockstep order, until
/// the client closes.
fn lockstep_echo(mut conns: Vec<Box<dyn Conn>>) -> Res<()> {
    let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
    let mut out = Vec::new();
    loop {
        for s in conns.iter_mut() {
            if !read_frame(s, &mut hdr, &mut body)? {
                return Ok(());
            }
            out.clear();
            out.extend_from_slice(&hdr);
            out.extend_from_slice(&body);
            s.write_all(&out)?;
        }
    }
}

pub(crate) fn run(w: Workload, size: usize, plan: &Plan, ep: &Endpoint) -> Res<Measure> {
    match w {
        Workload::Rtt => rtt(ep, size, plan),
        Workload::Pipelined => pipelined(ep, size, plan),
        Workload::Stream => stream(ep, size, plan),
        Workload::Connections => connections(ep, size, plan),
    }
}

fn rtt(ep: &Endpoint, size: usize, plan: &Plan) -> Res<Measure> {
    let mut c = connect(ep)?;
    let req = frame(OpCode::Request, size);
    let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
    let mut rtts = Vec::with_capacity(plan.rtt);
    let start = Instant::now();
    while !plan.enough(rtts.len(), plan.rtt, start) {
        let t0 = Instant::now();
        c.write_all(&req)?;
        if !read_frame(&mut c, &mut hdr, &mut body)? {
            return Err("server closed".into());
        }
        rtts.push(t0.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

fn pipelined(ep: &Endpoint, size: usize, plan: &Plan) -> Res<Measure> {
    let c = connect(ep)?;
    let count = plan.pipelined;
    let req = frame(OpCode::Request, size);
    let cw = c.try_clone_conn()?;
    let mut r = BufReader::with_capacity(128 * 1024, c);
    let mut w = BufWriter::with_capacity(128 * 1024, cw);
    let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
    let mut sent_at = std::collections::VecDeque::with_capacity(WINDOW);
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    let mut sent = 0;
    while sent < WINDOW.min(count) {
        sent_at.push_back(Instant::now());
        w.write_all(&req)?;
        sent += 1;
    }
    w.flush()?;
    while rtts.len() < sent {
        if !read_frame(&mut r, &mut hdr, &mut body)? {
            return Err("server closed".into());
        }
        rtts.push(sent_at.pop_front().ok_or("unexpected response")?.elapsed());
        if !plan.enough(sent, count, start) {
            sent_at.push_back(Instant::now());
            w.write_all(&req)?;
            sent += 1;
        }
        if r.buffer().is_empty() {
            w.flush()?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// Signals through a `BufWriter` (paced by the socket buffers), then a
/// Request the server answers: its Response proves everything arrived.
fn stream(ep: &Endpoint, size: usize, plan: &Plan) -> Res<Measure> {
    let c = connect(ep)?;
    let mut cr = c.try_clone_conn()?;
    let count = plan.stream_count(size);
    let f = frame(OpCode::Signal, size);
    let marker = frame(OpCode::Request, 0);
    let start = Instant::now();
    let mut w = BufWriter::with_capacity(128 * 1024, c);
    let mut n = 0;
    while !plan.enough(n, count, start) {
        for _ in 0..64 {
            w.write_all(&f)?;
        }
        n += 64;
    }
    w.write_all(&marker)?;
    w.flush()?;
    let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
    if !read_frame(&mut cr, &mut hdr, &mut body)? {
        return Err("server closed before the end marker's response".into());
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rate(n, size, secs))
}

/// 1,000 connections in lockstep rounds: the client thread writes one request
/// on every connection, then reads every response; the server thread echoes
/// connection by connection.
fn connections(ep: &Endpoint, size: usize, plan: &Plan) -> Res<Measure> {
    let rounds = plan.conn_rounds;
    let mut failures = 0u64;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        match connect(ep) {
            Ok(c) => clients.push(c),
            Err(_) => failures += 1,
        }
    }
    if failures > 0 {
        // The server waits for all of them; it is stopped by its flag.
        return Ok(Measure {
            failures: Some(failures),
            ..Measure::default()
        });
    }
    let req = frame(OpCode::Request, size);
    let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
    let mut sent_at = vec![Instant::now(); CONNECTIONS];
    let mut rtts = Vec::with_capacity(CONNECTIONS * rounds);
    let start = Instant::now();
    let mut round = 0;
    while !plan.enough(round, rounds, start) {
        for (i, c) in clients.iter_mut().enumerate() {
            sent_at[i] = Instant::now();
            if c.write_all(&req).is_err() {
                failures += 1;
            }
        }
        for (i, c) in clients.iter_mut().enumerate() {
            match read_frame(c, &mut hdr, &mut body) {
                Ok(true) => rtts.push(sent_at[i].elapsed()),
                _ => failures += 1,
            }
        }
        round += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut m = Measure::from_rtts(&mut rtts, secs, size);
    m.failures = Some(failures);
    Ok(m)
}
