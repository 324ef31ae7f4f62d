//! message-io (TCP only, `Transport::FramedTcp`), driven through its
//! `network::split()` controller/processor pair: one thread per side.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use message_io::network::{
    self, Endpoint as MEndpoint, NetEvent, SendStatus, Transport as MTransport,
};

use crate::common::*;

const TICK: Option<Duration> = Some(Duration::from_millis(50));

/// The server: echoes every message, or (`stream`) drops them and answers
/// only the end marker. Stops when `ctl` says so.
pub(crate) fn serve(w: Workload, ep: &Endpoint, ctl: &Ctl) -> Res<()> {
    let Endpoint::Tcp(port) = ep else {
        return Err("message-io: TCP only here".into());
    };
    let sink = w == Workload::Stream;
    let (ctrl, mut proc) = network::split();
    ctrl.listen(MTransport::FramedTcp, ("127.0.0.1", *port))?;
    ctl.ready();
    while !ctl.stopped() {
        proc.process_poll_event(TICK, |ev| {
            if let NetEvent::Message(ep, data) = ev {
                if !sink || data.len() == MARKER.len() {
                    ctrl.send(ep, data);
                }
            }
        });
    }
    Ok(())
}

pub(crate) fn run(w: Workload, size: usize, plan: &Plan, ep: &Endpoint) -> Res<Measure> {
    let Endpoint::Tcp(port) = *ep else {
        return Err("message-io: TCP only here".into());
    };
    match w {
        Workload::Rtt => rtt(port, size, plan),
        Workload::Pipelined => pipelined(port, size, plan),
        Workload::Stream => stream(port, size, plan),
        Workload::Connections => connections(port, size, plan),
    }
}

type Client = (network::NetworkController, network::NetworkProcessor);

/// Opens `n` connections; returns them (and the count that failed).
fn connect(port: u16, n: usize) -> Res<(Client, Vec<MEndpoint>, u64)> {
    let (ctrl, mut proc) = network::split();
    let mut failures = 0u64;
    let mut pending = 0usize;
    for _ in 0..n {
        match ctrl.connect(MTransport::FramedTcp, ("127.0.0.1", port)) {
            Ok(_) => pending += 1,
            Err(_) => failures += 1,
        }
    }
    let mut eps = Vec::with_capacity(n);
    let deadline = Instant::now() + WAIT;
    while pending > 0 && Instant::now() < deadline {
        proc.process_poll_event(TICK, |ev| {
            if let NetEvent::Connected(ep, ok) = ev {
                pending -= 1;
                if ok {
                    eps.push(ep);
                } else {
                    failures += 1;
                }
            }
        });
    }
    failures += pending as u64;
    Ok(((ctrl, proc), eps, failures))
}

fn sent(s: SendStatus) -> Res<()> {
    match s {
        SendStatus::Sent => Ok(()),
        other => Err(format!("send: {other:?}").into()),
    }
}

