//! ZeroMQ via the `zmq` crate (libzmq built from the bundled source): DEALER /
//! ROUTER for round trips, PUSH / PULL for streaming; one context (one I/O
//! thread) per side.

use std::collections::VecDeque;
use std::time::Instant;

use crate::common::*;
use crate::server::Server;

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

/// The server: a ROUTER echoing every message, or (`stream`) a PULL sink
/// that says `end` when the end marker arrives (PUSH/PULL has no way
/// back). Stops when `ctl` says so.
pub(crate) fn serve(w: Workload, ep: &Endpoint, ctl: &Ctl) -> Res<()> {
    let ctx = zmq::Context::new();
    let at = addr(ep);
    if w == Workload::Stream {
        let s = socket(&ctx, zmq::PULL)?;
        s.set_rcvtimeo(50)?;
        s.bind(&at)?;
        ctl.ready();
        let mut m = zmq::Message::new();
        while !ctl.stopped() {
            match s.recv(&mut m, 0) {
                Ok(()) if m.len() == MARKER.len() => ctl.say("end"),
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(());
    }
    let s = socket(&ctx, zmq::ROUTER)?;
    s.set_rcvtimeo(50)?;
    s.set_router_mandatory(true)?;
    s.bind(&at)?;
    ctl.ready();
    while !ctl.stopped() {
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

pub(crate) fn run(
    w: Workload,
    size: usize,
    plan: &Plan,
    ep: &Endpoint,
    server: &Server,
) -> Res<Measure> {
    let at = addr(ep);
    match w {
        Workload::Rtt => rtt(&at, size, plan),
        Workload::Pipelined => pipelined(&at, size, plan),
        Workload::Stream => stream(&at, size, plan, server),
        Workload::Connections => connections(&at, size, plan),
    }
}

fn dealer(ctx: &zmq::Context, at: &str) -> Res<zmq::Socket> {
    let s = socket(ctx, zmq::DEALER)?;
    s.set_rcvtimeo(WAIT.as_millis() as i32)?;
    s.connect(at)?;
    Ok(s)
}

fn rtt(at: &str, size: usize, plan: &Plan) -> Res<Measure> {
    let count = plan.rtt;
    let ctx = zmq::Context::new();
    let s = dealer(&ctx, at)?;
    let payload = vec![0xabu8; size];
    let mut reply = zmq::Message::new();
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    while !plan.enough(rtts.len(), count, start) {
        let t0 = Instant::now();
        s.send(&payload[..], 0)?;
        s.recv(&mut reply, 0)?;
        rtts.push(t0.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

fn pipelined(at: &str, size: usize, plan: &Plan) -> Res<Measure> {
    let count = plan.pipelined;
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
    while rtts.len() < sent {
        s.recv(&mut reply, 0)?;
        rtts.push(sent_at.pop_front().ok_or("unexpected reply")?.elapsed());
        if !plan.enough(sent, count, start) {
            sent_at.push_back(Instant::now());
            s.send(&payload[..], 0)?;
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// PUSH until the count and the minimum time are reached (paced by the
/// high-water mark, 1,000 messages), then the end marker; the time runs
/// until the server says the marker arrived.
fn stream(at: &str, size: usize, plan: &Plan, server: &Server) -> Res<Measure> {
    let count = plan.stream_count(size);
    let ctx = zmq::Context::new();
    let s = socket(&ctx, zmq::PUSH)?;
    s.connect(at)?;
    let payload = vec![0xabu8; size];
    let start = Instant::now();
    let mut n = 0;
    while !plan.enough(n, count, start) {
        for _ in 0..64 {
            s.send(&payload[..], 0)?;
        }
        n += 64;
    }
    s.send(MARKER, 0)?;
    match server.line("the end of the stream", WAIT)?.as_str() {
        "end" => Ok(Measure::from_rate(n, size, start.elapsed().as_secs_f64())),
        other => Err(format!("server said {other:?}").into()),
    }
}

/// 1,000 DEALER sockets (1,000 connections) to one ROUTER, in lockstep rounds:
/// one request on every socket, then every reply.
fn connections(at: &str, size: usize, plan: &Plan) -> Res<Measure> {
    let rounds = plan.conn_rounds;
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
    let mut round = 0;
    while !plan.enough(round, rounds, start) {
        round += 1;
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
