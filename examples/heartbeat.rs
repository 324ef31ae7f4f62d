//! Heartbeats: clients send a Signal every `INTERVAL` on an otherwise idle
//! channel; the server notes when it last heard from each channel and declares
//! a peer dead after `DEAD_AFTER` of silence.
//!
//! Two ways a peer goes away, both shown:
//! * **hung** — the process is stuck but its connection stays open, so no socket
//!   event ever says so. Only the missing heartbeats tell. The server aborts the
//!   channel with a `ByeSignal`: the ByeSignal comes back (`origin = Engine`,
//!   status `channel_closed`), then the `channel_closed` report; the hung client
//!   sees its connection drop (its own `channel_closed` report).
//! * **crashed** — the client's engine shuts down (as when its process exits):
//!   its sockets close and the server gets the `channel_closed` report at once.
//!
//! Each side has its own engine, as separate programs would; TCP on 127.0.0.1.
//!
//! ```text
//! cargo run --example heartbeat
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tofu::testing::free_tcp_port;
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Upper bound for every wait: a stuck example fails instead of hanging.
const WAIT: Option<Duration> = Some(Duration::from_secs(5));
/// A client sends a heartbeat this often.
const INTERVAL: Duration = Duration::from_millis(100);
/// Silence after which the server gives a peer up (ten missed heartbeats: generous,
/// so a busy machine does not cause false alarms).
const DEAD_AFTER: Duration = Duration::from_secs(1);

/// How a client's channel ended, as the server saw it.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Heartbeats stopped; the server aborted the channel.
    Silent,
    /// The connection closed under the server (`channel_closed` report).
    Disconnected,
}

fn main() -> Result<(), BoxError> {
    let port = free_tcp_port()?;
    let server_engine = Engine::new(Options::default())?;
    let server = server_engine.create_group()?;
    server.listen(&Address::tcp_server("127.0.0.1", port))?;
    let ready = next(&server, "WelcomeResponse")?;
    if ready.status() != Status::Success {
        return Err(format!("listen failed: {}", ready.status()).into());
    }
    let server_thread = std::thread::spawn(move || monitor(&server, 2));

    // The hung client: five heartbeats, then silence with the connection open.
    let engine = Engine::new(Options::default())?;
    let group = engine.create_group()?;
    let ch = connect(&group, port, "hung")?;
    beat(&group, ch, 5)?;
    println!("hung:    stops sending (connection still open)");
    let report = next(&group, "the server to give up")?;
    assert!(report.is_from_engine() && report.status() == Status::ChannelClosed);
    println!("hung:    report: channel {ch} {}", report.status());
    drop(group);
    engine.shutdown();

    // The crashed client: three heartbeats, then its engine goes away.
    let engine = Engine::new(Options::default())?;
    let group = engine.create_group()?;
    let ch = connect(&group, port, "crashed")?;
    beat(&group, ch, 3)?;
    println!("crashed: engine shuts down");
    engine.shutdown();

    let ends = server_thread
        .join()
        .map_err(|_| "server thread panicked")??;
    assert_eq!(ends.get("hung"), Some(&End::Silent));
    assert_eq!(ends.get("crashed"), Some(&End::Disconnected));
    println!("ok: {ends:?}");
    Ok(())
}

/// The server: accepts clients, tracks their heartbeats, aborts silent channels.
/// Returns how each of the first `clients` channels ended, by client name.
fn monitor(server: &ChannelGroup, clients: usize) -> Result<HashMap<String, End>, BoxError> {
    struct Peer {
        name: String,
        last_heard: Instant,
        given_up: bool,
    }
    let mut peers: HashMap<u16, Peer> = HashMap::new();
    let mut ends = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ends.len() < clients {
        if Instant::now() > deadline {
            return Err("server: the clients never finished".into());
        }
        // Wake up regularly even when nothing arrives, to check the clocks.
        if let Some(mut m) = server.wait_receive(Some(INTERVAL))? {
            let ch = m.channel_number();
            if m.is_from_engine() {
                // Our own ByeSignal comes back first, then the report.
                if m.status() == Status::ChannelClosed && m.opcode() == OpCode::Signal {
                    if let Some(p) = peers.remove(&ch) {
                        println!("server:  report: channel {ch} ({}) {}", p.name, m.status());
                        let end = if p.given_up {
                            End::Silent
                        } else {
                            End::Disconnected
                        };
                        ends.insert(p.name, end);
                    }
                }
                continue;
            }
            match m.opcode() {
                OpCode::HelloRequest => {
                    let name = m.text_headers.get("name").unwrap_or("?").to_owned();
                    println!("server:  {name} connected on channel {ch}");
                    peers.insert(
                        ch,
                        Peer {
                            name,
                            last_heard: Instant::now(),
                            given_up: false,
                        },
                    );
                    m.header.proto.opcode = OpCode::HelloResponse;
                    server.post(m)?;
                }
                OpCode::Signal if m.text_headers.get("heartbeat").is_some() => {
                    if let Some(p) = peers.get_mut(&ch) {
                        p.last_heard = Instant::now();
                    }
                }
                _ => {}
            }
        }
        for (&ch, p) in peers.iter_mut() {
            let silent = p.last_heard.elapsed();
            if !p.given_up && silent > DEAD_AFTER {
                println!(
                    "server:  no heartbeat from {} for {silent:.1?}: abort",
                    p.name
                );
                p.given_up = true;
                let mut abort = fresh(server.engine())?;
                abort.header.channel_number = ch;
                abort.header.proto.opcode = OpCode::ByeSignal;
                server.post(abort)?;
            }
        }
    }
    Ok(ends)
}

/// Connects to the server, introducing itself with a `name` header.
fn connect(group: &ChannelGroup, port: u16, name: &str) -> Result<u16, BoxError> {
    let ch = group.connect_with(&Address::tcp_client("127.0.0.1", port), &[("name", name)])?;
    let reply = next(group, "HelloResponse")?;
    if reply.is_from_engine() || reply.opcode() != OpCode::HelloResponse {
        return Err(format!("connect failed: {}", reply.status()).into());
    }
    Ok(ch)
}

/// Sends `count` heartbeat Signals, one per `INTERVAL`.
fn beat(group: &ChannelGroup, ch: u16, count: u32) -> Result<(), BoxError> {
    for n in 1..=count {
        let mut hb = fresh(group.engine())?;
        hb.header.channel_number = ch;
        hb.header.proto.opcode = OpCode::Signal;
        hb.text_headers.append("heartbeat", &n.to_string())?;
        group.post(hb)?;
        std::thread::sleep(INTERVAL);
    }
    Ok(())
}

fn fresh(engine: &Engine) -> Result<Message, BoxError> {
    Ok(engine.get(Allocation::Always)?.ok_or("no message")?)
}

fn next(group: &ChannelGroup, what: &str) -> Result<Message, BoxError> {
    Ok(group
        .wait_receive(WAIT)?
        .ok_or_else(|| format!("timed out waiting for {what}"))?)
}
