//! NNG via the `nng` crate (libnng built with cmake; feature `nng`): REQ/REP
//! for round trips and the 1,000 connections, PAIR1 for the pipelined window
//! (REQ allows one request in flight per socket), PUSH/PULL for streaming.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nng::options::{Options, RecvBufferSize, RecvTimeout, SendBufferSize};
use nng::{Error as NngError, Protocol, Socket};

use crate::common::*;

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

struct Server {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Res<()>>,
}

impl Server {
    /// Echo server (REP0 or PAIR1), or a PULL sink reporting the time the
    /// last message arrived once the sender has set how many it sent.
    fn start(
        at: &str,
        proto: Protocol,
        sink: Option<(Arc<AtomicUsize>, mpsc::Sender<Instant>)>,
    ) -> Res<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = mpsc::channel::<Res<()>>();
        let at = at.to_string();
        let thread = thread::spawn(move || -> Res<()> {
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
            if let Err(e) = s.listen(&at) {
                let _ = ready_tx.send(Err(e.into()));
                return Ok(());
            }
            let _ = ready_tx.send(Ok(()));
            let (mut got, mut last, mut reported) = (0usize, Instant::now(), false);
            while !flag.load(Ordering::Acquire) {
                if let Some((target, done)) = &sink {
                    if !reported && got >= target.load(Ordering::Acquire) {
                        let _ = done.send(last);
                        reported = true;
                    }
                }
                let m = match s.recv() {
                    Ok(m) => m,
                    Err(NngError::TimedOut) => continue,
                    Err(e) => return Err(e.into()),
                };
                match &sink {
                    None => s.send(m).map_err(|(_, e)| e)?,
                    Some(_) => {
                        got += 1;
                        last = Instant::now();
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
    let at = url(&ep);
    let count = plan.stream_count(size);
    let (done_tx, done_rx) = mpsc::channel();
    let target = Arc::new(AtomicUsize::new(usize::MAX));
    let (proto, sink) = match w {
        Workload::Stream => (Protocol::Pull0, Some((target.clone(), done_tx))),
        Workload::Pipelined => (Protocol::Pair1, None),
        _ => (Protocol::Rep0, None),
    };
    let server = Server::start(&at, proto, sink)?;
    let m = match w {
        Workload::Rtt => rtt(&at, size, plan.rtt),
        Workload::Pipelined => pipelined(&at, size, plan.pipelined, plan.budget),
        Workload::Stream => stream(&at, size, count, plan.budget, &target, &done_rx),
        Workload::Connections => connections(&at, size, plan.conn_rounds),
    };
    let done = server.finish();
    let m = m?;
    done?;
    Ok(m)
}

fn client(at: &str, proto: Protocol) -> Res<Socket> {
    let s = Socket::new(proto)?;
    s.set_opt::<RecvTimeout>(Some(WAIT))?;
    s.dial(at)?;
    Ok(s)
}

fn rtt(at: &str, size: usize, count: usize) -> Res<Measure> {
    let s = client(at, Protocol::Req0)?;
    let payload = vec![0xabu8; size];
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        let t0 = Instant::now();
        send(&s, &payload)?;
        s.recv()?;
        rtts.push(t0.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// Stops sending after `budget` (then drains the window).
fn pipelined(at: &str, size: usize, mut count: usize, budget: Duration) -> Res<Measure> {
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
    while rtts.len() < count {
        s.recv()?;
        rtts.push(sent_at.pop_front().ok_or("unexpected reply")?.elapsed());
        if start.elapsed() > budget {
            count = count.min(sent);
        }
        if sent < count {
            sent_at.push_back(Instant::now());
            send(&s, &payload)?;
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// Stops after `count` messages or `budget`, whichever comes first; PUSH and
/// PULL get 1,024-message buffers (NNG's default is none, which makes every
/// send wait for the pipe).
fn stream(
    at: &str,
    size: usize,
    mut count: usize,
    budget: Duration,
    target: &AtomicUsize,
    done: &mpsc::Receiver<Instant>,
) -> Res<Measure> {
    let s = client(at, Protocol::Push0)?;
    s.set_opt::<SendBufferSize>(1024)?;
    let payload = vec![0xabu8; size];
    let start = Instant::now();
    for i in 0..count {
        if i % 64 == 0 && start.elapsed() > budget {
            count = i;
            break;
        }
        send(&s, &payload)?;
    }
    target.store(count, Ordering::Release);
    let end = done
        .recv_timeout(WAIT)
        .map_err(|_| "stream did not complete")?;
    Ok(Measure::from_rate(count, size, (end - start).as_secs_f64()))
}

/// 1,000 REQ sockets (one connection each) to one REP socket, lockstep rounds.
fn connections(at: &str, size: usize, rounds: usize) -> Res<Measure> {
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
    for _ in 0..rounds {
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
