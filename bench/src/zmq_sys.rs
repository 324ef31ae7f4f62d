//! ZeroMQ via the `zmq` crate (libzmq built from the bundled source): DEALER /
//! ROUTER for round trips, PUSH / PULL for streaming; one context (one I/O
//! thread) per side.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use crate::common::*;

fn addr(ep: &Endpoint) -> String {
    match ep {
        Endpoint::Tcp(port) => format!("tcp://127.0.0.1:{port}"),
        Endpoint::Uds(p) => format!("ipc://{}", p.display()),
    }
}

fn socket(ctx: &zmq::Context, kind: zmq::SocketType) -> Res<zmq::Socket> {
    let s = ctx.socket(kind)?;
    s.set_linger(0)?;
    Ok(s)
}

/// ROUTER echo server; stops when `stop` is set.
fn router_echo(
    ctx: zmq::Context,
    at: String,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Res<()>>,
) -> Res<()> {
    let s = socket(&ctx, zmq::ROUTER)?;
    s.set_rcvtimeo(50)?;
    s.set_router_mandatory(true)?;
    if let Err(e) = s.bind(&at) {
        let _ = ready.send(Err(e.into()));
        return Ok(());
    }
    let _ = ready.send(Ok(()));
    while !stop.load(Ordering::Acquire) {
        let mut id = zmq::Message::new();
        match s.recv(&mut id, 0) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
        let mut body = zmq::Message::new();
        s.recv(&mut body, 0)?;
        s.send(id, zmq::SNDMORE)?;
        s.send(body, 0)?;
    }
    Ok(())
}

struct Echo {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Res<()>>,
}

impl Echo {
    fn start(at: &str) -> Res<Echo> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (at, flag) = (at.to_string(), stop.clone());
        let ctx = zmq::Context::new();
        let thread = thread::spawn(move || router_echo(ctx, at, flag, ready_tx));
        ready_rx.recv().map_err(|_| "server thread died")??;
        Ok(Echo { stop, thread })
    }

    fn finish(self) -> Res<()> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().map_err(|_| "server panicked")?
    }
}

pub(crate) fn run(t: Transport, w: Workload, size: usize, plan: &Plan) -> Res<Measure> {
    let ep = Endpoint::new(t)?;
    let at = addr(&ep);
    if w == Workload::Stream {
        return stream(&at, size, plan.stream_count(size));
    }
    let echo = Echo::start(&at)?;
    let m = match w {
        Workload::Rtt => rtt(&at, size, plan.rtt),
        Workload::Pipelined => pipelined(&at, size, plan.pipelined),
        Workload::Connections => connections(&at, size, plan.conn_rounds),
        Workload::Stream => unreachable!(),
    };
    let done = echo.finish();
    let m = m?;
    done?;
    Ok(m)
}

fn dealer(ctx: &zmq::Context, at: &str) -> Res<zmq::Socket> {
    let s = socket(ctx, zmq::DEALER)?;
    s.set_rcvtimeo(WAIT.as_millis() as i32)?;
    s.connect(at)?;
    Ok(s)
}

fn rtt(at: &str, size: usize, count: usize) -> Res<Measure> {
    let ctx = zmq::Context::new();
    let s = dealer(&ctx, at)?;
    let payload = vec![0xabu8; size];
    let mut reply = zmq::Message::new();
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        let t0 = Instant::now();
        s.send(&payload[..], 0)?;
        s.recv(&mut reply, 0)?;
        rtts.push(t0.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

fn pipelined(at: &str, size: usize, count: usize) -> Res<Measure> {
    let ctx = zmq::Context::new();
    let s = dealer(&ctx, at)?;
    let payload = vec![0xabu8; size];
    let mut reply = zmq::Message::new();
    let mut sent_at = VecDeque::with_capacity(WINDOW);
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    let mut sent = 0;
    while sent < WINDOW.min(count) {
        sent_at.push_back(Instant::now());
        s.send(&payload[..], 0)?;
        sent += 1;
    }
    while rtts.len() < count {
        s.recv(&mut reply, 0)?;
        rtts.push(sent_at.pop_front().ok_or("unexpected reply")?.elapsed());
        if sent < count {
            sent_at.push_back(Instant::now());
            s.send(&payload[..], 0)?;
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

fn stream(at: &str, size: usize, count: usize) -> Res<Measure> {
    let (ready_tx, ready_rx) = mpsc::channel::<Res<()>>();
    let at_s = at.to_string();
    let server = thread::spawn(move || -> Res<Instant> {
        let ctx = zmq::Context::new();
        let s = socket(&ctx, zmq::PULL)?;
        s.set_rcvtimeo(WAIT.as_millis() as i32)?;
        if let Err(e) = s.bind(&at_s) {
            let _ = ready_tx.send(Err(e.into()));
            return Err("bind failed".into());
        }
        let _ = ready_tx.send(Ok(()));
        let mut m = zmq::Message::new();
        for _ in 0..count {
            s.recv(&mut m, 0)?;
        }
        Ok(Instant::now())
    });
    ready_rx.recv().map_err(|_| "server thread died")??;
    let ctx = zmq::Context::new();
    let s = socket(&ctx, zmq::PUSH)?;
    s.connect(at)?;
    let payload = vec![0xabu8; size];
    let start = Instant::now();
    for _ in 0..count {
        s.send(&payload[..], 0)?;
    }
    let end = server.join().map_err(|_| "server panicked")??;
    Ok(Measure::from_rate(count, size, (end - start).as_secs_f64()))
}

/// 1,000 DEALER sockets (1,000 connections) to one ROUTER, in lockstep rounds:
/// one request on every socket, then every reply.
fn connections(at: &str, size: usize, rounds: usize) -> Res<Measure> {
    let ctx = zmq::Context::new();
    let mut failures = 0u64;
    let mut socks = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        match dealer(&ctx, at) {
            Ok(s) => socks.push(s),
            Err(_) => failures += 1,
        }
    }
    let payload = vec![0xabu8; size];
    let mut reply = zmq::Message::new();
    let mut sent_at = vec![Instant::now(); socks.len()];
    let mut ok = vec![true; socks.len()];
    let mut rtts = Vec::with_capacity(CONNECTIONS * rounds);
    let start = Instant::now();
    for _ in 0..rounds {
        for (i, s) in socks.iter().enumerate() {
            if ok[i] {
                sent_at[i] = Instant::now();
                if s.send(&payload[..], 0).is_err() {
                    ok[i] = false;
                }
            }
        }
        for (i, s) in socks.iter().enumerate() {
            if ok[i] {
                match s.recv(&mut reply, 0) {
                    Ok(()) => rtts.push(sent_at[i].elapsed()),
                    Err(_) => ok[i] = false,
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    failures += ok.iter().filter(|o| !**o).count() as u64;
    let mut m = Measure::from_rtts(&mut rtts, secs, size);
    m.failures = Some(failures);
    Ok(m)
}
