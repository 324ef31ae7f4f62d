//! `two-hosts-peer`: one side of `scripts/two-hosts.sh`, which runs tofu
//! between two network namespaces joined by a veth pair.
//!
//! ```text
//! two-hosts-peer recv --listen 'tcp|10.77.0.2|7801' [--count N] [--deadline 60]
//! two-hosts-peer send --connect 'tcp|10.77.0.2|7801' --count 3000 --size 4096
//!                     [--pool 32] [--stall 20] [--bye-timeout 10] [--deadline 60]
//! ```
//!
//! The sender streams `--count` Signals of `--size` bytes on one channel. Each
//! carries its sequence number in a `seq` text header and in the first 8 bytes
//! of the body, the rest of the body is a pattern derived from it. Messages
//! come only from the pool (`Allocation::PoolOnly`, a pool of `--pool`
//! messages): when it is empty the sender waits for written messages to come
//! back, so the link's speed limits how much it holds (backpressure). When no
//! byte has been written for `--stall` seconds, the sender gives up. Either
//! way it then posts a ByeRequest (answered, or aborted by the engine after
//! `--bye-timeout`), waits for the `channel_closed` report and checks its
//! accounting: every message it posted was either written to the socket
//! (`Stats::messages_sent`) or came back with `origin = Engine` (SPEC §5.5),
//! and the data messages that came back are the newest ones, oldest first.
//!
//! The receiver checks that the Signals arrive in order, each exactly once,
//! with intact bodies, answers the ByeRequest and prints `progress` lines
//! (for the script, which may kill it) and a final result.
//!
//! Both print one `RESULT` line of `key=value` pairs that the script reads.
//! Exit status: 0 when every check passed, 1 otherwise. Every wait has a
//! deadline: `--deadline` seconds for the receiver's run and the sender's
//! streaming, then the sender's close gets `--bye-timeout` + 5 s (and 5 s
//! more for a ByeSignal if that fails).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Status};

/// The text header carrying a data message's sequence number.
const SEQ: &str = "seq";
/// Longest single wait in a receive loop (keeps progress lines and deadline
/// checks going).
const TICK: Duration = Duration::from_millis(100);

