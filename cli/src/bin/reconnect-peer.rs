//! `reconnect-peer`: one side of `scripts/reconnect-netns.sh`, which cuts
//! and restores the link between two network namespaces under a
//! reconnecting client (`tofu::Reconnect`).
//!
//! ```text
//! reconnect-peer serve  --listen 'tcp|10.78.0.2|7802' [--beat-ms 200] [--idle-ms 1500] [--deadline 60]
//! reconnect-peer client --connect 'tcp|10.78.0.2|7802' [--requests 80] [--every-ms 50]
//!                       [--beat-ms 200] [--idle-ms 1500] [--initial-ms 100] [--max-ms 1000]
//!                       [--handshake-ms 1000] [--deadline 60]
//! ```
//!
//! The server echoes Requests and beats (`tofu::Heartbeat`, header `hb`)
//! on every connection; its engine closes a connection silent for
//! `--idle-ms` (`Options::idle_timeout`). The client keeps one connection
//! with `tofu::Reconnect`, beats too, has the same idle timeout (so a cut
//! link, which no socket event reports, ends its connection), and sends
//! `--requests` numbered Requests one at a time, every `--every-ms`: a
//! request unanswered when a connection ends is sent again on the next one.
//! Public API only.
//!
//! Output: `listening on ...` (server); `event at=EPOCH kind=... channel=N
//! attempt=N wait_ms=X cause=...` for every helper event and `progress
//! answered=N` lines (client), and one `RESULT client key=value ...` line.
//! Exit status 0 when every request was answered exactly once, in order,
//! within the deadline; 1 otherwise.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use tofu::{
    Address, Allocation, Engine, Handled, Heartbeat, Message, OpCode, Options, Reconnect,
    ReconnectEvent, ReconnectOptions, TextHeaders,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Longest single wait (keeps deadline checks going).
const TICK: Duration = Duration::from_millis(50);

