//! tofu: a server engine (an echo thread on its group) and a client engine
//! (the measuring thread on its group), as two programs would have them.
//!
//! Three systems: `tofu` runs both engines with `Options::default()`;
//! `tofu-tuned` with the larger pools of [`TUNED`], `tofu-spin` with the
//! receive spin budget of [`SPIN`] (everything else default).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tofu::{Address, Allocation, ChannelGroup, Engine, Error, Message, OpCode, Options, Status};

use crate::common::*;

const W: Option<Duration> = Some(WAIT);
/// Body bytes of one one-way batch (the window is two batches), as in
/// `tofu bench` (`cli/src/measure.rs`).
const BATCH_BYTES: usize = 1024 * 1024;
/// The most messages one `receive_many` takes (and so the largest batch
/// posted back): the default pool's capacity.
const RECV_MANY: usize = 64;
/// Messages a streaming client builds and posts with one `post_batch`: the
/// default pool's capacity (a larger batch allocates what the pool cannot
/// hold; 128 measured slower), at 64 B about 5 KiB (a tokio `Framed` sink
/// buffers 8 KiB before it writes).
const POST_MANY: usize = 64;

/// `tofu-tuned`'s pool: (`initial_pool_msgs`, `max_pool_msgs`).
pub(crate) const TUNED: (u16, u16) = (1024, 16384);

/// What `tofu-tuned` changes, for the report.
pub(crate) fn tuned_description() -> String {
    format!(
        "initial_pool_msgs {}, max_pool_msgs {} (default {} / {}); every other option default",
        TUNED.0,
        TUNED.1,
        tofu::DEFAULT_INITIAL_POOL_MSGS,
        tofu::DEFAULT_MAX_POOL_MSGS
    )
}

/// `tofu-spin`'s `Options::receive_spin`.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// What `tofu-spin` changes, for the report.
pub(crate) fn spin_description() -> String {
    format!(
        "receive_spin {} µs (default 0: no spinning); every other option default",
        SPIN.as_micros()
    )
}

/// The engine options of `system` (`tofu`, `tofu-tuned` or `tofu-spin`).
pub(crate) fn options(system: &str) -> Options {
    match system {
        "tofu-spin" => Options {
            receive_spin: SPIN,
            ..Options::default()
        },
        "tofu-tuned" => Options {
            initial_pool_msgs: TUNED.0,
            max_pool_msgs: TUNED.1,
            ..Options::default()
        },
        _ => Options::default(),
    }
}

fn addresses(ep: &Endpoint) -> (Address, Address) {
    match ep {
        Endpoint::Tcp(port) => (
            Address::tcp_server("127.0.0.1", *port),
            Address::tcp_client("127.0.0.1", *port),
        ),
        Endpoint::Uds(p) => (
            Address::uds_server(p.clone()),
            Address::uds_client(p.clone()),
        ),
    }
}

fn get(engine: &Engine) -> Res<Message> {
    Ok(engine.get(Allocation::Always)?.ok_or("no message")?)
}

/// The engine's informational reports (not answers, not failures).
fn is_info(m: &Message) -> bool {
    m.is_from_engine() && matches!(m.status(), Status::PoolEmpty | Status::ReceiverUpdate)
}

/// Posts a batch, waiting (bounded) for room when the channel's outgoing
/// queue is over its limit; `msgs` is empty afterwards.
fn post_batch(group: &ChannelGroup, msgs: &mut Vec<Message>) -> Res<()> {
    group
        .post_batch_timeout(msgs, WAIT)
        .map_err(|e| format!("post_batch refused: {e}").into())
}

/// Posts, waiting (bounded) for room when the channel's outgoing queue is
/// over its limit.
fn post(group: &ChannelGroup, m: Message) -> Res<u64> {
    match group.post_timeout(m, WAIT) {
        Ok(h) => Ok(h.message_id),
        Err(e) => Err(format!("post refused: {}", e.error).into()),
    }
}

