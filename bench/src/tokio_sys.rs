//! tokio + `LengthDelimitedCodec`, as a Rust developer would hand-roll it: one
//! current-thread runtime per side (one thread each, like the raw baseline),
//! a task per connection on the server.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::common::*;

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

fn runtime() -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The next frame if it is already complete in `f`'s read buffer, without
/// reading the socket. Only called right after `f` returned a frame, when
/// its codec expects a length prefix (4 bytes, big-endian: the codec's
/// default), so taking the frame here leaves the codec in step.
fn buffered_frame<S>(f: &mut Framed<S, LengthDelimitedCodec>) -> Option<BytesMut> {
    let buf = f.read_buffer_mut();
    let head: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let n = u32::from_be_bytes(head) as usize;
    if buf.len() < 4 + n {
        return None;
    }
    buf.advance(4);
    Some(buf.split_to(n))
}

/// Echoes every frame (or, `sink`, only the end markers). The answers to all
/// frames already complete in the read buffer are fed into the write buffer
/// first and flushed once: the raw server's policy (flush when input runs dry).
async fn serve_conn<S: Io>(s: S, sink: bool) {
    let mut f = Framed::new(s, LengthDelimitedCodec::new());
    while let Some(Ok(first)) = f.next().await {
        let mut frame = Some(first);
        while let Some(fr) = frame {
            if (!sink || fr.len() == MARKER.len()) && f.feed(fr.freeze()).await.is_err() {
                return;
            }
            frame = buffered_frame(&mut f);
        }
        if SinkExt::<Bytes>::flush(&mut f).await.is_err() {
            return;
        }
    }
}

/// The server: one current-thread runtime, a task per connection; runs
/// until `ctl` says stop.
pub(crate) fn serve(w: Workload, ep: &Endpoint, ctl: &Ctl) -> Res<()> {
    let rt = runtime()?;
    let sink = w == Workload::Stream;
    rt.block_on(async {
        match ep {
            Endpoint::Tcp(port) => {
                let l = TcpListener::bind(("127.0.0.1", *port)).await?;
                ctl.ready();
                tokio::spawn(async move {
                    while let Ok((s, _)) = l.accept().await {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(serve_conn(s, sink));
                    }
                });
            }
            Endpoint::Uds(p) => {
                let l = UnixListener::bind(p)?;
                ctl.ready();
                tokio::spawn(async move {
                    while let Ok((s, _)) = l.accept().await {
                        tokio::spawn(serve_conn(s, sink));
                    }
                });
            }
        }
        while !ctl.stopped() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<(), BoxError>(())
    })
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

pub(crate) fn run(w: Workload, size: usize, plan: &Plan, ep: &Endpoint) -> Res<Measure> {
    let rt = runtime()?;
    let plan = *plan;
    rt.block_on(async {
        match w {
            Workload::Connections => connections(ep, size, &plan).await,
            _ => match connect(ep).await? {
                Client::Tcp(f) => one(f, w, size, &plan).await,
                Client::Uds(f) => one(f, w, size, &plan).await,
            },
        }
    })
}

async fn one<S: Io>(
    mut f: Framed<S, LengthDelimitedCodec>,
    w: Workload,
    size: usize,
    plan: &Plan,
) -> Res<Measure> {
    let payload = Bytes::from(vec![0xab; size]);
    match w {
        Workload::Rtt => {
            let mut rtts = Vec::with_capacity(plan.rtt);
            let start = Instant::now();
            while !plan.enough(rtts.len(), plan.rtt, start) {
                let t0 = Instant::now();
                f.send(payload.clone()).await?;
                f.next().await.ok_or("server closed")??;
                rtts.push(t0.elapsed());
            }
            let secs = start.elapsed().as_secs_f64();
            Ok(Measure::from_rtts(&mut rtts, secs, size))
        }
        Workload::Pipelined => {
            // The server's policy: the next requests for every response
            // already buffered are fed, then flushed once.
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
            while rtts.len() < sent {
                let mut got = Some(f.next().await.ok_or("server closed")??);
                while got.is_some() {
                    rtts.push(sent_at.pop_front().ok_or("unexpected response")?.elapsed());
                    if !plan.enough(sent, count, start) {
                        sent_at.push_back(Instant::now());
                        f.feed(payload.clone()).await?;
                        sent += 1;
                    }
                    got = buffered_frame(&mut f);
                }
                SinkExt::<Bytes>::flush(&mut f).await?;
            }
            let secs = start.elapsed().as_secs_f64();
            Ok(Measure::from_rtts(&mut rtts, secs, size))
        }
        Workload::Stream => {
            // Paced by the socket buffers; the server answers the end marker.
            let count = plan.stream_count(size);
            let start = Instant::now();
            let mut n = 0;
            while !plan.enough(n, count, start) {
                for _ in 0..64 {
                    f.feed(payload.clone()).await?;
                }
                n += 64;
            }
            f.feed(Bytes::from_static(MARKER)).await?;
            SinkExt::<Bytes>::flush(&mut f).await?;
            let end = tokio::time::timeout(WAIT, f.next())
                .await
                .map_err(|_| "stream did not complete")?
                .ok_or("server closed")??;
            if end.len() != MARKER.len() {
                return Err("unexpected answer to the end marker".into());
            }
            let secs = start.elapsed().as_secs_f64();
            Ok(Measure::from_rate(n, size, secs))
        }
        Workload::Connections => unreachable!("handled by connections()"),
    }
}

/// 1,000 connections, one task each doing `rounds` request/responses.
async fn connections(ep: &Endpoint, size: usize, plan: &Plan) -> Res<Measure> {
    let rounds = plan.conn_rounds;
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
            let (p, plan) = (payload.clone(), *plan);
            tokio::spawn(async move {
                match c {
                    Client::Tcp(f) => conn_task(f, p, &plan, start).await,
                    Client::Uds(f) => conn_task(f, p, &plan, start).await,
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
    plan: &Plan,
    start: Instant,
) -> Res<Vec<Duration>> {
    let mut rtts = Vec::with_capacity(plan.conn_rounds);
    while !plan.enough(rtts.len(), plan.conn_rounds, start) {
        let t0 = Instant::now();
        f.send(payload.clone()).await?;
        f.next().await.ok_or("server closed")??;
        rtts.push(t0.elapsed());
    }
    Ok(rtts)
}