#[derive(Parser)]
#[command(
    about = "One side of scripts/reconnect-netns.sh (a reconnecting client across a cut link)"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Echo Requests, beat on every connection.
    Serve {
        #[arg(long)]
        listen: String,
        #[arg(long, default_value_t = 200)]
        beat_ms: u64,
        #[arg(long, default_value_t = 1500)]
        idle_ms: u64,
        #[arg(long, default_value_t = 60)]
        deadline: u64,
    },
    /// Keep a connection with `Reconnect` and send numbered Requests.
    Client {
        #[arg(long)]
        connect: String,
        #[arg(long, default_value_t = 80)]
        requests: u64,
        #[arg(long, default_value_t = 50)]
        every_ms: u64,
        #[arg(long, default_value_t = 200)]
        beat_ms: u64,
        #[arg(long, default_value_t = 1500)]
        idle_ms: u64,
        #[arg(long, default_value_t = 100)]
        initial_ms: u64,
        #[arg(long, default_value_t = 1000)]
        max_ms: u64,
        #[arg(long, default_value_t = 1000)]
        handshake_ms: u64,
        #[arg(long, default_value_t = 60)]
        deadline: u64,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().role {
        Role::Serve {
            listen,
            beat_ms,
            idle_ms,
            deadline,
        } => serve(&listen, ms(beat_ms), ms(idle_ms), secs(deadline)).map(|()| true),
        Role::Client {
            connect,
            requests,
            every_ms,
            beat_ms,
            idle_ms,
            initial_ms,
            max_ms,
            handshake_ms,
            deadline,
        } => client(&ClientPlan {
            connect,
            requests,
            every: ms(every_ms),
            beat: ms(beat_ms),
            idle: ms(idle_ms),
            backoff: ReconnectOptions {
                initial_delay: ms(initial_ms),
                max_delay: ms(max_ms),
                handshake_timeout: Some(ms(handshake_ms)),
                ..ReconnectOptions::default()
            },
            deadline: secs(deadline),
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

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Seconds since the epoch, for the script's arithmetic.
fn epoch() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:.3}", t.as_secs_f64())
}

fn fresh(engine: &Engine) -> Res<Message> {
    Ok(engine.get(Allocation::Always)?.ok_or("no message")?)
}

fn serve(listen: &str, beat: Duration, idle: Duration, deadline: Duration) -> Res<()> {
    let end = Instant::now() + deadline;
    let engine = Engine::new(Options {
        idle_timeout: Some(idle),
        ..Options::default()
    })?;
    let group = engine.create_group()?;
    let addr = Address::parse_server(listen)?;
    let mut welcome = fresh(&engine)?;
    addr.format(&mut welcome)?;
    group.post(welcome)?;
    let ready = group
        .wait_receive(Some(secs(10)))?
        .ok_or("no WelcomeResponse")?;
    if ready.status() != tofu::Status::Success {
        return Err(format!("cannot listen on {listen}: {}", ready.status()).into());
    }
    println!("listening on {listen}");
    let mut beats = Heartbeat::new(&group, "hb", beat)?;
    while Instant::now() < end {
        beats.poll()?;
        let wait = beats.timeout().map_or(TICK, |t| t.min(TICK));
        let Some(m) = group.wait_receive(Some(wait))? else {
            continue;
        };
        let Handled::NotMine(mut m) = beats.handle(m) else {
            continue;
        };
        if m.is_from_engine() {
            if let Some(cause) = m.close_cause() {
                println!("closed channel={} cause={cause}", m.channel_number());
            }
            continue;
        }
        m.header.proto.opcode = match m.opcode() {
            OpCode::HelloRequest => {
                beats.add(m.channel_number());
                println!("accepted channel={}", m.channel_number());
                OpCode::HelloResponse
            }
            OpCode::Request => OpCode::Response,
            OpCode::ByeRequest => OpCode::ByeResponse,
            _ => continue,
        };
        let _ = group.post(m);
    }
    Ok(())
}

struct ClientPlan {
    connect: String,
    requests: u64,
    every: Duration,
    beat: Duration,
    idle: Duration,
    backoff: ReconnectOptions,
    deadline: Duration,
}

#[derive(Default)]
struct Tally {
    answered: Vec<u64>,
    connections: u64,
    attempts: u64,
    failed: u64,
    lost: u64,
    resent: u64,
    given_back: u64,
}

fn client(plan: &ClientPlan) -> Res<bool> {
    let end = Instant::now() + plan.deadline;
    let engine = Engine::new(Options {
        idle_timeout: Some(plan.idle),
        ..Options::default()
    })?;
    let group = engine.create_group()?;
    let addr: Address = plan.connect.parse()?;
    let mut hello = TextHeaders::new();
    hello.append("client", "reconnect-peer")?;
    let mut link = Reconnect::new(&group, addr, hello, plan.backoff.clone())?;
    let mut beats = Heartbeat::new(&group, "hb", plan.beat)?;
    let mut t = Tally::default();
    let mut pending = Some(0u64);
    let mut outstanding: Option<u64> = None;
    let mut next_send = Instant::now();
    while (t.answered.len() as u64) < plan.requests && Instant::now() < end {
        if outstanding.is_none() && pending.is_some() && Instant::now() >= next_send {
            let seq = pending.unwrap_or_default();
            let mut req = fresh(&engine)?;
            req.header.proto.opcode = OpCode::Request;
            req.body.extend_from_slice(&seq.to_be_bytes());
            if link.post(req).is_ok() {
                (pending, outstanding) = (None, Some(seq));
            }
        }
        beats.poll()?;
        let wait = [beats.timeout(), Some(TICK)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(TICK);
        let Some(m) = link.wait_receive(Some(wait))? else {
            continue;
        };
        let Handled::NotMine(m) = beats.handle(m) else {
            continue;
        };
        if let Some(e) = link.event(&m) {
            print_event(&e);
            match e {
                ReconnectEvent::Attempt { .. } => t.attempts += 1,
                ReconnectEvent::Connected { channel, .. } => {
                    t.connections += 1;
                    beats.add(channel);
                }
                ReconnectEvent::Disconnected { was_connected, .. } => {
                    if was_connected {
                        t.lost += 1;
                    } else {
                        t.failed += 1;
                    }
                    if let Some(seq) = outstanding.take() {
                        pending = Some(seq);
                        t.resent += 1;
                    }
                }
                ReconnectEvent::GaveUp { .. } | ReconnectEvent::Stopped => break,
                _ => {}
            }
            continue;
        }
        if m.is_from_engine() {
            if m.opcode() == OpCode::Request {
                t.given_back += 1; // the Disconnected event resends it
            }
            continue;
        }
        if m.opcode() == OpCode::Response && m.body.len() >= 8 {
            let seq = u64::from_be_bytes(m.body[..8].try_into()?);
            if outstanding == Some(seq) {
                outstanding = None;
            }
            t.answered.push(seq);
            println!("progress answered={}", t.answered.len());
            if (seq + 1) < plan.requests {
                pending = Some(seq + 1);
                next_send = Instant::now() + plan.every;
            }
        }
    }
    // Close in order (bounded by the handshake timeout, then an abort).
    let _ = link.stop();
    let close_end = Instant::now() + secs(5);
    while !link.is_done() && Instant::now() < close_end {
        if let Some(m) = link.wait_receive(Some(TICK))? {
            if let Some(e) = link.event(&m) {
                print_event(&e);
            }
        }
    }
    let in_order = t.answered.iter().copied().eq(0..plan.requests);
    println!(
        "RESULT client answered={} in_order={in_order} connections={} attempts={} failed={} \
         lost={} resent={} given_back={} beats={}",
        t.answered.len(),
        t.connections,
        t.attempts,
        t.failed,
        t.lost,
        t.resent,
        t.given_back,
        beats.beats()
    );
    Ok(in_order)
}

fn print_event(e: &ReconnectEvent) {
    let at = epoch();
    match e {
        ReconnectEvent::Attempt {
            attempt,
            channel,
            waited,
        } => println!(
            "event at={at} kind=attempt channel={channel} attempt={attempt} wait_ms={:.1}",
            waited.as_secs_f64() * 1e3
        ),
        ReconnectEvent::Connected { attempt, channel } => {
            println!("event at={at} kind=connected channel={channel} attempt={attempt}")
        }
        ReconnectEvent::Disconnected {
            channel,
            was_connected,
            cause,
            retry_in,
        } => println!(
            "event at={at} kind={} channel={channel} cause={} wait_ms={}",
            if *was_connected { "lost" } else { "failed" },
            cause.map_or("none", |c| c.name()),
            retry_in.map_or("none".to_owned(), |d| format!(
                "{:.1}",
                d.as_secs_f64() * 1e3
            )),
        ),
        ReconnectEvent::GaveUp { attempts } => {
            println!("event at={at} kind=gave_up attempts={attempts}")
        }
        ReconnectEvent::Stopped => println!("event at={at} kind=stopped"),
        other => println!("event at={at} kind=other {other:?}"),
    }
}
