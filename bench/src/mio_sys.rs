//! message-io (TCP only, `Transport::FramedTcp`), driven through its
//! `network::split()` controller/processor pair: one thread per side.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use message_io::network::{
    self, Endpoint as MEndpoint, NetEvent, SendStatus, Transport as MTransport,
};

use crate::common::*;

const TICK: Option<Duration> = Some(Duration::from_millis(50));

struct Server {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Res<()>>,
}

impl Server {
    /// Echoes every message, or (`sink`) counts them and reports the time the
    /// last arrived once the sender has set how many it sent.
    fn start(port: u16, sink: Option<(Arc<AtomicUsize>, mpsc::Sender<Instant>)>) -> Res<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = mpsc::channel::<Res<()>>();
        let thread = thread::spawn(move || -> Res<()> {
            let (ctrl, mut proc) = network::split();
            if let Err(e) = ctrl.listen(MTransport::FramedTcp, ("127.0.0.1", port)) {
                let _ = ready_tx.send(Err(e.into()));
                return Ok(());
            }
            let _ = ready_tx.send(Ok(()));
            let (mut got, mut last, mut reported) = (0usize, Instant::now(), false);
            while !flag.load(Ordering::Acquire) {
                proc.process_poll_event(TICK, |ev| {
                    if let NetEvent::Message(ep, data) = ev {
                        match &sink {
                            None => {
                                ctrl.send(ep, data);
                            }
                            Some(_) => {
                                got += 1;
                                last = Instant::now();
                            }
                        }
                    }
                });
                if let Some((target, done)) = &sink {
                    if !reported && got >= target.load(Ordering::Acquire) {
                        let _ = done.send(last);
                        reported = true;
                    }
                }
            }
            Ok(())
        });
        ready_rx.recv().map_err(|_| "server thread died")??;
        Ok(Server { stop, thread })
    }

    fn finish(self) -> Res<()> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().map_err(|_| "server panicked")?
    }
}

pub(crate) fn run(t: Transport, w: Workload, size: usize, plan: &Plan) -> Res<Measure> {
    let ep = Endpoint::new(t)?;
    let Endpoint::Tcp(port) = ep else {
        return Err("message-io: TCP only here".into());
    };
    let count = plan.stream_count(size);
    let (done_tx, done_rx) = mpsc::channel();
    let target = Arc::new(AtomicUsize::new(usize::MAX));
    let sink = (w == Workload::Stream).then_some((target.clone(), done_tx));
    let server = Server::start(port, sink)?;
    let m = match w {
        Workload::Rtt => rtt(port, size, plan.rtt, plan.budget),
        Workload::Pipelined => pipelined(port, size, plan.pipelined, plan.budget),
        Workload::Stream => stream(port, size, count, plan.budget, &target, &done_rx),
        Workload::Connections => connections(port, size, plan.conn_rounds),
    };
    let done = server.finish();
    let m = m?;
    done?;
    Ok(m)
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

/// Stops after `budget` with fewer samples: without TCP_NODELAY (message-io
/// sets none and offers no option) each round trip waits for delayed ACKs.
fn rtt(port: u16, size: usize, count: usize, budget: Duration) -> Res<Measure> {
    let ((ctrl, mut proc), eps, _) = connect(port, 1)?;
    let ep = *eps.first().ok_or("connect failed")?;
    let payload = vec![0xabu8; size];
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        if start.elapsed() > budget && rtts.len() >= 20 {
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

/// Stops sending after `budget` (then drains the window).
fn pipelined(port: u16, size: usize, mut count: usize, budget: Duration) -> Res<Measure> {
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
    let deadline = start + WAIT;
    while rtts.len() < count && Instant::now() < deadline {
        if start.elapsed() > budget && count > n_sent {
            count = n_sent;
        }
        proc.process_poll_event(TICK, |ev| {
            if let NetEvent::Message(..) = ev {
                if let Some(t0) = sent_at.pop_front() {
                    rtts.push(t0.elapsed());
                }
                if n_sent < count {
                    sent_at.push_back(Instant::now());
                    ctrl.send(ep, &payload);
                    n_sent += 1;
                }
            }
        });
    }
    if rtts.len() < count {
        return Err("pipelined run did not complete".into());
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// Stops after `count` messages or `budget`, whichever comes first.
fn stream(
    port: u16,
    size: usize,
    mut count: usize,
    budget: Duration,
    target: &AtomicUsize,
    done: &mpsc::Receiver<Instant>,
) -> Res<Measure> {
    let ((ctrl, _proc), eps, _) = connect(port, 1)?;
    let ep = *eps.first().ok_or("connect failed")?;
    let payload = vec![0xabu8; size];
    let start = Instant::now();
    for i in 0..count {
        if i % 64 == 0 && start.elapsed() > budget {
            count = i;
            break;
        }
        sent(ctrl.send(ep, &payload))?;
    }
    target.store(count, Ordering::Release);
    let end = done
        .recv_timeout(WAIT)
        .map_err(|_| "stream did not complete")?;
    Ok(Measure::from_rate(count, size, (end - start).as_secs_f64()))
}

/// 1,000 connections on one processor, each with one request outstanding.
fn connections(port: u16, size: usize, rounds: usize) -> Res<Measure> {
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
            done[i] = rounds;
        }
    }
    let mut outstanding = done.iter().filter(|d| **d < rounds).count();
    let deadline = start + WAIT;
    while outstanding > 0 && Instant::now() < deadline {
        proc.process_poll_event(TICK, |ev| match ev {
            NetEvent::Message(ep, _) => {
                let Some(&i) = index.get(&ep) else { return };
                rtts.push(sent_at[i].elapsed());
                done[i] += 1;
                if done[i] < rounds {
                    sent_at[i] = Instant::now();
                    ctrl.send(ep, &payload);
                } else {
                    outstanding -= 1;
                }
            }
            NetEvent::Disconnected(ep) => {
                if let Some(&i) = index.get(&ep) {
                    if done[i] < rounds {
                        failures += 1;
                        done[i] = rounds;
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