/// The server: listens, echoes Requests, drops Signals, answers Hello and
/// Bye; stops when `ctl` says so.
pub(crate) fn serve(opts: Options, ep: &Endpoint, ctl: &Ctl) -> Res<()> {
    let (listen, _) = addresses(ep);
    let engine = Engine::new(opts)?;
    let r = serve_on(&engine, &listen, ctl);
    diagnose("server", &engine);
    engine.shutdown();
    r
}

fn serve_on(engine: &Engine, listen: &Address, ctl: &Ctl) -> Res<()> {
    let group = engine.create_group()?;
    let mut welcome = get(engine)?;
    listen.format(&mut welcome)?;
    group.post(welcome).map_err(|e| e.error)?;
    let ready = loop {
        let m = group.wait_receive(W)?.ok_or("no WelcomeResponse")?;
        if !is_info(&m) {
            break m;
        }
    };
    if ready.status() != Status::Success {
        return Err(format!("listen failed: {}", ready.status()).into());
    }
    ctl.ready();
    // Everything queued is taken at once and the answers go back as one
    // batch (`receive_many` / `post_batch`), as a server working through
    // a backlog would.
    let mut got = Vec::with_capacity(RECV_MANY);
    let mut answers = Vec::with_capacity(RECV_MANY);
    let mut spent = Vec::with_capacity(RECV_MANY);
    while !ctl.stopped() {
        match group.receive_many(&mut got, RECV_MANY, Some(Duration::from_millis(50))) {
            Ok(_) => {}
            Err(Error::ShutdownStarted) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        for mut m in got.drain(..) {
            if m.is_from_engine() {
                continue;
            }
            let reply = match m.opcode() {
                OpCode::HelloRequest => OpCode::HelloResponse,
                OpCode::Request => OpCode::Response,
                OpCode::ByeRequest => OpCode::ByeResponse,
                _ => {
                    // Signals: received, dropped (back to the pool together).
                    spent.push(m);
                    continue;
                }
            };
            m.header.proto.opcode = reply;
            answers.push(m);
        }
        engine.put_many(&mut spent);
        while !answers.is_empty() {
            match group.post_batch_timeout(&mut answers, WAIT) {
                Ok(()) => {}
                Err(Error::ShutdownStarted) => return Ok(()),
                // The client closed a channel between a request and its
                // answer (the end of a measurement): that answer goes.
                Err(Error::InvalidChannelNumber) => drop(answers.remove(0)),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The client engine and its group.
struct Client {
    engine: Engine,
    group: ChannelGroup,
    addr: Address,
}

impl Client {
    /// The next message that is not an informational report.
    fn recv(&self) -> Res<Message> {
        loop {
            let m = self.group.wait_receive(W)?.ok_or("no answer")?;
            if !is_info(&m) {
                return Ok(m);
            }
        }
    }

    /// Every queued message (at least one; at most [`RECV_MANY`]) that is
    /// not an informational report, appended to `out`.
    fn recv_many(&self, out: &mut Vec<Message>) -> Res<()> {
        while out.is_empty() {
            if self.group.receive_many(out, RECV_MANY, W)? == 0 {
                return Err("no answer".into());
            }
            out.retain(|m| !is_info(m));
        }
        Ok(())
    }

    /// Opens one channel; `Err` if the connect failed.
    fn connect(&self) -> Res<u16> {
        let ch = self.post_hello()?;
        let r = self.recv()?;
        if r.opcode() != OpCode::HelloResponse || r.is_from_engine() {
            return Err(format!("connect failed: {}", r.status()).into());
        }
        Ok(ch)
    }

    fn post_hello(&self) -> Res<u16> {
        let mut hello = get(&self.engine)?;
        self.addr.format(&mut hello)?;
        Ok(self.group.post(hello).map_err(|e| e.error)?.channel_number)
    }

    fn message(&self, ch: u16, op: OpCode, size: usize) -> Res<Message> {
        let mut m = get(&self.engine)?;
        m.header.channel_number = ch;
        m.header.proto.opcode = op;
        m.body.resize(size, 0xab);
        Ok(m)
    }

    /// Waits for the Response to `id`.
    fn response(&self, id: u64) -> Res<Message> {
        let m = self.recv()?;
        expect_response(&m)?;
        if m.header.message_id != id {
            return Err(format!("response to {} instead of {id}", m.header.message_id).into());
        }
        Ok(m)
    }
}

pub(crate) fn run(
    opts: Options,
    w: Workload,
    size: usize,
    plan: &Plan,
    ep: &Endpoint,
) -> Res<Measure> {
    let (_, addr) = addresses(ep);
    let engine = Engine::new(opts)?;
    let group = engine.create_group()?;
    let c = Client {
        engine,
        group,
        addr,
    };
    let m = match w {
        Workload::Rtt => rtt(&c, size, plan),
        Workload::Pipelined => pipelined(&c, size, plan),
        Workload::Stream => stream(&c, size, plan),
        Workload::Connections => connections(&c, size, plan),
    };
    diagnose("client", &c.engine);
    c.engine.shutdown();
    m
}

/// With `TOFU_BENCH_STATS` set, one line of the engine's counters on
/// stderr (which thread polled, reads and writes, pool misses): how a
/// figure that fell differs from one that did not.
fn diagnose(side: &str, engine: &Engine) {
    if std::env::var_os("TOFU_BENCH_STATS").is_none() {
        return;
    }
    let s = engine.stats();
    eprintln!(
        "    {side}: polls {} (waiter {}), writes {}, reads {} (empty {}), \
         inline posts {}, pool empty {}, received {}",
        s.polls,
        s.waiter_polls,
        s.write_calls,
        s.read_calls,
        s.empty_reads,
        s.inline_posts,
        s.pool_empty_events,
        s.messages_received
    );
}

fn expect_response(m: &Message) -> Res<()> {
    if m.is_from_engine() || m.opcode() != OpCode::Response {
        return Err(format!("unexpected {:?} status {}", m.opcode(), m.status()).into());
    }
    Ok(())
}

fn rtt(c: &Client, size: usize, plan: &Plan) -> Res<Measure> {
    let ch = c.connect()?;
    let mut rtts = Vec::with_capacity(plan.rtt);
    let start = Instant::now();
    while !plan.enough(rtts.len(), plan.rtt, start) {
        let m = c.message(ch, OpCode::Request, size)?;
        let t0 = Instant::now();
        post(&c.group, m)?;
        let resp = c.recv()?;
        rtts.push(t0.elapsed());
        expect_response(&resp)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

fn pipelined(c: &Client, size: usize, plan: &Plan) -> Res<Measure> {
    let ch = c.connect()?;
    let count = plan.pipelined;
    let mut sent_at = VecDeque::with_capacity(WINDOW);
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    let mut sent = 0;
    let mut batch = Vec::with_capacity(WINDOW);
    while sent < WINDOW.min(count) {
        batch.push(c.message(ch, OpCode::Request, size)?);
        sent_at.push_back(Instant::now());
        sent += 1;
    }
    post_batch(&c.group, &mut batch)?;
    let mut got = Vec::with_capacity(RECV_MANY);
    while rtts.len() < sent {
        c.recv_many(&mut got)?;
        for mut resp in got.drain(..) {
            rtts.push(sent_at.pop_front().ok_or("unexpected response")?.elapsed());
            expect_response(&resp)?;
            if !plan.enough(sent, count, start) {
                // The response becomes the next request: no allocation, no copy.
                resp.header.proto.opcode = OpCode::Request;
                resp.header.message_id = 0;
                sent_at.push_back(Instant::now());
                batch.push(resp);
                sent += 1;
            }
        }
        post_batch(&c.group, &mut batch)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rtts(&mut rtts, secs, size))
}

/// Signals of `size` bytes, paced in-band as `tofu bench` does: batches of
/// about 1 MiB of bodies (taken with `get_many` and posted with `post_batch`,
/// [`POST_MANY`] at a time),
/// each followed by a marker Request. The server
/// handles a channel's messages in order, so a marker's Response proves
/// every Signal before it arrived; at most two batches are unconfirmed
/// (2 MiB, well under the 8 MiB `channel_send_limit`; `post_timeout` would
/// wait for room if not). The time runs until the last marker's Response.
fn stream(c: &Client, size: usize, plan: &Plan) -> Res<Measure> {
    let ch = c.connect()?;
    let batch = (BATCH_BYTES / size.max(1)).clamp(16, 4096);
    let count = plan.stream_count(size);
    let mut markers = VecDeque::with_capacity(2);
    let mut n = 0;
    let start = Instant::now();
    let mut msgs = Vec::with_capacity(POST_MANY);
    while !plan.enough(n, count, start) {
        let mut left = batch;
        while left > 0 {
            // Taken from the pool together (`get_many`), as a sender that
            // builds batches would.
            c.engine
                .get_many(Allocation::Always, left.min(POST_MANY), &mut msgs)?;
            for m in &mut msgs {
                m.header.channel_number = ch;
                m.header.proto.opcode = OpCode::Signal;
                m.body.resize(size, 0xab);
            }
            left -= msgs.len();
            post_batch(&c.group, &mut msgs)?;
        }
        n += batch;
        markers.push_back(post(&c.group, c.message(ch, OpCode::Request, 0)?)?);
        if markers.len() >= 2 {
            let id = markers.pop_front().unwrap_or_default();
            c.response(id)?;
        }
    }
    while let Some(id) = markers.pop_front() {
        c.response(id)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measure::from_rate(n, size, secs))
}

/// 1,000 channels on one client engine, each with one request outstanding:
/// each response is answered with the next request on its channel.
fn connections(c: &Client, size: usize, plan: &Plan) -> Res<Measure> {
    let rounds = plan.conn_rounds;
    let mut failures = 0u64;
    let mut pending = 0usize;
    for _ in 0..CONNECTIONS {
        match c.post_hello() {
            Ok(_) => pending += 1,
            Err(_) => failures += 1,
        }
    }
    let mut chans = Vec::with_capacity(CONNECTIONS);
    while pending > 0 {
        let r = c.recv()?;
        if r.is_from_engine() && r.status() == Status::ChannelClosed {
            continue; // report after a failed connect, already counted
        }
        pending -= 1;
        if r.opcode() == OpCode::HelloResponse && !r.is_from_engine() {
            chans.push(r.header.channel_number);
        } else {
            failures += 1;
        }
    }
    let mut sent_at = vec![Instant::now(); 65536];
    let mut done = vec![0usize; 65536];
    let mut rtts = Vec::with_capacity(chans.len() * rounds);
    let start = Instant::now();
    for &ch in &chans {
        let m = c.message(ch, OpCode::Request, size)?;
        sent_at[ch as usize] = Instant::now();
        post(&c.group, m)?;
    }
    let mut outstanding = chans.len();
    let mut got = Vec::with_capacity(RECV_MANY);
    let mut next = Vec::with_capacity(RECV_MANY);
    while outstanding > 0 {
        if c.recv_many(&mut got).is_err() {
            failures += outstanding as u64;
            break;
        }
        for mut resp in got.drain(..) {
            let ch = resp.header.channel_number as usize;
            if resp.is_from_engine() || resp.opcode() != OpCode::Response {
                failures += 1;
                outstanding -= 1;
                continue;
            }
            rtts.push(sent_at[ch].elapsed());
            done[ch] += 1;
            if !plan.enough(done[ch], rounds, start) {
                resp.header.proto.opcode = OpCode::Request;
                resp.header.message_id = 0;
                sent_at[ch] = Instant::now();
                next.push(resp);
            } else {
                outstanding -= 1;
            }
        }
        post_batch(&c.group, &mut next)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut m = Measure::from_rtts(&mut rtts, secs, size);
    m.failures = Some(failures);
    Ok(m)
}
