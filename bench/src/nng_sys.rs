//! NNG via the `nng` crate (libnng built with cmake; feature `nng`): REQ/REP
//! for round trips and the 1,000 connections, PAIR1 for the pipelined window
//! (REQ allows one request in flight per socket), PUSH/PULL for streaming.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nng::options::{Options, RecvBufferSize, RecvTimeout, SendBufferSize};
use nng::{Error as NngError, Protocol, Socket};

use crate::common::*;
use crate::server::Server;

fn url(ep: &Endpoint) -> String {
    match ep {
        Endpoint::Tcp(port) => format!("tcp://127.0.0.1:{port}"),
        Endpoint::Uds(p) => format!("ipc://{}", p.display()),
    }
}

fn send(s: &Socket, data: &[u8]) -> Res<()> {
    s.send(data).map_err(|(_, e)| e)?;
    Ok(())
}

/// The server: REP0 (round trips, connections) or PAIR1 (pipelined)
/// echoing, or (`stream`) a PULL sink that says `end` when the end marker
/// arrives. Stops when `ctl` says so.
pub(crate) fn serve(w: Workload, ep: &Endpoint, ctl: &Ctl) -> Res<()> {
    let proto = match w {
        Workload::Stream => Protocol::Pull0,
        Workload::Pipelined => Protocol::Pair1,
        _ => Protocol::Rep0,
    };
    let s = Socket::new(proto)?;
    s.set_opt::<RecvTimeout>(Some(Duration::from_millis(50)))?;
    if proto != Protocol::Rep0 {
        let depth = if proto == Protocol::Pull0 {
            1024
        } else {
            WINDOW as i32
        };
        s.set_opt::<RecvBufferSize>(depth)?;
        s.set_opt::<SendBufferSize>(depth)?;
    }
    s.listen(&url(ep))?;
    ctl.ready();
    while !ctl.stopped() {
        let m = match s.recv() {
            Ok(m) => m,
            Err(NngError::TimedOut) => continue,
            Err(e) => return Err(e.into()),
        };
        if proto == Protocol::Pull0 {
            if m.len() == MARKER.len() {
                ctl.say("end");
            }
        } else {
            s.send(m).map_err(|(_, e)| e)?;
        }
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
    let at = url(ep);
    match w {
        Workload::Rtt => rtt(&at, size, plan),
        Workload::Pipelined => pipelined(&at, size, plan),
        Workload::Stream => stream(&at, size, plan, server),
        Workload::Connections => connections(&at, size, plan),
    }
}

fn client(at: &str, proto: Protocol) -> Res<Socket> {
    let s = Socket::new(proto)?;
    s.set_opt::<RecvTimeout>(Some(WAIT))?;
    s.dial(at)?;
    Ok(s)
}

fn rtt(at: &str, size: usize, plan: &Plan) -> Res<Measure> {
    let count = plan.rtt;
    let s = client(at, Protocol::Req0)?;
    let payload = vec![0xabu8; size];
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    while !plan.enough(rtts.len(), count, start) {
        let t0 = Instant::now();
        send(&s, &payload)?;
        s.recv()?;
        rtts.push(t0.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// Stops sending after the plan's budget (then drains the window).
fn pipelined(at: &str, size: usize, plan: &Plan) -> Res<Measure> {
    let count = plan.pipelined;
    let s = client(at, Protocol::Pair1)?;
    s.set_opt::<RecvBufferSize>(WINDOW as i32)?;
    s.set_opt::<SendBufferSize>(WINDOW as i32)?;
    let payload = vec![0xabu8; size];
    let mut sent_at = VecDeque::with_capacity(WINDOW);
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    let mut sent = 0;
    while sent < WINDOW.min(count) {
        sent_at.push_back(Instant::now());
        send(&s, &payload)?;
        sent += 1;
    }
    while rtts.len() < sent {
        s.recv()?;
        rtts.push(sent_at.pop_front().ok_or("unexpected reply")?.elapsed());
        if !plan.enough(sent, count, start) && start.elapsed() <= plan.budget {
            sent_at.push_back(Instant::now());
            send(&s, &payload)?;
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// Sends until the count and the minimum time are reached or the budget
/// is spent, then the end marker; the time runs until the server says it
/// arrived. PUSH and PULL get 1,024-message buffers (NNG's default is none,
/// which makes every send wait for the pipe).
fn stream(at: &str, size: usize, plan: &Plan, server: &Server) -> Res<Measure> {
    let count = plan.stream_count(size);
    let s = client(at, Protocol::Push0)?;
    s.set_opt::<SendBufferSize>(1024)?;
    let payload = vec![0xabu8; size];
    let start = Instant::now();
    let mut n = 0;
    while !plan.enough(n, count, start) && start.elapsed() <= plan.budget {
        for _ in 0..64 {
            send(&s, &payload)?;
        }
        n += 64;
    }
    send(&s, MARKER)?;
    match server.line("the end of the stream", WAIT)?.as_str() {
        "end" => Ok(Measure::from_rate(n, size, start.elapsed().as_secs_f64())),
        other => Err(format!("server said {other:?}").into()),
    }
}

/// 1,000 REQ sockets (one connection each) to one REP socket, lockstep rounds.
fn connections(at: &str, size: usize, plan: &Plan) -> Res<Measure> {
    let rounds = plan.conn_rounds;
    let mut failures = 0u64;
    let mut socks = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        match client(at, Protocol::Req0) {
            Ok(s) => socks.push(s),
            Err(_) => failures += 1,
        }
    }
    let payload = vec![0xabu8; size];
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
                ok[i] = send(s, &payload).is_ok();
            }
        }
        for (i, s) in socks.iter().enumerate() {
            if ok[i] {
                match s.recv() {
                    Ok(_) => rtts.push(sent_at[i].elapsed()),
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
