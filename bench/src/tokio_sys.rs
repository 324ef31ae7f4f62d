//! tokio + `LengthDelimitedCodec`, as a Rust developer would hand-roll it: one
//! current-thread runtime per side (one thread each, like the raw baseline),
//! a task per connection on the server.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::common::*;

#[derive(Clone)]
enum Mode {
    Echo,
    /// Count frames; tell when `n` have arrived.
    Sink(usize, mpsc::Sender<Instant>),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

fn runtime() -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn serve<S: Io>(s: S, mode: Mode) {
    let mut f = Framed::new(s, LengthDelimitedCodec::new());
    match mode {
        Mode::Echo => {
            while let Some(Ok(frame)) = f.next().await {
                if f.send(frame.freeze()).await.is_err() {
                    break;
                }
            }
        }
        Mode::Sink(n, done) => {
            let mut got = 0;
            while let Some(Ok(_)) = f.next().await {
                got += 1;
                if got == n {
                    let _ = done.send(Instant::now());
                }
            }
        }
    }
}

/// The server thread: accepts until told to stop.
struct Server {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<Res<()>>>,
}

impl Server {
    fn start(ep: &Endpoint, mode: Mode) -> Res<Server> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<Res<()>>();
        let ep = ep.clone();
        let thread = thread::spawn(move || -> Res<()> {
            let rt = runtime()?;
            rt.block_on(async move {
                match ep {
                    Endpoint::Tcp(port) => {
                        let l = match TcpListener::bind(("127.0.0.1", port)).await {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e.into()));
                                return;
                            }
                        };
                        let _ = ready_tx.send(Ok(()));
                        tokio::spawn(async move {
                            while let Ok((s, _)) = l.accept().await {
                                let _ = s.set_nodelay(true);
                                tokio::spawn(serve(s, mode.clone()));
                            }
                        });
                    }
                    Endpoint::Uds(ref p) => {
                        let l = match UnixListener::bind(p) {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e.into()));
                                return;
                            }
                        };
                        let _ = ready_tx.send(Ok(()));
                        tokio::spawn(async move {
                            while let Ok((s, _)) = l.accept().await {
                                tokio::spawn(serve(s, mode.clone()));
                            }
                        });
                    }
                }
                let _ = stopped.await;
            });
            Ok(())
        });
        ready_rx.recv().map_err(|_| "server thread died")??;
        Ok(Server {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn finish(mut self) -> Res<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| "server panicked")??;
        }
        Ok(())
    }
}

enum Client {
    Tcp(Framed<TcpStream, LengthDelimitedCodec>),
    Uds(Framed<UnixStream, LengthDelimitedCodec>),
}

async fn connect(ep: &Endpoint) -> Res<Client> {
    Ok(match ep {
        Endpoint::Tcp(port) => {
            let s = TcpStream::connect(("127.0.0.1", *port)).await?;
            s.set_nodelay(true)?;
            Client::Tcp(Framed::new(s, LengthDelimitedCodec::new()))
        }
        Endpoint::Uds(p) => Client::Uds(Framed::new(
            UnixStream::connect(p).await?,
            LengthDelimitedCodec::new(),
        )),
    })
}

pub(crate) fn run(t: Transport, w: Workload, size: usize, plan: &Plan) -> Res<Measure> {
    let ep = Endpoint::new(t)?;
    let (done_tx, done_rx) = mpsc::channel();
    let count = plan.stream_count(size);
    let mode = match w {
        Workload::Stream => Mode::Sink(count, done_tx),
        _ => Mode::Echo,
    };
    let server = Server::start(&ep, mode)?;
    let rt = runtime()?;
    let plan = *plan;
    let m = rt.block_on(async {
        match w {
            Workload::Connections => connections(&ep, size, plan.conn_rounds).await,
            _ => match connect(&ep).await? {
                Client::Tcp(f) => one(f, w, size, &plan, &done_rx).await,
                Client::Uds(f) => one(f, w, size, &plan, &done_rx).await,
            },
        }
    });
    drop(rt);
    let done = server.finish();
    let m = m?;
    done?;
    Ok(m)
}

async fn one<S: Io>(
    mut f: Framed<S, LengthDelimitedCodec>,
    w: Workload,
    size: usize,
    plan: &Plan,
    done: &mpsc::Receiver<Instant>,
) -> Res<Measure> {
    let payload = Bytes::from(vec![0xab; size]);
    match w {
        Workload::Rtt => {
            let mut rtts = Vec::with_capacity(plan.rtt);
            let start = Instant::now();
            for _ in 0..plan.rtt {
                let t0 = Instant::now();
                f.send(payload.clone()).await?;
                f.next().await.ok_or("server closed")??;
                rtts.push(t0.elapsed());
            }
            let secs = start.elapsed().as_secs_f64();
            Ok(Measure::from_rtts(&mut rtts, secs, size))
        }
        Workload::Pipelined => {
            let count = plan.pipelined;
            let mut sent_at = VecDeque::with_capacity(WINDOW);
            let mut rtts = Vec::with_capacity(count);
            let start = Instant::now();
            let mut sent = 0;
            while sent < WINDOW.min(count) {
                sent_at.push_back(Instant::now());
                f.feed(payload.clone()).await?;
                sent += 1;
            }
            SinkExt::<Bytes>::flush(&mut f).await?;
            while rtts.len() < count {
                f.next().await.ok_or("server closed")??;
                rtts.push(sent_at.pop_front().ok_or("unexpected response")?.elapsed());
                if sent < count {
                    sent_at.push_back(Instant::now());
                    f.send(payload.clone()).await?;
                    sent += 1;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            Ok(Measure::from_rtts(&mut rtts, secs, size))
        }
        Workload::Stream => {
            let count = plan.stream_count(size);
            let start = Instant::now();
            for _ in 0..count {
                f.feed(payload.clone()).await?;
            }
            SinkExt::<Bytes>::flush(&mut f).await?;
            let end = done
                .recv_timeout(WAIT)
                .map_err(|_| "stream did not complete")?;
            let secs = (end - start).as_secs_f64();
            Ok(Measure::from_rate(count, size, secs))
        }
        Workload::Connections => unreachable!("handled by connections()"),
    }
}

/// 1,000 connections, one task each doing `rounds` request/responses.
async fn connections(ep: &Endpoint, size: usize, rounds: usize) -> Res<Measure> {
    let mut failures = 0u64;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        match connect(ep).await {
            Ok(c) => clients.push(c),
            Err(_) => failures += 1,
        }
    }
    let payload = Bytes::from(vec![0xab; size]);
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let p = payload.clone();
            tokio::spawn(async move {
                match c {
                    Client::Tcp(f) => conn_task(f, p, rounds).await,
                    Client::Uds(f) => conn_task(f, p, rounds).await,
                }
            })
        })
        .collect();
    let mut rtts = Vec::with_capacity(CONNECTIONS * rounds);
    for t in tasks {
        match t.await {
            Ok(Ok(mut v)) => rtts.append(&mut v),
            _ => failures += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut m = Measure::from_rtts(&mut rtts, secs, size);
    m.failures = Some(failures);
    Ok(m)
}

async fn conn_task<S: Io>(
    mut f: Framed<S, LengthDelimitedCodec>,
    payload: Bytes,
    rounds: usize,
) -> Res<Vec<std::time::Duration>> {
    let mut rtts = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        f.send(payload.clone()).await?;
        f.next().await.ok_or("server closed")??;
        rtts.push(t0.elapsed());
    }
    Ok(rtts)
}