#[derive(Parser)]
#[command(about = "One side of scripts/two-hosts.sh (tofu between two network namespaces)")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Listen, accept one connection, check what arrives.
    Recv {
        /// Address to listen on, e.g. `tcp|10.77.0.2|7801`.
        #[arg(long)]
        listen: String,
        /// Messages expected; when given, an orderly close with fewer fails.
        #[arg(long)]
        count: Option<u64>,
        /// Seconds the whole run may take.
        #[arg(long, default_value_t = 60)]
        deadline: u64,
    },
    /// Connect and stream numbered Signals.
    Send {
        /// Address to connect to, e.g. `tcp|10.77.0.2|7801`.
        #[arg(long)]
        connect: String,
        /// Messages to send.
        #[arg(long, default_value_t = 3000)]
        count: u64,
        /// Body bytes per message (at least 8).
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// Messages in the sender's pool (its bound on messages held).
        #[arg(long, default_value_t = 32)]
        pool: u16,
        /// Seconds without a byte written before the sender gives up.
        #[arg(long, default_value_t = 20.0)]
        stall: f64,
        /// `Options::bye_timeout` in seconds.
        #[arg(long, default_value_t = 10.0)]
        bye_timeout: f64,
        /// Seconds the whole run may take.
        #[arg(long, default_value_t = 60)]
        deadline: u64,
        /// `Options::tcp_keepalive` in seconds (default off).
        #[arg(long)]
        keepalive: Option<f64>,
        /// Take data messages with `Allocation::Always` instead of waiting for
        /// the pool (no backpressure from the application: shows what the
        /// engine itself queues).
        #[arg(long)]
        always: bool,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().role {
        Role::Recv {
            listen,
            count,
            deadline,
        } => receive(&listen, count, Duration::from_secs(deadline)),
        Role::Send {
            connect,
            count,
            size,
            pool,
            stall,
            bye_timeout,
            deadline,
            keepalive,
            always,
        } => send(&SendPlan {
            connect,
            count,
            size: size.max(8),
            pool: pool.max(2),
            stall: Duration::from_secs_f64(stall),
            bye_timeout: Duration::from_secs_f64(bye_timeout),
            deadline: Duration::from_secs(deadline),
            keepalive: keepalive.map(Duration::from_secs_f64),
            always,
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            println!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The body of data message `seq`: the number, then a pattern derived from it.
fn fill_body(body: &mut Vec<u8>, seq: u64, size: usize) {
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend((8..size).map(|i| (seq as u8).wrapping_add(i as u8)));
}

/// Checks a received body against [`fill_body`]; the error names the fault.
fn check_body(body: &[u8], seq: u64) -> Result<(), String> {
    if body.len() < 8 || body[..8] != seq.to_be_bytes() {
        return Err(format!("body does not start with seq {seq}"));
    }
    match (8..body.len()).find(|&i| body[i] != (seq as u8).wrapping_add(i as u8)) {
        Some(i) => Err(format!("seq {seq}: body byte {i} corrupted")),
        None => Ok(()),
    }
}

/// The `seq` header of a message, if it has one.
fn seq_of(m: &Message) -> Option<u64> {
    m.text_headers.get(SEQ).and_then(|s| s.parse().ok())
}

/// The status name of a `channel_closed` report's cause, `none` for an orderly end.
fn cause_name(report: &Message) -> &'static str {
    report.close_cause().map_or("none", Status::name)
}

fn is_close_report(m: &Message, ch: u16) -> bool {
    m.is_from_engine()
        && m.opcode() == OpCode::Signal
        && m.status() == Status::ChannelClosed
        && m.channel_number() == ch
        && seq_of(m).is_none()
}

// ----- receiver --------------------------------------------------------------

fn receive(listen: &str, count: Option<u64>, deadline: Duration) -> Res<bool> {
    let end = Instant::now() + deadline;
    let addr = Address::parse_server(listen)?;
    let engine = Engine::new(Options::default())?;
    let group = engine.create_group()?;
    let mut welcome = engine.get(Allocation::Always)?.ok_or("no message")?;
    addr.format(&mut welcome)?;
    group.post(welcome)?;
    let ready = group
        .wait_receive(Some(Duration::from_secs(5)))?
        .ok_or("no WelcomeResponse within 5 s")?;
    if ready.status() != Status::Success {
        return Err(format!("listen on {addr} failed: {}", ready.status()).into());
    }
    println!("listening on {addr}");

    let mut data_ch = None;
    let mut received = 0u64;
    let mut started = None;
    let mut last_print = Instant::now();
    let mut errors = Vec::new();
    let cause = loop {
        let now = Instant::now();
        if now >= end {
            errors.push(format!("deadline: no channel_closed within {deadline:?}"));
            break "deadline";
        }
        if now - last_print >= TICK {
            println!("progress received={received}");
            last_print = now;
        }
        let Some(mut m) = group.wait_receive(Some(TICK.min(end - now)))? else {
            continue;
        };
        let ch = m.channel_number();
        if m.is_from_engine() {
            if Some(ch) == data_ch && is_close_report(&m, ch) {
                break cause_name(&m);
            }
            if m.status() != Status::PoolEmpty {
                println!("note: engine message on channel {ch}: {}", m.status());
            }
            continue;
        }
        match m.opcode() {
            OpCode::HelloRequest if data_ch.is_none() => {
                data_ch = Some(ch);
                m.header.proto.opcode = OpCode::HelloResponse;
                m.text_headers.clear();
                m.body.clear();
                group.post(m).map_err(|e| e.error)?;
            }
            OpCode::Signal if Some(ch) == data_ch => {
                let want = received;
                let check = match seq_of(&m) {
                    Some(seq) if seq == want => check_body(&m.body, seq),
                    Some(seq) => Err(format!("expected seq {want}, got {seq}")),
                    None => Err(format!("message {want} has no seq header")),
                };
                if let Err(e) = check {
                    errors.push(e);
                    break "order";
                }
                started.get_or_insert(Instant::now());
                received += 1;
            }
            OpCode::ByeRequest if Some(ch) == data_ch => {
                m.header.proto.opcode = OpCode::ByeResponse;
                group.post(m).map_err(|e| e.error)?;
            }
            op => errors.push(format!("unexpected {op:?} on channel {ch}")),
        }
    };
    if let Some(want) = count {
        if cause == "none" && received != want {
            errors.push(format!(
                "closed in order after {received} of {want} messages"
            ));
        }
    }
    let elapsed = started.map_or(0, |t| t.elapsed().as_millis());
    let stats = engine.stats();
    println!("progress received={received}");
    println!(
        "RESULT receiver received={received} cause={cause} elapsed_ms={elapsed} \
         pool_empty_events={} bytes_received={}",
        stats.pool_empty_events, stats.bytes_received
    );
    for e in &errors {
        println!("error: {e}");
    }
    Ok(errors.is_empty())
}

// ----- sender ----------------------------------------------------------------

struct SendPlan {
    connect: String,
    count: u64,
    size: usize,
    pool: u16,
    stall: Duration,
    bye_timeout: Duration,
    deadline: Duration,
    keepalive: Option<Duration>,
    always: bool,
}

/// What the sender posted and what came back.
#[derive(Default)]
struct Tally {
    /// Every message `post` accepted (Hello, data, Bye…).
    posted_total: u64,
    /// Data messages `post` accepted.
    posted_data: u64,
    /// Every message that came back with `origin = Engine` (not reports).
    returned_total: u64,
    /// The sequence numbers of data messages that came back, in arrival order.
    returned_seqs: Vec<u64>,
    /// Statuses of the messages that came back (one of each).
    returned_statuses: Vec<Status>,
    /// The `channel_closed` report's cause, once it came.
    closed: Option<&'static str>,
    /// Messages seen after the `channel_closed` report.
    after_close: u64,
    /// Messages nobody expected.
    unexpected: Vec<String>,
}

impl Tally {
    /// Sorts one message from the group into the tally.
    fn take(&mut self, m: Message, ch: u16) {
        if self.closed.is_some() && m.channel_number() == ch {
            self.after_close += 1;
            self.unexpected.push(format!(
                "{:?} {} after channel_closed",
                m.opcode(),
                m.status()
            ));
            return;
        }
        if m.is_from_application() {
            match m.opcode() {
                OpCode::ByeResponse => {}
                op => self.unexpected.push(format!("{op:?} from the peer")),
            }
            return;
        }
        if is_close_report(&m, ch) {
            self.closed = Some(cause_name(&m));
            return;
        }
        let returned = seq_of(&m).is_some()
            || matches!(
                m.opcode(),
                OpCode::HelloRequest | OpCode::ByeRequest | OpCode::ByeSignal
            );
        if returned {
            self.returned_total += 1;
            if let Some(seq) = seq_of(&m) {
                self.returned_seqs.push(seq);
            }
            if !self.returned_statuses.contains(&m.status()) {
                self.returned_statuses.push(m.status());
            }
        } else if m.status() != Status::PoolEmpty {
            self.unexpected
                .push(format!("engine {:?} {}", m.opcode(), m.status()));
        }
    }
}

/// Drains what the group has within `wait` (at most one message waited for).
fn pump(group: &ChannelGroup, tally: &mut Tally, ch: u16, wait: Duration) -> Res<()> {
    let mut next = group.wait_receive(Some(wait))?;
    while let Some(m) = next {
        tally.take(m, ch);
        next = group.wait_receive(Some(Duration::ZERO))?;
    }
    Ok(())
}

fn send(plan: &SendPlan) -> Res<bool> {
    let end = Instant::now() + plan.deadline;
    let addr: Address = plan.connect.parse()?;
    let engine = Engine::new(Options {
        initial_pool_msgs: plan.pool,
        max_pool_msgs: plan.pool,
        bye_timeout: Some(plan.bye_timeout),
        tcp_keepalive: plan.keepalive,
        ..Options::default()
    })?;
    let group = engine.create_group()?;
    let mut tally = Tally::default();
    let mut errors: Vec<String> = Vec::new();

    let mut hello = engine.get(Allocation::Always)?.ok_or("no message")?;
    addr.format(&mut hello)?;
    let ch = group.post(hello).map_err(|e| e.error)?.channel_number;
    tally.posted_total += 1;
    let reply = group
        .wait_receive(Some(Duration::from_secs(10)))?
        .ok_or("no HelloResponse within 10 s")?;
    if reply.is_from_engine() || reply.opcode() != OpCode::HelloResponse {
        return Err(format!("connect to {addr} failed: {}", reply.status()).into());
    }
    drop(reply);
    println!("connected to {addr}, channel {ch}");

    let started = Instant::now();
    let mut pool_waits = 0u64;
    let mut limit_refusals = 0u64;
    let mut max_outstanding = 0u64;
    let mut last_bytes = engine.stats().bytes_sent;
    let mut last_progress = Instant::now();
    let mut last_print = Instant::now();
    let mut gave_up = None;
    let mut seq = 0;
    while seq < plan.count && tally.closed.is_none() {
        let now = Instant::now();
        let stats = engine.stats();
        max_outstanding = max_outstanding.max(stats.pool_outstanding);
        if stats.bytes_sent != last_bytes {
            last_bytes = stats.bytes_sent;
            last_progress = now;
        }
        if now - last_progress >= plan.stall {
            gave_up = Some(format!("nothing written for {:?}", plan.stall));
            break;
        }
        if now >= end {
            gave_up = Some("deadline".into());
            break;
        }
        if now - last_print >= Duration::from_secs(1) {
            println!("progress posted={seq} written={}", stats.messages_sent);
            last_print = now;
        }
        let how = if plan.always {
            Allocation::Always
        } else {
            Allocation::PoolOnly
        };
        let Some(mut m) = engine.get(how)? else {
            // Backpressure: every message is in the engine or the kernel.
            pool_waits += 1;
            pump(&group, &mut tally, ch, Duration::from_millis(2))?;
            continue;
        };
        m.header.channel_number = ch;
        m.header.proto.opcode = OpCode::Signal;
        m.text_headers.append(SEQ, &seq.to_string())?;
        fill_body(&mut m.body, seq, plan.size);
        match group.post(m) {
            Ok(_) => {
                tally.posted_total += 1;
                tally.posted_data += 1;
                seq += 1;
            }
            Err(e) if e.error == tofu::Error::PoolEmpty => {
                // Over the engine's outgoing limit: handed back untouched;
                // not posted. Wait a little and offer it again (its seq
                // header and body are already in place, so drop it and
                // build it anew).
                limit_refusals += 1;
                drop(e.message);
                pump(&group, &mut tally, ch, Duration::from_millis(2))?;
            }
            Err(e) => {
                // Refused and handed back: not posted (the channel is gone).
                println!("note: post of seq {seq} refused: {}", e.error);
                pump(&group, &mut tally, ch, TICK)?;
                break;
            }
        }
        pump(&group, &mut tally, ch, Duration::ZERO)?;
    }
    let posting_ms = started.elapsed().as_millis();
    if let Some(why) = &gave_up {
        println!("gave up after {seq} messages: {why}; closing");
    }

    // Close: a ByeRequest (unless the channel is gone already), then wait for
    // the report; the bye timeout bounds the wait on the peer.
    if tally.closed.is_none() {
        let mut bye = engine.get(Allocation::Always)?.ok_or("no message")?;
        bye.header.channel_number = ch;
        bye.header.proto.opcode = OpCode::ByeRequest;
        match group.post(bye) {
            Ok(_) => tally.posted_total += 1,
            Err(e) => println!("note: ByeRequest refused: {}", e.error),
        }
    }
    // Its own bound, also when the run's deadline has passed.
    let bye_end = Instant::now() + plan.bye_timeout + Duration::from_secs(5);
    while tally.closed.is_none() && Instant::now() < bye_end {
        pump(&group, &mut tally, ch, TICK)?;
    }
    if tally.closed.is_none() {
        errors.push(format!(
            "no channel_closed within bye_timeout ({:?}) + 5 s: the sender hung",
            plan.bye_timeout
        ));
        // Abort, to get the accounting all the same.
        let mut abort = engine.get(Allocation::Always)?.ok_or("no message")?;
        abort.header.channel_number = ch;
        abort.header.proto.opcode = OpCode::ByeSignal;
        if group.post(abort).is_ok() {
            tally.posted_total += 1;
        }
        let abort_end = Instant::now() + Duration::from_secs(5);
        while tally.closed.is_none() && Instant::now() < abort_end {
            pump(&group, &mut tally, ch, TICK)?;
        }
        if tally.closed.is_none() {
            errors.push("no channel_closed even after a ByeSignal".into());
        }
    }
    let elapsed = started.elapsed();
    // The report is the last message about the channel: nothing may follow.
    pump(&group, &mut tally, ch, Duration::from_millis(300))?;

    let stats = engine.stats();
    let written_total = stats.messages_sent;
    let returned_data = tally.returned_seqs.len() as u64;
    let written_data = tally.posted_data.saturating_sub(returned_data);
    // Every posted message was written or came back (SPEC §5.5).
    if tally.posted_total != written_total + tally.returned_total {
        errors.push(format!(
            "accounting: posted {} != written {} + returned {}",
            tally.posted_total, written_total, tally.returned_total
        ));
    }
    // After an abort the ones that came back are a suffix of what was
    // posted, oldest first, each once.
    let suffix: Vec<u64> = (written_data..tally.posted_data).collect();
    if tally.returned_seqs != suffix {
        errors.push(format!(
            "returned data messages are not the newest {returned_data} in order: {:?}…",
            &tally.returned_seqs[..tally.returned_seqs.len().min(10)]
        ));
    }
    errors.append(&mut tally.unexpected);
    let statuses: Vec<&str> = tally.returned_statuses.iter().map(|s| s.name()).collect();
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "RESULT sender posted_data={} written_data={written_data} returned_data={returned_data} \
         posted_total={} messages_sent={written_total} returned_total={} \
         returned_statuses={} cause={} gave_up={} pool={} pool_waits={pool_waits} \
         limit_refusals={limit_refusals} max_outstanding={max_outstanding} posting_ms={posting_ms} elapsed_ms={} \
         mbit_per_s={:.1} bytes_sent={} bye_timeouts={} after_close={}",
        tally.posted_data,
        tally.posted_total,
        tally.returned_total,
        if statuses.is_empty() {
            "-".to_owned()
        } else {
            statuses.join(",")
        },
        tally.closed.unwrap_or("never"),
        gave_up.is_some(),
        plan.pool,
        elapsed.as_millis(),
        stats.bytes_sent as f64 * 8.0 / secs / 1e6,
        stats.bytes_sent,
        stats.bye_timeouts,
        tally.after_close,
    );
    for e in &errors {
        println!("error: {e}");
    }
    Ok(errors.is_empty())
}
