//! A client that comes back by itself: `tofu::Reconnect` keeps one logical
//! connection to a server that crashes mid-conversation and is restarted on
//! the same port a moment later.
//!
//! The client sends six numbered Requests, one at a time. After the third
//! answer the server's engine shuts down (as when its process dies: every
//! connection resets) and a new server starts 300 ms later. The helper
//! reports the lost connection, retries with growing, jittered waits
//! (refused while nothing listens), reconnects on a new channel with the same
//! HelloRequest headers, and the client sends the request that was never
//! answered again. Then the client stops the helper: a graceful close.
//!
//! Each side has its own engine, as separate programs would; TCP on
//! 127.0.0.1. Exits non-zero if anything is missing or out of order.
//!
//! ```text
//! cargo run --example reconnect
//! ```

use std::time::{Duration, Instant};

use tofu::testing::free_tcp_port;
use tofu::{
    Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Reconnect, ReconnectEvent,
    ReconnectOptions, Status, TextHeaders,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Upper bound for the whole run: a stuck example fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(20);
const REQUESTS: u64 = 6;

fn main() -> Result<(), BoxError> {
    let port = free_tcp_port()?;
    let mut server = Some(Server::start(port)?);

    let engine = Engine::new(Options::default())?;
    let group = engine.create_group()?;
    let mut hello = TextHeaders::new();
    hello.append("client", "example")?; // sent with every HelloRequest
    let options = ReconnectOptions {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        ..ReconnectOptions::default()
    };
    let address = Address::tcp_client("127.0.0.1", port);
    let mut link = Reconnect::new(&group, address, hello, options)?;

    let start = Instant::now();
    let mut pending = Some(0); // the next request to send, once connected
    let mut outstanding = None; // sent, not answered yet
    let mut answered = Vec::new();
    let mut channels = Vec::new();
    let mut restart_at = None;
    let mut stopped = false;
    while !stopped {
        if start.elapsed() > LIMIT {
            return Err("the example took too long".into());
        }
        if restart_at.is_some_and(|t| Instant::now() >= t) {
            restart_at = None;
            server = Some(Server::start(port)?);
            println!("{:>6.0?}  server: back on port {port}", start.elapsed());
        }
        // The helper's loop: its own messages are handled inside; waits end
        // in time for its next attempt.
        let Some(msg) = link.wait_receive(Some(Duration::from_millis(50)))? else {
            continue;
        };
        if let Some(event) = link.event(&msg) {
            println!("{:>6.0?}  client: {event:?}", start.elapsed());
            match event {
                ReconnectEvent::Connected { channel, .. } => channels.push(channel),
                // A request sent on the lost connection may never have
                // reached the server: send it again on the next one.
                ReconnectEvent::Disconnected { .. } => pending = pending.or(outstanding.take()),
                ReconnectEvent::Stopped => stopped = true,
                ReconnectEvent::GaveUp { .. } => return Err("gave up".into()),
                _ => {}
            }
        } else if msg.is_from_engine() {
            // One of our requests, given back because its connection broke
            // before it was written (the Disconnected event resends it).
            println!(
                "{:>6.0?}  client: given back: {}",
                start.elapsed(),
                msg.status()
            );
        } else if msg.opcode() == OpCode::Response {
            let seq = seq_of(&msg);
            println!("{:>6.0?}  client: answer {seq}", start.elapsed());
            if outstanding == Some(seq) {
                outstanding = None;
            }
            answered.push(seq);
            if seq + 1 < REQUESTS {
                pending = Some(seq + 1);
            } else {
                link.stop()?; // graceful close; the Stopped event follows
            }
            if answered.len() == 3 {
                println!("{:>6.0?}  server: crashes", start.elapsed());
                if let Some(s) = server.take() {
                    s.stop()?;
                }
                restart_at = Some(Instant::now() + Duration::from_millis(300));
            }
        }
        // Send the next request if there is a connection; if there is none,
        // `post` hands it straight back and it stays pending.
        if let (Some(seq), None) = (pending, outstanding) {
            match link.post(request(&engine, seq)?) {
                Ok(_) => (pending, outstanding) = (None, Some(seq)),
                Err(e) if e.error == tofu::Error::ChannelClosed => {}
                Err(e) => return Err(e.error.into()),
            }
        }
    }

    let clients = server.take().ok_or("no server")?.stop()?;
    if answered != (0..REQUESTS).collect::<Vec<_>>() {
        return Err(format!("answers {answered:?}, expected 0..{REQUESTS} in order").into());
    }
    if channels.len() != 2 || channels[0] == channels[1] {
        return Err(format!("expected two connections on two channels: {channels:?}").into());
    }
    if clients != ["example"] {
        return Err(format!("the new server saw HelloRequests from {clients:?}").into());
    }
    println!(
        "ok: {REQUESTS} answers in order over {} connections (channels {channels:?})",
        channels.len()
    );
    Ok(())
}

/// An echo server in an engine of its own.
struct Server {
    engine: Engine,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Server {
    fn start(port: u16) -> Result<Server, BoxError> {
        let engine = Engine::new(Options::default())?;
        let group = engine.create_group()?;
        group.listen(&Address::tcp_server("127.0.0.1", port))?;
        let ready = group
            .wait_receive(Some(Duration::from_secs(5)))?
            .ok_or("no WelcomeResponse")?;
        if ready.status() != Status::Success {
            return Err(format!("cannot listen: {}", ready.status()).into());
        }
        let thread = std::thread::spawn(move || echo(&group));
        Ok(Server { engine, thread })
    }

    /// Shuts the engine down (its connections reset); returns the `client`
    /// header of each HelloRequest it accepted.
    fn stop(self) -> Result<Vec<String>, BoxError> {
        self.engine.shutdown();
        self.thread
            .join()
            .map_err(|_| "server thread panicked".into())
    }
}

/// Echoes until the engine shuts down.
fn echo(group: &ChannelGroup) -> Vec<String> {
    let mut clients = Vec::new();
    while let Ok(got) = group.wait_receive(None) {
        let Some(mut m) = got else { continue };
        if m.is_from_engine() {
            continue;
        }
        m.header.proto.opcode = match m.opcode() {
            OpCode::HelloRequest => {
                clients.push(m.text_headers.get("client").unwrap_or("?").to_owned());
                OpCode::HelloResponse
            }
            OpCode::Request => OpCode::Response,
            OpCode::ByeRequest => OpCode::ByeResponse,
            _ => continue,
        };
        let _ = group.post(m);
    }
    clients
}

fn fresh(engine: &Engine) -> Result<Message, BoxError> {
    Ok(engine.get(Allocation::Always)?.ok_or("no message")?)
}

fn request(engine: &Engine, seq: u64) -> Result<Message, BoxError> {
    let mut m = fresh(engine)?;
    m.header.proto.opcode = OpCode::Request;
    m.body.extend_from_slice(&seq.to_be_bytes());
    Ok(m)
}

fn seq_of(m: &Message) -> u64 {
    m.body
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(u64::MAX, u64::from_be_bytes)
}