/// Stops after the plan's budget with fewer samples (at least 20): without
/// TCP_NODELAY (message-io sets none and offers no option) each round trip
/// waits for delayed ACKs.
fn rtt(port: u16, size: usize, plan: &Plan) -> Res<Measure> {
    let count = plan.rtt;
    let ((ctrl, mut proc), eps, _) = connect(port, 1)?;
    let ep = *eps.first().ok_or("connect failed")?;
    let payload = vec![0xabu8; size];
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    while !plan.enough(rtts.len(), count, start) {
        if start.elapsed() > plan.budget && rtts.len() >= 20 {
            break;
        }
        let t0 = Instant::now();
        sent(ctrl.send(ep, &payload))?;
        let mut got = false;
        let deadline = t0 + WAIT;
        while !got && Instant::now() < deadline {
            proc.process_poll_event(TICK, |ev| {
                if let NetEvent::Message(..) = ev {
                    got = true;
                }
            });
        }
        if !got {
            return Err("no reply".into());
        }
        rtts.push(t0.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// Stops sending after the plan's budget (then drains the window).
fn pipelined(port: u16, size: usize, plan: &Plan) -> Res<Measure> {
    let count = plan.pipelined;
    let ((ctrl, mut proc), eps, _) = connect(port, 1)?;
    let ep = *eps.first().ok_or("connect failed")?;
    let payload = vec![0xabu8; size];
    let mut sent_at = VecDeque::with_capacity(WINDOW);
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    let mut n_sent = 0;
    while n_sent < WINDOW.min(count) {
        sent_at.push_back(Instant::now());
        sent(ctrl.send(ep, &payload))?;
        n_sent += 1;
    }
    let mut sending = true;
    let deadline = start + WAIT;
    while rtts.len() < n_sent && Instant::now() < deadline {
        proc.process_poll_event(TICK, |ev| {
            if let NetEvent::Message(..) = ev {
                if let Some(t0) = sent_at.pop_front() {
                    rtts.push(t0.elapsed());
                }
                sending =
                    sending && !plan.enough(n_sent, count, start) && start.elapsed() <= plan.budget;
                if sending {
                    sent_at.push_back(Instant::now());
                    ctrl.send(ep, &payload);
                    n_sent += 1;
                }
            }
        });
    }
    if rtts.len() < n_sent {
        return Err("pipelined run did not complete".into());
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// Sends until the count and the minimum time are reached (or the budget
/// is spent), then the end marker, which the server answers.
fn stream(port: u16, size: usize, plan: &Plan) -> Res<Measure> {
    let count = plan.stream_count(size);
    let ((ctrl, mut proc), eps, _) = connect(port, 1)?;
    let ep = *eps.first().ok_or("connect failed")?;
    let payload = vec![0xabu8; size];
    let start = Instant::now();
    let mut n = 0;
    while !plan.enough(n, count, start) && start.elapsed() <= plan.budget {
        for _ in 0..64 {
            sent(ctrl.send(ep, &payload))?;
        }
        n += 64;
    }
    sent(ctrl.send(ep, MARKER))?;
    let mut got = false;
    let deadline = Instant::now() + WAIT;
    while !got && Instant::now() < deadline {
        proc.process_poll_event(TICK, |ev| {
            if let NetEvent::Message(_, data) = ev {
                got = data.len() == MARKER.len();
            }
        });
    }
    if !got {
        return Err("stream did not complete".into());
    }
    Ok(Measure::from_rate(n, size, start.elapsed().as_secs_f64()))
}

/// 1,000 connections on one processor, each with one request outstanding.
fn connections(port: u16, size: usize, plan: &Plan) -> Res<Measure> {
    let rounds = plan.conn_rounds;
    let ((ctrl, mut proc), eps, mut failures) = connect(port, CONNECTIONS)?;
    let payload = vec![0xabu8; size];
    let index: HashMap<MEndpoint, usize> = eps.iter().enumerate().map(|(i, e)| (*e, i)).collect();
    let mut sent_at = vec![Instant::now(); eps.len()];
    let mut done = vec![0usize; eps.len()];
    let mut rtts = Vec::with_capacity(eps.len() * rounds);
    let start = Instant::now();
    for (i, ep) in eps.iter().enumerate() {
        sent_at[i] = Instant::now();
        if ctrl.send(*ep, &payload) != SendStatus::Sent {
            failures += 1;
            done[i] = usize::MAX;
        }
    }
    let mut outstanding = done.iter().filter(|d| **d != usize::MAX).count();
    let deadline = start + WAIT;
    while outstanding > 0 && Instant::now() < deadline {
        proc.process_poll_event(TICK, |ev| match ev {
            NetEvent::Message(ep, _) => {
                let Some(&i) = index.get(&ep) else { return };
                if done[i] == usize::MAX {
                    return;
                }
                rtts.push(sent_at[i].elapsed());
                done[i] += 1;
                if !plan.enough(done[i], rounds, start) {
                    sent_at[i] = Instant::now();
                    ctrl.send(ep, &payload);
                } else {
                    done[i] = usize::MAX;
                    outstanding -= 1;
                }
            }
            NetEvent::Disconnected(ep) => {
                if let Some(&i) = index.get(&ep) {
                    if done[i] != usize::MAX {
                        failures += 1;
                        done[i] = usize::MAX;
                        outstanding -= 1;
                    }
                }
            }
            _ => {}
        });
    }
    failures += outstanding as u64;
    let secs = start.elapsed().as_secs_f64();
    let mut m = Measure::from_rtts(&mut rtts, secs, size);
    m.failures = Some(failures);
    Ok(m)
}
