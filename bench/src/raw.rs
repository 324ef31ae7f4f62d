//! The ceiling: blocking `std::net` sockets, one thread per side, the same
//! 16-byte tofu frame header in front of every body.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
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

    fn accept(&self) -> Res<Box<dyn Conn>> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Listener::Uds(l) => Box::new(l.accept()?.0),
        })
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

/// (client side, server side)
fn pair(t: Transport) -> Res<(Box<dyn Conn>, Box<dyn Conn>)> {
    let ep = Endpoint::new(t)?;
    let l = Listener::bind(&ep)?;
    let c = connect(&ep)?;
    let s = l.accept()?;
    Ok((c, s))
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

/// Echoes every frame back; flushes whenever no more input is buffered.
fn echo(s: Box<dyn Conn>) -> Res<()> {
    let w = s.try_clone_conn()?;
    let mut r = BufReader::with_capacity(128 * 1024, s);
    let mut w = BufWriter::with_capacity(128 * 1024, w);
    let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
    while read_frame(&mut r, &mut hdr, &mut body)? {
        w.write_all(&hdr)?;
        w.write_all(&body)?;
        if r.buffer().is_empty() {
            w.flush()?;
        }
    }
    Ok(())
}

pub(crate) fn run(t: Transport, w: Workload, size: usize, plan: &Plan) -> Res<Measure> {
    match w {
        Workload::Rtt => rtt(t, size, plan.rtt),
        Workload::Pipelined => pipelined(t, size, plan.pipelined),
        Workload::Stream => stream(t, size, plan.stream_count(size)),
        Workload::Connections => connections(t, size, plan.conn_rounds),
    }
}

fn rtt(t: Transport, size: usize, count: usize) -> Res<Measure> {
    let (mut c, s) = pair(t)?;
    let server = thread::spawn(move || echo(s));
    let req = frame(OpCode::Request, size);
    let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        let t0 = Instant::now();
        c.write_all(&req)?;
        if !read_frame(&mut c, &mut hdr, &mut body)? {
            return Err("server closed".into());
        }
        rtts.push(t0.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    drop(c);
    server.join().map_err(|_| "echo panicked")??;
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

fn pipelined(t: Transport, size: usize, count: usize) -> Res<Measure> {
    let (c, s) = pair(t)?;
    let server = thread::spawn(move || echo(s));
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
    while rtts.len() < count {
        if !read_frame(&mut r, &mut hdr, &mut body)? {
            return Err("server closed".into());
        }
        rtts.push(sent_at.pop_front().ok_or("unexpected response")?.elapsed());
        if sent < count {
            sent_at.push_back(Instant::now());
            w.write_all(&req)?;
            sent += 1;
        }
        if r.buffer().is_empty() {
            w.flush()?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop((r, w));
    server.join().map_err(|_| "echo panicked")??;
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

fn stream(t: Transport, size: usize, count: usize) -> Res<Measure> {
    let (c, s) = pair(t)?;
    let reader = thread::spawn(move || -> Res<usize> {
        let mut r = BufReader::with_capacity(128 * 1024, s);
        let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
        let mut n = 0;
        while n < count && read_frame(&mut r, &mut hdr, &mut body)? {
            n += 1;
        }
        Ok(n)
    });
    let f = frame(OpCode::Signal, size);
    let start = Instant::now();
    let mut w = BufWriter::with_capacity(128 * 1024, c);
    for _ in 0..count {
        w.write_all(&f)?;
    }
    w.flush()?;
    let n = reader.join().map_err(|_| "reader panicked")??;
    let secs = start.elapsed().as_secs_f64();
    if n != count {
        return Err(format!("reader got {n} of {count}").into());
    }
    Ok(Measure::from_rate(count, size, secs))
}

/// 1,000 connections in lockstep rounds: the client thread writes one request
/// on every connection, then reads every response; the server thread echoes
/// connection by connection.
fn connections(t: Transport, size: usize, rounds: usize) -> Res<Measure> {
    let ep = Endpoint::new(t)?;
    let l = Listener::bind(&ep)?;
    let acceptor = thread::spawn(move || -> Res<Vec<Box<dyn Conn>>> {
        (0..CONNECTIONS).map(|_| l.accept()).collect()
    });
    let mut failures = 0u64;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        match connect(&ep) {
            Ok(c) => clients.push(c),
            Err(_) => failures += 1,
        }
    }
    if failures > 0 {
        // The acceptor would wait forever for the missing ones.
        return Ok(Measure {
            failures: Some(failures),
            ..Measure::default()
        });
    }
    let mut servers = acceptor.join().map_err(|_| "acceptor panicked")??;
    let server = thread::spawn(move || -> Res<()> {
        let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
        let mut out = Vec::new();
        for _ in 0..rounds {
            for s in servers.iter_mut() {
                if !read_frame(s, &mut hdr, &mut body)? {
                    return Err("client closed".into());
                }
                out.clear();
                out.extend_from_slice(&hdr);
                out.extend_from_slice(&body);
                s.write_all(&out)?;
            }
        }
        Ok(())
    });
    let req = frame(OpCode::Request, size);
    let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
    let mut sent_at = vec![Instant::now(); CONNECTIONS];
    let mut rtts = Vec::with_capacity(CONNECTIONS * rounds);
    let start = Instant::now();
    for _ in 0..rounds {
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
    }
    let secs = start.elapsed().as_secs_f64();
    server.join().map_err(|_| "server panicked")??;
    let mut m = Measure::from_rtts(&mut rtts, secs, size);
    m.failures = Some(failures);
    Ok(m)
}
